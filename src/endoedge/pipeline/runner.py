"""The capture -> detect -> render pipeline with per-frame, per-stage latency.

Three threads, joined by bounded queues:

1. **capture** pulls frames from the source (GStreamer appsink or image folder). Offline, it
   puts each frame into a small blocking queue (decode runs a few frames ahead of inference, every
   frame is processed). Live, it overwrites a one-slot mailbox: inference always takes the newest
   frame, older unprocessed ones are dropped and counted (latest-frame semantics, bounded latency).
   A live source that stops delivering is rebuilt with exponential back-off and the gap reported.
2. **inference** (the calling thread) runs ``Detector.detect``, then (``stabilizer`` given) the
   temporal stabilizer that decides which boxes are shown; its stage times are recorded.
3. **output** draws boxes, feeds the video writer / display, writes the JSONL line (flushed), and
   releases the frame's GStreamer buffer.

Per-frame timestamps (``time.perf_counter_ns``): arrival in Python, pre-process end, inference
end, post-process end, stabilization end, output written. ``e2e`` = arrival -> result ready
(post-process end, or stabilization end when stabilizing), which includes the time the frame
waited for the detector.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Generic, TypeVar, cast

import numpy as np

from endoedge.errors import EndoedgeError, SourceStalled
from endoedge.pipeline.frames import (
    CaptureSource,
    Frame,
    FrameDetector,
    FrameSink,
    LineSink,
    StopFlag,
)

if TYPE_CHECKING:
    from endoedge.detector import Detections
    from endoedge.pipeline.stabilize import DetectionStabilizer, Stabilized

logger = logging.getLogger(__name__)

STAGES = ("capture", "preprocess", "infer", "postprocess", "render", "e2e")
#: Extra stages recorded when the detector cleans endoscopy frames (``--endoscopy``): ``clean`` is
#: the whole cleaning step (it precedes ``preprocess`` and is inside ``e2e``); the others are its
#: parts (field-of-view analysis/crop, OSD masking, median/wavelet denoise).
CLEAN_STAGES = ("clean", "clean_fov", "clean_osd", "clean_denoise")
#: Extra stage recorded when the pipeline stabilizes detections over time (after ``postprocess``,
#: inside ``e2e``).
STABILIZE_STAGE = "stabilize"
#: The two parts of ``e2e`` per frame, recorded beside the stages: ``queue`` = arrival -> the
#: detector takes the frame (waiting behind earlier frames: offline this is throughput-bound
#: queueing, not processing), ``process`` = the detector's whole call (clean + pre + infer + post).
SPLIT_STAGES = ("queue", "process")
T = TypeVar("T")


class _Done:
    """The end-of-stream marker passed through the pipeline's queues."""


_DONE = _Done()


class LatestSlot(Generic[T]):
    """A one-frame mailbox: ``put`` replaces an unconsumed frame (returned so it can be counted)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._has = False

    def put(self, item: T) -> T | None:
        """Store ``item``; return the item it replaced, or None."""
        with self._cond:
            old = self._item if self._has else None
            self._item, self._has = item, True
            self._cond.notify()
            return old

    def get(self, timeout: float) -> T:
        """Take the newest item; raises ``queue.Empty`` after ``timeout`` seconds without one."""
        with self._cond:
            if not self._has and not self._cond.wait_for(lambda: self._has, timeout):
                raise queue.Empty
            item, self._item, self._has = self._item, None, False
            return cast(T, item)  # _has was set: item is the T that put stored


@dataclass
class RunOptions:
    """How to run: ``live`` latest-frame vs offline every-frame, warm-up, reconnects, limits."""

    live: bool
    warmup: int = 10
    max_frames: int | None = None
    reconnect: bool = True
    backoff_s: tuple[float, float] = (0.5, 8.0)
    max_reconnects: int | None = None
    report_every_s: float = 5.0


@dataclass
class RunStats:
    """What a run measured. Per-frame arrays are in milliseconds, NaN where a stage did not apply."""

    frame_index: list[int] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    warmup_frames: int = 0
    dropped_slot: int = 0
    errors: list[str] = field(default_factory=list)
    gaps: list[dict[str, float]] = field(default_factory=list)
    t_first_ns: int | None = None
    t_last_ns: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def frames(self) -> int:
        """Frames measured (after warm-up)."""
        return len(self.frame_index)

    def fps(self) -> float:
        """Measured frames per second of wall time after warm-up."""
        if self.t_first_ns is None or self.t_last_ns is None or self.frames < 2:
            return math.nan
        return (self.frames - 1) / ((self.t_last_ns - self.t_first_ns) / 1e9)


@dataclass
class _Processed:
    """A frame on its way from inference to the output thread.

    Attributes:
        result: the detector's output.
        stable: what to show instead when stabilizing (None = show ``result``).
        times: per-stage milliseconds for the JSONL record (``capture`` ... ``e2e``, ``wait``).
        post_end_ns: ``time.perf_counter_ns()`` when the result was ready (start of ``render``).
        warm: a warm-up frame (kept out of the statistics).
    """

    frame: Frame
    result: Detections
    stable: Stabilized | None
    times: dict[str, float]
    post_end_ns: int
    warm: bool


_InItem = Frame | _Done


class Pipeline:
    """Run a detector over a source with overlapped capture, inference and output.

    Args:
        detector: an :class:`~endoedge.detector.Detector` (any :class:`FrameDetector`).
        make_capture: builds a fresh, unstarted :class:`CaptureSource` (called again to reconnect).
        options: :class:`RunOptions`.
        video: optional :class:`~endoedge.pipeline.writer.VideoWriter` (any :class:`FrameSink`).
        display: optional :class:`~endoedge.pipeline.writer.DisplaySink` (any :class:`FrameSink`).
        jsonl: optional open text file for detection records (one JSON line per frame).
        on_progress: called with the stats every ``report_every_s`` (e.g. to save a report).
        stabilizer: optional :class:`~endoedge.pipeline.stabilize.DetectionStabilizer`: the
            overlay and the JSONL ``detections`` then hold its shown boxes (with ``track_id``),
            the JSONL ``raw`` the detector's own; it is reset when a live source reconnects.
    """

    def __init__(
        self,
        detector: FrameDetector,
        make_capture: Callable[[], CaptureSource],
        options: RunOptions,
        *,
        video: FrameSink | None = None,
        display: FrameSink | None = None,
        jsonl: LineSink | None = None,
        on_progress: Callable[[RunStats], None] | None = None,
        stabilizer: DetectionStabilizer | None = None,
    ) -> None:
        self.detector = detector
        self.make_capture = make_capture
        self.options = options
        self.video = video
        self.display = display
        self.jsonl = jsonl
        self.on_progress = on_progress
        self.stabilizer = stabilizer
        self._cut = threading.Event()  # set by a reconnect: the stabilizer's tracks are stale
        self.stats = RunStats()
        self.capture: CaptureSource | None = None
        self.dropped_upstream = 0
        self._stop = threading.Event()
        self.interrupted = False  # set by request_stop (signal handlers): a plain flag, no lock
        self._frames_in: LatestSlot[_InItem] | queue.Queue[_InItem] = (
            LatestSlot() if options.live else queue.Queue(maxsize=3))
        self._out: queue.Queue[_Processed | _Done] = queue.Queue(maxsize=4)
        self._capture_error: BaseException | None = None
        self._output_error: BaseException | None = None
        self._processed = 0
        self._canvas = np.empty((0, 0, 3), np.uint8)

    # -- capture thread ---------------------------------------------------------------------
    @property
    def _source(self) -> CaptureSource:
        """The open source (:meth:`run` opens it before the capture thread starts)."""
        if self.capture is None:
            raise EndoedgeError("the pipeline's source is not open; call Pipeline.run()")
        return self.capture

    def _put_frame(self, item: _InItem) -> None:
        if isinstance(self._frames_in, LatestSlot):  # live
            old = self._frames_in.put(item)
            if isinstance(old, Frame):
                old.release()
                with self.stats.lock:
                    self.stats.dropped_slot += 1
            return
        while not self._stop.is_set():
            try:
                self._frames_in.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _capture_loop(self) -> None:
        attempts = 0
        try:
            while not self._stop.is_set():
                try:
                    frame = self._source.read(self._stop)
                except SourceStalled as err:
                    if not (self.options.live and self.options.reconnect):
                        raise
                    attempts += 1
                    if self.options.max_reconnects is not None and attempts > self.options.max_reconnects:
                        raise EndoedgeError(f"{err}; gave up after {attempts - 1} reconnects") from err
                    self._reconnect(str(err), attempts)
                    continue
                if frame is None:
                    break
                attempts = 0
                self._put_frame(frame)
        except BaseException as err:  # noqa: BLE001 - handed to the inference thread
            self._capture_error = err
        finally:
            self._put_frame(_DONE)

    def _reconnect(self, reason: str, attempt: int) -> None:
        lo, hi = self.options.backoff_s
        delay = min(hi, lo * 2 ** (attempt - 1))
        t0 = time.perf_counter()
        logger.warning("%s; reconnecting in %.1f s (attempt %d)", reason, delay, attempt)
        self.dropped_upstream += getattr(self.capture, "dropped_upstream", 0)
        self._cut.set()
        self._source.stop()
        if self._stop.wait(delay):
            return
        try:
            self.capture = self.make_capture()
            self.capture.start()
        except EndoedgeError as err:
            logger.warning("reconnect failed: %s", err)
            self.capture = _DeadCapture(self._source, reason)
        with self.stats.lock:
            self.stats.gaps.append({"attempt": attempt, "backoff_s": delay,
                                    "gap_ms": round((time.perf_counter() - t0) * 1e3, 1)})

    # -- output thread ----------------------------------------------------------------------
    def _output_loop(self) -> None:
        from endoedge.render import draw_detections

        while True:
            item = self._out.get()
            if isinstance(item, _Done):
                return
            frame, result, times, warm = item.frame, item.result, item.times, item.warm
            shown = result if item.stable is None else replace(
                item.stable.shown, mask=result.mask, frame_label=result.frame_label, frame_scores=result.frame_scores)
            try:
                if self._output_error is None:
                    if self.video is not None or self.display is not None:
                        if self._canvas.shape != frame.image.shape:
                            self._canvas = np.empty_like(frame.image)
                        np.copyto(self._canvas, frame.image)  # the source view is read-only
                        annotated = draw_detections(self._canvas, shown)
                        if self.video is not None:
                            self.video.write(annotated, frame.pts_ns)
                        if self.display is not None:
                            self.display.write(annotated, frame.pts_ns)
                    if self.jsonl is not None:
                        record = {"frame": frame.index, "pts_ms": None if frame.pts_ns is None else round(frame.pts_ns / 1e6, 3),
                                  "warmup": warm, "detections": result.to_records(), **result.frame_record(),
                                  "latency_ms": {k: round(v, 3) for k, v in times.items() if not math.isnan(v)}}
                        if item.stable is not None:  # detections = what is shown, raw = the detector's
                            record["raw"] = record["detections"]
                            record["detections"] = item.stable.to_records()
                        self.jsonl.write(json.dumps(record) + "\n")
                        self.jsonl.flush()
            except BaseException as err:  # noqa: BLE001 - reported by the inference thread
                self._output_error = err
                self._stop.set()
            finally:
                frame.release()
            t_done = time.perf_counter_ns()
            if not warm:
                with self.stats.lock:
                    self.stats.stages["render"].append((t_done - item.post_end_ns) / 1e6)

    # -- inference (calling thread) ---------------------------------------------------------
    def run(self) -> RunStats:
        """Process the source until it ends, ``max_frames`` is reached or Ctrl-C; returns the stats.

        The source, writer and JSONL are finalized whatever happens; an error from the capture
        or output thread is re-raised here after finalizing.
        """
        self.capture = self.make_capture()
        self.capture.start()
        cap_thread = threading.Thread(target=self._capture_loop, name="endoedge-capture", daemon=True)
        out_thread = threading.Thread(target=self._output_loop, name="endoedge-output", daemon=True)
        cap_thread.start()
        out_thread.start()
        last_report = time.monotonic()
        try:
            while not self._stop.is_set() and not self.interrupted:
                try:
                    frame = self._frames_in.get(timeout=0.2)
                except queue.Empty:
                    continue
                if isinstance(frame, _Done):
                    break
                self._process(frame)
                if self.options.max_frames is not None and self._processed >= self.options.max_frames:
                    break
                if self.on_progress is not None and time.monotonic() - last_report > self.options.report_every_s:
                    last_report = time.monotonic()
                    self.on_progress(self.stats)
        finally:
            self._stop.set()
            cap_thread.join(timeout=10)
            self._drain_input()
            self._out.put(_DONE)
            out_thread.join(timeout=30)
            self.capture.stop()
        for err in (self._capture_error, self._output_error):
            if err is not None:
                raise err
        return self.stats

    def request_stop(self) -> None:
        """Ask :meth:`run` to finish after the frame in hand (safe from a signal handler).

        Only sets a flag: a handler that raised instead (``KeyboardInterrupt``) could land while
        the main thread holds one of the pipeline's locks and leave it held for the threads that
        still have to finalize the outputs.
        """
        self.interrupted = True

    def _drain_input(self) -> None:
        while True:
            try:
                if isinstance(self._frames_in, LatestSlot):  # live
                    item = self._frames_in.get(timeout=0)
                else:
                    item = self._frames_in.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, Frame):
                item.release()

    def _process(self, frame: Frame) -> None:
        det = self.detector
        t_start = time.perf_counter_ns()
        result = det.detect(frame.image)
        t_end = t_det = time.perf_counter_ns()
        stable = None
        if self.stabilizer is not None:
            if self._cut.is_set():
                self._cut.clear()
                self.stabilizer.reset()
            stable = self.stabilizer.update(result)
            t_end = time.perf_counter_ns()
        st = det.timings
        warm = self._processed < self.options.warmup
        self._processed += 1
        cleaner = det.cleaner
        times = {
            "capture": frame.capture_ms,
            "preprocess": st.preprocess,
            "infer": st.infer,
            "postprocess": st.postprocess,
            "e2e": (t_end - frame.t_arrival_ns) / 1e6,
            "wait": (t_start - frame.t_arrival_ns) / 1e6,
        }
        if stable is not None:
            times[STABILIZE_STAGE] = (t_end - t_det) / 1e6
        with self.stats.lock:
            if warm:
                self.stats.warmup_frames += 1
            else:
                if self.stats.t_first_ns is None:
                    self.stats.t_first_ns = t_end
                self.stats.t_last_ns = t_end
                self.stats.frame_index.append(frame.index)
                for key in ("capture", "preprocess", "infer", "postprocess", "e2e"):
                    self.stats.stages[key].append(float(times[key]))
                if stable is not None:
                    self.stats.stages.setdefault(STABILIZE_STAGE, []).append(float(times[STABILIZE_STAGE]))
                self.stats.stages.setdefault("queue", []).append(float(times["wait"]))
                self.stats.stages.setdefault("process", []).append((t_end - t_start) / 1e6)
                if cleaner is not None:
                    ct = cleaner.timings
                    for key, value in zip(CLEAN_STAGES, (st.clean, ct.fov, ct.osd, ct.denoise), strict=True):
                        self.stats.stages.setdefault(key, []).append(float(value))
        self._out.put(_Processed(frame, result, stable, times, t_end, warm))

    @property
    def dropped(self) -> int:
        """Frames lost: dropped in the latest-frame slot plus gaps in the source's timestamps."""
        return self.stats.dropped_slot + self.dropped_upstream + getattr(self.capture, "dropped_upstream", 0)


class _DeadCapture:
    """Stands in for a source that could not be reopened: stalls at once so the back-off continues."""

    def __init__(self, previous: CaptureSource, reason: str) -> None:
        self.previous = previous
        self.reason = reason
        self.dropped_upstream = 0

    def start(self) -> None:
        """Nothing to open."""

    def read(self, stop: StopFlag | None = None) -> Frame | None:
        raise SourceStalled(self.reason)

    def stop(self) -> None:
        """Nothing to stop."""


def per_frame_arrays(stats: RunStats) -> dict[str, np.ndarray]:
    """The per-frame stage latencies as float arrays (ms), render aligned to the frames it has."""
    with stats.lock:
        return {k: np.asarray(v, dtype=np.float64) for k, v in stats.stages.items() if len(v)}
