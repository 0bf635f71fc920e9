"""NMS-free (end-to-end) YOLO heads: Ultralytics YOLO26 / YOLOv10 exports with ``end2end=True``.

The head already did the one-to-one assignment and the top-k: one output ``B x K x 6``
(K = 300 for Ultralytics' default ``max_det``), each row ``x1, y1, x2, y2, score, class`` in
network-input pixels, sorted by descending score. Decoding is what Ultralytics'
``non_max_suppression`` does for such a model (its ``end2end`` branch): keep the rows whose
score is above the threshold, the first ``max_detections`` of them; no NMS (so the IoU
threshold is not used).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from endoedge.errors import ModelFormatError
from endoedge.postprocess.base import RawDetections, empty
from endoedge.spec import ModelSpec

ROW = 6  # x1, y1, x2, y2, score, class


class YoloEnd2EndDecoder:
    """Decoder for ``B x K x 6`` end-to-end YOLO outputs (see the module docstring)."""

    def __init__(self, spec: ModelSpec, output_names: tuple[str, ...]) -> None:
        if not output_names:
            raise ModelFormatError("end-to-end YOLO model has no outputs")
        self.output_names: tuple[str, ...] = (output_names[0],)
        self.num_classes = len(spec.class_names)

    def __call__(
        self,
        outputs: Mapping[str, np.ndarray],
        index: int,
        score_threshold: float,
        iou_threshold: float,
        max_detections: int,
    ) -> RawDetections:
        """Decode image ``index``; ``iou_threshold`` is unused (the head is NMS-free)."""
        pred = outputs[self.output_names[0]][index]
        if pred.ndim != 2 or pred.shape[1] != ROW:
            raise ModelFormatError(
                f"end-to-end YOLO output is {list(pred.shape)} per image, expected K x 6 "
                "(x1, y1, x2, y2, score, class); is this a detection model exported with end2end?"
            )
        keep = np.nonzero(pred[:, 4] > score_threshold)[0][:max_detections]
        if keep.size == 0:
            return empty()
        rows = pred[keep].astype(np.float32, copy=False)
        class_ids = np.rint(rows[:, 5]).astype(np.int64)
        if class_ids.size and (class_ids.min() < 0 or class_ids.max() >= self.num_classes):
            raise ModelFormatError(
                f"end-to-end YOLO output has class id {int(class_ids.max())} but the model names "
                f"{self.num_classes} classes; check --classes"
            )
        return RawDetections(np.ascontiguousarray(rows[:, :4]), np.ascontiguousarray(rows[:, 4]), class_ids)
