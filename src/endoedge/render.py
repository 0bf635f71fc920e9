"""Drawing detections onto frames (OpenCV), one polyline call per class.

Multi-task models add the polyp mask's contour (at probability 0.5, inside the shown boxes only)
and the frame label in the top-left corner; on an ``unclear`` frame every box label says so (``polyp 0.71 (unclear frame)``)
and boxes are drawn grey-tinted, so an alarm on an unreadable view is not taken at face value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from endoedge.detector import Detections

# BGR colours per class id (cycled); the first is a high-contrast green-cyan for single-class models.
PALETTE = np.array(
    [(80, 220, 60), (40, 170, 255), (60, 60, 240), (240, 160, 40), (200, 80, 200), (40, 220, 220)],
    dtype=np.int32,
)
MAX_LABELS = 20  # text is drawn per box (OpenCV cannot batch it); cap it for crowded frames
MASK_COLOR = (255, 200, 0)  # BGR: a light blue contour, distinct from the box palette
FRAME_COLORS = {"normal": (80, 200, 80), "unclear": (0, 200, 255), "polyp": (60, 60, 240)}
UNCLEAR = "unclear"


def _corners(det: Detections) -> np.ndarray:
    """The boxes as N x 4 x 2 int32 polygon corners (source pixels)."""
    b = np.rint(det.boxes).astype(np.int32)
    return np.stack([b[:, [0, 1]], b[:, [2, 1]], b[:, [2, 3]], b[:, [0, 3]]], axis=1)


def draw_frame_outputs(image: np.ndarray, det: Detections, thickness: int) -> None:
    """The mask contour and the frame label of a multi-task model (nothing for box-only models).

    The contour is drawn only inside the frame's boxes (the shown detections): mask pixels with no
    box around them are not an alarm the overlay should show (a cart stays silent on normal
    mucosa); ``Detections.mask`` itself keeps every pixel.
    """
    if det.mask is not None and len(det):
        binary = (det.mask > 0.5).astype(np.uint8)
        inside = np.zeros_like(binary)
        cv2.fillPoly(inside, list(_corners(det)), 1)
        binary &= inside
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if contours:
            cv2.drawContours(image, contours, -1, MASK_COLOR, thickness, cv2.LINE_AA)
    if det.frame_label is not None:
        score = (det.frame_scores or {}).get(det.frame_label, 0.0)
        color = FRAME_COLORS.get(det.frame_label, (255, 255, 255))
        org = (8 * thickness, 16 * thickness)
        cv2.putText(image, f"frame: {det.frame_label} {score:.2f}", org, cv2.FONT_HERSHEY_SIMPLEX,
                    thickness / 3, color, max(1, thickness // 2), cv2.LINE_AA)


def draw_detections(image: np.ndarray, det: Detections, *, thickness: int = 0) -> np.ndarray:
    """Draw ``det`` onto ``image`` (uint8 BGR) in place and return it.

    Boxes of one class are drawn with a single ``cv2.polylines`` call; labels (``name score``)
    are written for the ``MAX_LABELS`` highest-scoring boxes; a multi-task model's mask contour
    and frame label are drawn first (see the module doc).
    """
    t = thickness or max(2, round(min(image.shape[:2]) / 360))
    draw_frame_outputs(image, det, t)
    if len(det) == 0:
        return image
    unclear = det.frame_label == UNCLEAR
    b = np.rint(det.boxes).astype(np.int32)
    corners = _corners(det)  # N x 4 x 2
    for cid in np.unique(det.class_ids):
        base = PALETTE[cid % len(PALETTE)]
        color = tuple(int(v) for v in ((base + 160) // 2 if unclear else base))  # greyed on unclear frames
        cv2.polylines(image, list(corners[det.class_ids == cid]), True, color, t, cv2.LINE_AA)
    scale = t / 3
    for i in range(min(len(det), MAX_LABELS)):
        color = tuple(int(v) for v in PALETTE[det.class_ids[i] % len(PALETTE)])
        org = (int(b[i, 0]), max(int(b[i, 1]) - 4 * t, 12 * t))
        suffix = " (unclear frame)" if unclear else ""
        cv2.putText(image, f"{det.labels[i]} {det.scores[i]:.2f}{suffix}", org, cv2.FONT_HERSHEY_SIMPLEX,
                    scale, color, max(1, t // 2), cv2.LINE_AA)
    return image
