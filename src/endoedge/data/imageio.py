"""Reading images and bringing arbitrary arrays to the 8-bit BGR layout detectors expect.

Conventions: images are ``numpy.ndarray`` in OpenCV layout, ``H x W x 3`` ``uint8`` BGR.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from endoedge.data.media import IMAGE_SUFFIXES
from endoedge.errors import InputError

__all__ = ["IMAGE_SUFFIXES", "read_image", "to_bgr8"]


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
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
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
