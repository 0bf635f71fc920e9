"""Run one endoedge fuzz target under atheris (libFuzzer, coverage-guided).

    python benchmarks/fuzz/fuzz.py TARGET [CORPUS_DIR ...] [libFuzzer options]
    python benchmarks/fuzz/fuzz.py onnx_metadata -max_total_time=600      # 10 minutes
    python benchmarks/fuzz/fuzz.py --list

TARGET is one of ``targets.TARGETS``. Without a corpus folder, new inputs go to
``benchmarks/fuzz/corpus/TARGET`` (git-ignored) and ``seeds/TARGET`` is read as well. Defaults
added unless given: ``-rss_limit_mb=2048 -timeout=20 -artifact_prefix=benchmarks/fuzz/crashes/``
(a crash writes ``crash-<sha1>`` there: copy it to ``regressions/TARGET/`` once fixed, the
regression test replays it). A crash is any exception other than endoedge's one-line errors, a
failed invariant, a hang (timeout) or memory over the limit. Needs ``pip install atheris``
(the dev extra).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")  # OpenCV's per-input decoder complaints
    sys.path.insert(0, str(HERE))
    import atheris

    with atheris.instrument_imports(include=["endoedge", "targets"]):
        import targets  # noqa: F401 - instrumented below through the endoedge modules it imports

        from endoedge.batch import decode, results, sources  # noqa: F401
        from endoedge.data import datasets, imageio  # noqa: F401
        from endoedge.spec import external_data  # noqa: F401
        from endoedge.tensorrt import engine_manifest, manifest  # noqa: F401

    if len(argv) < 2 or argv[1] in ("-h", "--help", "--list"):
        print(__doc__.strip().split("\n\n")[1] if len(argv) < 2 else "", file=sys.stderr)
        print("targets: " + ", ".join(targets.TARGETS), file=sys.stderr)
        return 0 if len(argv) >= 2 else 2
    name = argv[1]
    if name not in targets.TARGETS:
        print(f"fuzz.py: unknown target '{name}'; one of {', '.join(targets.TARGETS)}", file=sys.stderr)
        return 2
    rest = argv[2:]
    options = [a for a in rest if a.startswith("-")]
    folders = [a for a in rest if not a.startswith("-")]
    if not folders:
        corpus = HERE / "corpus" / name
        corpus.mkdir(parents=True, exist_ok=True)
        folders = [str(corpus), str(HERE / "seeds" / name)]
    defaults = {"-rss_limit_mb": "2048", "-timeout": "20", "-artifact_prefix": str(HERE / "crashes") + "/"}
    for key, value in defaults.items():
        if not any(o.startswith(key + "=") for o in options):
            options.append(f"{key}={value}")
    Path(dict(o.split("=", 1) for o in options if "=" in o)["-artifact_prefix"]).mkdir(parents=True, exist_ok=True)
    target = targets.TARGETS[name]

    def one_input(data: bytes) -> None:
        targets.run_one(name, data)

    del target
    atheris.Setup([argv[0], *options, *folders], one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
