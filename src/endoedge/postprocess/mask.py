"""Segmentation and frame-class outputs: mask mapping to source pixels, COCO RLE, frame scores.

A multi-task model's ``mask`` output is a low-resolution probability map over the network
input (``h x w``, cell ``(j, i)`` centred on network pixel ``((i + 0.5) W / w, (j + 0.5) H / h)``).
:func:`mask_to_source` maps it to source pixels with the same geometry as the boxes
(``network_xy = source_xy * scale + pad``): one bilinear resize for stretched inputs (exactly
``cv2.resize`` of the map to the source size), one inverse affine warp for letterboxed ones.

:func:`rle_encode` / :func:`rle_decode` are COCO's compressed run-length encoding (column-major
runs starting with background, counts as pycocotools' ``mask.encode`` writes them), in numpy,
so JSONL output needs no pycocotools.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np


def mask_to_source(
    prob: np.ndarray,
    input_size: tuple[int, int],
    scale: tuple[float, float],
    pad: tuple[float, float],
    source_size: tuple[int, int],
    *,
    offset: tuple[int, int] = (0, 0),
    frame_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Map an ``h x w`` probability map over the network input to ``source_size`` pixels.

    Args:
        prob: ``h x w`` float32 in 0..1 covering the whole ``input_size`` network input.
        input_size: network input ``(height, width)``.
        scale, pad: the pre-processing geometry, ``(x, y)`` pairs (``network = source * scale + pad``).
        source_size: ``(height, width)`` of the source image.
        offset, frame_size: when the source is a cropped view of a larger frame (its top-left at
            ``offset`` ``(x, y)`` in a ``frame_size`` ``(height, width)`` frame), the map is
            written straight into a frame-size array, zero outside the view (one bilinear warp;
            :func:`paste` of the source-size map up to interpolation rounding, without a second
            full-size array and copy).

    Returns:
        ``source_size`` (or ``frame_size``) float32 in 0..1 (bilinear; edges replicated;
        probabilities above ``1 - 2**-20`` are clipped to it).
    """
    h, w = prob.shape
    big_h, big_w = input_size
    hs, ws = source_size
    # 0..1 and a hair below 1, so the bilinear result stays in 0..1 without a pass over the big map
    prob = np.clip(np.asarray(prob, np.float32), 0.0, _TOP)
    rx, ry = big_w / w, big_h / h
    # source pixel centre x + 0.5 -> network (x + 0.5) sx + px -> map cell coordinate / r - 0.5
    m = np.array([[scale[0] / rx, 0.0, (0.5 * scale[0] + pad[0]) / rx - 0.5],
                  [0.0, scale[1] / ry, (0.5 * scale[1] + pad[1]) / ry - 0.5]], np.float64)
    stretched = pad == (0.0, 0.0) or pad == (0, 0)
    if frame_size is None or (tuple(offset) == (0, 0) and (hs, ws) == tuple(frame_size)):
        if stretched:
            return cv2.resize(prob, (ws, hs), interpolation=cv2.INTER_LINEAR)
        return cv2.warpAffine(prob, m, (ws, hs), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)
    # Straight into the frame: frame pixel X is source pixel X - offset. The map gets a 1-cell
    # replicated ring (edges as BORDER_REPLICATE inside the view); outside the view is zeroed.
    fh, fw = int(frame_size[0]), int(frame_size[1])
    x0, y0 = offset
    y1, x1 = min(fh, y0 + hs), min(fw, x0 + ws)
    if stretched and (y1 - y0, x1 - x0) == (hs, ws):
        out: np.ndarray = np.empty((fh, fw), np.float32)  # stretched, view inside the frame: resize into it
        view = out[y0:y1, x0:x1]
        got = cv2.resize(prob, (ws, hs), dst=view, interpolation=cv2.INTER_LINEAR)
        if not np.shares_memory(got, view):  # OpenCV allocated after all: place it
            view[...] = got
    else:
        m[:, 2] += 1.0 - m[:, :2] @ np.array([x0, y0], np.float64)
        ring = cv2.copyMakeBorder(prob, 1, 1, 1, 1, cv2.BORDER_REPLICATE)
        out = cv2.warpAffine(ring, m, (fw, fh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    out[:y0] = 0.0
    out[y1:] = 0.0
    out[y0:y1, :x0] = 0.0
    out[y0:y1, x1:] = 0.0
    return out


_TOP = np.float32(1.0 - 2.0**-20)  # probabilities are clipped here: see mask_to_source


def paste(mask: np.ndarray, offset: tuple[int, int], frame_size: tuple[int, int]) -> np.ndarray:
    """Place a mask of a cropped view (top-left at ``offset`` ``(x, y)``) into a zero frame of
    ``frame_size`` ``(height, width)``; returns ``mask`` itself when nothing is cropped."""
    if offset == (0, 0) and mask.shape == tuple(frame_size):
        return mask
    out = np.zeros(frame_size, np.float32)
    x, y = offset
    h, w = mask.shape
    out[y:y + h, x:x + w] = mask[: frame_size[0] - y, : frame_size[1] - x]
    return out


def frame_scores(logits: np.ndarray) -> np.ndarray:
    """Softmax of one frame's ``K`` class logits (float32)."""
    z = logits.astype(np.float64) - float(np.max(logits))
    e = np.exp(z)
    return (e / e.sum()).astype(np.float32)


def rle_encode(binary: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE ``{"size": [h, w], "counts": str}`` of an ``h x w`` boolean mask."""
    h, w = binary.shape
    flat = np.asarray(binary, dtype=bool).ravel(order="F")
    n = flat.size
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], edges, [n]])).tolist() if n else []
    if n and flat[0]:
        counts = [0, *counts]
    chars = []
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        more = True
        while more:
            v = x & 0x1F
            x >>= 5
            more = x != -1 if v & 0x10 else x != 0
            if more:
                v |= 0x20
            chars.append(chr(v + 48))
    return {"size": [int(h), int(w)], "counts": "".join(chars)}


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """The ``h x w`` uint8 (0/1) mask of a COCO compressed RLE (inverse of :func:`rle_encode`)."""
    h, w = rle["size"]
    s = rle["counts"]
    s = s.decode("ascii") if isinstance(s, bytes) else s
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    values = np.arange(len(counts)) % 2
    flat = np.repeat(values.astype(np.uint8), counts)
    return flat.reshape((w, h)).T.copy() if flat.size == h * w else np.zeros((h, w), np.uint8)
