"""GPU check for a lent NVIDIA GPU (no TensorRT, no ONNX Runtime GPU, no network): one JSON of what ran.

Sections (each records ``ran``, its numbers, or the error that stopped it; nothing is claimed
that did not run):

* ``env``: Python, torch (+ CUDA), torchvision, cuda-bindings, cupy, onnxruntime, OpenCV; the GPU.
* ``torch_backend``: endoedge's torch backend on the shipped detector (SSDLite-EfficientNet-Lite0)
  on CUDA in FP32 and FP16 against the same backend on the CPU (FP32), on bundled colonoscopy
  frames pre-processed by endoedge: max |difference| of the raw heads, and detections through
  endoedge's decoder (boxes matched within 1 px / same class); CUDA-event latency per batch.
* ``cuda_mem``: ``endoedge.tensorrt.cuda_mem`` through cuda-bindings (what the TensorRT backends
  use): pinned ``PinnedBuffer``s, ``cudaMemcpyAsync`` H2D/D2H on a stream, a round trip checked
  byte for byte (and, with cupy, the device bytes read by cupy), CUDA-event timings (GB/s),
  and a CUDA graph of the copies captured and replayed.

Usage: ``python benchmarks/gpu_check.py --json OUT.json`` (``benchmarks/gpu_check.sh`` wraps it with
a time limit). On a machine without a GPU every GPU section says why it did not run; exit 0.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "src" / "endoedge" / "models" / "weights" / "polyp_ssdlite320_effl0_kvasir.pt"


def _section(name: str, fn: Callable[[], dict[str, Any]], out: dict[str, Any]) -> None:
    t0 = time.perf_counter()
    try:
        res = fn()
        res.setdefault("ran", True)
    except Exception as err:  # noqa: BLE001 - a check script records every failure and goes on
        res = {"ran": False, "error": f"{type(err).__name__}: {err}",
               "traceback": traceback.format_exc(limit=4)[-1500:]}
    res["seconds"] = round(time.perf_counter() - t0, 2)
    out[name] = res
    print(f"[{name}] {'ran' if res['ran'] else 'did not run: ' + res.get('error', '')} ({res['seconds']} s)",
          file=sys.stderr)


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception as err:  # noqa: BLE001
        return f"absent ({type(err).__name__}: {str(err)[:120]})"
    return str(getattr(mod, "__version__", "?"))


def env() -> dict[str, Any]:
    out: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for m in ("numpy", "torch", "torchvision", "cv2", "onnxruntime", "cupy", "cuda"):
        out[m] = _version(m)
    try:
        from cuda.bindings import __version__ as cb  # cuda-bindings (cuda-python >= 12.6)

        out["cuda-bindings"] = str(cb)
    except Exception as err:  # noqa: BLE001
        out["cuda-bindings"] = f"absent ({type(err).__name__})"
    import torch

    out["torch_cuda"] = torch.version.cuda
    out["cuda_available"] = bool(torch.cuda.is_available())
    if out["cuda_available"]:
        p = torch.cuda.get_device_properties(0)
        out["gpu"] = {"name": p.name, "cc": f"{p.major}.{p.minor}", "sms": p.multi_processor_count,
                      "memory_gib": round(p.total_memory / 2**30, 1)}
    return out


def _cuda_ms(torch: Any, fn: Callable[[], Any], repeats: int) -> list[float]:
    """CUDA-event milliseconds of ``fn`` per call (after 3 warm-up calls)."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return times


def _matched(a: Any, b: Any) -> float:
    """Share of ``a``'s detections that ``b`` has: same class, every coordinate within 1 px."""
    if len(a.boxes) == 0:
        return 1.0
    if len(b.boxes) == 0:
        return 0.0
    close = np.abs(a.boxes[:, None, :] - b.boxes[None, :, :]).max(-1) <= 1.0
    close &= a.class_ids[:, None] == b.class_ids[None, :]
    return float(close.any(axis=1).mean())


def torch_backend(batches: tuple[int, ...], repeats: int) -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"ran": False, "error": "torch sees no CUDA GPU"}
    import endoedge
    from endoedge.models.checkpoint import load_for_torch
    from endoedge.preprocess import real_looking_batch
    from endoedge.runtime.pytorch import TorchBackend

    loaded = load_for_torch(WEIGHTS)
    x = real_looking_batch(loaded.spec, max(batches))
    out: dict[str, Any] = {"model": WEIGHTS.name, "input": list(x.shape)}
    with TorchBackend(WEIGHTS, device="cpu", loaded=loaded) as cpu:
        ref = cpu.infer({"images": x})
    for precision in ("fp32", "fp16"):
        res: dict[str, Any] = {}
        with TorchBackend(WEIGHTS, device="cuda", loaded=loaded, precision=precision) as gpu:
            got = gpu.infer({"images": x})
            res["max_abs_diff"] = {k: float(np.abs(got[k] - ref[k]).max()) for k in ref}
            res["ref_max_abs"] = {k: float(np.abs(ref[k]).max()) for k in ref}
            for n in batches:
                xb = {"images": x[:n]}
                ms = _cuda_ms(torch, lambda xb=xb: gpu.infer(xb), repeats)
                res[f"batch{n}_ms_median"] = round(statistics.median(ms), 3)
                res[f"batch{n}_ms_p90"] = round(float(np.percentile(ms, 90)), 3)
        out[precision] = res
    # end to end: endoedge's decoder on CPU vs CUDA outputs (frames, not tensors)
    from endoedge.data.imageio import read_image
    from endoedge.data.samples import sample_frame_paths

    frames = [read_image(p) for p in sample_frame_paths()[:6]]
    with endoedge.load(WEIGHTS, backend="torch", device="cpu") as det:
        cpu_dets = det.detect_batch(frames)
    for precision in ("fp32", "fp16"):
        with endoedge.load(WEIGHTS, backend="torch", device="cuda", precision=precision) as det:
            gpu_dets = det.detect_batch(frames)
        out[precision]["detections_cpu"] = sum(len(d.boxes) for d in cpu_dets)
        out[precision]["detections_gpu"] = sum(len(d.boxes) for d in gpu_dets)
        out[precision]["matched_both_ways_min"] = round(min(
            min(_matched(a, b), _matched(b, a)) for a, b in zip(cpu_dets, gpu_dets, strict=True)), 4)
    return out


def cuda_mem(mib: int, repeats: int) -> dict[str, Any]:
    from endoedge.tensorrt.cuda_mem import PinnedBuffer, open_cuda

    cuda = open_cuda(0, "cuda-python")
    out: dict[str, Any] = {"api": cuda.name, "device_count": cuda.device_count(),
                           "device": [str(v) if isinstance(v, bytes | str) else v for v in cuda.device_properties(0)]}
    nbytes = mib << 20
    src, dst = PinnedBuffer(cuda), PinnedBuffer(cuda)
    stream = cuda.stream_create()
    events = [cuda.event_create() for _ in range(3)]
    try:
        src.ensure(nbytes)
        dst.ensure(nbytes)
        host_in = src.host((nbytes,), np.dtype(np.uint8))
        host_in[:] = np.random.default_rng(0).integers(0, 256, nbytes, dtype=np.uint8)
        host_out = dst.host((nbytes,), np.dtype(np.uint8))
        h2d, d2h = [], []
        for _ in range(repeats):
            host_out[:] = 0
            cuda.event_record(events[0], stream)
            cuda.memcpy_htod_async(src.device, host_in, nbytes, stream)
            cuda.event_record(events[1], stream)
            cuda.memcpy_dtoh_async(host_out, src.device, nbytes, stream)
            cuda.event_record(events[2], stream)
            cuda.stream_synchronize(stream)
            h2d.append(cuda.event_elapsed_ms(events[0], events[1]))
            d2h.append(cuda.event_elapsed_ms(events[1], events[2]))
        out["round_trip_equal"] = bool(np.array_equal(host_in, host_out))
        out["bytes"] = nbytes
        out["h2d_ms_median"] = round(statistics.median(h2d), 3)
        out["d2h_ms_median"] = round(statistics.median(d2h), 3)
        out["h2d_gb_s"] = round(nbytes / 1e9 / (statistics.median(h2d) / 1e3), 2)
        out["d2h_gb_s"] = round(nbytes / 1e9 / (statistics.median(d2h) / 1e3), 2)
        try:  # an independent reader of the device bytes
            import cupy

            mem = cupy.cuda.UnownedMemory(src.device, nbytes, owner=None)
            view = cupy.ndarray((nbytes,), dtype=cupy.uint8, memptr=cupy.cuda.MemoryPointer(mem, 0))
            out["cupy_reads_same_device_bytes"] = bool(np.array_equal(cupy.asnumpy(view), host_in))
        except Exception as err:  # noqa: BLE001
            out["cupy_reads_same_device_bytes"] = f"not checked ({type(err).__name__}: {str(err)[:200]})"
        # a CUDA graph of the two copies, as the TensorRT backend captures its enqueue
        host_out[:] = 0
        cuda.graph_capture_begin(stream)
        cuda.memcpy_htod_async(src.device, host_in, nbytes, stream)
        cuda.memcpy_dtoh_async(host_out, src.device, nbytes, stream)
        graph = cuda.graph_capture_end(stream)
        cuda.graph_launch(graph, stream)
        cuda.stream_synchronize(stream)
        out["graph_replay_equal"] = bool(np.array_equal(host_in, host_out))
        cuda.graph_destroy(graph)
    finally:
        for e in events:
            cuda.event_destroy(e)
        cuda.stream_destroy(stream)
        src.release()
        dst.release()
        cuda.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=Path("gpu_check.json"))
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--copy-mib", type=int, default=64)
    args = ap.parse_args(argv)
    out: dict[str, Any] = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "command": " ".join(sys.argv)}
    _section("env", env, out)
    _section("torch_backend", lambda: torch_backend(tuple(args.batches), args.repeats), out)
    _section("cuda_mem", lambda: cuda_mem(args.copy_mib, min(args.repeats, 20)), out)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
