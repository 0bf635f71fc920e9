"""gst-launch pipeline strings for NVIDIA Jetson sources, delivering BGR frames to an appsink.

Every preset returns a string in ``gst-launch-1.0`` / ``Gst.parse_launch`` syntax that ends with the
sink description the caller passes (normally
``appsink name=sink drop=true max-buffers=1 sync=false emit-signals=false``), and delivers
``video/x-raw,format=BGR`` frames in system memory. The hardware parts follow NVIDIA's *Accelerated
GStreamer* guide (Jetson Linux developer guide):

* capture and decode produce NVMM buffers (``video/x-raw(memory:NVMM)``, NV12): ``nvarguscamerasrc``
  (CSI/Argus), ``nvv4l2decoder`` (NVDEC for H.264/H.265/AV1, NVJPG for MJPEG with ``mjpeg=1``);
* ``nvvidconv`` (the VIC engine) converts, scales and flips, and copies NVMM into system memory. It
  cannot output 3-byte BGR, so it outputs ``BGRx`` and a CPU ``videoconvert`` drops the 4th byte;
* raw V4L2 frames (YUY2, UYVY, ...) are sent through ``nvvidconv`` into NVMM and back, so the colour
  conversion runs on the VIC instead of the CPU.

Live mode (``live=True``) puts ``queue leaky=downstream max-size-buffers=1`` after the ``nvvidconv``
output and before the CPU ``videoconvert``: when Python falls behind, stale frames are dropped before
the only CPU pixel work instead of after it, and the capture/decode thread never waits for the CPU.

Locations (file paths, device nodes, URLs) are double-quoted; characters that GStreamer's parser
treats differently across releases (``"``, ``\\``, control characters) are refused with an
:class:`~endoedge.errors.InputError` instead of being escaped.

These strings were checked here only as strings (and, with the NVIDIA elements swapped for desktop
ones, with ``Gst.parse_launch``): no Jetson was available. ``jetson/check_pipelines.sh`` runs them on
a device.
"""

from __future__ import annotations

import logging
import re
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, cast

from endoedge.data.gst_syntax import quote
from endoedge.errors import InputError
from endoedge.jetson.platform import JetsonInfo, is_jetson, jetson_info
from endoedge.jetson.probe import DEMUXERS, container_from_extension, sniff_codec, sniff_container
from endoedge.spec.redact import redact

log = logging.getLogger(__name__)

FileCodec = Literal["auto", "h264", "h265", "av1"]
RtspCodec = Literal["h264", "h265"]
MjpegDecoder = Literal["auto", "nvv4l2decoder", "jpegdec"]

NVMM_NV12 = "video/x-raw(memory:NVMM),format=NV12"
LEAKY_QUEUE = "queue leaky=downstream max-size-buffers=1 max-size-bytes=0 max-size-time=0"
RAW_FORMATS = ("YUY2", "UYVY", "YVYU", "NV12", "I420", "GRAY8")
MJPEG_FORMATS = ("MJPG", "MJPEG", "JPEG")
PARSERS: dict[str, str | None] = {"h264": "h264parse", "h265": "h265parse", "av1": None}
RTP_DEPAY = {"h264": "rtph264depay ! h264parse", "h265": "rtph265depay ! h265parse"}
RTSP_SCHEMES = ("rtsp://", "rtsps://", "rtspt://", "rtspu://")
# nvvidconv flip-method -> videoflip video-direction (same geometric operation), for the CPU path.
FLIP_TO_VIDEOFLIP = ("identity", "90l", "180", "90r", "horiz", "ur-ll", "vert", "ul-lr")

_ELEMENT_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_MAX_DIM = 16384


# ----------------------------------------------------------------------------- validation helpers


def _int(name: str, value: object, minimum: int = 1, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise InputError(f"{name} must be {kind}, got {value!r}")
    if maximum is not None and value > maximum:
        raise InputError(f"{name} must be at most {maximum}, got {value!r}")
    return value


def _framerate(fps: object) -> str:
    """``30`` -> ``"30/1"``, ``29.97`` -> ``"2997/100"``; refuses zero, negatives and non-numbers."""
    if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction)) or not fps > 0:
        raise InputError(f"fps must be a positive number, got {fps!r}")
    if fps > 1000:
        raise InputError(f"fps must be at most 1000, got {fps!r}")
    frac = Fraction(fps).limit_denominator(1001)
    return f"{frac.numerator}/{frac.denominator}"


def _size(output_size: tuple[int, int] | None) -> str:
    """``",width=W,height=H"`` for a scaled output, ``""`` to keep the source size."""
    if output_size is None:
        return ""
    if not isinstance(output_size, (tuple, list)) or len(output_size) != 2:
        raise InputError(f"output_size must be (width, height), got {output_size!r}")
    w = _int("output width", output_size[0], maximum=_MAX_DIM)
    h = _int("output height", output_size[1], maximum=_MAX_DIM)
    return f",width={w},height={h}"


def _dims(width: int, height: int, fps: float) -> str:
    """``"width=W,height=H,framerate=N/D"`` after validating all three."""
    w = _int("width", width, maximum=_MAX_DIM)
    h = _int("height", height, maximum=_MAX_DIM)
    return f"width={w},height={h},framerate={_framerate(fps)}"


def _num_buffers(num_buffers: int | None) -> str:
    return "" if num_buffers is None else f" num-buffers={_int('num_buffers', num_buffers)}"


def _check_sink(appsink: str) -> str:
    sink = appsink.strip() if isinstance(appsink, str) else ""
    first = sink.split(None, 1)[0] if sink else ""
    if not _ELEMENT_RE.fullmatch(first) or "!" in sink:
        raise InputError(
            f"appsink must be one sink element description such as "
            f"'appsink name=sink drop=true max-buffers=1 sync=false', got {appsink!r}"
        )
    return sink


def _flip(flip_method: int) -> int:
    return _int("flip_method", flip_method, minimum=0, maximum=7)


def elements(description: str) -> list[str]:
    """Split a pipeline description at its ``!`` links (a ``!`` inside double quotes is kept)."""
    parts: list[str] = []
    current: list[str] = []
    in_quotes = False
    for ch in description:
        if ch == '"':
            in_quotes = not in_quotes
        if ch == "!" and not in_quotes:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    parts.append("".join(current).strip())
    return parts


# ---------------------------------------------------------------------------------- shared tails


def _nvmm_to_bgr(
    appsink: str, *, live: bool, flip_method: int = 0, output_size: tuple[int, int] | None = None
) -> list[str]:
    """nvvidconv (NVMM or raw in) -> BGRx in system memory -> [leaky queue] -> BGR -> sink."""
    conv = "nvvidconv" if flip_method == 0 else f"nvvidconv flip-method={flip_method}"
    return [
        conv,
        f"video/x-raw,format=BGRx{_size(output_size)}",
        *([LEAKY_QUEUE] if live else []),
        "videoconvert",
        "video/x-raw,format=BGR",
        _check_sink(appsink),
    ]


def _join(parts: list[str]) -> str:
    return " ! ".join(parts)


# ---------------------------------------------------------------------------------------- presets


def csi_camera(
    sensor_id: int = 0,
    width: int = 1920,
    height: int = 1080,
    fps: float = 30,
    flip_method: int = 0,
    *,
    appsink: str,
    live: bool = True,
    sensor_mode: int | None = None,
    output_size: tuple[int, int] | None = None,
    num_buffers: int | None = None,
) -> str:
    """A MIPI CSI camera through libargus (``nvarguscamerasrc``, NV12 in NVMM) -> BGR frames.

    ``width``/``height``/``fps`` select the sensor mode's output (or pass ``sensor_mode``);
    ``flip_method`` is nvvidconv's (0 none, 1 rotate 90 counter-clockwise, 2 rotate 180, 3 rotate 90
    clockwise, 4 horizontal flip, 5 upper-right diagonal, 6 vertical flip, 7 upper-left diagonal);
    ``output_size`` scales on the VIC; ``num_buffers`` stops after that many frames (device checks).
    """
    src = f"nvarguscamerasrc sensor-id={_int('sensor_id', sensor_id, minimum=0)}"
    if sensor_mode is not None:
        src += f" sensor-mode={_int('sensor_mode', sensor_mode, minimum=0)}"
    src += _num_buffers(num_buffers)
    caps = f"video/x-raw(memory:NVMM),{_dims(width, height, fps)},format=NV12"
    flip = _flip(flip_method)
    tail = _nvmm_to_bgr(appsink, live=live, flip_method=flip, output_size=output_size)
    tail[0] = f"nvvidconv flip-method={flip}"  # always explicit for CSI, as in NVIDIA's examples
    return _join([src, caps, *tail])


def mjpeg_decoder_for(info: JetsonInfo | None) -> Literal["nvv4l2decoder", "jpegdec"]:
    """Which MJPEG decoder a device should use.

    ``nvv4l2decoder mjpeg=1`` (the NVJPG engine) on JetPack 4-6. NVIDIA documents that JPEG/MJPEG
    decoding through nvv4l2decoder is not supported on Thor, so Thor boards and the JetPack 7 line
    (L4T 38+, the Thor/SBSA stack) decode MJPEG on the CPU with ``jpegdec``.
    """
    if info is None:
        return "nvv4l2decoder"
    if "Thor" in (info.get("model") or "") or (info.get("jetpack_major") or 0) >= 7:
        return "jpegdec"
    return "nvv4l2decoder"


def v4l2_camera(
    device: str = "/dev/video0",
    width: int = 1920,
    height: int = 1080,
    fps: float = 30,
    fmt: str = "YUY2",
    *,
    appsink: str,
    live: bool = True,
    flip_method: int = 0,
    output_size: tuple[int, int] | None = None,
    num_buffers: int | None = None,
    mjpeg_decoder: MjpegDecoder = "auto",
) -> str:
    """A V4L2 device (USB/UVC camera, HDMI/SDI capture card) -> BGR frames.

    ``fmt`` is the device's pixel format: a raw one (``YUY2``, ``UYVY``, ``YVYU``, ``NV12``, ``I420``,
    ``GRAY8``) goes to NVMM through ``nvvidconv`` and back as BGRx; ``MJPG`` is decoded with
    ``jpegparse ! nvv4l2decoder mjpeg=1`` or, where that is unsupported (see
    :func:`mjpeg_decoder_for`), with the CPU ``jpegdec``. ``mjpeg_decoder="auto"`` picks by the
    running device.
    """
    fmt_up = fmt.upper() if isinstance(fmt, str) else ""
    if fmt_up not in RAW_FORMATS + MJPEG_FORMATS:
        raise InputError(
            f"fmt {fmt!r} is not supported; use one of {', '.join(RAW_FORMATS + ('MJPG',))}"
        )
    src = f"v4l2src device={quote(device, 'device')} do-timestamp=true{_num_buffers(num_buffers)}"
    dims = _dims(width, height, fps)
    flip = _flip(flip_method)
    if fmt_up not in MJPEG_FORMATS:
        raw = f"video/x-raw,format={fmt_up},{dims}"
        tail = _nvmm_to_bgr(appsink, live=live, flip_method=flip, output_size=output_size)
        return _join([src, raw, "nvvidconv", NVMM_NV12, *tail])
    if mjpeg_decoder not in ("auto", "nvv4l2decoder", "jpegdec"):
        raise InputError(
            f"mjpeg_decoder must be 'auto', 'nvv4l2decoder' or 'jpegdec', got {mjpeg_decoder!r}"
        )
    decoder = mjpeg_decoder_for(jetson_info()) if mjpeg_decoder == "auto" else mjpeg_decoder
    jpeg = f"image/jpeg,{dims}"
    if decoder == "nvv4l2decoder":
        tail = _nvmm_to_bgr(appsink, live=live, flip_method=flip, output_size=output_size)
        return _join([src, jpeg, "jpegparse", "nvv4l2decoder mjpeg=1", *tail])
    # CPU path: decode, flip and scale in software; no VIC round trip for a CPU-decoded frame.
    cpu = [src, jpeg, "jpegdec"]
    if flip:
        cpu.append(f"videoflip video-direction={FLIP_TO_VIDEOFLIP[flip]}")
    if output_size is not None:
        cpu += ["videoscale", f"video/x-raw{_size(output_size)}"]
    cpu += [*([LEAKY_QUEUE] if live else []), "videoconvert", "video/x-raw,format=BGR"]
    return _join([*cpu, _check_sink(appsink)])


def _codec(codec: str, allowed: tuple[str, ...]) -> str:
    if codec not in allowed:
        raise InputError(f"codec must be one of {', '.join(allowed)}, got {codec!r}")
    return codec


def video_file(
    path: str | Path,
    *,
    codec: FileCodec = "auto",
    appsink: str,
    live: bool = False,
    output_size: tuple[int, int] | None = None,
) -> str:
    """A video file decoded on NVDEC -> BGR frames.

    The chain is explicit, as in NVIDIA's Accelerated GStreamer decode examples:
    ``filesrc ! <demuxer> ! queue ! <parser> ! nvv4l2decoder ! nvvidconv ! ...``, with the demuxer
    from the extension (``.mp4/.mov/.m4v`` qtdemux, ``.mkv/.webm`` matroskademux, ``.ts`` tsdemux,
    ``.avi`` avidemux, ``.ivf`` ivfparse, ``.h264/.h265`` none) or the file's magic bytes. An explicit
    chain guarantees the hardware decoder (decodebin could silently pick a CPU decoder), needs no
    DeepStream (``nvurisrcbin`` is DeepStream-only) and ignores audio tracks.

    ``codec="auto"`` reads the codec from the file's track headers (MP4 ``stsd``, Matroska
    ``CodecID``, MPEG-TS PMT, IVF header). When it cannot tell, it falls back to
    ``filesrc ! decodebin ! nvvidconv ! ...``: decodebin on Jetson picks ``nvv4l2decoder`` by rank
    for any codec NVDEC handles. AV1 gets no parser (``av1parse`` is missing from JetPack 5's
    GStreamer 1.16); NVIDIA lists AV1 decode for Orin-class devices only.
    """
    location = quote(str(path), "video path")
    _codec(codec, ("auto", "h264", "h265", "av1"))
    container = container_from_extension(path)
    if codec == "auto" or container is None:
        if not Path(path).is_file():
            raise InputError(f"video file not found: {path} (check the path)")
        container = container or sniff_container(path)
    chosen: str | None = codec
    if codec == "auto":
        chosen = sniff_codec(path, container) if container else None
        if chosen is None:
            log.warning("could not read the video codec of %s; decoding it with decodebin", path)
            tail = _nvmm_to_bgr(appsink, live=live, output_size=output_size)
            return _join([f"filesrc location={location}", "decodebin", *tail])
    if container is None or chosen is None:
        raise InputError(
            f"cannot tell the container of {path}; use a .mp4/.mkv/.ts/.avi/.ivf/.h264/.h265 file"
        )
    if container in ("h264", "h265") and chosen != container:
        raise InputError(f"{path} is an {container} elementary stream, not {chosen}")
    if container == "ivf" and chosen != "av1":
        raise InputError(f"{path}: IVF files are supported for AV1 only, not {chosen}")
    parts = [f"filesrc location={location}"]
    demuxer = DEMUXERS[container]
    if demuxer is not None:
        parts += [demuxer, "queue"]
    parser = PARSERS[chosen]
    if parser is not None:
        parts.append(parser)
    parts.append("nvv4l2decoder")
    return _join(parts + _nvmm_to_bgr(appsink, live=live, output_size=output_size))


def rtsp(
    url: str,
    latency_ms: int = 100,
    *,
    codec: RtspCodec = "h264",
    appsink: str,
    live: bool = True,
    tcp: bool = False,
    output_size: tuple[int, int] | None = None,
) -> str:
    """An RTSP stream (H.264/H.265 over RTP) decoded on NVDEC -> BGR frames.

    ``latency_ms`` is rtspsrc's jitter-buffer latency; ``drop-on-latency=true`` drops packets that
    arrive later than that instead of growing the delay. ``tcp=True`` forces RTP over TCP
    (``protocols=tcp``) for networks that drop UDP.
    """
    if not isinstance(url, str) or not url.lower().startswith(RTSP_SCHEMES):
        raise InputError(f"RTSP URL must start with rtsp:// (or rtsps://), got {redact(repr(url))}")
    depay = RTP_DEPAY[_codec(codec, tuple(RTP_DEPAY))]
    src = (
        f"rtspsrc location={quote(url, 'RTSP URL', 'percent-encode it (%22, %5C)')} "
        f"latency={_int('latency_ms', latency_ms, minimum=0)} drop-on-latency=true"
    )
    if tcp:
        src += " protocols=tcp"
    parts = [src, depay, "nvv4l2decoder"]
    return _join(parts + _nvmm_to_bgr(appsink, live=live, output_size=output_size))


# ------------------------------------------------------------------------------ source selection


def pipeline_for_source(
    source: str,
    *,
    appsink: str,
    live: bool | None = None,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    fmt: str | None = None,
    latency_ms: int = 100,
    num_buffers: int | None = None,
    codec: str | None = None,
) -> str | None:
    """The Jetson preset for an ``endoedge run`` SOURCE, or ``None`` if no preset applies.

    ``csi://N`` -> :func:`csi_camera`; ``/dev/videoN`` -> :func:`v4l2_camera`; ``rtsp://...`` ->
    :func:`rtsp`; an existing video file -> :func:`video_file`. Anything else (``test``, image
    folders, globs, raw pipeline strings) returns ``None`` and the caller uses its desktop pipeline.
    ``live`` defaults to True for cameras and RTSP and False for files, as ``endoedge run`` does.
    ``codec`` is the RTSP stream's (default h264) or the file's (default auto).
    """
    live_default = live is not False
    w = 1920 if width is None else width
    h = 1080 if height is None else height
    rate = 30 if fps is None else fps
    if source.startswith("csi://"):
        sensor = source[len("csi://") :] or "0"
        if not sensor.isdigit():
            raise InputError(f"CSI source must be csi://N with a sensor number, got {redact(repr(source))}")
        return csi_camera(
            int(sensor), w, h, rate, appsink=appsink, live=live_default, num_buffers=num_buffers
        )
    if re.fullmatch(r"/dev/video\d+", source):
        return v4l2_camera(
            source,
            w,
            h,
            rate,
            fmt or "YUY2",
            appsink=appsink,
            live=live_default,
            num_buffers=num_buffers,
        )
    if source.lower().startswith(RTSP_SCHEMES):
        rtsp_codec = cast(RtspCodec, codec or "h264")  # rtsp() validates it
        return rtsp(source, latency_ms, codec=rtsp_codec, appsink=appsink, live=live_default)
    if Path(source).is_file() and (container_from_extension(source) or sniff_container(source)):
        file_codec = cast(FileCodec, codec or "auto")  # video_file() validates it
        return video_file(source, codec=file_codec, appsink=appsink, live=bool(live))
    return None


def auto_pipeline(
    source: str, *, appsink: str, root: str | Path | None = None, **options: Any
) -> str | None:
    """:func:`pipeline_for_source` on a Jetson (detected under ``root``), ``None`` anywhere else.

    This is the hook for ``endoedge run``: on a Jetson the NVIDIA preset replaces the desktop
    pipeline for cameras, RTSP and files; ``options`` are :func:`pipeline_for_source`'s.
    """
    if not is_jetson(root):
        return None
    return pipeline_for_source(source, appsink=appsink, **options)
