"""Reading images and bringing arbitrary arrays to the 8-bit BGR layout detectors expect.

Conventions: images are ``numpy.ndarray`` in OpenCV layout, ``H x W x 3`` ``uint8`` BGR.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np

from endoedge.data.media import IMAGE_SUFFIXES
from endoedge.errors import InputError

__all__ = ["IMAGE_SUFFIXES", "MAX_PIXELS", "header_size", "imdecode", "read_image", "to_bgr8"]

#: Largest image :func:`read_image` decodes (100 Mpx, ~300 MB as BGR), judged from the file header
#: before decoding: a decompression bomb (a small file claiming a huge size) never allocates its pixels.
MAX_PIXELS = 100_000_000


def to_bgr8(image: object, *, name: str = "image") -> np.ndarray:
    """Return ``image`` as a ``H x W x 3`` uint8 BGR array, converting where the meaning is clear.

    Accepted: uint8 BGR (returned as is, no copy), grayscale ``H x W`` or ``H x W x 1``, BGRA
    ``H x W x 4`` (alpha dropped), uint16 (scaled by 255/65535). Refused with
    :class:`~endoedge.errors.InputError`: non-arrays, empty arrays, float images (their value
    range is ambiguous) and other channel counts.
    """
    if not isinstance(image, np.ndarray):
        raise InputError(f"{name} must be a numpy array (H x W x 3 uint8 BGR), got {type(image).__name__}")
    if image.size == 0:
        raise InputError(f"{name} is empty (shape {image.shape}); check that the frame was decoded")
    if image.dtype == np.uint16:
        image = cv2.convertScaleAbs(image, alpha=255.0 / 65535.0)
    elif image.dtype != np.uint8:
        raise InputError(
            f"{name} has dtype {image.dtype}; pass uint8 (or uint16) pixels, e.g. "
            "(img * 255).clip(0, 255).astype(np.uint8) for a float image in 0..1"
        )
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise InputError(
            f"{name} has shape {image.shape}; expected H x W x 3 (BGR), H x W x 4 (BGRA) or H x W"
        )
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.strides[2] != 1 or image.strides[1] != 3:
        # OpenCV needs interleaved pixels; a channel-reversed or transposed view is copied once.
        return np.ascontiguousarray(image)
    return image


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 BGR (any bit depth / channel count OpenCV decodes).

    Raises:
        InputError: the file is missing, empty, not an image, or a corrupt/truncated image
            (each with its own message).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"image '{p}' does not exist or is not a file")
    data = np.fromfile(p, dtype=np.uint8)
    if data.size == 0:
        raise InputError(f"image '{p}' is an empty (zero-byte) file")
    kind = _sniff_format(data[:12].tobytes())
    size = header_size(data, kind)
    if size is not None and not 0 < size[0] * size[1] <= MAX_PIXELS:
        raise InputError(f"image '{p}' claims {size[0]} x {size[1]} pixels in its {kind} header; "
                         f"endoedge reads images of 1 to {MAX_PIXELS / 1e6:g} Mpx")
    image = imdecode(data, cv2.IMREAD_UNCHANGED, name=f"image '{p}'")
    if image is None and kind is None:
        raise InputError(
            f"image '{p}' is not an image OpenCV can decode (its content has no JPEG, PNG, "
            "BMP, TIFF or WebP signature)"
        )
    # OpenCV 4.x returns a grey-filled frame for a JPEG cut short ("Premature end of JPEG
    # file"); a complete JPEG always contains the end-of-image marker FF D9.
    if image is None or (kind == "JPEG" and data[-2:].tobytes() != b"\xff\xd9"
                         and b"\xff\xd9" not in data.tobytes()):
        raise InputError(f"image '{p}' is a corrupt or truncated {kind} file and cannot be decoded")
    return to_bgr8(image, name=f"image '{p}'")


_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def _sniff_format(head: bytes) -> str | None:
    """The image format a file's first bytes announce, or ``None`` when none matches."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    for magic, name in _SIGNATURES:
        if head.startswith(magic):
            return name
    return None


def imdecode(data: np.ndarray, flags: int, *, name: str = "image") -> np.ndarray | None:
    """``cv2.imdecode``, with OpenCV's own refusals (a size over its limits, a damaged header:
    ``cv2.error``) turned into an :class:`InputError` naming ``name``; None when it cannot decode."""
    try:
        return cv2.imdecode(data, flags)
    except cv2.error as err:
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else "cv2.error"
        raise InputError(f"{name}: OpenCV refuses to decode it ({reason[:160]})") from err


# JPEG start-of-frame markers (baseline, progressive, lossless...); C4/C8/CC are not frames.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def header_size(data: bytes | np.ndarray, kind: str | None) -> tuple[int, int] | None:
    """``(width, height)`` from a JPEG/PNG/BMP/TIFF/WebP header without decoding, or ``None``
    if unknown (``kind`` as :func:`_sniff_format` names it). Reads no copy of ``data``."""
    buf = memoryview(cast(Any, data)).cast("B")
    try:
        if kind == "PNG" and len(buf) >= 24 and buf[12:16] == b"IHDR":
            w, h = struct.unpack(">II", buf[16:24])
            return int(w), int(h)
        if kind == "BMP" and len(buf) >= 26:
            w, h = struct.unpack("<ii", buf[18:26])
            return abs(int(w)), abs(int(h))
        if kind == "JPEG":
            return _jpeg_size(buf)
        if kind == "TIFF":
            return _tiff_size(buf)
        if kind == "WebP":
            return _webp_size(buf)
    except struct.error:
        return None
    return None


def _jpeg_size(buf: memoryview) -> tuple[int, int] | None:
    """The first start-of-frame's size, found as libjpeg finds it: bytes between segments that
    are not a marker are skipped ("extraneous bytes before marker"), not taken as the end."""
    i = 2
    n = len(buf)
    while i + 9 < n:
        if buf[i] != 0xFF:
            i += 1
            continue
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", buf[i + 2 : i + 4])
        if marker in _SOF:
            h, w = struct.unpack(">HH", buf[i + 5 : i + 9])
            return int(w), int(h)
        i += 2 + length
    return None


def _tiff_size(buf: memoryview) -> tuple[int, int] | None:
    """ImageWidth (tag 256) and ImageLength (257) of the first IFD (the page OpenCV decodes)."""
    order = "<" if buf[:2] == b"II" else ">"
    (offset,) = struct.unpack(order + "I", buf[4:8])
    (count,) = struct.unpack(order + "H", buf[offset : offset + 2])
    found: dict[int, int] = {}
    for k in range(count):
        e = offset + 2 + 12 * k
        tag, kind = struct.unpack(order + "HH", buf[e : e + 4])
        if tag in (256, 257):
            fmt = "H" if kind == 3 else "I"  # SHORT or LONG
            found[tag] = int(struct.unpack(order + fmt, buf[e + 8 : e + 8 + struct.calcsize(fmt)])[0])
            if len(found) == 2:
                return found[256], found[257]
    return None


def _webp_size(buf: memoryview) -> tuple[int, int] | None:
    """Canvas size of a WebP: extended (VP8X), lossless (VP8L) or lossy (VP8) bitstream."""
    chunk = bytes(buf[12:16])
    if chunk == b"VP8X" and len(buf) >= 30:
        return 1 + int.from_bytes(buf[24:27], "little"), 1 + int.from_bytes(buf[27:30], "little")
    if chunk == b"VP8L" and len(buf) >= 25 and buf[20] == 0x2F:
        bits = int.from_bytes(buf[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(buf) >= 30:
        return int.from_bytes(buf[26:28], "little") & 0x3FFF, int.from_bytes(buf[28:30], "little") & 0x3FFF
    return None
