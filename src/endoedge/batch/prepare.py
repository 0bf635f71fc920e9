"""The per-image work that runs in decode workers (threads or processes): read, decode, and
pre-process for every distinct model input, so the inference thread only stacks and runs.

Workers keep one :class:`~endoedge.preprocess.Preprocessor` per thread and pre-processing spec
(its buffers are reused); each result owns its own ``3 x H x W`` float32 tensor.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from endoedge.batch.decode import MAX_PIXELS, Decoded, decode_file
from endoedge.batch.sources import Item
from endoedge.errors import InputError
from endoedge.preprocess import Geometry, Preprocessor
from endoedge.spec import PreprocessSpec


@dataclass
class Prepared:
    """One input ready for inference, or the reason it cannot be processed.

    Attributes:
        item: the input.
        width, height: source size in pixels (0 when it failed to decode).
        scale: source pixels per decoded pixel (see :class:`~endoedge.batch.decode.Decoded`).
        tensors: one ``3 x H x W`` float32 network input per pre-processing spec, in the order
            the specs were given.
        geoms: the matching geometries (decoded-image pixels <-> network input).
        image: the decoded BGR frame, kept only when a model needs it (endoscopy cleaning).
        thumb: a small BGR copy of the frame (longer side ``thumb`` px) for the study report,
            when asked for.
        error: why the input cannot be processed (then everything else is empty).
        decode_ms, preprocess_ms: worker time spent on this input.
    """

    item: Item
    width: int = 0
    height: int = 0
    scale: float = 1.0
    tensors: list[np.ndarray] = field(default_factory=list)
    geoms: list[Geometry] = field(default_factory=list)
    image: np.ndarray | None = None
    thumb: np.ndarray | None = None
    error: str | None = None
    decode_ms: float = 0.0
    preprocess_ms: float = 0.0


_local = threading.local()


def _preprocessor(spec: PreprocessSpec) -> Preprocessor:
    cache: dict[PreprocessSpec, Preprocessor] | None = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = {}
    pre = cache.get(spec)
    if pre is None:
        pre = cache[spec] = Preprocessor(spec)
    return pre


def make_thumb(image: np.ndarray, side: int) -> np.ndarray:
    """``image`` shrunk (INTER_AREA) so that its longer side is at most ``side`` pixels."""
    import cv2

    h, w = image.shape[:2]
    f = side / max(h, w)
    if f >= 1:
        return image.copy()
    return cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)


def prepare_decoded(item: Item, decoded: Decoded, specs: Sequence[PreprocessSpec], keep_image: bool,
                    decode_ms: float = 0.0, thumb: int = 0) -> Prepared:
    """Pre-process an already decoded image for each spec (and make a ``thumb``-pixel thumbnail)."""
    t0 = time.perf_counter_ns()
    tensors, geoms = [], []
    for spec in specs:
        batch, g = _preprocessor(spec)([decoded.image])
        tensors.append(batch[0].copy())
        geoms.append(g[0])
    small = make_thumb(decoded.image, thumb) if thumb > 0 else None
    ms = (time.perf_counter_ns() - t0) / 1e6
    return Prepared(item, decoded.width, decoded.height, decoded.scale, tensors, geoms,
                    decoded.image if keep_image else None, small, None, decode_ms, ms)


def reduced_side(specs: Sequence[PreprocessSpec], keep_image: bool, full_decode: bool) -> int | None:
    """The ``min_side`` of :func:`~endoedge.batch.decode.decode_file` for these models: the
    largest network input side (``None`` = full decode: asked for, no model, or a model that
    needs the frame itself)."""
    if full_decode or keep_image or not specs:
        return None
    return max(max(s.input_size) for s in specs)


def prepare_file(item: Item, specs: Sequence[PreprocessSpec], keep_image: bool = False,
                 max_pixels: int = MAX_PIXELS, full_decode: bool = False, thumb: int = 0) -> Prepared:
    """Read, decode and pre-process one image file; a bad file gives a :class:`Prepared` with ``error``.

    Large JPEGs are decoded reduced unless ``full_decode`` (see :func:`reduced_side`).

    Never raises for a bad input (an unexpected OpenCV failure is reported as the error too), so
    one broken file cannot stop a study.
    """
    t0 = time.perf_counter_ns()
    try:
        decoded = decode_file(item.file, max_pixels=max_pixels,
                              min_side=reduced_side(specs, keep_image, full_decode))
    except InputError as err:
        return Prepared(item, error=str(err), decode_ms=(time.perf_counter_ns() - t0) / 1e6)
    except Exception as err:  # noqa: BLE001 - e.g. cv2.error from a hostile file: an error record
        return Prepared(item, error=f"decoder failed ({type(err).__name__}: {err})",
                        decode_ms=(time.perf_counter_ns() - t0) / 1e6)
    return prepare_decoded(item, decoded, specs, keep_image, (time.perf_counter_ns() - t0) / 1e6, thumb)


def prepare_frame(item: Item, frame: np.ndarray, specs: Sequence[PreprocessSpec], keep_image: bool = False,
                  decode_ms: float = 0.0, thumb: int = 0) -> Prepared:
    """Pre-process one decoded video frame (BGR)."""
    h, w = frame.shape[:2]
    return prepare_decoded(item, Decoded(frame, w, h), specs, keep_image, decode_ms, thumb)
