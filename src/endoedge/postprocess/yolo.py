"""YOLO decoding as Ultralytics' ``non_max_suppression`` does it (best class per box), in numpy.

Layouts:

* ``yolov8`` (YOLOv5u / YOLOv8 / YOLO11 Ultralytics exports): one output ``B x (4 + nc) x A``;
  rows 0-3 are box centre x, y, width, height in network-input pixels, the rest class scores.
* ``yolov5`` (the original YOLOv5 export): one output ``B x A x (5 + nc)``; columns 0-3 are
  cxcywh, 4 is objectness, the rest class probabilities; a box's score is objectness x class.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from endoedge.errors import ModelFormatError
from endoedge.postprocess.base import RawDetections, batched_nms, empty
from endoedge.spec import ModelSpec

MAX_NMS_CANDIDATES = 30000  # Ultralytics' max_nms: boxes beyond this (by score) are dropped


class YoloDecoder:
    """Decoder for Ultralytics-style YOLO outputs (see module docstring for the layouts)."""

    def __init__(self, spec: ModelSpec, output_names: tuple[str, ...]) -> None:
        if not output_names:
            raise ModelFormatError("YOLO model has no outputs")
        self.output_names: tuple[str, ...] = (output_names[0],)
        self.layout = spec.decoder
        self.num_classes = len(spec.class_names)

    def __call__(
        self,
        outputs: Mapping[str, np.ndarray],
        index: int,
        score_threshold: float,
        iou_threshold: float,
        max_detections: int,
    ) -> RawDetections:
        """Decode image ``index``; see :class:`~endoedge.postprocess.base.Decoder`."""
        pred = outputs[self.output_names[0]][index]
        if self.layout == "yolov8":
            xywh, scores, class_ids = self._candidates_v8(pred, score_threshold)
        else:
            xywh, scores, class_ids = self._candidates_v5(pred, score_threshold)
        if scores.size == 0:
            return empty()
        if scores.size > MAX_NMS_CANDIDATES:
            top = np.argsort(-scores, kind="stable")[:MAX_NMS_CANDIDATES]
            xywh, scores, class_ids = xywh[top], scores[top], class_ids[top]
        half = 0.5 * xywh[:, 2:]
        boxes = np.concatenate([xywh[:, :2] - half, xywh[:, :2] + half], axis=1)
        return batched_nms(boxes, scores, class_ids, iou_threshold, max_detections)

    def _candidates_v8(
        self, pred: np.ndarray, score_threshold: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        nc = self.num_classes
        if pred.shape[0] != 4 + nc:
            raise ModelFormatError(
                f"YOLOv8-layout output has {pred.shape[0]} rows, expected 4 + {nc} classes; "
                "check --classes (or the model is not a detection model)"
            )
        cls = pred[4:]  # nc x A
        class_ids = cls.argmax(axis=0)
        scores = np.take_along_axis(cls, class_ids[None], axis=0)[0]
        keep = np.nonzero(scores > score_threshold)[0]
        return pred[:4, keep].T, scores[keep], class_ids[keep]

    def _candidates_v5(
        self, pred: np.ndarray, score_threshold: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        nc = self.num_classes
        if pred.shape[1] != 5 + nc:
            raise ModelFormatError(
                f"YOLOv5-layout output has {pred.shape[1]} columns, expected 5 + {nc} classes; "
                "check --classes"
            )
        rows = pred[pred[:, 4] > score_threshold]  # objectness first, as YOLOv5 does
        cls = rows[:, 5:] * rows[:, 4:5]
        class_ids = cls.argmax(axis=1)
        scores = np.take_along_axis(cls, class_ids[:, None], axis=1)[:, 0]
        keep = scores > score_threshold
        return rows[keep, :4], scores[keep], class_ids[keep]
