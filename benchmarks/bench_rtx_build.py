"""TensorRT for RTX ahead-of-time builds on this CPU: build time and engine size per ONNX and target set.

Each ONNX is built with ``endoedge.tensorrt.build.build_engine`` (``--runtime rtx``; parse + build
+ write; ``--force``, so nothing is reused) for every target set, ``--repeats`` times; the raw
samples go to ``--json`` (default ``benchmarks/results/rtx_build.json``) and a Markdown table
(median time, engine size) to stdout. No GPU is used or needed.

Usage::

    python benchmarks/bench_rtx_build.py /tmp/models/*.onnx --targets 8.6 8.9 12.0 7.5 8.6,8.9 8.6,8.9,12.0 default
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from endoedge.errors import EndoedgeError
from endoedge.tensorrt.build import build_engine
from endoedge.tensorrt.compat import import_tensorrt_rtx
from endoedge.tensorrt.plan import BuildRequest
from endoedge.tensorrt.rtx import parse_compute_capabilities

HERE = Path(__file__).resolve().parent


def _targets(text: str) -> tuple[str, ...]:
    return () if text == "default" else parse_compute_capabilities(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("onnx", nargs="+", type=Path, help="ONNX files (endoedge exports / quantize outputs)")
    ap.add_argument("--targets", nargs="+", default=["8.6", "8.9", "8.6,8.9"],
                    help="target sets: comma-separated compute capabilities, or 'default' (Ampere+)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", type=Path, default=HERE / "results" / "rtx_build.json")
    args = ap.parse_args(argv)
    trt = import_tensorrt_rtx()
    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        for onnx in args.onnx:
            for text in args.targets:
                ccs = _targets(text)
                for rep in range(args.repeats):
                    engine = Path(tmp) / f"{onnx.stem}.engine"
                    sample: dict[str, object] = {"onnx": onnx.name, "onnx_bytes": onnx.stat().st_size,
                                                 "targets": text, "repeat": rep}
                    t0 = time.perf_counter()
                    try:
                        result = build_engine(onnx, engine, BuildRequest(runtime="rtx", compute_capabilities=ccs),
                                              force=True)
                    except EndoedgeError as err:  # a failed build is a result too
                        sample["error"] = str(err)
                        print(f"{onnx.name} [{text}] FAILED: {err}", file=sys.stderr)
                    else:
                        sample.update(precision=result.manifest.precision, engine_bytes=engine.stat().st_size)
                        print(f"{onnx.name} [{text}] {time.perf_counter() - t0:.2f} s "
                              f"{engine.stat().st_size / 1e6:.1f} MB", file=sys.stderr)
                    sample["seconds"] = round(time.perf_counter() - t0, 3)
                    samples.append(sample)
    meta = {"command": " ".join(["python benchmarks/bench_rtx_build.py", *sys.argv[1:]]),
            "tensorrt_rtx": str(trt.__version__), "machine": platform.platform(), "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d", time.gmtime())}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "samples": samples}, indent=1) + "\n", encoding="utf-8")
    print("| ONNX | precision | " + " | ".join(args.targets) + " |")
    print("|---|---|" + "---|" * len(args.targets))
    for onnx in args.onnx:
        rows = [s for s in samples if s["onnx"] == onnx.name]
        cells = []
        for text in args.targets:
            runs = [s for s in rows if s["targets"] == text and "error" not in s]
            cells.append(f"{statistics.median(float(str(s['seconds'])) for s in runs):.1f} s, "
                         f"{int(str(runs[0]['engine_bytes'])) / 1e6:.1f} MB" if runs else "**fails**")
        precision = next((s.get("precision") for s in rows if "precision" in s), "?")
        print(f"| {onnx.name} | {precision} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
