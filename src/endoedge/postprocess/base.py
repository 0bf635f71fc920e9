"""Decoder protocol and the shared per-class NMS (decoders are registered in ``registry``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

import cv2
import numpy as np


class RawDetections(NamedTuple):
    """Detections of one image in network-input pixels.

    ``boxes`` ``N x 4`` float32 xyxy, ``scores`` ``N`` float32, ``class_ids`` ``N`` int64
    (0-based over the model's foreground classes), sorted by descending score.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray


class Decoder(Protocol):
    """Turns one image's raw outputs into :class:`RawDetections`."""

    output_names: tuple[str, ...]

    def __call__(
        self,
        outputs: Mapping[str, np.ndarray],
        index: int,
        score_threshold: float,
        iou_threshold: float,
        max_detections: int,
    ) -> RawDetections:
        """Decode image ``index`` of the batch ``outputs`` (keyed by output name)."""
        ...


EMPTY_BOXES = np.zeros((0, 4), dtype=np.float32)
# OpenCV's stubs declare Sequence arguments; numpy arrays are accepted (and far faster).
_nms_batched: Any = cv2.dnn.NMSBoxesBatched


def empty() -> RawDetections:
    """Return a detection set with no boxes."""
    return RawDetections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


def batched_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    iou_threshold: float,
    max_detections: int,
) -> RawDetections:
    """Per-class greedy NMS; keeps at most ``max_detections``, highest score first.

    Args:
        boxes: ``N x 4`` xyxy.
        scores: ``N`` scores (all candidates; filter by score before calling).
        class_ids: ``N`` integer class ids.
    """
    if boxes.shape[0] == 0:
        return empty()
    xywh = boxes.astype(np.float64)  # one small copy: OpenCV's Rect2d wants float64 x, y, w, h
    xywh[:, 2:] -= xywh[:, :2]
    kept = _nms_batched(
        xywh, scores.astype(np.float32, copy=False), class_ids.astype(np.int32), 0.0, iou_threshold
    )
    keep = np.asarray(kept, dtype=np.int64).reshape(-1)[:max_detections]
    return RawDetections(
        boxes[keep].astype(np.float32, copy=False),
        scores[keep].astype(np.float32, copy=False),
        class_ids[keep].astype(np.int64, copy=False),
    )

