"""Run every fuzz target for a fixed time, one after another, and record the outcome.

    nice -n 19 python benchmarks/fuzz/run_all.py --seconds 600 [--targets a,b] [--logs DIR]

Each target runs ``fuzz.py TARGET -max_total_time=SECONDS -seed=1`` with its own corpus under
``--logs`` (default ``/tmp/endoedge-fuzz``), logging there. The outcome (seconds run, executions,
coverage, corpus size, crash or not) is merged into ``benchmarks/results/fuzz.json`` after each
target, so an interrupted session keeps what finished. ``--markdown`` prints the RESULTS.md table,
``--update-results`` writes it into ``benchmarks/RESULTS.md`` (between the fuzz markers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results" / "fuzz.json"
RESULTS_MD = HERE.parent / "RESULTS.md"
START, END = "<!-- fuzz:start -->", "<!-- fuzz:end -->"
sys.path.insert(0, str(HERE))


def run_target(name: str, seconds: int, logs: Path) -> dict[str, object]:
    """Fuzz ``name`` for ``seconds``; its outcome as a dict."""
    corpus = logs / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts = logs / "crashes" / name
    artifacts.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    cmd = [sys.executable, str(HERE / "fuzz.py"), name, str(corpus), str(HERE / "seeds" / name),
           f"-max_total_time={seconds}", "-seed=1", f"-artifact_prefix={artifacts}/", "-print_final_stats=1"]
    t0 = time.monotonic()
    with open(log, "w") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    wall = time.monotonic() - t0
    text = log.read_text(errors="replace")
    done = re.search(r"Done (\d+) runs in (\d+) second", text)
    cov = re.findall(r"cov: (\d+) ft: (\d+) corp: (\d+)", text)
    crashes = sorted(p.name for p in artifacts.iterdir())
    return {
        "target": name, "seconds_requested": seconds, "wall_s": round(wall, 1),
        "runs": int(done.group(1)) if done else None, "fuzz_s": int(done.group(2)) if done else None,
        "coverage": int(cov[-1][0]) if cov else None, "features": int(cov[-1][1]) if cov else None,
        "corpus": len(list(corpus.iterdir())), "exit_code": rc, "crashed": rc != 0 or bool(crashes),
        "crash_files": crashes, "log": str(log),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def markdown(results: dict[str, dict[str, object]]) -> str:
    """The RESULTS.md table of ``results`` (by target)."""
    rows = ["| target | ran (s) | executions | coverage (edges) | corpus | result | date |", "|---|---|---|---|---|---|---|"]
    for name, r in sorted(results.items()):
        verdict = "crash: " + ", ".join(map(str, r["crash_files"])) if r["crashed"] else "no crash"  # type: ignore[arg-type]
        rows.append(f"| {name} | {r['fuzz_s']} | {r['runs']} | {r['coverage']} | {r['corpus']} | {verdict} | {r['date']} |")
    return "\n".join(rows)


def main() -> int:
    import targets

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--targets", default=",".join(targets.TARGETS))
    ap.add_argument("--logs", type=Path, default=Path("/tmp/endoedge-fuzz"))
    ap.add_argument("--markdown", action="store_true", help="print the table of benchmarks/results/fuzz.json and exit")
    ap.add_argument("--update-results", action="store_true", help="write that table into benchmarks/RESULTS.md and exit")
    args = ap.parse_args()
    stored = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"targets": {}}
    if args.markdown or args.update_results:
        table = markdown(stored["targets"])
        print(table)
        if args.update_results:
            md = RESULTS_MD.read_text()
            if START not in md or END not in md:
                raise SystemExit(f"run_all.py: {RESULTS_MD} has no {START} ... {END} section")
            RESULTS_MD.write_text(md[: md.index(START) + len(START)] + "\n" + table + "\n" + md[md.index(END):])
        return 0
    args.logs.mkdir(parents=True, exist_ok=True)
    for name in args.targets.split(","):
        print(f"fuzzing {name} for {args.seconds} s (log {args.logs / (name + '.log')})", flush=True)
        result = run_target(name, args.seconds, args.logs)
        if RESULTS.is_file():  # another run_all may have written meanwhile: merge, not overwrite
            stored = json.loads(RESULTS.read_text())
        stored["targets"][name] = result
        stored["machine"] = {"cpu": platform.processor() or platform.machine(), "logical_cpus": os.cpu_count(),
                             "python": platform.python_version(), "nice": os.nice(0)}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(stored, indent=1) + "\n")
        print(f"  {name}: {result['runs']} runs in {result['fuzz_s']} s, crashed={result['crashed']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
