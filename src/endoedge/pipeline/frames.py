"""The seams of the capture pipeline: the :class:`Frame` record, and what
:class:`~endoedge.pipeline.runner.Pipeline` needs from its frame source, its detector and its outputs.

The interfaces are structural (:class:`typing.Protocol`):
:class:`~endoedge.pipeline.capture.GstCapture`, :class:`~endoedge.pipeline.capture.FolderCapture`,
:class:`~endoedge.detector.Detector`,
:class:`~endoedge.pipeline.writer.VideoWriter` and :class:`~endoedge.pipeline.writer.DisplaySink`
satisfy them without naming them, and so can a test double or another source (a frame grabber
SDK, a replayed recording). Images are ``H x W x 3`` uint8 BGR arrays; timestamps are in ns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from endoedge.pipeline.gst import BufferView

if TYPE_CHECKING:
    from endoedge.detector import Detections, StageTimes
    from endoedge.endoscopy import FrameCleaner


@dataclass
class Frame:
    """One frame handed to Python.

    Attributes:
        index: arrival order in this run (0-based; frames dropped upstream are not counted).
        pts_ns: presentation timestamp in ns (source clock), or None.
        image: ``H x W x 3`` uint8 BGR.
        t_arrival_ns: ``time.perf_counter_ns()`` when the frame reached Python.
        capture_ms: for live GStreamer sources, the pipeline's running time at arrival minus the
            buffer's running time (how long the frame spent between the source and Python);
            otherwise the time spent pulling/reading the frame. Milliseconds.
        view: the mapped GStreamer buffer ``image`` points into, or None when ``image`` owns its
            memory; :meth:`release` gives it back.
    """

    index: int
    pts_ns: int | None
    image: np.ndarray
    t_arrival_ns: int
    capture_ms: float
    view: BufferView | None = None

    def release(self) -> None:
        """Give the underlying GStreamer buffer back (the image is invalid afterwards)."""
        if self.view is not None:
            self.view.release()
            self.view = None



class StopFlag(Protocol):
    """A flag a blocking read polls to give up early (a :class:`threading.Event`)."""

    def is_set(self) -> bool:
        """Whether the pipeline asked to stop."""
        ...


class CaptureSource(Protocol):
    """A source of frames: started once, read until it returns None, stopped once.

    ``Pipeline`` builds one with its ``make_capture`` factory, calls :meth:`start`, then
    :meth:`read` from its capture thread, and :meth:`stop` at the end or before reconnecting
    (:meth:`read` raising :class:`~endoedge.errors.SourceStalled` asks for a reconnect on live
    sources).

    Attributes:
        dropped_upstream: frames lost before Python saw them (gaps in the source's timestamps).
    """

    dropped_upstream: int

    def start(self) -> None:
        """Open the source (raises :class:`~endoedge.errors.InputError` when it cannot)."""
        ...

    def read(self, stop: StopFlag | None = None) -> Frame | None:
        """The next :class:`Frame`, or None at the end of the source or once ``stop`` is set."""
        ...

    def stop(self) -> None:
        """Release the source (idempotent)."""
        ...


class FrameDetector(Protocol):
    """What the pipeline calls on its detector (an :class:`~endoedge.detector.Detector`)."""

    def detect(self, image_bgr: np.ndarray, /) -> Detections:
        """Detections of one BGR frame, boxes in its pixels; stage times in :attr:`timings`."""
        ...

    @property
    def timings(self) -> StageTimes:
        """Stage times (ms) of the last :meth:`detect` call."""
        ...

    @property
    def cleaner(self) -> FrameCleaner | None:
        """The endoscopy frame cleaner the detector applies, or None (its ``timings`` are read)."""
        ...


class FrameSink(Protocol):
    """Where annotated frames go: a video file, a window."""

    def write(self, image: np.ndarray, pts_ns: int | None = None) -> None:
        """Take one BGR frame with its presentation timestamp (ns, None = by frame count)."""
        ...

    def close(self) -> None:
        """Finish the output (a file is complete afterwards)."""
        ...


class LineSink(Protocol):
    """A text output written one JSON line at a time (an open text file)."""

    def write(self, text: str, /) -> int:
        """Append ``text``."""
        ...

    def flush(self) -> None:
        """Push what was written to the file."""
        ...
