"""Augmentation for endoscopy detection, on numpy images with xyxy pixel boxes.

Endoscope frames have no "up": every one of the 8 dihedral transforms (90-degree rotations and
flips) is an equally plausible frame. Then a random scale/crop (zoom in, or zoom out onto a
black canvas like the scope's black surround) and HSV colour jitter; optionally the domain
augmentations of :mod:`endoedge.training.domain_augment` (other processors and scopes). Geometry is done as one
``cv2.warpAffine`` per image; boxes are transformed with the same matrix, vectorized.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from endoedge.training.domain_augment import DomainAugConfig, domain_augment


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths.

    Attributes:
        dihedral: random 90-degree rotation and horizontal flip (all 8 orientations).
        scale: range of the zoom factor (output pixels per source pixel relative to a plain
            resize); > 1 crops in, < 1 zooms out onto black.
        aspect: max relative change of the aspect ratio (0.2: 0.8..1.2).
        min_visible: a box cut by the crop is kept if at least this fraction of its area stays
            visible; crops that leave a box less visible (but not gone) are re-drawn.
        hue, saturation, value: HSV jitter amplitudes (hue as a fraction of the colour circle,
            the others as gains, e.g. 0.3 for 0.7..1.3).
        contrast: contrast gain amplitude around the image mean.
        domain: white balance, blur, specular highlights, OSD text and FOV masks (after the
            colour jitter, on the output image), or ``None`` for none.
    """

    dihedral: bool = True
    scale: tuple[float, float] = (0.7, 1.5)
    aspect: float = 0.2
    min_visible: float = 0.6
    hue: float = 0.015
    saturation: float = 0.35
    value: float = 0.3
    contrast: float = 0.2
    domain: DomainAugConfig | None = None


def dihedral(image: np.ndarray, boxes: np.ndarray, k: int, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """Rotate ``image`` by ``k`` x 90 degrees counter-clockwise (``np.rot90``), then mirror it
    left-right if ``flip``; ``boxes`` (xyxy pixels) follow."""
    h, w = image.shape[:2]
    b = boxes.astype(np.float32, copy=True)
    for _ in range(k % 4):
        # np.rot90 (counter-clockwise): new (x, y) = (y, W - x); the height becomes W.
        b = np.stack([b[:, 1], w - b[:, 2], b[:, 3], w - b[:, 0]], 1) if len(b) else b
        h, w = w, h
    out = np.rot90(image, k % 4)
    if flip:
        out = out[:, ::-1]
        if len(b):
            b = np.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1)
    return np.ascontiguousarray(out), b.reshape(-1, 4).astype(np.float32)


def affine_boxes(boxes: np.ndarray, sx: float, sy: float, tx: float, ty: float) -> np.ndarray:
    """Apply ``x' = sx * x + tx``, ``y' = sy * y + ty`` to xyxy boxes (positive scales)."""
    return (boxes * np.array([sx, sy, sx, sy], np.float32) + np.array([tx, ty, tx, ty], np.float32)).astype(np.float32)


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Clip xyxy boxes to the image; returns the clipped boxes and the visible area fraction."""
    clipped = boxes.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, height)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    vis = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    return clipped, np.where(area > 0, vis / np.maximum(area, 1e-6), 0.0)


def random_scale_crop(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    out_size: int,
    rng: np.random.Generator,
    cfg: AugmentConfig,
    tries: int = 10,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zoom in (crop) or out (black canvas), then resize to ``out_size x out_size``.

    Returns the image and the boxes (clipped, xyxy output pixels) and labels that stay at least
    ``cfg.min_visible`` visible.
    """
    import cv2

    h, w = image.shape[:2]
    base_x, base_y = out_size / w, out_size / h
    for attempt in range(tries + 1):
        if attempt == tries:  # give up: plain resize
            sx, sy, tx, ty = base_x, base_y, 0.0, 0.0
        else:
            zoom = float(np.exp(rng.uniform(np.log(cfg.scale[0]), np.log(cfg.scale[1]))))
            ar = float(np.exp(rng.uniform(np.log(1 - cfg.aspect), np.log(1 + cfg.aspect)))) if cfg.aspect else 1.0
            sx, sy = base_x * zoom * np.sqrt(ar), base_y * zoom / np.sqrt(ar)
            # translation: any placement that keeps the output covered when zooming in, and the
            # image inside the output when zooming out
            tx = float(rng.uniform(min(0.0, out_size - w * sx), max(0.0, out_size - w * sx)))
            ty = float(rng.uniform(min(0.0, out_size - h * sy), max(0.0, out_size - h * sy)))
        moved = affine_boxes(boxes, sx, sy, tx, ty)
        clipped, vis = clip_boxes(moved, out_size, out_size)
        gone = vis <= 1e-3
        if attempt < tries and np.any(~gone & (vis < cfg.min_visible)):
            continue
        if attempt < tries and len(boxes) and gone.all():
            continue
        keep = ~gone & (vis >= cfg.min_visible) if attempt < tries else ~gone
        m = np.array([[sx, 0.0, tx], [0.0, sy, ty]], np.float32)
        out = cv2.warpAffine(image, m, (out_size, out_size), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        return out, clipped[keep], labels[keep]
    raise AssertionError("unreachable")


def color_jitter(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """HSV gains (look-up tables, as YOLO does) and a contrast gain, on uint8 RGB."""
    import cv2

    gains = rng.uniform(-1, 1, 3) * np.array([cfg.hue, cfg.saturation, cfg.value]) + np.array([0.0, 1.0, 1.0])
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    x = np.arange(256, dtype=np.float32)
    lut_h = ((x + gains[0] * 180) % 180).astype(np.uint8)
    lut_s = np.clip(x * gains[1], 0, 255).astype(np.uint8)
    lut_v = np.clip(x * gains[2], 0, 255).astype(np.uint8)
    h, s, v = cv2.split(hsv)
    hsv = cv2.merge((cv2.LUT(h, lut_h), cv2.LUT(s, lut_s), cv2.LUT(v, lut_v)))
    out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if cfg.contrast:
        c = 1.0 + float(rng.uniform(-cfg.contrast, cfg.contrast))
        mean = float(out.mean())
        out = cv2.convertScaleAbs(out, alpha=c, beta=mean * (1 - c))
    return out


def augment(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    out_size: int,
    rng: np.random.Generator,
    cfg: AugmentConfig | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The full training augmentation of one uint8 RGB image with xyxy pixel boxes.

    Returns ``out_size x out_size`` uint8 RGB, boxes (xyxy output pixels) and labels.
    """
    cfg = cfg or AugmentConfig()
    if cfg.dihedral:
        image, boxes = dihedral(image, boxes, int(rng.integers(4)), bool(rng.integers(2)))
    image, boxes, labels = random_scale_crop(image, boxes, labels, out_size, rng, cfg)
    image = color_jitter(image, rng, cfg)
    if cfg.domain is not None:
        image = domain_augment(image, rng, cfg.domain, boxes)
    return image, boxes, labels
