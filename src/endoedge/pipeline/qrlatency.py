"""Source-to-output ("glass-to-glass") latency read from QR time stamps in the pixels.

``endoedge latency`` builds this loop, all on the machine under test:

1. **stamp**: a live ``videotestsrc`` runs through GStreamer's ``debugqroverlay`` (gst-plugins-bad),
   which draws a QR code holding ``{"TIMESTAMP": pts_ns, "BUFFERCOUNT": n, ...}`` into every frame.
   ``pts_ns`` is the frame's running time on the pipeline clock when the source pushed it: a pad
   probe on the test source re-stamps each buffer with the clock (as a camera stamps its capture
   time), so a source that falls behind on a loaded machine does not carry a stale frame-counter
   time into the measurement.
2. **process**: the stamped frames go through the real pipeline (:class:`~endoedge.pipeline.runner.Pipeline`:
   capture, pre-process, inference, post-process, box overlay) into an output path.
3. **read back**: :class:`QrReadback` is the pipeline's video sink. It pushes each annotated frame
   through ``appsrc ! videoconvert ! [encoder ! decoder] ! videoconvert ! zbar`` (``zbar``:
   gst-plugins-bad). When ``zbar`` finds the QR code it posts a message from its streaming thread;
   a bus *sync* handler takes the clock time right there and subtracts the time decoded from the
   pixels: ``glass_to_glass = clock_now - (base_time + TIMESTAMP)``, in ms.

The time comes from the picture, not from buffer metadata: a frame whose QR code the boxes cover
(or the encoder smears) is counted as not decoded, never guessed. The running time of the buffer that
reaches ``zbar`` is compared with the decoded ``TIMESTAMP`` as a check (``pts_mismatches``: off by
more than half a frame; encoders shift and round timestamps to the frame grid, hence the slack).

Both pipelines use GStreamer's system clock (one monotonic clock per process), so the two
timestamps are on the same clock. What this does **not** include: camera exposure and readout,
capture-card buffering, display scan-out and panel response; the README gives the physical loop
(a camera filming the monitor) that measures those too.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from endoedge.errors import BackendUnavailableError, InputError
from endoedge.pipeline.capture import GstCapture
from endoedge.pipeline.gst import gst, has_element
from endoedge.pipeline.sources import TEST_PATTERNS, appsink_description, fps_fraction
from endoedge.pipeline.writer import _AppSrcSink, has_display
from endoedge.stats import summarize

logger = logging.getLogger(__name__)

#: Output paths of the read-back: ``h264`` encodes and decodes (what ``--video`` and a stream pay),
#: ``raw`` goes straight to ``zbar``, ``display`` tees into a window and ``zbar``.
OUTPUT_PATHS = ("h264", "raw", "display")

# (encoder, decoder) pairs; the decoder runs single-threaded so it adds no frame of delay.
_H264 = (
    ("x264enc", "x264enc speed-preset=ultrafast tune=zerolatency ! h264parse ! avdec_h264 max-threads=1"),
    ("openh264enc", "openh264enc complexity=low ! h264parse ! openh264dec"),
)
_ZBAR_TAIL = "videoconvert ! video/x-raw,format=I420 ! zbar name=qrread message=true cache=false attach-frame=false ! fakesink sync=false async=false"


def stamped_source_description(*, width: int = 1280, height: int = 720, fps: float = 30.0,
                               pattern: str = "ball", qr_pixel_size: int = 4) -> str:
    """A live test source with a QR time stamp in its top-left corner, ending in the BGR appsink.

    Raises:
        InputError: unknown pattern, or a size too small for the QR code.
        BackendUnavailableError: ``debugqroverlay`` is not installed.
    """
    if pattern not in TEST_PATTERNS:
        raise InputError(f"unknown test pattern '{pattern}'; choose from {', '.join(TEST_PATTERNS)}")
    if width < 320 or height < 240 or qr_pixel_size < 1:
        raise InputError("latency source needs at least 320x240 and --qr-pixel-size >= 1")
    _require("debugqroverlay")
    num, den = fps_fraction(fps)
    return (
        f"videotestsrc name=stampsrc is-live=true pattern={pattern} ! video/x-raw,width={width},height={height},"
        f"framerate={num}/{den} ! debugqroverlay x=1 y=1 pixel-size={qr_pixel_size} "
        "qrcode-error-correction=3 ! queue max-size-buffers=1 max-size-bytes=0 max-size-time=0 "
        "leaky=downstream ! videoconvert ! video/x-raw,format=BGR ! " + appsink_description(True)
    )


def _require(element: str) -> None:
    if not has_element(element):
        raise BackendUnavailableError(
            f"GStreamer element '{element}' is missing; install gstreamer1.0-plugins-bad "
            "(it needs libqrencode4 and libzbar0)")


class ClockedCapture(GstCapture):
    """A :class:`GstCapture` that remembers its pipeline clock and base time once started
    (what turns a running-time PTS into a clock time)."""

    clock: Any = None
    base_time_ns: int = 0

    def start(self) -> None:
        """Start, record the clock and base time, and re-stamp the source's buffers with the clock."""
        super().start()
        self.clock = self._pipeline.get_clock()
        self.base_time_ns = int(self._pipeline.get_base_time())
        src = self._pipeline.get_by_name("stampsrc")
        if src is not None and self.clock is not None:
            Gst = gst().Gst
            src.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, self._restamp)

    def _restamp(self, pad: Any, info: Any) -> Any:
        """Streaming thread of the source: PTS = running time now (before debugqroverlay reads it)."""
        buf = info.get_buffer()
        if buf is not None and self.clock is not None:
            buf.pts = int(self.clock.get_time()) - self.base_time_ns
        return gst().Gst.PadProbeReturn.OK


@dataclass
class QrStats:
    """What the read-back saw. ``latency_ms`` per decoded frame after warm-up, in ms."""

    frames_sent: int = 0
    frames_decoded: int = 0
    warmup_decoded: int = 0
    pts_mismatches: int = 0
    unreadable_symbols: int = 0
    latency_ms: list[float] = field(default_factory=list)
    buffer_counts: list[int] = field(default_factory=list)


class QrReadback(_AppSrcSink):
    """A pipeline video sink that decodes the QR time stamp of every output frame with ``zbar``.

    Args:
        capture: the :class:`ClockedCapture` the frames came from (its clock and base time).
        fps: output frame rate (caps of the appsrc).
        path: one of :data:`OUTPUT_PATHS`.
        warmup: the first ``warmup`` frames written are decoded but kept out of the statistics.
        qr_pixel_size: the stamp's module size (``debugqroverlay pixel-size``): zbar reads only the
            top-left corner that holds the code.

    Raises:
        InputError: unknown path, or ``display`` without a display.
        BackendUnavailableError: ``zbar`` or every H.264 encoder is missing.
    """

    def __init__(self, capture: ClockedCapture, fps: float, *, path: str = "h264", warmup: int = 0,
                 qr_pixel_size: int = 4) -> None:
        if path not in OUTPUT_PATHS:
            raise InputError(f"unknown output path '{path}'; choose from {', '.join(OUTPUT_PATHS)}")
        _require("zbar")
        if path == "h264":
            chain = next((c for name, c in _H264 if has_element(name)), None)
            if chain is None:
                raise BackendUnavailableError("no H.264 encoder in GStreamer; install gstreamer1.0-plugins-ugly or use --output raw")
            tail = f"{chain} ! {_ZBAR_TAIL}"
        elif path == "display":
            if not has_display():
                raise InputError("no display (DISPLAY/WAYLAND_DISPLAY unset); use --output h264 or raw")
            tail = (f"tee name=t ! queue max-size-buffers=2 ! autovideosink sync=false "
                    f"t. ! queue max-size-buffers=2 ! {_ZBAR_TAIL}")
        else:
            tail = _ZBAR_TAIL
        super().__init__(tail, fps, f"QR read-back ({path})")
        self.path = path
        self.capture = capture
        self.warmup = warmup
        self.qr_pixel_size = qr_pixel_size
        self.stats = QrStats()
        self._warm_pts: set[int] = set()
        self._lock = threading.Lock()

    def _open(self, width: int, height: int) -> None:
        # zbar reads only the QR corner (cropped after the output path), so the read-back keeps up
        # with the frame rate; otherwise frames would queue in the appsrc and the queueing would be
        # measured as latency. 72 modules x pixel size covers the QR code with its quiet zone.
        side = 72 * self.qr_pixel_size + 16
        right, bottom = max(0, width - math.ceil(0.01 * width) - side), max(0, height - math.ceil(0.01 * height) - side)
        if right or bottom:
            self.tail = self.tail.replace(_ZBAR_TAIL, f"videocrop right={right} bottom={bottom} ! {_ZBAR_TAIL}")
        super()._open(width, height)
        Gst = gst().Gst
        self._pipeline.use_clock(self.capture.clock or Gst.SystemClock.obtain())
        self._pipeline.get_bus().set_sync_handler(self._on_message)

    def write(self, image: np.ndarray, pts_ns: int | None = None) -> None:
        """Push one annotated frame (``pts_ns``: the source frame's PTS, kept to check the QR)."""
        if self.stats.frames_sent < self.warmup and pts_ns is not None:
            with self._lock:
                self._warm_pts.add(int(pts_ns))
        super().write(image, pts_ns)
        self.stats.frames_sent += 1

    def _on_message(self, bus: Any, msg: Any) -> Any:
        """Runs in ``zbar``'s streaming thread: take the clock time at once, then decode the JSON."""
        Gst = gst().Gst
        if msg.type != Gst.MessageType.ELEMENT or msg.src is None or msg.src.get_name() != "qrread":
            return Gst.BusSyncReply.PASS
        clock = self.capture.clock
        now_ns = int(clock.get_time()) if clock is not None else None
        s = msg.get_structure()
        symbol = s.get_string("symbol") or ""
        ok, running_ns = s.get_uint64("running-time")
        try:
            stamp_ns = int(json.loads(symbol)["TIMESTAMP"])
            count = int(json.loads(symbol).get("BUFFERCOUNT", -1))
        except (ValueError, KeyError, TypeError):
            with self._lock:
                self.stats.unreadable_symbols += 1
            return Gst.BusSyncReply.DROP
        with self._lock:
            st = self.stats
            st.frames_decoded += 1
            if ok and abs(int(running_ns) - stamp_ns) > 0.5e9 / self.fps:
                st.pts_mismatches += 1
            if stamp_ns in self._warm_pts:
                st.warmup_decoded += 1
            elif now_ns is not None:
                st.latency_ms.append((now_ns - (self.capture.base_time_ns + stamp_ns)) / 1e6)
                st.buffer_counts.append(count)
        return Gst.BusSyncReply.DROP

    def glass_to_glass(self) -> dict[str, Any]:
        """The report block: frames sent/decoded and p50/p90/p99/max of source→output latency (ms)."""
        with self._lock:
            st = self.stats
            lat = list(st.latency_ms)
            block: dict[str, Any] = {
                "what": "QR clock stamp in the source pixels -> zbar read of the output frame after "
                        f"pre-process, inference, overlay and the '{self.path}' path ({self.tail.split(' ! zbar')[0]})",
                "clock": "GStreamer system clock (monotonic), same for source and read-back",
                "output_path": self.path,
                "frames_sent": st.frames_sent,
                "frames_decoded": st.frames_decoded,
                "warmup_decoded": st.warmup_decoded,
                "frames_measured": len(lat),
                "undecoded": max(0, st.frames_sent - st.frames_decoded),
                "pts_mismatches": st.pts_mismatches,
                "unreadable_symbols": st.unreadable_symbols,
            }
        if lat:
            s = summarize(lat)
            block.update({k: s[k] for k in ("mean", "p50", "p90", "p99", "max")})
            block["min"] = round(float(min(lat)), 3)
        else:
            block.update(dict.fromkeys(("mean", "p50", "p90", "p99", "max", "min")))
        return block
