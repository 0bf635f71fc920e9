"""The local engine: decode + pre-process in a pool of threads or processes, overlapping batched
inference on the calling thread; records are handed to a sink as each batch finishes.

A feeder thread walks the inputs and submits work to the pool through a bounded queue (so at
most a few batches are decoded ahead and memory stays flat on a 50,000-image study); the calling
thread takes results in input order, forms batches of ``batch_size`` and runs every model on
them. OpenCV and ONNX Runtime release the GIL, so threads decode while inference runs.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from endoedge.batch.decode import MAX_PIXELS
from endoedge.batch.models import ModelSet, StageTotals
from endoedge.batch.prepare import Prepared, prepare_file, prepare_frame
from endoedge.batch.sources import Source
from endoedge.errors import InputError

logger = logging.getLogger(__name__)

DECODE_MODES = ("threads", "processes")
_END = object()


@dataclass
class EngineOptions:
    """How the local engine runs.

    Attributes:
        batch_size: images per inference batch.
        workers: decode/pre-process workers.
        decode: ``"threads"`` or ``"processes"`` (see ``benchmarks/RESULTS.md`` for the choice).
        max_pixels: decode limit per image (see :mod:`endoedge.batch.decode`).
    """

    batch_size: int = 16
    workers: int = 2
    decode: str = "threads"
    max_pixels: int = MAX_PIXELS

    def check(self) -> None:
        """Raise :class:`InputError` for a non-positive size or an unknown decode mode."""
        if self.batch_size < 1 or self.workers < 1:
            raise InputError(f"--batch-size and --workers must be >= 1 (got {self.batch_size}, {self.workers})")
        if self.decode not in DECODE_MODES:
            raise InputError(f"--decode must be one of {', '.join(DECODE_MODES)}, got '{self.decode}'")


RecordSink = Callable[[list[dict[str, Any]]], None]


def _make_pool(opts: EngineOptions) -> Executor:
    if opts.decode == "processes":
        import multiprocessing as mp

        # spawn: the parent has threads (feeder, ONNX Runtime) that fork would copy half-locked.
        return ProcessPoolExecutor(opts.workers, mp_context=mp.get_context("spawn"))
    return ThreadPoolExecutor(opts.workers, thread_name_prefix="endoedge-decode")


def run_local(source: Source, models: ModelSet, sink: RecordSink, *, done: set[str],
              opts: EngineOptions, times: StageTotals, stop: threading.Event | None = None) -> int:
    """Process every input of ``source`` whose key is not in ``done``; return how many.

    ``sink`` receives each batch's records (in input order within the batch). Setting ``stop``
    ends the job after the batch in progress (already written records are kept).
    """
    opts.check()
    stop = stop or threading.Event()
    halt = threading.Event()  # ends the feeder; set on any exit (``stop`` is the caller's request)
    specs, keep = list(models.specs), models.needs_image
    window: queue.Queue[Any] = queue.Queue(maxsize=opts.batch_size * 2 + opts.workers)
    pool = _make_pool(opts)

    def put(fut: Any) -> bool:
        while not (stop.is_set() or halt.is_set()):
            try:
                window.put(fut, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def feed() -> None:
        try:
            if source.kind == "video":
                t0 = time.perf_counter_ns()
                for item, frame in source.frames(skip=done):
                    if frame is None:
                        t0 = time.perf_counter_ns()
                        continue
                    ms = (time.perf_counter_ns() - t0) / 1e6
                    if not put(pool.submit(prepare_frame, item, frame, specs, keep, ms)):
                        return
                    t0 = time.perf_counter_ns()
            else:
                for item in source.items:
                    if item.key in done:
                        continue
                    if not put(pool.submit(prepare_file, item, specs, keep, opts.max_pixels)):
                        return
        except BaseException as err:  # noqa: BLE001 - handed to the inference thread
            put(err)
        finally:
            put(_END)

    feeder = threading.Thread(target=feed, name="endoedge-feeder", daemon=True)
    feeder.start()
    processed = 0
    pending: list[Prepared] = []

    def flush() -> None:
        nonlocal processed
        records = models.records(pending, times)
        for p in pending:
            times.decode += p.decode_ms
            times.preprocess += p.preprocess_ms
        sink(records)
        processed += len(pending)
        pending.clear()

    try:
        while not stop.is_set():
            got = window.get()
            if got is _END:
                break
            if isinstance(got, BaseException):
                raise got
            fut: Future[Prepared] = got
            pending.append(fut.result())
            if len(pending) >= opts.batch_size:
                flush()
        if pending and not stop.is_set():
            flush()
    finally:
        halt.set()
        _drain(window)
        feeder.join(timeout=10)
        pool.shutdown(wait=True, cancel_futures=True)
    return processed


def _drain(q: queue.Queue[Any]) -> None:
    while True:
        try:
            got = q.get_nowait()
        except queue.Empty:
            return
        if isinstance(got, Future):
            got.cancel()


def describe(opts: EngineOptions, models: Sequence[Any]) -> str:
    """One line: engine, workers, batch size."""
    return f"local engine, {opts.workers} decode {opts.decode}, batch {opts.batch_size}, {len(models)} model(s)"
