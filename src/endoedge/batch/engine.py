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
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

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
        full_decode: decode every JPEG at full size (else large ones are decoded reduced, see
            :func:`~endoedge.batch.prepare.reduced_side`).
        thumb: longer side in pixels of the thumbnail made of every frame for the study report
            (0: none); the sink then also receives the thumbnails.
    """

    batch_size: int = 8
    workers: int = 2
    decode: str = "threads"
    max_pixels: int = MAX_PIXELS
    full_decode: bool = False
    thumb: int = 0

    def check(self) -> None:
        """Raise :class:`InputError` for a non-positive size or an unknown decode mode."""
        if self.batch_size < 1 or self.workers < 1:
            raise InputError(f"--batch-size and --workers must be >= 1 (got {self.batch_size}, {self.workers})")
        if self.decode not in DECODE_MODES:
            raise InputError(f"--decode must be one of {', '.join(DECODE_MODES)}, got '{self.decode}'")


class RecordSink(Protocol):
    """Receives each batch's records (and, when the engine makes them, each record's thumbnail:
    ``None`` for an error record)."""

    def __call__(self, records: list[dict[str, Any]], thumbs: list[np.ndarray | None] | None = None, /) -> None: ...


def _make_pool(opts: EngineOptions) -> Executor:
    if opts.decode == "processes":
        import multiprocessing as mp

        # spawn: the parent has threads (feeder, ONNX Runtime) that fork would copy half-locked.
        return ProcessPoolExecutor(opts.workers, mp_context=mp.get_context("spawn"))
    return ThreadPoolExecutor(opts.workers, thread_name_prefix="endoedge-decode")


def run_local(source: Source, models: ModelSet | Sequence[ModelSet], sink: RecordSink, *, done: set[str],
              opts: EngineOptions, times: StageTotals, stop: threading.Event | None = None) -> int:
    """Process every input of ``source`` whose key is not in ``done``; return how many.

    ``models``: one :class:`ModelSet`, or several identical ones = inference streams that run
    batches concurrently. ``sink`` receives each batch's records, batches in input order.
    Setting ``stop`` ends the job after the batches in progress (their records are kept).
    """
    opts.check()
    sets = [models] if isinstance(models, ModelSet) else list(models)
    models = sets[0]
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
                    if not put(pool.submit(prepare_frame, item, frame, specs, keep, ms, opts.thumb)):
                        return
                    t0 = time.perf_counter_ns()
            else:
                for item in source.items:
                    if item.key in done:
                        continue
                    if not put(pool.submit(prepare_file, item, specs, keep, opts.max_pixels,
                                              opts.full_decode, opts.thumb)):
                        return
        except BaseException as err:  # noqa: BLE001 - handed to the inference thread
            put(err)
        finally:
            put(_END)

    feeder = threading.Thread(target=feed, name="endoedge-feeder", daemon=True)
    feeder.start()
    processed = 0
    pending: list[Prepared] = []
    # One inference stream per model set: batches run on them concurrently (each with its own
    # ONNX Runtime session), results are handed to the sink in input order.
    free: queue.Queue[ModelSet] = queue.Queue()
    for m in sets:
        free.put(m)
    infer_pool = ThreadPoolExecutor(len(sets), thread_name_prefix="endoedge-infer") if len(sets) > 1 else None
    Done = tuple[list[dict[str, Any]], StageTotals, list[Prepared]]
    running: deque[Future[Done]] = deque()

    def infer(batch: list[Prepared]) -> Done:
        local = StageTotals()
        ms = free.get()
        try:
            records = ms.records(batch, local)
        finally:
            free.put(ms)
        for p in batch:
            local.decode += p.decode_ms
            local.preprocess += p.preprocess_ms
        return records, local, batch

    def deliver(records: list[dict[str, Any]], local: StageTotals, batch: list[Prepared]) -> None:
        nonlocal processed
        times.add(local)
        if opts.thumb:
            sink(records, [p.thumb for p in batch])
        else:
            sink(records)
        processed += len(records)

    def flush() -> None:
        batch = pending.copy()
        pending.clear()
        if infer_pool is None:
            deliver(*infer(batch))
            return
        running.append(infer_pool.submit(infer, batch))
        while len(running) > len(sets) or (running and running[0].done()):
            deliver(*running.popleft().result())

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
        while running:
            deliver(*running.popleft().result())
    finally:
        halt.set()
        _drain(window)
        feeder.join(timeout=10)
        pool.shutdown(wait=True, cancel_futures=True)
        if infer_pool is not None:  # on an error, batches still in flight are dropped (resume redoes them)
            infer_pool.shutdown(wait=True, cancel_futures=True)
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
