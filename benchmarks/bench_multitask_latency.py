"""CPU inference latency of the multi-task SSD against the shipped detector's architecture.

    python benchmarks/bench_multitask_latency.py [--runs 30] [--out benchmarks/results/multitask_latency.json]
    python benchmarks/bench_multitask_latency.py --end-to-end shipped.onnx multitask.onnx \
        --out benchmarks/results/multitask_latency_e2e.json

Network only (default): both architectures are exported untrained (the compute does not depend on
the weights) and run with ONNX Runtime, one intra-op thread, batch 1, 320 x 320, interleaved run by
run so that load from other processes hits both alike. ``--end-to-end A B``: two exported models
(e.g. the shipped detector and the multi-task checkpoint) through ``Detector.detect`` on the
bundled 1920 x 1080 frames (frame cleaning as stored in each ONNX, pre-processing, inference, box
decoding and, for the multi-task model, the mask resized to source pixels and the frame label),
one intra-op thread, interleaved call by call. Writes every sample and the medians / ratio as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ARCHS = {"shipped (ssdlite320_efficientnet_lite0)": "ssdlite320_efficientnet_lite0",
         "multitask (ssdlite320_efficientnet_lite0_multitask)": "ssdlite320_efficientnet_lite0_multitask"}


def main() -> int:
    import onnxruntime as ort
    import torch

    from endoedge.export import export_onnx
    from endoedge.models.checkpoint import build_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/multitask_latency.json"))
    ap.add_argument("--end-to-end", nargs=2, type=Path, metavar=("BASE_ONNX", "MULTITASK_ONNX"),
                    help="time Detector.detect of two exported models on the bundled 1080p frames")
    args = ap.parse_args()
    if args.end_to_end:
        return end_to_end(args.end_to_end, args.runs, args.out)
    torch.set_num_threads(1)
    x = np.random.default_rng(0).standard_normal((1, 3, 320, 320)).astype(np.float32)
    sessions = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, arch in ARCHS.items():
            path = export_onnx(build_model(arch, ("polyp",)), Path(tmp) / f"{arch}.onnx").path
            so = ort.SessionOptions()
            so.intra_op_num_threads = so.inter_op_num_threads = 1
            sessions[label] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    for s in sessions.values():
        for _ in range(3):
            s.run(None, {"images": x})
    samples: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(args.runs):
        for label, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, {"images": x})
            samples[label].append((time.perf_counter() - t0) * 1e3)
    med = {k: float(np.median(v)) for k, v in samples.items()}
    base, multi = (med[k] for k in ARCHS)
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.processor()
              or platform.machine(), "onnxruntime": ort.__version__, "threads": 1, "input": [1, 3, 320, 320],
              "median_ms": med, "min_ms": {k: min(v) for k, v in samples.items()}, "ratio_median": multi / base,
              "samples_ms": samples}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for k in ARCHS:
        print(f"{k}: median {med[k]:.1f} ms, min {min(samples[k]):.1f} ms")
    print(f"ratio (median) {multi / base:.3f}; samples in {args.out}")
    return 0


def end_to_end(models: list[Path], runs: int, out: Path) -> int:
    """Median ``Detector.detect`` ms of two ONNX models on the bundled 1080p frames, interleaved."""
    import onnxruntime as ort

    import endoedge
    from endoedge.data.imageio import read_image
    from endoedge.data.samples import sample_frame_paths

    frames = [read_image(p) for p in sample_frame_paths()]
    dets = {p.name: endoedge.load(p, backend="onnxruntime", device="cpu", intra_op_threads=1) for p in models}
    for d in dets.values():
        for f in frames[:3]:
            d.detect(f)
    samples: dict[str, list[float]] = {k: [] for k in dets}
    stages: dict[str, dict[str, list[float]]] = {k: {"clean": [], "preprocess": [], "infer": [], "postprocess": []} for k in dets}
    for i in range(runs):
        for name, d in dets.items():
            t0 = time.perf_counter()
            d.detect(frames[i % len(frames)])
            samples[name].append((time.perf_counter() - t0) * 1e3)
            for stage, v in stages[name].items():
                v.append(float(getattr(d.timings, stage)))
    med = {k: float(np.median(v)) for k, v in samples.items()}
    base, multi = (med[p.name] for p in models)
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.processor()
              or platform.machine(), "onnxruntime": ort.__version__, "threads": 1, "frames": "bundled 1920x1080",
              "median_ms": med, "stage_median_ms": {k: {s: float(np.median(v)) for s, v in st.items()}
                                                    for k, st in stages.items()},
              "ratio_median": multi / base, "samples_ms": samples}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    for k in dets:
        st = result["stage_median_ms"][k]
        print(f"{k}: median {med[k]:.1f} ms (clean {st['clean']:.1f}, pre {st['preprocess']:.1f}, infer {st['infer']:.1f}, "
              f"post {st['postprocess']:.1f})")
    print(f"ratio (median) {multi / base:.3f}; samples in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
