"""Decoding one study image robustly: every file is either converted to 8-bit BGR or refused
with a one-line reason (never an exception that stops the study).

Conversions (all done by OpenCV's ``IMREAD_COLOR`` in the same decode call): grayscale ->
BGR, RGBA/BGRA -> alpha dropped, 16-bit -> 8-bit (high byte), palette PNG -> BGR, CMYK/YCCK
JPEG -> BGR, EXIF orientation applied.

Refused (an ``InputError`` with the reason): zero-byte files, files that are not images,
corrupt or truncated JPEG/PNG, and images larger than ``max_pixels`` that cannot be shrunk while
decoding. The pixel count is read from the file header **before** decoding, so a decompression
bomb never allocates its pixels. A JPEG over the limit is decoded at 1/2, 1/4 or 1/8 scale
(libjpeg's DCT scaling, ``cv2.IMREAD_REDUCED_COLOR_*``: fast, little memory) so that the decoded
image fits; its boxes are mapped back to the full-size pixel grid. Other formats over the limit
(PNG/BMP/TIFF must be decoded at full size first) are refused.

Reduced decoding for speed (``min_side``): a JPEG at least twice as large as the network input
is decoded at the largest of 1/2, 1/4, 1/8 scale that still has ``min_side`` pixels on its
shorter side. libjpeg then skips most of the inverse DCT and the resize to the network input
starts from a smaller image: a 640 x 640 capsule frame for a 320 x 320 model decodes in about
half the time. The result is an area-filtered downscale (each decoded pixel summarises an
``f x f`` block), so detections differ slightly from a full decode + bilinear resize; pass
``min_side=None`` (``endoedge batch --full-decode``) for the bit-exact path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from endoedge.data.imageio import _sniff_format, header_size, imdecode

__all__ = ["MAX_PIXELS", "Decoded", "decode_bytes", "decode_file", "header_size"]
from endoedge.errors import InputError

#: Default limit of decoded pixels per image (100 Mpx, ~300 MB as BGR); larger JPEGs are decoded reduced.
MAX_PIXELS = 100_000_000
_REDUCED = ((2, cv2.IMREAD_REDUCED_COLOR_2), (4, cv2.IMREAD_REDUCED_COLOR_4), (8, cv2.IMREAD_REDUCED_COLOR_8))


@dataclass(frozen=True)
class Decoded:
    """A decoded image.

    Attributes:
        image: ``h x w x 3`` uint8 BGR (possibly reduced, see ``scale``).
        width, height: the source image's size in pixels (what boxes are reported in).
        scale: source pixels per decoded pixel (1 unless a huge JPEG was decoded reduced).
    """

    image: np.ndarray
    width: int
    height: int
    scale: float = 1.0


def decode_bytes(data: np.ndarray, *, max_pixels: int = MAX_PIXELS, min_side: int | None = None) -> Decoded:
    """Decode an encoded image (``uint8`` bytes of a file) to :class:`Decoded`.

    ``min_side``: decode a JPEG reduced (1/2, 1/4, 1/8) as long as both sides keep at least
    this many pixels (``None``: full size unless ``max_pixels`` requires less).

    Raises:
        InputError: the bytes are empty, not an image, corrupt/truncated, or too large.
    """
    if data.size == 0:
        raise InputError("empty (zero-byte) file")
    kind = _sniff_format(data[:12].tobytes())
    if kind is None:
        raise InputError("not an image (no JPEG, PNG, BMP or TIFF signature)")
    flag, factor = cv2.IMREAD_COLOR, 1
    size = header_size(data, kind)  # the frame header follows EXIF/ICC segments; a TIFF's IFD may be last
    if size is not None:
        pixels = size[0] * size[1]
        if pixels == 0:
            raise InputError(f"{kind} header says {size[0]} x {size[1]} pixels")
        if pixels > max_pixels:
            fits = [(f, fl) for f, fl in _REDUCED if pixels / (f * f) <= max_pixels] if kind == "JPEG" else []
            if not fits:
                raise InputError(
                    f"{kind} of {size[0]} x {size[1]} = {pixels / 1e6:.0f} Mpx is over the {max_pixels / 1e6:g} Mpx "
                    "limit (--max-pixels) and cannot be decoded reduced"
                )
            factor, flag = fits[0]
        if kind == "JPEG" and min_side:
            for f, fl in _REDUCED:
                if f > factor and -(-min(size) // f) >= min_side:
                    factor, flag = f, fl
    image = imdecode(data, flag, name=f"{kind} file")
    # OpenCV returns a grey-filled frame for a JPEG cut short; a complete one ends with EOI FF D9.
    if image is None or (kind == "JPEG" and data[-2:].tobytes() != b"\xff\xd9" and b"\xff\xd9" not in data.tobytes()):
        raise InputError(f"corrupt or truncated {kind} file")
    h, w = image.shape[:2]
    if h * w > max_pixels:  # the header we read was not the frame the decoder used
        raise InputError(f"{kind} decoded to {w} x {h} pixels, over the {max_pixels / 1e6:g} Mpx limit "
                         "(--max-pixels), though its header said otherwise; the file is damaged")
    if factor == 1:
        return Decoded(image, w, h)
    sw, sh = size if size is not None else (w * factor, h * factor)
    if (sw > sh) != (w > h) and sw != sh:  # EXIF rotated by 90 degrees while decoding
        sw, sh = sh, sw
    return Decoded(image, int(sw), int(sh), float(factor))


def decode_file(path: str | Path, *, max_pixels: int = MAX_PIXELS, min_side: int | None = None) -> Decoded:
    """Read and decode an image file (see :func:`decode_bytes`).

    Raises:
        InputError: the file is missing or unreadable, or :func:`decode_bytes` refuses it.
    """
    try:
        data = np.fromfile(Path(path), dtype=np.uint8)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read: {getattr(err, 'strerror', None) or err}") from err
    return decode_bytes(data, max_pixels=max_pixels, min_side=min_side)
