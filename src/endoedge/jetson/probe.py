"""Find a video file's container and video codec from its bytes, without GStreamer.

The Jetson file preset builds an explicit ``demuxer ! parser ! nvv4l2decoder`` chain, so it needs
to know the container (from the extension, else the magic bytes) and the video codec (from the
container's track headers: MP4 ``stsd`` sample entry, Matroska ``CodecID``, MPEG-TS PMT stream type,
IVF FourCC). Anything not recognised returns ``None`` and the caller falls back to ``decodebin``.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import BinaryIO

# Container names used by the presets -> GStreamer demuxer (None: elementary stream, no demuxer).
DEMUXERS: dict[str, str | None] = {
    "mp4": "qtdemux",
    "matroska": "matroskademux",
    "mpegts": "tsdemux",
    "avi": "avidemux",
    "ivf": "ivfparse",
    "h264": None,
    "h265": None,
}

_EXTENSIONS = {
    **dict.fromkeys((".mp4", ".m4v", ".mov", ".qt", ".3gp"), "mp4"),
    **dict.fromkeys((".mkv", ".webm"), "matroska"),
    **dict.fromkeys((".ts", ".m2ts", ".mts"), "mpegts"),
    ".avi": "avi",
    ".ivf": "ivf",
    **dict.fromkeys((".h264", ".264", ".avc"), "h264"),
    **dict.fromkeys((".h265", ".265", ".hevc"), "h265"),
}

_MP4_CODECS = {b"avc1": "h264", b"avc3": "h264", b"hvc1": "h265", b"hev1": "h265", b"av01": "av1"}
_MKV_CODECS = {b"V_MPEG4/ISO/AVC": "h264", b"V_MPEGH/ISO/HEVC": "h265", b"V_AV1": "av1"}
_TS_CODECS = {0x1B: "h264", 0x24: "h265"}
_HEAD = 4 << 20  # bytes of a Matroska/TS file searched for track headers
_MAX_MOOV = 64 << 20


def container_from_extension(path: str | Path) -> str | None:
    """``"mp4"``, ``"matroska"``, ... from the file name's extension, or ``None``."""
    return _EXTENSIONS.get(Path(path).suffix.lower())


def sniff_container(path: str | Path) -> str | None:
    """The container from the first bytes of the file, or ``None`` (unreadable or unknown)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            f.seek(188)
            sync2 = f.read(1)
    except OSError:
        return None
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"DKIF":
        return "ivf"
    if head[:1] == b"\x47" and sync2 == b"\x47":
        return "mpegts"
    return None


def sniff_codec(path: str | Path, container: str) -> str | None:
    """``"h264"``, ``"h265"`` or ``"av1"`` for the first video track, else ``None``."""
    if container in ("h264", "h265"):
        return container
    try:
        with open(path, "rb") as f:
            if container == "mp4":
                return _mp4_codec(f)
            if container == "ivf":
                f.seek(8)
                return "av1" if f.read(4) == b"AV01" else None
            head = f.read(_HEAD)
    except (OSError, struct.error, ValueError):
        return None
    if container == "matroska":
        m = re.search(rb"V_[A-Z0-9_/]+", head)  # the first video CodecID in the Tracks element
        return _MKV_CODECS.get(m.group(0)) if m else None
    if container == "mpegts":
        return _ts_codec(head)
    return None


def _iter_boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    """The (type, payload) of each ISO-BMFF box laid end to end in ``data``."""
    out, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = len(data) - pos
        if size < header:
            break
        out.append((kind, data[pos + header : pos + size]))
        pos += size
    return out


def _child(data: bytes, kind: bytes) -> bytes:
    for k, payload in _iter_boxes(data):
        if k == kind:
            return payload
    return b""


def _mp4_codec(f: BinaryIO) -> str | None:
    moov = b""
    while True:  # walk the top-level boxes by seeking; moov may follow a large mdat
        header = f.read(8)
        if len(header) < 8:
            break
        size, kind = struct.unpack(">I4s", header)
        consumed = 8
        if size == 1:
            (size,) = struct.unpack(">Q", f.read(8))
            consumed = 16
        if kind == b"moov":
            if size == 0 or size > _MAX_MOOV:
                return None
            moov = f.read(size - consumed)
            break
        if size < consumed:  # size 0 = runs to the end of the file
            break
        f.seek(size - consumed, 1)
    for kind, trak in _iter_boxes(moov):
        if kind != b"trak":
            continue
        mdia = _child(trak, b"mdia")
        if _child(mdia, b"hdlr")[8:12] != b"vide":
            continue
        stsd = _child(_child(_child(mdia, b"minf"), b"stbl"), b"stsd")
        return _MP4_CODECS.get(stsd[12:16])  # version/flags, entry count, entry size, entry type
    return None


def _ts_codec(data: bytes) -> str | None:
    """Stream type of the first video stream listed in the first PMT."""
    pmt_pids: set[int] = set()
    for pos in range(0, len(data) - 187, 188):
        pkt = data[pos : pos + 188]
        if pkt[0] != 0x47 or not pkt[1] & 0x40:  # sync byte; payload_unit_start
            continue
        pid = ((pkt[1] & 0x1F) << 8) | pkt[2]
        start = 4
        if pkt[3] & 0x20:  # adaptation field
            start += 1 + pkt[4]
        if start >= 188:
            continue
        section = pkt[start + 1 + pkt[start] :]  # skip pointer_field
        if len(section) < 12:
            continue
        length = ((section[1] & 0x0F) << 8) | section[2]
        if pid == 0 and section[0] == 0x00:  # PAT: program_number, PMT PID pairs
            for i in range(8, min(3 + length - 4, len(section) - 3), 4):
                if (section[i] << 8) | section[i + 1]:
                    pmt_pids.add(((section[i + 2] & 0x1F) << 8) | section[i + 3])
        elif pid in pmt_pids and section[0] == 0x02:  # PMT
            i = 12 + (((section[10] & 0x0F) << 8) | section[11])
            end = min(3 + length - 4, len(section))
            while i + 5 <= end:
                codec = _TS_CODECS.get(section[i])
                if codec:
                    return codec
                i += 5 + (((section[i + 3] & 0x0F) << 8) | section[i + 4])
            return None
    return None
