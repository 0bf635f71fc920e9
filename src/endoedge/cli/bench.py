"""``endoedge bench MODEL...``: inference-only latency per model, backend and batch size."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from endoedge._optional import is_installed
from endoedge.cli._common import add_tensorrt_options, int_at_least
from endoedge.cli._jetson_opts import add_jetson_options, jetson_monitoring
from endoedge.errors import BackendUnavailableError, EndoedgeError, InputError

if TYPE_CHECKING:
    from endoedge.cli._common import SubParsers

logger = logging.getLogger(__name__)

DEFINITION = (
    "Latency here = host wall time (time.perf_counter_ns) of one synchronous backend.infer call "
    "on one batch, with the input already pre-processed in host memory. It includes host<->device "
    "copies on GPU backends (like trtexec's Latency with data transfers, not its GPU Compute "
    "Time) and excludes decoding, pre-processing, post-processing (box decoding, NMS) and "
    "rendering: `endoedge run --report` measures those per stage. Throughput = batch x 1000 / "
    "mean latency (images/s). With the tensorrt backend, CUDA events also give the GPU parts of "
    "each call, as trtexec reports them: H2D copy, GPU compute, D2H copy."
)


_count = int_at_least  # argparse type: a whole number >= minimum


def batch_sizes(text: str) -> tuple[int, ...]:
    """argparse type for ``--batch 1,2,4``: positive whole numbers, duplicates dropped."""
    parse = _count(1)
    sizes = tuple(dict.fromkeys(parse(t.strip()) for t in text.split(",") if t.strip()))
    if not sizes:
        raise argparse.ArgumentTypeError("give at least one batch size, e.g. 1 or 1,2,4")
    return sizes


def seconds(text: str) -> float:
    """argparse type for ``--duration``: non-negative seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} s: use 0 or more seconds")
    return value


def add_parser(sub: SubParsers) -> None:
    """Register the ``bench`` subcommand."""
    from endoedge.runtime import backend_names

    p = sub.add_parser(
        "bench",
        help="inference-only latency and throughput per model, backend and batch size (like trtexec)",
        description="Measure inference latency like trtexec: build each backend, warm up, time N "
        "calls per (model, backend, batch), alternating cases in blocks so machine noise hits all "
        "equally; print mean/p50/p90/p95/p99/p99.9/max and images/s; optionally write JSON with "
        "the environment and every raw sample. Input: the model's own pre-processing of the "
        "bundled HoloHub colonoscopy frames, stacked to the batch size. " + DEFINITION,
    )
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help=".onnx, TensorRT .engine or endoedge checkpoint; several = side by side (e.g. fp32.onnx fp16.onnx int8.onnx)")
    p.add_argument("--backend", default="auto",
                   help="auto (by file type), all (every installed backend that can run the model; the "
                   f"others are skipped with the reason) or a comma-separated list of: {', '.join(backend_names())}")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda[:N] (onnxruntime also tensorrt[:N])")
    p.add_argument("--batch", type=batch_sizes, default=None,
                   help="comma-separated batch sizes, e.g. 1,2,4 (default 1, or a fixed-batch model's own batch)")
    p.add_argument("--warmup", type=_count(0), default=20, help="untimed calls per case before timing (default 20; at least 1 runs, it checks the input)")
    p.add_argument("--iterations", type=_count(1), default=200, help="timed calls per case, at least (default 200)")
    p.add_argument("--duration", type=seconds, default=0.0,
                   help="also time each case for at least this many seconds (default 0)")
    p.add_argument("--threads", type=_count(1), default=None,
                   help="intra-op threads (onnxruntime session, torch.set_num_threads); default: the library's")
    p.add_argument("--block", type=_count(1), default=25,
                   help="calls per case before switching to the next (default 25)")
    p.add_argument("--block-warmup", type=_count(0), default=5,
                   help="untimed calls at the start of each block when cases alternate (default 5)")
    add_tensorrt_options(p)
    p.add_argument("--json", metavar="OUT.json", help="write env, settings, results with raw samples_ms")
    p.add_argument("--plot", metavar="OUT.png", help="latency over iterations and CDF per case (needs matplotlib)")
    add_jetson_options(p)
    p.set_defaults(func=run)


def _check_output(path: str | None, flag: str) -> None:
    """Fail before measuring when an output path is obviously unusable."""
    if path and Path(path).is_dir():
        raise InputError(f"{flag} '{path}' is a folder; give a file name")


def run(args: argparse.Namespace) -> int:
    """Benchmark; see the subcommand's description. Returns 130 when interrupted (partial results)."""
    from endoedge.benchmarks import bench
    from endoedge.stats import plot_latency, write_json

    _check_output(args.json, "--json")
    _check_output(args.plot, "--plot")
    if args.plot and not is_installed("matplotlib"):
        raise BackendUnavailableError("--plot needs matplotlib; install it with: pip install matplotlib")
    if args.block_warmup >= args.block:
        raise InputError(f"--block-warmup ({args.block_warmup}) must be smaller than --block ({args.block})")
    trt_options = {k: True for k in ("rebuild_if_stale", "cuda_graph") if getattr(args, k, False)}
    cases, skipped = bench.plan(args.models, backend=args.backend, device=args.device,
                                batches=args.batch, threads=args.threads, trt_options=trt_options)
    try:
        for s in skipped:
            print(f"skipped: {s}")
        if not cases:
            raise EndoedgeError("nothing to benchmark: " + "; ".join(str(s) for s in skipped))
        with jetson_monitoring(args, warmup=args.warmup) as jetson:
            measured, late, interrupted = bench.measure(
                cases, warmup=args.warmup, iterations=args.iterations, duration_s=args.duration,
                block=args.block, block_warmup=args.block_warmup, on_skip=lambda s: print(f"skipped: {s}"),
            )
        skipped += late
        if not measured:
            if interrupted:
                raise KeyboardInterrupt
            raise EndoedgeError("nothing was measured: " + "; ".join(str(s) for s in late))
        settings = {"models": [str(m) for m in args.models], "backend": args.backend, "device": args.device,
                    "batch": list(args.batch) if args.batch else None, "warmup": max(1, args.warmup),
                    "iterations": args.iterations, "duration_s": args.duration, "threads": args.threads,
                    "block": args.block, "block_warmup": args.block_warmup}
        rep = bench.report(measured, skipped, settings=settings, interrupted=interrupted)
        if jetson:
            rep["jetson"] = jetson
    finally:
        bench.close(cases)
    print(bench.table(rep["results"]))
    gpu = bench.gpu_table(rep["results"])
    if gpu:
        print(gpu)
    print(f"latency: {bench.LATENCY_DEFINITION}")
    if interrupted:
        print("interrupted: statistics of the calls timed so far")
    if args.json:
        write_json(args.json, rep)
        print(f"results with raw samples: {args.json}")
    if args.plot:
        plot_latency({c.row: np.asarray(c.samples_ms) for c in measured}, args.plot,
                     title="endoedge bench: backend.infer latency per batch")
        print(f"plot: {args.plot}")
    return 130 if interrupted else 0
