"""Drawing detections onto frames (OpenCV), one polyline call per class."""

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


def draw_detections(image: np.ndarray, det: Detections, *, thickness: int = 0) -> np.ndarray:
    """Draw ``det`` onto ``image`` (uint8 BGR) in place and return it.

    Boxes of one class are drawn with a single ``cv2.polylines`` call; labels (``name score``)
    are written for the ``MAX_LABELS`` highest-scoring boxes.
    """
    if len(det) == 0:
        return image
    t = thickness or max(2, round(min(image.shape[:2]) / 360))
    b = np.rint(det.boxes).astype(np.int32)
    corners = np.stack(
        [b[:, [0, 1]], b[:, [2, 1]], b[:, [2, 3]], b[:, [0, 3]]], axis=1
    )  # N x 4 x 2
    for cid in np.unique(det.class_ids):
        color = tuple(int(v) for v in PALETTE[cid % len(PALETTE)])
        cv2.polylines(image, list(corners[det.class_ids == cid]), True, color, t, cv2.LINE_AA)
    scale = t / 3
    for i in range(min(len(det), MAX_LABELS)):
        color = tuple(int(v) for v in PALETTE[det.class_ids[i] % len(PALETTE)])
        org = (int(b[i, 0]), max(int(b[i, 1]) - 4 * t, 12 * t))
        cv2.putText(image, f"{det.labels[i]} {det.scores[i]:.2f}", org, cv2.FONT_HERSHEY_SIMPLEX,
                    scale, color, max(1, t // 2), cv2.LINE_AA)
    return image
