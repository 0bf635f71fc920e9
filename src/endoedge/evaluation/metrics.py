"""Detection metrics of one evaluated dataset: COCO mAP, P/R/F1, frame-level result, AUC, overlap.

Inputs are per-image :class:`Prediction` objects with boxes **xyxy in source-image pixels** (as
:meth:`endoedge.Detector.detect` returns them) and class indices of the *dataset* (0-based), and
the ground truth as a :class:`~endoedge.data.datasets.Dataset` (same image order).

- **COCO mAP@0.5 and @0.5:0.95** come from pycocotools' ``COCOeval`` (101-point interpolated
  AP, maxDets 100), fed every detection down to the low score threshold the caller ran at.
- **Precision / recall / F1 at IoU 0.45, 0.50, 0.55** count ``COCOeval``'s own greedy matches
  (each detection, highest score first, takes the unmatched ground-truth box it overlaps most,
  if IoU >= the threshold) among the detections scoring >= the operating threshold ``conf``.
  Greedy matching by score makes this equal to matching only those detections.
- **Frame level**: a frame's truth is its largest ground-truth box's class, or ``background``
  when it has none; its prediction is the class of its best detection scoring >= ``conf``, or
  ``background``. Sensitivity = P(prediction != background | truth != background),
  specificity = P(prediction == background | truth == background), accuracy = the share of
  frames whose predicted class equals the truth.
- **AUC** of the frame-level polyp score (the frame's highest detection score, 0 without
  detections) between frames with and without ground truth: the Mann-Whitney statistic with
  ties counted half. ``None`` without negative frames.
- **Overlap buckets** (seed 004, Table 6): for every ground-truth box the best IoU of a detection
  of its class scoring >= ``conf`` (0 if none); the fraction of boxes at >= 0.6/0.7/0.8/0.9.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from endoedge._optional import require
from endoedge.data.datasets import Dataset

PRF_IOUS: tuple[float, ...] = (0.45, 0.50, 0.55)
OVERLAP_IOUS: tuple[float, ...] = (0.6, 0.7, 0.8, 0.9)
BACKGROUND = "background"


@dataclass(frozen=True)
class Prediction:
    """Detections of one image.

    Attributes:
        boxes: ``N x 4`` float xyxy, source-image pixels.
        scores: ``N`` scores in 0..1.
        labels: ``N`` int 0-based dataset class indices.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    @classmethod
    def empty(cls) -> Prediction:
        """No detections."""
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    @property
    def frame_score(self) -> float:
        """Highest score, 0 without detections."""
        return float(self.scores.max(initial=0.0))


def coco_evaluation(
    dataset: Dataset,
    sizes: Sequence[tuple[int, int]],
    preds: Sequence[Prediction],
    *,
    iou_thrs: Sequence[float] | None = None,
    max_dets: int = 100,
) -> Any:
    """Run pycocotools' ``COCOeval`` (bbox, area 'all' plus COCO's defaults) and return it.

    Image ids are 1..N in ``dataset`` order, category ids 1..C. ``iou_thrs`` replaces COCO's
    0.50:0.05:0.95 (then only ``evalImgs`` are meaningful, not ``stats``).
    """
    from endoedge.evaluation.coco import coco_gt

    cocoeval = require("pycocotools.cocoeval", extra="eval", purpose="COCO evaluation")
    gt = coco_gt(dataset, list(sizes))
    results = _coco_results(preds)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results) if len(results) else _empty_results(gt)
        ev = cocoeval.COCOeval(gt, dt, "bbox")
        if iou_thrs is not None:
            ev.params.iouThrs = np.asarray(iou_thrs, np.float64)
            ev.params.areaRng, ev.params.areaRngLbl = [[0.0, 1e10]], ["all"]
        ev.params.maxDets = [1, 10, max_dets] if iou_thrs is None else [max_dets]
        ev.evaluate()
        ev.accumulate()
        if iou_thrs is None:
            ev.summarize()
    return ev


def _coco_results(preds: Sequence[Prediction]) -> np.ndarray:
    """``K x 7`` rows ``[image_id, x, y, w, h, score, category_id]`` (loadRes' array form)."""
    rows = []
    for i, p in enumerate(preds, start=1):
        if len(p.scores) == 0:
            continue
        b = p.boxes.astype(np.float64)
        rows.append(np.column_stack([np.full(len(b), i), b[:, 0], b[:, 1], b[:, 2] - b[:, 0],
                                     b[:, 3] - b[:, 1], p.scores, p.labels + 1]))
    return np.concatenate(rows) if rows else np.zeros((0, 7))


def _empty_results(gt: Any) -> Any:
    """A detections object with no detections (``loadRes`` refuses an empty list)."""
    coco_mod = require("pycocotools.coco", extra="eval", purpose="COCO evaluation")
    dt = coco_mod.COCO()
    dt.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"],
                  "annotations": []}
    dt.createIndex()
    return dt


def coco_map(ev: Any, class_names: Sequence[str]) -> dict[str, Any]:
    """mAP@0.5:0.95, mAP@0.5, per-class AP and PR curves of an accumulated standard ``COCOeval``.

    ``pr_curves[name]`` holds precision at IoU 0.5 and averaged over 0.5:0.95 on COCO's 101
    recall points (``recall``); -1 (no ground truth) becomes ``None``.
    """
    prec = ev.eval["precision"][:, :, :, 0, -1]  # T x R x K at area 'all', maxDets 100
    per_class: dict[str, dict[str, float | None]] = {}
    curves: dict[str, dict[str, list[float | None]]] = {}
    for k, name in enumerate(class_names):
        p = prec[:, :, k]
        valid = p > -1
        per_class[name] = {
            "ap50": float(p[0][valid[0]].mean()) if valid[0].any() else None,
            "ap50_95": float(p[valid].mean()) if valid.any() else None,
        }
        count = valid.sum(axis=0)
        mean_curve = np.where(count > 0, np.where(valid, p, 0.0).sum(axis=0) / np.maximum(count, 1), np.nan)
        curves[name] = {"iou50": _nan_to_none(np.where(valid[0], p[0], np.nan)),
                        "iou50_95": _nan_to_none(mean_curve)}
    return {
        "map50_95": _none_if_negative(ev.stats[0]),
        "map50": _none_if_negative(ev.stats[1]),
        "per_class": per_class,
        "pr_curves": {"recall": [round(float(r), 2) for r in ev.params.recThrs], **curves},
    }


def precision_recall_f1(ev: Any, class_names: Sequence[str], conf: float) -> dict[str, Any]:
    """Per-class and overall TP/FP/FN, precision, recall, F1 at each of ``ev``'s IoU thresholds,
    counting detections scoring >= ``conf`` (``ev`` from :func:`coco_evaluation` with
    ``iou_thrs``). Keys: ``f"{iou:.2f}"`` -> class name or ``"all"`` -> counts and ratios."""
    thrs = ev.params.iouThrs
    n_cls = len(class_names)
    tp = np.zeros((len(thrs), n_cls), np.int64)
    fp = np.zeros_like(tp)
    n_gt = np.zeros(n_cls, np.int64)
    cat_index = {cid: k for k, cid in enumerate(ev.params.catIds)}
    for e in ev.evalImgs:  # one entry per (class, image); None where neither has boxes
        if e is None:
            continue
        k = cat_index[e["category_id"]]
        n_gt[k] += int(np.count_nonzero(~np.asarray(e["gtIgnore"], bool)))
        scores = np.asarray(e["dtScores"], np.float64)
        if scores.size == 0:
            continue
        use = (scores >= conf)[None, :] & ~np.asarray(e["dtIgnore"], bool)
        matched = np.asarray(e["dtMatches"]) > 0
        tp[:, k] += (use & matched).sum(axis=1)
        fp[:, k] += (use & ~matched).sum(axis=1)
    out: dict[str, Any] = {}
    for t, thr in enumerate(thrs):
        row = {name: _prf(int(tp[t, k]), int(fp[t, k]), int(n_gt[k])) for k, name in enumerate(class_names)}
        row["all"] = _prf(int(tp[t].sum()), int(fp[t].sum()), int(n_gt.sum()))
        out[f"{thr:.2f}"] = row
    return out


def _prf(tp: int, fp: int, n_gt: int) -> dict[str, float | int | None]:
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / n_gt if n_gt else None
    f1 = (2 * precision * recall / (precision + recall)
          if precision is not None and recall is not None and precision + recall > 0 else
          (0.0 if precision is not None and recall is not None else None))
    return {"tp": tp, "fp": fp, "fn": n_gt - tp, "precision": precision, "recall": recall, "f1": f1}


def frame_truth(dataset: Dataset) -> np.ndarray:
    """Per image: the class of its largest ground-truth box, or -1 (background)."""
    out = np.full(len(dataset.samples), -1, np.int64)
    for i, s in enumerate(dataset.samples):
        if len(s.boxes):
            area = (s.boxes[:, 2] - s.boxes[:, 0]) * (s.boxes[:, 3] - s.boxes[:, 1])
            out[i] = int(s.labels[int(np.argmax(area))])
    return out


def frame_level(truth: np.ndarray, preds: Sequence[Prediction], class_names: Sequence[str],
                conf: float) -> dict[str, Any]:
    """Confusion matrix (rows truth, columns prediction; classes then ``background``),
    sensitivity, specificity and accuracy of the frame-level result (see the module docstring).
    Ratios without frames to count are ``None``."""
    n_cls = len(class_names)
    pred = np.full(len(preds), -1, np.int64)
    for i, p in enumerate(preds):
        keep = p.scores >= conf
        if keep.any():
            pred[i] = int(p.labels[keep][np.argmax(p.scores[keep])])
    t_idx = np.where(truth < 0, n_cls, truth)
    p_idx = np.where(pred < 0, n_cls, pred)
    confusion = np.zeros((n_cls + 1, n_cls + 1), np.int64)
    np.add.at(confusion, (t_idx, p_idx), 1)
    pos, neg = truth >= 0, truth < 0
    return {
        "labels": [*class_names, BACKGROUND],
        "confusion": confusion.tolist(),
        "n_positive": int(pos.sum()),
        "n_negative": int(neg.sum()),
        "sensitivity": float((pred[pos] >= 0).mean()) if pos.any() else None,
        "specificity": float((pred[neg] < 0).mean()) if neg.any() else None,
        "accuracy": float((pred == truth).mean()) if len(truth) else None,
    }


def auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve of ``scores`` for the boolean ``positive`` labels
    (Mann-Whitney U / (n_pos * n_neg), ties counted half); ``None`` if a class is empty."""
    scores = np.asarray(scores, np.float64)
    positive = np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # Average rank (1-based) of each distinct value: ranks of tied values are shared.
    upper = np.cumsum(counts)
    avg_rank = upper - (counts - 1) / 2.0
    rank_sum = float(avg_rank[inverse][positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, tpr)`` at every distinct score threshold, from (0, 0) to (1, 1)."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    s, y = np.asarray(scores)[order], np.asarray(positive, bool)[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each distinct score
    tps, fps = np.cumsum(y)[last], np.cumsum(~y)[last]
    return np.r_[0.0, fps / max(fps[-1], 1)], np.r_[0.0, tps / max(tps[-1], 1)]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``N x M`` IoU of xyxy boxes (continuous coordinates, as pycocotools)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def overlap_buckets(dataset: Dataset, preds: Sequence[Prediction], conf: float) -> dict[str, Any]:
    """Share of ground-truth boxes whose best same-class detection (score >= ``conf``) reaches
    each IoU in :data:`OVERLAP_IOUS` (seed 004 Table 6), plus the mean best IoU."""
    best: list[np.ndarray] = []
    for s, p in zip(dataset.samples, preds, strict=True):
        if len(s.boxes) == 0:
            continue
        keep = p.scores >= conf
        if not keep.any():
            best.append(np.zeros(len(s.boxes)))
            continue
        iou = box_iou(s.boxes.astype(np.float64), p.boxes[keep].astype(np.float64))
        iou[s.labels[:, None] != p.labels[keep][None, :]] = 0.0
        best.append(iou.max(axis=1))
    values = np.concatenate(best) if best else np.zeros(0)
    out: dict[str, Any] = {f"iou>={t:.1f}": (float((values >= t).mean()) if values.size else None)
                           for t in OVERLAP_IOUS}
    out["mean_best_iou"] = float(values.mean()) if values.size else None
    out["n_gt"] = int(values.size)
    return out


def _none_if_negative(x: float) -> float | None:
    return None if x < 0 else float(x)


def _nan_to_none(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else round(float(v), 5) for v in values]
