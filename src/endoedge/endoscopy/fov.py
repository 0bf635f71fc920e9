"""Finding the scope's field of view and the on-screen-display boxes on a downscaled frame.

Everything here works on the small *analysis* copy of a frame (see
:class:`~endoedge.endoscopy.FrameCleaner`) and returns geometry in **source-frame pixels**:
``small_xy = source_xy / scale``, a small pixel ``(j, i)`` covers source pixels
``[j * sx, (j + 1) * sx) x [i * sy, (i + 1) * sy)``. Rectangles are ``(x0, y0, x1, y1)`` with
exclusive ends, so ``frame[y0:y1, x0:x1]`` is the region.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

Rect = tuple[int, int, int, int]

_OPEN = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))


@dataclass(frozen=True)
class FieldOfView:
    """The scope's field of view in one frame size.

    Attributes:
        rect: bounding rectangle ``(x0, y0, x1, y1)``, source pixels, exclusive ends.
        polygon: ``K x 2`` int32 convex hull vertices, source pixels (x, y).
        frame_size: ``(height, width)`` of the frame it was found in.
        threshold: grey level (analysis copy) above which pixels counted as inside.
        found: ``False`` when no bright region was large enough and ``rect`` is the whole frame.
    """

    rect: Rect
    polygon: np.ndarray
    frame_size: tuple[int, int]
    threshold: int = 0
    found: bool = True

    @classmethod
    def whole(cls, frame_size: tuple[int, int], threshold: int = 0) -> FieldOfView:
        """The whole frame (no border found)."""
        h, w = frame_size
        poly = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.int32)
        return cls((0, 0, w, h), poly, frame_size, threshold, found=False)

    def crop_mask(self) -> np.ndarray:
        """``rect``-sized uint8 mask, 255 inside the polygon (drawn at source resolution)."""
        x0, y0, x1, y1 = self.rect
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [self.polygon - np.array([x0, y0], np.int32)], 255)
        return mask


def border_threshold(small_grey: np.ndarray, margin: int, cap: int) -> int:
    """Grey level separating scope border from tissue: the frame perimeter's 10th percentile
    (the black corners of an octagonal or circular mask) plus ``margin``, at most ``cap``.

    A fixed threshold does not work: the border of video overlays is often ~20 (not 0), and a
    dark lumen is only a few levels brighter than that.
    """
    perimeter = np.concatenate(
        (small_grey[0], small_grey[-1], small_grey[1:-1, 0], small_grey[1:-1, -1])
    )
    return int(min(float(np.percentile(perimeter, 10)) + margin, cap))


def find_fov(
    small_grey: np.ndarray,
    scale: tuple[float, float],
    frame_size: tuple[int, int],
    *,
    threshold: int,
    min_fraction: float,
    boxes: np.ndarray | None = None,
) -> FieldOfView | None:
    """Find the field of view: the convex hull of the largest bright region.

    Pixels above ``threshold`` are bright (see :func:`border_threshold`); OSD ``boxes`` are
    removed first (a box that sticks out into the border would widen the field of view); a 5x5
    opening deletes text strokes and thin bridges to OSD text; the convex hull of the largest
    remaining region is the field of view (octagonal and circular masks are convex, and a dark
    lumen at the rim does not bite into the hull unless it covers an extreme point). The parts of
    the boxes inside that hull's bounding rectangle then join the hull: what lies under a box
    is unknown, and it is filled anyway.

    Args:
        small_grey: ``h x w`` uint8 grey analysis copy.
        scale: ``(sx, sy)`` source pixels per analysis pixel.
        frame_size: source ``(height, width)``.
        boxes: ``K x 4`` int ``(x, y, w, h)`` OSD boxes in analysis pixels.

    Returns:
        The field of view, or ``None`` when the largest bright region covers less than
        ``min_fraction`` of the frame.
    """
    _, bright = cv2.threshold(small_grey, threshold, 255, cv2.THRESH_BINARY)
    boxes = np.zeros((0, 4), np.int64) if boxes is None else boxes
    for x, y, bw, bh in boxes.tolist():  # a box or two
        bright[y : y + bh, x : x + bw] = 0
    cv2.morphologyEx(bright, cv2.MORPH_OPEN, _OPEN, dst=bright)
    contours, _ = cv2.findContours(bright, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    areas = np.array([cv2.contourArea(c) for c in contours])  # regions, not pixels: a few
    best = contours[int(np.argmax(areas))]
    if areas.max() < min_fraction * bright.size:
        return None
    hull = cv2.convexHull(best).reshape(-1, 2)
    if len(boxes):
        lo, hi = hull.min(axis=0), hull.max(axis=0)
        corners = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:] - 1])  # 2K x 2
        corners = np.clip(corners, lo, hi).reshape(2, -1, 2)
        x0s, y0s, x1s, y1s = corners[0, :, 0], corners[0, :, 1], corners[1, :, 0], corners[1, :, 1]
        extra = np.stack([np.stack([x0s, y0s], 1), np.stack([x1s, y0s], 1),
                          np.stack([x1s, y1s], 1), np.stack([x0s, y1s], 1)]).reshape(-1, 2)
        hull = cv2.convexHull(np.concatenate([hull, extra]).astype(np.int32)).reshape(-1, 2)
    hull = hull.astype(np.float64)
    sx, sy = scale
    h, w = frame_size
    # A hull vertex is a small pixel's centre; the region reaches half a small pixel beyond it.
    centre = hull.mean(axis=0)
    offset = np.sign(hull - centre) * (0.5, 0.5)
    poly = np.round((hull + 0.5 + offset) * (sx, sy)).astype(np.int32)
    np.clip(poly[:, 0], 0, w, out=poly[:, 0])
    np.clip(poly[:, 1], 0, h, out=poly[:, 1])
    x0, y0 = poly.min(axis=0)
    x1, y1 = poly.max(axis=0)
    return FieldOfView((int(x0), int(y0), int(x1), int(y1)), poly, frame_size, threshold=threshold)


def find_osd_boxes(
    small_bgr: np.ndarray,
    scale: tuple[float, float],
    frame_size: tuple[int, int],
    *,
    hue: tuple[int, int],
    min_saturation: int,
    min_value: int,
    min_area: float,
    min_fill: float,
    pad: int,
) -> tuple[list[Rect], np.ndarray]:
    """Find solid, saturated green/teal rectangles (the scope-position box) in a frame.

    A box is a region of pixels within ``hue``, ``min_saturation``, ``min_value``
    whose bounding rectangle covers at least ``min_area`` of the frame and whose outer
    contour fills at least ``min_fill`` of that rectangle (a rectangle fills ~1; text and icons
    inside the box are holes and do not count). Tissue is red-to-yellow (hue < 35 or
    > 160); small green speckles (video decoding errors) are below ``min_area``.

    Args:
        small_bgr: ``h x w x 3`` uint8 analysis copy.
        scale: ``(sx, sy)`` source pixels per analysis pixel.
        frame_size: source ``(height, width)``.
        pad: source pixels added on each side of a box.

    Returns:
        ``(rects, small_boxes)``: source-pixel rectangles ``(x0, y0, x1, y1)``, and the same
        boxes (unpadded) as a ``K x 4`` int64 array of analysis-pixel ``(x, y, w, h)``.
    """
    hsv = cv2.cvtColor(small_bgr, cv2.COLOR_BGR2HSV)
    green = cv2.inRange(hsv, (hue[0], min_saturation, min_value), (hue[1], 255, 255))
    none = np.zeros((0, 4), np.int64)
    # Outer contours (40 us at 480x270; connected-component statistics take 1.3 ms there).
    contours, _ = cv2.findContours(green, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return [], none
    rects_small = np.array([cv2.boundingRect(c) for c in contours], np.float64).reshape(-1, 4)
    bbox_area = rects_small[:, 2] * rects_small[:, 3]
    big = bbox_area >= min_area * green.size
    area = np.zeros(len(contours))
    area[big] = [cv2.contourArea(c) for c, b in zip(contours, big, strict=True) if b]
    keep = big & (area >= min_fill * np.maximum(bbox_area, 1.0))
    boxes = rects_small[keep]  # x, y, w, h in analysis pixels
    if boxes.shape[0] == 0:
        return [], none
    sx, sy = scale
    h, w = frame_size
    src = np.empty((boxes.shape[0], 4), np.int64)
    src[:, 0] = np.floor(boxes[:, 0] * sx) - pad
    src[:, 1] = np.floor(boxes[:, 1] * sy) - pad
    src[:, 2] = np.ceil((boxes[:, 0] + boxes[:, 2]) * sx) + pad
    src[:, 3] = np.ceil((boxes[:, 1] + boxes[:, 3]) * sy) + pad
    np.clip(src[:, 0::2], 0, w, out=src[:, 0::2])
    np.clip(src[:, 1::2], 0, h, out=src[:, 1::2])
    rects: list[Rect] = [(int(a), int(b), int(c), int(d)) for a, b, c, d in src.tolist()]
    return rects, boxes.astype(np.int64)
