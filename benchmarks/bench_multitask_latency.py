"""CPU inference latency of the multi-task SSD against the shipped detector's architecture.

    python benchmarks/bench_multitask_latency.py [--runs 30] [--out benchmarks/results/multitask_latency.json]

Both architectures are exported untrained (the compute does not depend on the weights) and run
with ONNX Runtime, one intra-op thread, batch 1, 320 x 320, interleaved run by run so that load
from other processes hits both alike. Writes every sample and the medians / ratio as JSON.
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
    args = ap.parse_args()
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


if __name__ == "__main__":
    raise SystemExit(main())
