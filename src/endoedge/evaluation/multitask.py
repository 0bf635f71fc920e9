"""Metrics of multi-task models: mask Dice / IoU and normal / unclear / polyp frame triage.

* Masks: per image with a ground-truth mask, Dice ``2|P∩G| / (|P| + |G|)`` and IoU
  ``|P∩G| / |P∪G|`` of the predicted mask thresholded at 0.5 (source pixels) against the
  ground truth; reported as means over images (the polyp-segmentation convention: mDice, mIoU)
  and as pooled pixel totals. Two empty masks count as 1 (a perfect empty prediction). The eval
  report takes Dice / IoU over the frames with a polyp in their mask and counts the polyp-free
  frames with any predicted mask pixel separately (an empty-frame Dice is all or nothing).
* Triage: the confusion matrix (rows = truth, columns = prediction, in ``classes`` order), the
  overall accuracy, and per class the one-vs-rest accuracy, precision, recall and F1 (``None``
  where a ratio's denominator is 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def mask_overlap(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """``(intersection, predicted, true)`` pixel counts of two same-shaped boolean masks."""
    if pred.shape != truth.shape:
        raise ValueError(f"mask shapes differ: predicted {pred.shape}, ground truth {truth.shape}")
    return int(np.count_nonzero(pred & truth)), int(np.count_nonzero(pred)), int(np.count_nonzero(truth))


def dice_iou(inter: int, pred: int, true: int) -> tuple[float, float]:
    """Dice and IoU of pixel counts (1.0 for two empty masks)."""
    if pred + true == 0:
        return 1.0, 1.0
    return 2.0 * inter / (pred + true), inter / (pred + true - inter)


def mask_summary(counts: Sequence[tuple[int, int, int]]) -> dict[str, Any]:
    """Mean Dice / IoU over images and pooled (all pixels) Dice / IoU of per-image counts."""
    if not counts:
        return {"n_images": 0, "dice": None, "iou": None, "pooled_dice": None, "pooled_iou": None}
    per = np.array([dice_iou(*c) for c in counts])
    inter, pred, true = (int(v) for v in np.sum(np.array(counts, np.int64), axis=0))
    pooled = dice_iou(inter, pred, true)
    return {"n_images": len(counts), "dice": float(per[:, 0].mean()), "iou": float(per[:, 1].mean()),
            "pooled_dice": pooled[0], "pooled_iou": pooled[1]}


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def triage_metrics(truth: Sequence[str], pred: Sequence[str], classes: Sequence[str]) -> dict[str, Any]:
    """Confusion matrix, accuracy and per-class accuracy / precision / recall / F1.

    Raises:
        ValueError: the lists differ in length, or hold a label outside ``classes``.
    """
    if len(truth) != len(pred):
        raise ValueError(f"{len(truth)} true labels but {len(pred)} predictions")
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({x for x in (*truth, *pred) if x not in index})
    if unknown:
        raise ValueError(f"labels {unknown} are not among the classes {list(classes)}")
    k, n = len(classes), len(truth)
    cm = np.zeros((k, k), np.int64)
    if n:
        np.add.at(cm, (np.array([index[t] for t in truth]), np.array([index[p] for p in pred])), 1)
    per: dict[str, dict[str, float | int | None]] = {}
    for i, c in enumerate(classes):
        tp = int(cm[i, i])
        fp = int(cm[:, i].sum()) - tp
        fn = int(cm[i, :].sum()) - tp
        tn = n - tp - fp - fn
        p, r = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
        f1 = 2 * p * r / (p + r) if p is not None and r is not None and p + r > 0 else (
            0.0 if p is not None and r is not None else None)
        per[c] = {"support": tp + fn, "accuracy": _ratio(tp + tn, n), "precision": p, "recall": r, "f1": f1}
    return {"classes": list(classes), "n_frames": n, "confusion": cm.tolist(),
            "accuracy": _ratio(int(np.trace(cm)), n), "per_class": per}


def format_multitask(report: dict[str, Any]) -> list[str]:
    """Table lines for the ``mask`` and ``triage`` parts of an eval report (none if absent)."""
    lines: list[str] = []

    def f(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    m = report.get("mask")
    if m:
        lines.append(f"Mask ({m['n_images']} images with a polyp in their ground-truth mask, threshold 0.5): mean "
                     f"Dice {f(m['dice'])}   mean IoU {f(m['iou'])}   pooled Dice {f(m['pooled_dice'])}   "
                     f"pooled IoU {f(m['pooled_iou'])}")
        if m.get("n_empty"):
            lines.append(f"  polyp-free frames with any predicted mask pixel: {m['empty_with_mask']} of {m['n_empty']}")
    t = report.get("triage")
    if t:
        classes = t["classes"]
        lines.append(f"Frame triage ({t['n_frames']} frames): accuracy {f(t['accuracy'])}")
        width = max(12, *(len(c) + 6 for c in classes))
        lines.append("  " + " " * 16 + "".join(f"{'pred ' + c:>{width}}" for c in classes))
        for c, row in zip(classes, t["confusion"], strict=True):
            lines.append(f"  {'true ' + c:<16}" + "".join(f"{v:>{width}}" for v in row))
        lines.append(f"  {'class':<16} {'support':>7} {'accuracy':>8} {'precision':>9} {'recall':>7} {'F1':>6}")
        for c in classes:
            s = t["per_class"][c]
            lines.append(f"  {c:<16} {s['support']:>7} {f(s['accuracy']):>8} {f(s['precision']):>9} "
                         f"{f(s['recall']):>7} {f(s['f1']):>6}")
    return lines
