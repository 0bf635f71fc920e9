"""Annotated-video output through GStreamer: ``appsrc -> videoconvert -> encoder -> muxer -> file``.

The video writer hands frames over as I420 converted by OpenCV (even sizes; BGR otherwise), so
GStreamer's much slower BGR->I420 ``videoconvert`` has nothing to do in front of the encoder; the
display keeps BGR (no chroma subsampling of thin box lines on screen).

The encoder is the first one installed of x264enc (ultrafast, zerolatency), openh264enc and
avenc_mpeg4; the muxer follows the file suffix: ``.mp4`` uses fragmented MP4 (one-second
fragments, so a file cut short by a crash still plays up to the last fragment), ``.mkv``
Matroska. :meth:`VideoWriter.close` sends EOS and waits for the file to be finalized; the pipeline
runner calls it on normal end, on errors and on Ctrl-C. A display sink (``autovideosink``) works
the same way without the encoder.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from endoedge.data.gst_syntax import quote
from endoedge.errors import InputError
from endoedge.pipeline.gst import gst, has_element
from endoedge.pipeline.sources import fps_fraction

logger = logging.getLogger(__name__)

_ENCODERS = (
    ("x264enc", "x264enc speed-preset=ultrafast tune=zerolatency ! h264parse"),
    ("openh264enc", "openh264enc complexity=low ! h264parse"),
    ("avenc_mpeg4", "avenc_mpeg4 bitrate=4000000"),
)
_MUXERS = {".mp4": "mp4mux fragment-duration=1000", ".mkv": "matroskamux", ".mov": "qtmux fragment-duration=1000"}


def has_display() -> bool:
    """Whether a window can be shown (X11 or Wayland display set)."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class _AppSrcSink:
    """Common appsrc plumbing: caps from the first frame, pts from the caller."""

    #: Push I420 converted by OpenCV (encoders subsample chroma anyway); a display keeps BGR.
    push_i420 = False

    def __init__(self, tail: str, fps: float, what: str) -> None:
        self.tail = tail
        self.fps = fps
        self.what = what
        self.size: tuple[int, int] | None = None
        self.frames = 0
        self.i420 = False
        self._pipeline: Any = None
        self._src: Any = None

    def _open(self, width: int, height: int) -> None:
        Gst = gst().Gst
        num, den = fps_fraction(self.fps)
        # Even sizes are pushed as I420 converted by OpenCV (~0.7 CPU-ms at 1080p, vs ~9 for
        # GStreamer's videoconvert BGR->I420); OpenCV's conversion is BT.601 limited range, said so
        # in the caps. The videoconvert below then passes the buffers through untouched.
        self.i420 = self.push_i420 and width % 2 == 0 and height % 2 == 0
        fmt = "I420,colorimetry=bt601" if self.i420 else "BGR"
        caps = f"video/x-raw,format={fmt},width={width},height={height},framerate={num}/{den}"
        desc = f'appsrc name=src format=time is-live=false block=true max-bytes=0 caps="{caps}" ! videoconvert ! {self.tail}'
        try:
            self._pipeline = Gst.parse_launch(desc)
        except Exception as err:  # noqa: BLE001 - GLib.Error
            raise InputError(f"cannot build the {self.what} pipeline: {err}") from err
        self._src = self._pipeline.get_by_name("src")
        if self._pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            self._check_error()
            raise InputError(f"GStreamer could not start the {self.what}")
        self.size = (width, height)

    def _check_error(self) -> None:
        Gst = gst().Gst
        msg = self._pipeline.get_bus().pop_filtered(Gst.MessageType.ERROR)
        if msg is not None:
            err, _ = msg.parse_error()
            raise InputError(f"{self.what} failed: {err.message}")

    def write(self, image: np.ndarray, pts_ns: int | None = None) -> None:
        """Push one BGR frame (resized to the first frame's size if it differs)."""
        Gst = gst().Gst
        h, w = image.shape[:2]
        if self._pipeline is None:
            self._open(w, h)
        size = self.size or (w, h)
        if (w, h) != size:
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            w, h = size
        if self.i420:
            data = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)
        else:  # GStreamer's packed BGR rows are padded to a multiple of 4 bytes (odd widths)
            stride = (3 * w + 3) & ~3
            data = np.zeros((h, stride), np.uint8)
            data[:, : 3 * w] = np.ascontiguousarray(image).reshape(h, 3 * w)
        buf = Gst.Buffer.new_wrapped(data.tobytes())
        duration = int(1e9 / self.fps)
        buf.pts = int(pts_ns) if pts_ns is not None else self.frames * duration
        buf.duration = duration
        if self._src.emit("push-buffer", buf) != Gst.FlowReturn.OK:
            self._check_error()
            raise InputError(f"{self.what} stopped accepting frames")
        self.frames += 1

    def close(self, timeout_s: float = 10.0) -> None:
        """Send EOS, wait until it reaches the sink (file finalized), stop the pipeline."""
        if self._pipeline is None:
            return
        Gst = gst().Gst
        self._src.emit("end-of-stream")
        msg = self._pipeline.get_bus().timed_pop_filtered(
            int(timeout_s * Gst.SECOND), Gst.MessageType.EOS | Gst.MessageType.ERROR
        )
        self._pipeline.set_state(Gst.State.NULL)
        self._pipeline = None
        if msg is None:
            logger.warning("%s: no EOS within %.0f s; the file may be incomplete", self.what, timeout_s)
        elif msg.type == Gst.MessageType.ERROR:
            err, _ = msg.parse_error()
            raise InputError(f"{self.what} failed while finishing: {err.message}")


class VideoWriter(_AppSrcSink):
    """Encode BGR frames into ``path`` (.mp4, .mkv or .mov) at ``fps``.

    Raises:
        InputError: unknown suffix, no encoder installed, or the folder cannot be written.
    """

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in _MUXERS:
            raise InputError(f"video output '{self.path}' must end in {', '.join(_MUXERS)}")
        if not self.path.parent.is_dir():
            raise InputError(f"folder of '{self.path}' does not exist")
        if not os.access(self.path.parent, os.W_OK):
            raise InputError(f"cannot write into '{self.path.parent}'")
        encoder = next((chain for name, chain in _ENCODERS if has_element(name)), None)
        if encoder is None:
            raise InputError("no H.264/MPEG-4 encoder in GStreamer; install gstreamer1.0-plugins-ugly or -libav")
        mux = _MUXERS[suffix]
        if suffix == ".mkv" and "avenc_mpeg4" in encoder:
            encoder += " ! mpeg4videoparse"
        tail = f"{encoder} ! {mux} ! filesink location={quote(str(self.path), 'video output', 'choose another file name')}"
        super().__init__(tail, fps, f"video writer ({self.path.name})")
        self.encoder = encoder.split()[0]
        self.push_i420 = True


class DisplaySink(_AppSrcSink):
    """Show BGR frames in a window (``autovideosink sync=false``).

    Raises:
        InputError: no display is available.
    """

    def __init__(self, fps: float) -> None:
        if not has_display():
            raise InputError("no display (DISPLAY/WAYLAND_DISPLAY unset); drop --display or write --video")
        super().__init__("autovideosink sync=false", fps, "display")
