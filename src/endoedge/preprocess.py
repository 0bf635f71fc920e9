"""Vectorized image pre-processing into a reused NCHW float32 batch, and its inverse for boxes.

The per-frame path does one ``cv2.resize`` of the uint8 BGR frame into a preallocated buffer and
one fused channel-swap + normalize pass into a preallocated float32 batch: no per-frame
allocations. Resizing is bilinear without anti-aliasing (``cv2.INTER_LINEAR``), which is what
torchvision's SSD transform (``F.interpolate(mode="bilinear", align_corners=False)``) and
Ultralytics' ``LetterBox`` do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from endoedge.spec import ModelSpec, PreprocessSpec


@dataclass(frozen=True)
class Geometry:
    """Where a source image lies inside the network input.

    ``network_xy = source_xy * scale + pad``; ``scale`` and ``pad`` are ``(x, y)`` pairs.
    ``source_size`` is ``(height, width)`` of the source image in pixels.
    """

    scale: tuple[float, float]
    pad: tuple[float, float]
    source_size: tuple[int, int]

    def to_source(self, boxes: np.ndarray) -> np.ndarray:
        """Map ``N x 4`` xyxy boxes from network-input pixels to source pixels, in place, clipped.

        Returns the same array.
        """
        sx, sy = self.scale
        px, py = self.pad
        h, w = self.source_size
        boxes -= np.array([px, py, px, py], dtype=boxes.dtype)
        boxes /= np.array([sx, sy, sx, sy], dtype=boxes.dtype)
        np.clip(boxes[:, 0::2], 0, w, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0, h, out=boxes[:, 1::2])
        return boxes


class Preprocessor:
    """Turns uint8 BGR images into the normalized NCHW float32 batch a model expects.

    The returned batch is a view of an internal buffer that the next call overwrites: run
    inference on it before pre-processing the next batch.

    Args:
        spec: the model's pre-processing spec.
        precise: resize in float32 instead of uint8. uint8 resizing (the default, ~6x faster
            at 1080p) rounds each resized pixel to an integer, i.e. up to 0.5 grey levels away
            from torchvision's float resize; ``precise=True`` matches torchvision's transform to
            float rounding (<= 2e-7; it normalizes before resizing, we after), for evaluation
            and parity checks.
    """

    def __init__(self, spec: PreprocessSpec, *, precise: bool = False) -> None:
        self.spec = spec
        self.precise = precise
        self._src_f32 = np.empty((0, 0, 3), dtype=np.float32)
        h, w = spec.input_size
        self._hw = (h, w)
        std = np.asarray(spec.std, dtype=np.float32)
        mean = np.asarray(spec.mean, dtype=np.float32)
        # x = (p / 255 - mean) / std = p * alpha + gamma, per channel in the model's order.
        self._alpha = [float(a) for a in 1.0 / (255.0 * std)]
        self._gamma = [float(g) for g in -mean / std]
        self._resized = np.empty((h, w, 3), dtype=np.float32 if precise else np.uint8)
        self._planes = [np.empty((h, w), dtype=self._resized.dtype) for _ in range(3)]
        # Plane i of the network input comes from channel _order[i] of the BGR frame.
        self._order = (2, 1, 0) if spec.color == "RGB" else (0, 1, 2)
        self._batch = np.empty((0, 3, h, w), dtype=np.float32)

    def _ensure_batch(self, n: int) -> np.ndarray:
        if self._batch.shape[0] < n:
            self._batch = np.empty((n, 3, *self._hw), dtype=np.float32)
        return self._batch[:n]

    def geometry(self, source_size: tuple[int, int]) -> Geometry:
        """Return how an image of ``(height, width)`` maps into the network input."""
        sh, sw = source_size
        h, w = self._hw
        if self.spec.resize == "stretch":
            return Geometry(scale=(w / sw, h / sh), pad=(0.0, 0.0), source_size=source_size)
        # Letterbox exactly as Ultralytics' LetterBox(center=True, scaleup=True, auto=False).
        r = min(h / sh, w / sw)
        nw, nh = round(sw * r), round(sh * r)
        dw, dh = (w - nw) / 2, (h - nh) / 2
        left, top = round(dw - 0.1), round(dh - 0.1)
        return Geometry(scale=(nw / sw, nh / sh), pad=(float(left), float(top)), source_size=source_size)

    def __call__(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Geometry]]:
        """Pre-process uint8 BGR images (see :func:`endoedge.data.imageio.to_bgr8`).

        Returns:
            ``(batch, geometries)``: ``batch`` is ``N x 3 x H x W`` float32 (a reused buffer),
            ``geometries[i]`` maps boxes of the network input back to image ``i``.
        """
        batch = self._ensure_batch(len(images))
        geoms = []
        for i, image in enumerate(images):
            geoms.append(self._one(image, batch[i]))
        return batch, geoms

    def _one(self, image: np.ndarray, out: np.ndarray) -> Geometry:
        h, w = self._hw
        geom = self.geometry((image.shape[0], image.shape[1]))
        resized = self._resized
        if self.precise:
            if self._src_f32.shape != image.shape:
                self._src_f32 = np.empty(image.shape, dtype=np.float32)
            np.copyto(self._src_f32, image, casting="unsafe")
            image = self._src_f32
        if self.spec.resize == "stretch":
            if image.shape[0] == h and image.shape[1] == w:
                resized = image
            else:
                cv2.resize(image, (w, h), dst=resized, interpolation=cv2.INTER_LINEAR)
        else:
            left, top = int(geom.pad[0]), int(geom.pad[1])
            nw = round(image.shape[1] * geom.scale[0])
            nh = round(image.shape[0] * geom.scale[1])
            resized.fill(self.spec.pad_value)
            roi = resized[top : top + nh, left : left + nw]
            if nh == image.shape[0] and nw == image.shape[1]:
                roi[...] = image
            else:
                # A ROI view of the preallocated canvas: OpenCV writes into it in place.
                cv2.resize(image, (nw, nh), dst=roi, interpolation=cv2.INTER_LINEAR)
        # De-interleave with OpenCV, then scale + offset each contiguous plane in one OpenCV pass
        # (addWeighted with a zero second weight computes p * alpha + gamma into float32):
        # 2x faster than numpy on the strided HWC -> CHW view.
        cv2.split(resized, self._planes)
        for i, c in enumerate(self._order):
            plane = self._planes[c]
            cv2.addWeighted(plane, self._alpha[i], plane, 0.0, self._gamma[i], dst=out[i], dtype=cv2.CV_32F)
        return geom


def real_looking_batch(spec: ModelSpec, n: int) -> np.ndarray:
    """``n`` bundled colonoscopy frames pre-processed for ``spec`` (flipped/rotated for variety)."""
    from endoedge.data.imageio import read_image
    from endoedge.data.samples import sample_frame_paths

    paths = sample_frame_paths()
    frames = []
    for i in range(n):
        img = read_image(paths[i % len(paths)])
        frames.append(np.ascontiguousarray(np.rot90(img, k=i // len(paths))))
    batch, _ = Preprocessor(spec.preprocess)(frames)
    return batch.copy()
