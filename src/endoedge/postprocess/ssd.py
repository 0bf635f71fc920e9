"""SSD decoding as torchvision's ``SSD.postprocess_detections`` does it, vectorized in numpy.

Per image: softmax over classes (index 0 = background); per foreground class keep scores above
the threshold and the ``topk_candidates`` best; decode those anchors' box regressions with the
``BoxCoder`` weights; clip to the network input; per-class NMS; keep ``max_detections``.
One deliberate difference: boxes clipped to zero area (entirely outside the image) are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from endoedge.errors import ModelFormatError
from endoedge.postprocess.base import RawDetections, batched_nms, empty
from endoedge.spec import ModelSpec


class SSDDecoder:
    """Decoder for SSD raw heads ``bbox_regression`` (B x A x 4) and ``cls_logits`` (B x A x C)."""

    def __init__(self, spec: ModelSpec, output_names: tuple[str, ...]) -> None:
        params = spec.decoder_params
        try:
            priors = np.asarray(params["priors"], dtype=np.float32)
            self.weights = np.asarray(params["box_coder_weights"], dtype=np.float32)
            self.clip = float(params["bbox_xform_clip"])
            self.topk = int(params["topk_candidates"])
            self.box_output = str(params.get("box_output", "bbox_regression"))
            self.logit_output = str(params.get("logit_output", "cls_logits"))
        except KeyError as err:
            raise ModelFormatError(f"SSD decoder parameter {err} missing from model metadata") from err
        for name in (self.box_output, self.logit_output):
            if name not in output_names:
                raise ModelFormatError(
                    f"SSD model has no output '{name}' (outputs: {', '.join(output_names)})"
                )
        self.output_names: tuple[str, ...] = (self.box_output, self.logit_output)
        # Priors as centre/size once (torchvision recomputes them from xyxy for every image).
        wh = priors[:, 2:] - priors[:, :2]
        self._prior_wh = wh
        self._prior_ctr = priors[:, :2] + 0.5 * wh
        h, w = spec.preprocess.input_size
        self._limits = np.array([w, h, w, h], dtype=np.float32)
        self.num_priors = priors.shape[0]
        self._work = np.empty((0, 0), dtype=np.float32)

    def __call__(
        self,
        outputs: Mapping[str, np.ndarray],
        index: int,
        score_threshold: float,
        iou_threshold: float,
        max_detections: int,
    ) -> RawDetections:
        """Decode image ``index``; see :class:`~endoedge.postprocess.base.Decoder`."""
        regression = outputs[self.box_output][index]
        logits = outputs[self.logit_output][index]
        if regression.shape[0] != self.num_priors:
            raise ModelFormatError(
                f"model outputs {regression.shape[0]} anchors but its metadata has "
                f"{self.num_priors} priors; the ONNX and its metadata do not belong together"
            )
        probs = self._softmax_fg(logits)  # K x A, one contiguous row per foreground class
        above = probs > score_threshold
        num_anchors = probs.shape[1]
        if num_anchors > self.topk and bool((above.sum(axis=1) > self.topk).any()):
            # More than top-k candidates in some class: keep each class's top-k, then apply the
            # threshold (the same set as torchvision's threshold-then-top-k).
            top = np.argpartition(probs, num_anchors - self.topk, axis=1)[:, num_anchors - self.topk :]
            top_scores = np.take_along_axis(probs, top, axis=1)
            keep = top_scores > score_threshold
            anchor_idx, scores, class_ids = top[keep], top_scores[keep], np.nonzero(keep)[0]
        else:
            class_ids, anchor_idx = np.nonzero(above)
            scores = probs[class_ids, anchor_idx]
        if anchor_idx.size == 0:
            return empty()
        boxes = self._decode(regression[anchor_idx], anchor_idx)
        # Boxes clipped to zero width or height lie outside the input: drop them (torchvision
        # keeps them, and they then count towards its detections_per_img).
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        if not valid.all():
            boxes, scores, class_ids = boxes[valid], scores[valid], class_ids[valid]
        return batched_nms(boxes, scores, class_ids, iou_threshold, max_detections)

    def _softmax_fg(self, logits: np.ndarray) -> np.ndarray:
        """Foreground class probabilities ``K x A`` of ``A x C`` logits, in a reused buffer.

        Works class-major: numpy reduces over a short inner axis (C = K + 1) ~30x slower than
        over a long one, so the logits are copied transposed once.
        """
        if self._work.shape != logits.shape[::-1]:
            self._work = np.empty(logits.shape[::-1], dtype=np.float32)
        work = self._work
        np.copyto(work, logits.T)
        work -= work.max(axis=0)
        np.exp(work, out=work)
        probs: np.ndarray = work[1:]
        probs /= work.sum(axis=0)
        return probs

    def _decode(self, codes: np.ndarray, anchor_idx: np.ndarray) -> np.ndarray:
        wx, wy, ww, wh = self.weights
        prior_wh = self._prior_wh[anchor_idx]
        ctr = codes[:, :2] / np.array([wx, wy], dtype=np.float32) * prior_wh
        ctr += self._prior_ctr[anchor_idx]
        dwh = np.minimum(codes[:, 2:] / np.array([ww, wh], dtype=np.float32), self.clip)
        half = 0.5 * np.exp(dwh) * prior_wh
        boxes = np.concatenate([ctr - half, ctr + half], axis=1)
        np.clip(boxes, 0.0, self._limits, out=boxes)
        return boxes
