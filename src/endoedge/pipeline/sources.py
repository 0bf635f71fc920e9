"""What ``endoedge run SOURCE`` means: parsing a source argument and building its GStreamer string.

Source kinds (``SourceSpec.kind``):

- ``file``: a video file, decoded by ``decodebin`` (anything the installed plugins handle).
- ``v4l2``: a capture device ``/dev/videoN`` (HDMI/SDI capture cards, USB cameras), with optional
  width/height/fps/format caps (``MJPG`` is decoded with ``jpegdec``).
- ``csi``: ``csi://N``, a Jetson CSI camera (``nvarguscamerasrc``; Jetson presets only).
- ``rtsp``: ``rtsp://`` URLs through ``rtspsrc`` with a small jitter buffer (``latency`` ms,
  ``drop-on-latency``); ``rtp``: ``udp://`` / ``rtp://HOST:PORT`` H.264 RTP through ``udpsrc``.
- ``folder``: a folder or glob of images, played by endoedge itself (no GStreamer) at ``fps``.
- ``test``: ``videotestsrc`` as a live source (``test`` or ``test:PATTERN``).
- ``pipeline``: a raw gst-launch string that ends in ``appsink name=sink``.

Every GStreamer string ends in ``videoconvert ! video/x-raw,format=BGR ! appsink name=sink ...``
so frames arrive as packed BGR. Live mode adds a leaky one-buffer queue and a dropping appsink
(latest-frame semantics); offline mode keeps every frame and lets the appsink's small queue block
the decoder (back-pressure) so decoding runs ahead of inference by a few frames only.
"""

from __future__ import annotations

import glob
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from endoedge.data.gst_syntax import quote
from endoedge.data.imageio import IMAGE_SUFFIXES
from endoedge.data.media import natural_key
from endoedge.errors import InputError
from endoedge.spec.redact import redact

if TYPE_CHECKING:
    from endoedge.pipeline.frames import CaptureSource

logger = logging.getLogger(__name__)

#: ``--jetson``: NVIDIA hardware presets ``on``, ``off``, or ``auto`` (on when running on a Jetson).
JetsonMode = Literal["auto", "on", "off"]
KINDS = ("file", "v4l2", "csi", "rtsp", "rtp", "folder", "test", "pipeline")
LIVE_KINDS = frozenset({"v4l2", "csi", "rtsp", "rtp", "test"})
TEST_PATTERNS = ("smpte", "ball", "snow", "pinwheel", "gamut", "circular", "spokes")


@dataclass
class SourceSpec:
    """A parsed ``SOURCE`` argument.

    Attributes:
        kind: one of :data:`KINDS`.
        location: path, device, URL, glob, pattern name or pipeline string.
        width, height, fps: requested caps (None = the source's own); ``fps`` also paces folders.
        pixel_format: V4L2 format (``YUY2``, ``MJPG``, ``NV12``...), None = negotiate.
        latency_ms: RTSP jitter-buffer latency.
        files: the images of a ``folder`` source, in natural order (``img2`` before ``img10``).
    """

    kind: str
    location: str
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    pixel_format: str | None = None
    latency_ms: int = 100
    files: list[Path] = field(default_factory=list)

    @property
    def is_live(self) -> bool:
        """Whether the source produces frames in real time (default mode ``--live``)."""
        return self.kind in LIVE_KINDS

    @property
    def display_location(self) -> str:
        """``location`` with URI credentials masked (:func:`~endoedge.spec.redact.redact`): what
        messages, reports and titles show; only GStreamer gets ``location`` itself."""
        return redact(self.location)

    def describe(self) -> str:
        """Short human-readable description (credentials masked)."""
        if self.kind == "folder":
            return f"folder {self.display_location} ({len(self.files)} images)"
        return f"{self.kind} {self.display_location}"


def parse_source(
    text: str,
    *,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    pixel_format: str | None = None,
    latency_ms: int = 100,
) -> SourceSpec:
    """Turn a ``SOURCE`` argument into a :class:`SourceSpec`.

    Raises:
        InputError: the file/folder/device does not exist, a glob matches nothing, a pipeline
            string lacks ``appsink name=sink``, or a caps option is out of range.
    """
    for name, value in (("width", width), ("height", height)):
        if value is not None and value <= 0:
            raise InputError(f"--{name} must be a positive number of pixels, not {value}")
    if fps is not None and not 0 < fps <= 1000:
        raise InputError(f"--fps must be between 0 and 1000, not {fps}")
    if latency_ms < 0:
        raise InputError(f"--latency must be >= 0 ms, not {latency_ms}")
    common = {"width": width, "height": height, "fps": fps, "pixel_format": pixel_format, "latency_ms": latency_ms}
    text = text.strip()
    if not text:
        raise InputError("empty SOURCE; give a video file, /dev/videoN, rtsp://..., a folder, a glob or 'test'")
    if text == "test" or text.startswith("test:"):
        pattern = text.partition(":")[2] or "ball"
        if pattern not in TEST_PATTERNS:
            raise InputError(f"unknown test pattern '{pattern}'; use one of {', '.join(TEST_PATTERNS)}")
        return SourceSpec("test", pattern, **common)  # type: ignore[arg-type]
    if "appsink" in text and "!" in text:
        if not re.search(r"appsink\b[^!]*\bname\s*=\s*sink\b", text):
            raise InputError("a pipeline SOURCE must end in 'appsink name=sink' (endoedge pulls frames from it)")
        return SourceSpec("pipeline", text, **common)  # type: ignore[arg-type]
    lowered = text.lower()
    if lowered.startswith(("rtsp://", "rtsps://")):
        return SourceSpec("rtsp", text, **common)  # type: ignore[arg-type]
    if lowered.startswith("csi://"):
        if not text[6:].isdigit():
            raise InputError(f"'{redact(text)}': CSI cameras are csi://N with the sensor number, e.g. csi://0")
        return SourceSpec("csi", text, **common)  # type: ignore[arg-type]
    if lowered.startswith(("udp://", "rtp://")):
        if not re.fullmatch(r"(udp|rtp)://[^:/]*:\d+", lowered):
            raise InputError(f"'{redact(text)}': RTP sources look like rtp://HOST:PORT (H.264 payload)")
        return SourceSpec("rtp", text, **common)  # type: ignore[arg-type]
    if text.startswith("/dev/video"):
        if not Path(text).exists():
            raise InputError(f"capture device {redact(text)} does not exist; is the card plugged in? (ls /dev/video*)")
        return SourceSpec("v4l2", text, **common)  # type: ignore[arg-type]
    path = Path(text)
    if path.is_dir():
        files = sorted((f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()),
                       key=natural_key)
        if not files:
            raise InputError(f"folder '{redact(text)}' has no images ({', '.join(IMAGE_SUFFIXES)})")
        return SourceSpec("folder", text, files=files, **common)  # type: ignore[arg-type]
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return SourceSpec("folder", text, files=[path], **common)  # type: ignore[arg-type]
        return SourceSpec("file", str(path), **common)  # type: ignore[arg-type]
    if any(c in text for c in "*?["):
        matches = sorted((Path(f) for f in glob.glob(text, recursive=True)), key=natural_key)
        files = [f for f in matches if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()]
        if not files:
            raise InputError(f"'{redact(text)}' matches no image file")
        return SourceSpec("folder", text, files=files, **common)  # type: ignore[arg-type]
    raise InputError(f"source '{redact(text)}' not found: not a file, folder, glob, device, URL, 'test' or pipeline")


def appsink_description(live: bool, *, max_buffers: int = 4) -> str:
    """The appsink element: dropping one-buffer latest-frame sink when live, blocking queue offline."""
    if live:
        return "appsink name=sink drop=true max-buffers=1 sync=false emit-signals=false"
    return f"appsink name=sink drop=false max-buffers={max_buffers} sync=false emit-signals=false"


def _caps(spec: SourceSpec, media: str = "video/x-raw") -> str:
    parts = [media]
    if spec.width:
        parts.append(f"width={spec.width}")
    if spec.height:
        parts.append(f"height={spec.height}")
    if spec.fps:
        num, den = fps_fraction(spec.fps)
        parts.append(f"framerate={num}/{den}")
    return ",".join(parts)


def fps_fraction(fps: float) -> tuple[int, int]:
    """A GStreamer framerate fraction for ``fps`` (29.97 -> 30000/1001)."""
    if abs(fps - round(fps)) < 1e-6:
        return round(fps), 1
    return round(fps * 1001), 1001


def build_pipeline(spec: SourceSpec, *, live: bool) -> str:
    """The gst-launch description of ``spec`` ending in the BGR ``appsink name=sink``.

    Raises:
        InputError: the kind has no GStreamer pipeline (``folder`` is played by endoedge).
    """
    sink = appsink_description(live)
    tail = "videoconvert ! video/x-raw,format=BGR ! "
    leaky = "queue max-size-buffers=1 max-size-bytes=0 max-size-time=0 leaky=downstream ! " if live else ""
    if spec.kind == "pipeline":
        return spec.location
    if spec.kind == "file":
        return f"filesrc location={quote(spec.location, 'video file')} ! decodebin ! {leaky}{tail}{sink}"
    if spec.kind == "test":
        caps = _caps(SourceSpec("test", "", width=spec.width or 1280, height=spec.height or 720, fps=spec.fps or 30))
        return f"videotestsrc is-live=true pattern={spec.location} ! {caps} ! {leaky}{tail}{sink}"
    if spec.kind == "v4l2":
        fmt = (spec.pixel_format or "").upper()
        if fmt in ("MJPG", "MJPEG", "JPEG"):
            head = f"v4l2src device={quote(spec.location, 'device')} ! {_caps(spec, 'image/jpeg')} ! jpegdec ! "
        else:
            caps = _caps(spec) + (f",format={fmt}" if fmt else "")
            head = f"v4l2src device={quote(spec.location, 'device')} ! {caps} ! "
        return f"{head}{leaky}{tail}{sink}"
    if spec.kind == "rtsp":
        return (
            f"rtspsrc location={quote(spec.location, 'RTSP URL', 'percent-encode it (%22, %5C)')} latency={spec.latency_ms} drop-on-latency=true ! "
            f"decodebin ! {leaky}{tail}{sink}"
        )
    if spec.kind == "rtp":
        port = spec.location.rsplit(":", 1)[1]
        return (
            f'udpsrc port={port} caps="application/x-rtp,media=video,encoding-name=H264,payload=96" ! '
            f"rtpjitterbuffer latency={spec.latency_ms} drop-on-latency=true ! rtph264depay ! h264parse ! "
            f"decodebin ! {leaky}{tail}{sink}"
        )
    if spec.kind == "csi":
        raise InputError("CSI cameras (csi://N) need a Jetson's nvarguscamerasrc; use --jetson on on a Jetson")
    raise InputError(f"source kind '{spec.kind}' is not played through GStreamer")


def make_capture_factory(
    spec: SourceSpec, *, live: bool, stall_timeout_s: float, loop: bool, jetson: JetsonMode
) -> Callable[[], CaptureSource]:
    """A zero-argument callable building a fresh, unstarted capture for ``spec`` (called again to
    reconnect): a :class:`~endoedge.pipeline.capture.FolderCapture` for folders, else a
    :class:`~endoedge.pipeline.capture.GstCapture` (NVIDIA presets on a Jetson, see ``jetson``).

    Raises:
        InputError: the source has no GStreamer pipeline here (e.g. CSI off a Jetson).
    """
    if spec.kind == "folder":
        from endoedge.pipeline.capture import FolderCapture

        return lambda: FolderCapture(spec.files, fps=spec.fps or 30.0, live=live, loop=loop)
    from endoedge.pipeline.capture import GstCapture

    description = _jetson_pipeline(spec, live=live, mode=jetson) or build_pipeline(spec, live=live)
    logger.debug("pipeline: %s", redact(description))
    location = spec.display_location
    return lambda: GstCapture(description, location=location, live=live, stall_timeout_s=stall_timeout_s)


def _jetson_pipeline(spec: SourceSpec, *, live: bool, mode: JetsonMode) -> str | None:
    """NVIDIA hardware presets on a Jetson (None elsewhere, or for kinds without a preset)."""
    if mode == "off" or spec.kind not in ("file", "v4l2", "rtsp", "csi"):
        return None
    from endoedge.jetson import is_jetson, pipeline_for_source

    if mode == "auto" and not is_jetson():
        return None
    return pipeline_for_source(
        spec.location, appsink=appsink_description(live), live=live, width=spec.width,
        height=spec.height, fps=spec.fps, fmt=spec.pixel_format, latency_ms=spec.latency_ms,
    )
