"""Live soak: ``endoedge run`` on a live source for a long time (default 30 minutes), watching the
process from outside: resident memory (RSS), open file descriptors and threads every few seconds,
and the per-frame end-to-end latency from its detections JSONL, in windows (p50/p99/fps per
window). At the end it sends SIGINT (Ctrl-C) and checks that the run stops cleanly (exit 130, report
written).

    python benchmarks/soak.py                      # 30 min, videotestsrc 1280x720 at 30 fps (live)
    python benchmarks/soak.py --minutes 5 --source rtsp://cam/stream --model polyp.onnx
    python benchmarks/soak.py --markdown           # print the RESULTS.md section of the last soak
    python benchmarks/soak.py --update-results     # ... and write it into benchmarks/RESULTS.md

Without ``--model`` the demo SSDLite320 is exported to a temporary folder (needs torch). Results:
``benchmarks/results/soak.json`` (``--out``): configuration, machine, every sample and window, and a
summary with the verdicts: RSS growth after the first 10% of the run, fd growth, p99 drift (last
window / first window after warm-up) and the clean stop. Run it with ``nice -n 10`` on a shared
machine (other jobs then show up as latency, not as leaks).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- soak:start -->", "<!-- soak:end -->"
#: Verdict limits: RSS may grow this much after the first 10% of the run; p99 may drift this much.
RSS_GROWTH_LIMIT_MB = 50.0
P99_DRIFT_LIMIT = 1.5


def _demo_model(folder: Path) -> Path:
    from endoedge.export import export_onnx
    from endoedge.models.checkpoint import load_checkpoint, save_checkpoint
    from endoedge.models.demo import make_demo_model

    ckpt = save_checkpoint(folder / "demo.pt", make_demo_model("ssdlite320_mobilenet_v3_large"))
    return export_onnx(load_checkpoint(ckpt), folder / "demo.onnx").path


def _proc_sample(pid: int) -> dict[str, float] | None:
    """RSS (MB), open fds and threads of ``pid`` from /proc (None once it has exited)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024, "fds": fds, "threads": int(fields["Threads"])}


class _Tail:
    """Reads the complete lines appended to a growing file."""

    def __init__(self, path: Path) -> None:
        self.path, self.pos, self.rest = path, 0, b""

    def lines(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.pos)
            data = f.read()
        self.pos += len(data)
        chunks = (self.rest + data).split(b"\n")
        self.rest = chunks.pop()
        return [json.loads(c) for c in chunks if c.strip()]


def _window(t0: float, t1: float, e2e: list[float]) -> dict[str, Any]:
    a = np.asarray(e2e, dtype=np.float64)
    return {"t0_s": round(t0, 1), "t1_s": round(t1, 1), "frames": len(e2e), "fps": round(len(e2e) / (t1 - t0), 2),
            "e2e_p50_ms": round(float(np.percentile(a, 50)), 2) if a.size else None,
            "e2e_p99_ms": round(float(np.percentile(a, 99)), 2) if a.size else None,
            "e2e_max_ms": round(float(a.max()), 2) if a.size else None}


def soak(args: argparse.Namespace) -> dict[str, Any]:
    """Run the soak; returns the results dict (also written to ``args.out``)."""
    work = Path(tempfile.mkdtemp(prefix="endoedge-soak-"))
    model = Path(args.model) if args.model else _demo_model(work)
    jsonl, report = work / "d.jsonl", work / "r.json"
    cmd = [sys.executable, "-m", "endoedge.cli", "-q", "run", args.source, "-m", str(model), "--live",
           "--warmup", str(args.warmup), "--detections", str(jsonl), "--report", str(report)]
    if args.video:
        cmd += ["--video", str(work / "v.mp4")]
    if args.fps:
        cmd += ["--fps", str(args.fps)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    duration = args.seconds if args.seconds else args.minutes * 60
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t_start = time.monotonic()
    tail = _Tail(jsonl)
    samples: list[dict[str, Any]] = []
    windows: list[dict[str, Any]] = []
    pending: list[float] = []
    w_start = None
    t_first: float | None = None
    next_sample = 0.0
    while (now := time.monotonic() - t_start) < duration and proc.poll() is None:
        if now >= next_sample:
            s = _proc_sample(proc.pid)
            if s is not None:
                samples.append({"t_s": round(now, 1), **s})
            next_sample += args.sample_s
        for rec in tail.lines():
            if rec.get("warmup"):
                continue
            if w_start is None:
                w_start = now
            if t_first is None:
                t_first = now
            e2e = rec.get("latency_ms", {}).get("e2e")
            if e2e is not None:
                pending.append(float(e2e))
        if w_start is not None and now - w_start >= args.window_s:
            windows.append(_window(w_start, now, pending))
            w_start, pending = now, []
        time.sleep(0.2)
    early_exit = proc.poll() is not None
    if not early_exit:
        proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    now = time.monotonic() - t_start
    for rec in tail.lines():
        e2e = rec.get("latency_ms", {}).get("e2e")
        if not rec.get("warmup") and e2e is not None:
            pending.append(float(e2e))
    if w_start is not None and pending and now - w_start >= 1:
        windows.append(_window(w_start, now, pending))
    final = json.loads(report.read_text()) if report.is_file() else None
    results = {
        "command": " ".join(["python", "benchmarks/soak.py", *sys.argv[1:]]),
        "run_command": " ".join(cmd[1:]).replace(str(work), "$TMP"),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cpu": _cpu_name(), "logical_cpus": os.cpu_count(), "python": platform.python_version(),
                    "kernel": platform.release(), "load_avg_at_end": os.getloadavg()[0]},
        "config": {"source": args.source, "model": str(args.model or "demo SSDLite320 (untrained)"),
                   "seconds": duration, "sample_s": args.sample_s, "window_s": args.window_s,
                   "video": bool(args.video)},
        "samples": samples, "windows": windows,
        "t_first_frame_s": None if t_first is None else round(t_first, 1),
        "exit_code": proc.returncode, "stopped_by_sigint": not early_exit,
        "stderr_tail": err.strip().splitlines()[-3:],
        "report": {k: final[k] for k in ("frames", "warmup_frames", "dropped", "fps") if k in final} if final else None,
    }
    results["summary"] = summarize(results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return results


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Growth and drift figures plus pass/fail verdicts from the samples and windows (growth is
    counted from the steady state: the first frame after warm-up plus 10% of the rest)."""
    samples, windows = results["samples"], results["windows"]
    out: dict[str, Any] = {"samples": len(samples), "windows": len(windows)}
    if samples:
        # steady state: from the first frame after warm-up (start-up loads the model) plus 10%
        start = results.get("t_first_frame_s") or samples[0]["t_s"]
        settle = start + 0.1 * (samples[-1]["t_s"] - start)
        after = [s for s in samples if s["t_s"] >= settle] or samples
        out.update({
            "rss_mb_first": round(samples[0]["rss_mb"], 1), "rss_mb_at_10pct": round(after[0]["rss_mb"], 1),
            "rss_mb_last": round(samples[-1]["rss_mb"], 1), "rss_mb_max": round(max(s["rss_mb"] for s in samples), 1),
            "rss_growth_mb": round(after[-1]["rss_mb"] - after[0]["rss_mb"], 1),
            "fds_min": min(s["fds"] for s in samples), "fds_max": max(s["fds"] for s in samples),
            "fd_growth": after[-1]["fds"] - after[0]["fds"],
            "threads_max": max(s["threads"] for s in samples),
        })
    p99 = [w["e2e_p99_ms"] for w in windows if w["e2e_p99_ms"] is not None]
    if p99:
        out.update({"p99_first_ms": p99[0], "p99_last_ms": p99[-1], "p99_max_ms": max(p99),
                    "p99_drift": round(p99[-1] / p99[0], 3) if p99[0] else None,
                    "fps_first": windows[0]["fps"], "fps_last": windows[-1]["fps"]})
    out["verdicts"] = {
        "rss_flat": out.get("rss_growth_mb") is not None and out["rss_growth_mb"] <= RSS_GROWTH_LIMIT_MB,
        "fds_flat": out.get("fd_growth") is not None and out["fd_growth"] <= 0,
        "p99_no_drift": out.get("p99_drift") is not None and out["p99_drift"] <= P99_DRIFT_LIMIT,
        "clean_stop": results["stopped_by_sigint"] and results["exit_code"] == 130 and results["report"] is not None,
    }
    return out


def markdown(results: dict[str, Any]) -> str:
    """The RESULTS.md section (between the soak markers) for ``results``."""
    s, c, m = results["summary"], results["config"], results["machine"]
    v = s["verdicts"]
    ok = lambda b: "yes" if b else "**no**"  # noqa: E731
    rows = [
        START,
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, Python {m['python']}, kernel {m['kernel']}; "
        f"{results['date']}. Source `{c['source']}` (live), model {c['model']}, {c['seconds'] / 60:.3g} min, "
        f"video encoding {'on' if c['video'] else 'off'}; samples every {c['sample_s']:g} s, latency windows of "
        f"{c['window_s']:g} s. Command: `{results['command']}`.",
        "",
        "| measure | start | end | verdict |",
        "|---|---|---|---|",
        f"| RSS (MB; growth after warm-up + 10% of the run) | {s.get('rss_mb_at_10pct')} | {s.get('rss_mb_last')} "
        f"(+{s.get('rss_growth_mb')}) | flat (<= {RSS_GROWTH_LIMIT_MB:g} MB): {ok(v['rss_flat'])} |",
        f"| open file descriptors | {s.get('fds_min')} | {s.get('fds_max')} | no growth: {ok(v['fds_flat'])} |",
        f"| e2e p99 per window (ms) | {s.get('p99_first_ms')} | {s.get('p99_last_ms')} (max {s.get('p99_max_ms')}) "
        f"| drift {s.get('p99_drift')} (<= {P99_DRIFT_LIMIT:g}): {ok(v['p99_no_drift'])} |",
        f"| frames/s per window | {s.get('fps_first')} | {s.get('fps_last')} | |",
        f"| Ctrl-C at the end | | exit {results['exit_code']} | clean stop, report written: {ok(v['clean_stop'])} |",
        "",
        "Raw samples and windows: `benchmarks/results/soak.json`.",
        END,
    ]
    return "\n".join(rows)


def update_results(text: str, path: Path = HERE / "RESULTS.md") -> None:
    """Replace (or append) the soak section of RESULTS.md."""
    md = path.read_text()
    if START in md and END in md:
        md = md[: md.index(START)] + text + md[md.index(END) + len(END):]
    else:
        md = md.rstrip("\n") + "\n\n## 30-minute live soak (issue 20)\n\n" + text + "\n"
    path.write_text(md)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--seconds", type=float, help="duration in seconds (overrides --minutes; for short checks)")
    ap.add_argument("--source", default="test", help="SOURCE of endoedge run (default: videotestsrc 1280x720, live)")
    ap.add_argument("--fps", type=float, help="--fps passed to endoedge run")
    ap.add_argument("--model", help="model (default: the demo SSDLite320, exported to a temporary folder)")
    ap.add_argument("--video", action="store_true", help="also encode the annotated video")
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--sample-s", type=float, default=5.0, help="RSS/fd sampling interval (default 5 s)")
    ap.add_argument("--window-s", type=float, default=60.0, help="latency window (default 60 s)")
    ap.add_argument("--out", default=str(HERE / "results" / "soak.json"))
    ap.add_argument("--markdown", action="store_true", help="print the RESULTS.md section of --out and exit")
    ap.add_argument("--update-results", action="store_true", help="write that section into RESULTS.md and exit")
    args = ap.parse_args()
    if args.markdown or args.update_results:
        text = markdown(json.loads(Path(args.out).read_text()))
        print(text)
        if args.update_results:
            update_results(text)
        return 0
    results = soak(args)
    print(json.dumps(results["summary"], indent=1))
    return 0 if all(results["summary"]["verdicts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
