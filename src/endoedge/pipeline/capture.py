"""Frame sources for the pipeline: a GStreamer appsink puller and an image-folder player.

Both are :class:`~endoedge.pipeline.frames.CaptureSource` objects handing out
:class:`~endoedge.pipeline.frames.Frame` objects whose ``image`` is an ``H x W x 3`` uint8 BGR
array. For GStreamer it is a read-only view of the mapped buffer (row stride from the caps); call
:meth:`Frame.release` when done with it. (``Frame`` and ``SourceStalled`` are defined in
:mod:`endoedge.pipeline.frames` and :mod:`endoedge.errors`; they stay importable from here.)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from endoedge.errors import EndoedgeError, InputError, SourceStalled
from endoedge.pipeline.frames import Frame, StopFlag
from endoedge.pipeline.gst import BufferView, gst
from endoedge.spec.redact import redact

logger = logging.getLogger(__name__)


def _describe_gst_error(err: Any, debug: str | None, location: str) -> str:
    """One line for a GStreamer error (credentials masked: a URL may be quoted in the message)."""
    return redact(_gst_error_line(err, debug, redact(location)))


def _gst_error_line(err: Any, debug: str | None, location: str) -> str:
    msg = str(err.message)
    text = f"{msg} {debug or ''}".lower()
    if "missing" in text and "plug" in text or "no suitable plugins" in text or "missing decoder" in text:
        return (f"no GStreamer decoder for '{location}' ({msg}); install gstreamer1.0-libav and "
                "gstreamer1.0-plugins-bad/ugly, or convert the video to H.264 MP4")
    if "could not determine type" in text or "stream doesn't contain enough data" in text:
        return f"'{location}' is not a video GStreamer can read ({msg}); is the file complete?"
    if "not found" in text or "no such file" in text or "could not open" in text and "rtsp" not in location:
        return f"cannot open '{location}': {msg}"
    if location.lower().startswith(("rtsp://", "rtsps://", "udp://", "rtp://")):
        return f"stream '{location}' unreachable or refused ({msg}); check the URL, network and credentials"
    if "not-negotiated" in text or "not negotiated" in text:
        return f"'{location}': the requested caps (width/height/fps/format) are not supported ({msg})"
    return f"GStreamer error on '{location}': {msg}"


class GstCapture:
    """Pull BGR frames from a pipeline ending in ``appsink name=sink``.

    Args:
        description: gst-launch pipeline description.
        location: what to name in error messages (file, device, URL; credentials are masked).
        live: the source runs in real time (capture delay measured against the pipeline clock).
        stall_timeout_s: :meth:`read` raises :class:`SourceStalled` after this long without a frame.
    """

    def __init__(self, description: str, *, location: str, live: bool, stall_timeout_s: float = 5.0) -> None:
        self.description = description
        self.location = redact(location)
        self.live = live
        self.stall_timeout_s = stall_timeout_s
        self.dropped_upstream = 0
        self._pipeline: Any = None
        self._sink: Any = None
        self._bus: Any = None
        self._index = 0
        self._last_pts: int | None = None
        self._frame_ns: float | None = None
        self._info: Any = None
        self._caps: Any = None

    def start(self) -> None:
        """Build and start the pipeline.

        Raises:
            InputError: the description does not parse or the pipeline refuses to start.
        """
        g = gst()
        try:
            self._pipeline = g.Gst.parse_launch(self.description)
        except Exception as err:  # noqa: BLE001 - GLib.Error
            raise InputError(redact(f"bad GStreamer pipeline ({err}); pipeline was: {self.description}")) from err
        self._sink = self._pipeline.get_by_name("sink")
        if self._sink is None:
            raise InputError("the pipeline has no element named 'sink'; end it with 'appsink name=sink'")
        self._bus = self._pipeline.get_bus()
        if self._pipeline.set_state(g.Gst.State.PLAYING) == g.Gst.StateChangeReturn.FAILURE:
            self._raise_bus_error()
            self.stop()
            raise InputError(f"GStreamer could not start '{self.location}'")

    def _raise_bus_error(self) -> None:
        Gst = gst().Gst
        msg = self._bus.pop_filtered(Gst.MessageType.ERROR)
        if msg is not None:
            err, debug = msg.parse_error()
            self.stop()
            raise InputError(_describe_gst_error(err, debug, self.location))

    def read(self, stop: StopFlag | None = None) -> Frame | None:
        """The next frame, or None at end of stream (or when ``stop`` — a threading.Event — is set).

        Raises:
            InputError: the pipeline posted an error (unreadable file, unsupported codec, ...).
            SourceStalled: no frame for ``stall_timeout_s`` seconds.
        """
        g = gst()
        Gst = g.Gst
        deadline = time.monotonic() + self.stall_timeout_s
        while True:
            if stop is not None and stop.is_set():
                return None
            sample = self._sink.try_pull_sample(100 * Gst.MSECOND)
            if sample is not None:
                break
            self._raise_bus_error()
            if self._sink.is_eos():
                return None
            if time.monotonic() > deadline:
                raise SourceStalled(f"'{self.location}' delivered no frame for {self.stall_timeout_s:g} s")
        t_arrival = time.perf_counter_ns()
        caps = sample.get_caps()
        if caps is not self._caps and (self._caps is None or not caps.is_equal(self._caps)):
            self._info = g.GstVideo.VideoInfo.new_from_caps(caps)
            fps_n, fps_d = self._info.fps_n, self._info.fps_d
            self._frame_ns = 1e9 * fps_d / fps_n if fps_n > 0 else None
        self._caps = caps
        info = self._info
        buf = sample.get_buffer()
        pts = None if buf.pts == Gst.CLOCK_TIME_NONE else int(buf.pts)
        capture_ms = math.nan
        if self.live and pts is not None:
            clock = self._pipeline.get_clock()
            segment = sample.get_segment()
            if clock is not None and segment is not None:
                running_now = clock.get_time() - self._pipeline.get_base_time()
                buf_running = segment.to_running_time(Gst.Format.TIME, pts)
                capture_ms = (running_now - buf_running) / 1e6
        self._count_gap(pts)
        view = BufferView(sample, info.width, info.height, info.stride[0])
        if not self.live:
            capture_ms = (time.perf_counter_ns() - t_arrival) / 1e6
        frame = Frame(self._index, pts, view.array, t_arrival, capture_ms, view)
        self._index += 1
        return frame

    def _count_gap(self, pts: int | None) -> None:
        if pts is not None and self._last_pts is not None and self._frame_ns:
            missing = round((pts - self._last_pts) / self._frame_ns) - 1
            if missing > 0:
                self.dropped_upstream += missing
        self._last_pts = pts

    def stop(self) -> None:
        """Stop the pipeline and free it (idempotent)."""
        if self._pipeline is not None:
            self._pipeline.set_state(gst().Gst.State.NULL)
            self._pipeline = None
            self._sink = None
            self._bus = None


class FolderCapture:
    """Play image files as a stream: paced at ``fps`` when live, as fast as possible otherwise.

    Unreadable images are skipped with a warning and counted in ``skipped``.
    """

    def __init__(self, files: Sequence[str | Path], *, fps: float, live: bool, loop: bool = False) -> None:
        self.files = files
        self.fps = fps
        self.live = live
        self.loop = loop
        self.dropped_upstream = 0
        self.skipped = 0
        self.location = f"{len(files)} images"
        self._pos = 0
        self._index = 0
        self._t0: float | None = None

    def start(self) -> None:
        """Reset to the first image."""
        self._pos = 0
        self._t0 = None

    def read(self, stop: StopFlag | None = None) -> Frame | None:
        """The next readable image as a :class:`Frame`, or None after the last one."""
        from endoedge.data.imageio import read_image

        while True:
            if stop is not None and stop.is_set():
                return None
            if self._pos >= len(self.files):
                if not self.loop or self.skipped >= len(self.files):
                    return None
                self._pos = 0
            n = self._pos
            self._pos += 1
            if self.live:
                if self._t0 is None:
                    self._t0 = time.monotonic()
                due = self._t0 + self._index / self.fps
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            t0 = time.perf_counter_ns()
            try:
                image = read_image(self.files[n])
            except EndoedgeError as err:
                self.skipped += 1
                logger.warning("skipping %s", err)
                continue
            t1 = time.perf_counter_ns()
            frame = Frame(self._index, int(self._index * 1e9 / self.fps), image, t1, (t1 - t0) / 1e6)
            self._index += 1
            return frame

    def stop(self) -> None:
        """Nothing to free."""
