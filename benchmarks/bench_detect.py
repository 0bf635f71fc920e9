"""Per-image latency of ``Detector.detect``: SSDLite320 on ONNX Runtime (CPU) vs PyTorch eager (CPU).

Both detectors run the same model (the demo SSDLite320 checkpoint and its ONNX export) on the
same bundled 1920x1080 colonoscopy frames, alternating in blocks (default 25 calls, the first 5
of each block untimed) so that both see the same machine state over the run while neither is
timed right after the other's worker threads were spinning. Each call's stages are timed with ``time.perf_counter_ns`` on the calling thread
(``Detector.timings``): pre-process (checks, resize, normalize), infer (the backend call),
post-process (decode, NMS, boxes to source pixels). Warm-up calls are excluded. Raw samples go
to ``benchmarks/results/detect_latency.json``; the summary replaces the marked section of
``benchmarks/RESULTS.md``.

Usage: ``python benchmarks/bench_detect.py [--runs 200] [--warmup 20]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
START, END = "<!-- detect-latency:start -->", "<!-- detect-latency:end -->"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def write_section(text: str, start: str, end: str, heading: str) -> None:
    """Replace the ``start``..``end`` section of RESULTS.md with ``text``, or append it under
    ``## heading``."""
    results = HERE / "RESULTS.md"
    old = results.read_text() if results.exists() else "# Benchmark results\n\n"
    if start in old and end in old:
        new = old[: old.index(start)] + text + old[old.index(end) + len(end) :]
    else:
        new = old.rstrip() + f"\n\n## {heading}\n\n" + text + "\n"
    results.write_text(new)


def measure(dets: dict, frames: list, args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    """Per-stage samples (ms) of each detector on ``frames``, alternating backends in blocks."""
    samples: dict[str, dict[str, list[float]]] = {
        n: {"preprocess": [], "infer": [], "postprocess": [], "total": [], "detections": []} for n in dets
    }
    for det in dets.values():
        for i in range(args.warmup):
            det.detect(frames[i % len(frames)])
    timed = args.block - args.block_warmup
    blocks = -(-args.runs // timed)
    for b in range(blocks):
        for name, det in dets.items():
            for j in range(args.block):
                i = b * args.block + j
                result = det.detect(frames[i % len(frames)])
                if j < args.block_warmup or len(samples[name]["total"]) >= args.runs:
                    continue
                t = det.timings
                s = samples[name]
                s["preprocess"].append(t.preprocess)
                s["infer"].append(t.infer)
                s["postprocess"].append(t.postprocess)
                s["total"].append(t.total)
                s["detections"].append(float(len(result)))
    return samples


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--block", type=int, default=25, help="calls per backend before switching")
    ap.add_argument("--block-warmup", type=int, default=5, help="untimed calls at each block start")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)

    import cv2
    import onnxruntime
    import torch

    import endoedge
    from endoedge.data.imageio import read_image
    from endoedge.data.samples import sample_frame_paths
    from endoedge.export import export_onnx
    from endoedge.models.checkpoint import load_checkpoint, save_checkpoint
    from endoedge.models.demo import make_demo_model

    tmp = Path(tempfile.mkdtemp(prefix="endoedge-bench-"))
    ckpt = save_checkpoint(tmp / "ssdlite.pt", make_demo_model())
    onnx_path = export_onnx(load_checkpoint(ckpt), tmp / "ssdlite.onnx").path
    full = [read_image(p) for p in sample_frame_paths()]
    frame_sets = {
        "1920x1080": full,
        "720x576": [cv2.resize(f, (720, 576), interpolation=cv2.INTER_AREA) for f in full],
    }
    dets = {
        "onnxruntime": endoedge.load(onnx_path, backend="onnxruntime", device="cpu"),
        "torch": endoedge.load(ckpt, backend="torch", device="cpu"),
    }
    samples = {size: measure(dets, frames, args) for size, frames in frame_sets.items()}

    env = {
        "machine": machine(),
        "python": sys.version.split()[0],
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "endoedge": endoedge.__version__,
        "runs": args.runs,
        "warmup": args.warmup,
        "block": args.block,
        "block_warmup": args.block_warmup,
        "frames": "10 bundled HoloHub frames, cycled: 1920x1080 as shipped, and resized to 720x576",
        "model": "demo SSDLite320-MobileNetV3 (untrained, BN-calibrated), 3 classes, score 0.5",
    }
    rows = []
    med = {
        (size, n): {k: statistics.median(v) for k, v in s.items()}
        for size, per in samples.items()
        for n, s in per.items()
    }
    for (size, name), m in med.items():
        s = samples[size][name]
        rows.append(
            f"| {size} | {name} | {m['total']:.2f} | {pct(s['total'], 90):.2f} | {m['preprocess']:.2f} | "
            f"{m['infer']:.2f} | {m['postprocess']:.2f} | "
            f"{(m['preprocess'] + m['postprocess']) / m['infer']:.1%} | {m['detections']:.0f} |"
        )
    ort, pt = med[("1920x1080", "onnxruntime")], med[("1920x1080", "torch")]
    ort_sd = med[("720x576", "onnxruntime")]
    lines = [
        START,
        f"Machine: {env['machine']}; Python {env['python']}, onnxruntime {env['onnxruntime']}, "
        f"torch {env['torch']} ({env['torch_threads']} threads). {args.runs} timed calls per "
        f"backend after {args.warmup} warm-up calls, alternating in blocks of {args.block} "
        f"({args.block_warmup} untimed at each block start); medians in ms (`Detector.timings`, "
        "perf_counter_ns). Command: `make bench` (`python benchmarks/bench_detect.py`).",
        "",
        "| frames | backend | detect p50 | detect p90 | pre p50 | infer p50 | post p50 | (pre+post)/infer | detections |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"- `Detector.detect` speed-up at 1920x1080, ONNX Runtime vs PyTorch eager (median total): "
        f"**{pt['total'] / ort['total']:.2f}x** (target >= 3x)",
        f"- bare inference speed-up (median infer): **{pt['infer'] / ort['infer']:.2f}x**",
        f"- ONNX Runtime pre+post vs inference: **{(ort['preprocess'] + ort['postprocess']) / ort['infer']:.1%}** "
        f"at 1920x1080, **{(ort_sd['preprocess'] + ort_sd['postprocess']) / ort_sd['infer']:.1%}** at "
        "720x576 (target <= 15%)",
        "",
        "Raw samples: `benchmarks/results/detect_latency.json`.",
        END,
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "detect_latency.json").write_text(
            json.dumps({"env": env, "samples_ms": samples})
        )
        write_section(text, START, END, "Detector.detect latency: ONNX Runtime vs PyTorch eager (CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
