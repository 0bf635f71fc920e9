"""Run a :class:`~endoedge.Detector` over a labelled dataset (and negative frames) and score it.

One detection pass per image at a low score threshold (``map_conf``, 0.001 by default) serves
every metric: COCO mAP needs the whole ranked list, and the operating threshold ``conf`` then
selects from it (NMS keeps high-scoring boxes whatever the threshold, so the detections above
``conf`` are the ones a run at ``conf`` would give, unless ``max_detections`` cuts them).
Unreadable images are skipped, counted and reported, not fatal.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from endoedge.data.datasets import Dataset, Sample
from endoedge.data.imageio import IMAGE_SUFFIXES, read_image
from endoedge.data.masks import read_mask
from endoedge.data.walk import walk_files
from endoedge.errors import EndoedgeError, InputError
from endoedge.evaluation import metrics
from endoedge.evaluation.metrics import Prediction
from endoedge.evaluation.multitask import mask_overlap, mask_summary, triage_metrics

logger = logging.getLogger(__name__)

NO_NEGATIVES = (
    "no negative (polyp-free) frames: the dataset has no image without a box (Kvasir-SEG has "
    "only polyp images); pass --negatives DIR with polyp-free frames from the same kind of video"
)
PROXY_DEFINITION = (
    "PROXY, not a clinical AUC: negatives are box-free strips (>= 1/3 of each side, 8 px clear "
    "of every box) cut from the positive images themselves; they are zoomed-in views of the same "
    "patients without black borders, so the value is biased in an unknown direction and must "
    "not be compared with AUCs measured on real negative frames"
)



def negative_samples(folder: str | Path) -> list[Sample]:
    """Every image under ``folder`` (recursive) as a sample without boxes.

    Raises:
        InputError: the folder does not exist or holds no image.
    """
    d = Path(folder)
    if not d.is_dir():
        raise InputError(f"--negatives '{d}' is not a folder")
    paths = walk_files(d, suffixes=IMAGE_SUFFIXES)
    if not paths:
        raise InputError(f"--negatives '{d}' holds no image ({', '.join(IMAGE_SUFFIXES)})")
    return [Sample(p.stem, p, np.zeros((0, 4), np.float32), np.zeros(0, np.int64)) for p in paths]


def class_mapping(model_names: Sequence[str], data_names: Sequence[str]) -> tuple[np.ndarray, str]:
    """Model class id -> dataset class index (-1 = not in the dataset), and how it was made.

    By name when every dataset class is a model class; else by position when the counts match
    (e.g. a model trained with other names); else an error.

    Raises:
        InputError: the classes cannot be matched.
    """
    if set(data_names) <= set(model_names):
        index = {n: i for i, n in enumerate(data_names)}
        return np.array([index.get(n, -1) for n in model_names], np.int64), "by name"
    if len(model_names) == len(data_names):
        logger.warning("model classes %s and dataset classes %s differ; matching them by position",
                       list(model_names), list(data_names))
        return np.arange(len(model_names), dtype=np.int64), "by position"
    raise InputError(
        f"the model's classes {list(model_names)} do not cover the dataset's {list(data_names)}; "
        "evaluate with a model trained on these classes"
    )


@dataclass
class Collected:
    """Predictions of the readable images of a sample list, and what could not be read."""

    samples: list[Sample] = field(default_factory=list)
    preds: list[Prediction] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    times_ms: list[float] = field(default_factory=list)
    proxy_scores: list[float] = field(default_factory=list)
    frame_labels: list[str | None] = field(default_factory=list)
    mask_counts: list[tuple[int, int, int]] = field(default_factory=list)


def collect(det: Any, samples: Sequence[Sample], mapping: np.ndarray, *, proxy: bool = False,
            progress_every: int = 50) -> Collected:
    """Detect in every sample's image (boxes in source pixels, dataset class indices).

    With ``proxy``, also detect in each positive image's box-free strip (see
    :func:`box_free_strip`) and keep its frame score in ``proxy_scores``.
    """
    out = Collected()
    for n, s in enumerate(samples, start=1):
        try:
            image = read_image(s.path)
            pred, full = _detect_full(det, image, mapping)
        except EndoedgeError as err:
            out.skipped.append({"path": str(s.path), "error": str(err)})
            logger.warning("skipped: %s", err)
            continue
        out.times_ms.append(det.timings.total)
        out.samples.append(s)
        out.preds.append(pred)
        out.sizes.append((int(image.shape[0]), int(image.shape[1])))
        out.frame_labels.append(full.frame_label)
        if full.mask is not None:  # multi-task model: Dice / IoU against masks/ beside images/
            truth = read_mask(s) if len(s.boxes) else np.zeros(image.shape[:2], bool)
            if truth is not None and truth.shape == full.mask.shape:
                out.mask_counts.append(mask_overlap(full.mask > 0.5, truth))
        if proxy and len(s.boxes):
            strip = box_free_strip(s.boxes, image.shape[:2])
            if strip is not None:
                x0, y0, x1, y1 = strip
                out.proxy_scores.append(_detect(det, image[y0:y1, x0:x1], mapping).frame_score)
        if progress_every and n % progress_every == 0:
            logger.info("%d/%d images", n, len(samples))
    return out


def _detect(det: Any, image: np.ndarray, mapping: np.ndarray) -> Prediction:
    return _detect_full(det, image, mapping)[0]


def _detect_full(det: Any, image: np.ndarray, mapping: np.ndarray) -> tuple[Prediction, Any]:
    """The prediction in dataset classes, and the :class:`~endoedge.detector.Detections`."""
    if det.cleaner is not None:
        det.cleaner.reset()  # independent images: find each one's field of view
    d = det.detect(image)
    labels = mapping[d.class_ids]
    keep = labels >= 0
    return Prediction(d.boxes[keep].astype(np.float32), d.scores[keep].astype(np.float32), labels[keep]), d


def box_free_strip(boxes: np.ndarray, size: tuple[int, int], *, margin: int = 8,
                   min_fraction: float = 1 / 3) -> tuple[int, int, int, int] | None:
    """The largest full-height or full-width strip of an image that stays ``margin`` px clear of
    every box (left, right, above or below all boxes), if its sides are at least
    ``min_fraction`` of the image's; ``(x0, y0, x1, y1)`` source pixels, or ``None``."""
    h, w = size
    bx0 = max(0, math.floor(float(boxes[:, 0].min())) - margin)
    by0 = max(0, math.floor(float(boxes[:, 1].min())) - margin)
    bx1 = min(w, math.ceil(float(boxes[:, 2].max())) + margin)
    by1 = min(h, math.ceil(float(boxes[:, 3].max())) + margin)
    cands = np.array([[0, 0, bx0, h], [bx1, 0, w, h], [0, 0, w, by0], [0, by1, w, h]])
    cw, ch = cands[:, 2] - cands[:, 0], cands[:, 3] - cands[:, 1]
    ok = (cw >= min_fraction * w) & (ch >= min_fraction * h)
    if not ok.any():
        return None
    best = int(np.argmax(np.where(ok, cw * ch, -1)))
    x0, y0, x1, y1 = (int(v) for v in cands[best])
    return x0, y0, x1, y1


@dataclass(frozen=True)
class EvalRun:
    """An evaluation report with the per-image detections it was computed from.

    Attributes:
        report: the report dict (see :func:`evaluate_detector`).
        paths: the dataset images that were read, in order.
        predictions: their detections at the detection pass's low threshold (boxes xyxy in
            source pixels, dataset class indices), one per path.
        negative_paths, negative_predictions: the same for the ``--negatives`` images.
        samples: the dataset samples that were read (ground truth), one per path.
    """

    report: dict[str, Any]
    paths: list[Path]
    predictions: list[Prediction]
    negative_paths: list[Path]
    negative_predictions: list[Prediction]
    samples: list[Sample] = field(default_factory=list)


def evaluate_detector(det: Any, dataset: Dataset, **options: Any) -> dict[str, Any]:
    """Detect in ``dataset`` (and ``negatives``) and compute every metric; the report dict of
    :func:`run_detector` (same arguments)."""
    return run_detector(det, dataset, **options).report


def run_detector(
    det: Any,
    dataset: Dataset,
    *,
    conf: float,
    negatives: Sequence[Sample] = (),
    proxy_negatives: bool = False,
    max_dets: int = 100,
    unclear: Sequence[Sample] = (),
) -> EvalRun:
    """Detect in ``dataset`` (and ``negatives``) and compute every metric (see
    :mod:`endoedge.evaluation.metrics`); the report and the per-image detections
    (:class:`EvalRun`). ``det`` must already run at the low mAP threshold.

    Object-level metrics (COCO mAP, P/R/F1, overlap) use ``dataset`` only, so they compare with
    the training report; the frame-level result and the AUC also count ``negatives``. A
    multi-task model also gets ``mask`` (Dice / IoU on the dataset images with a mask file and
    the negatives) and ``triage`` (dataset images with a box = ``polyp``, without = ``normal``,
    ``negatives`` = ``normal``, ``unclear`` = ``unclear``; see :mod:`endoedge.evaluation.multitask`).

    Raises:
        InputError: no image of the dataset could be read.
    """
    mapping, how = class_mapping(det.class_names, dataset.class_names)
    t0 = time.perf_counter()
    pos = collect(det, dataset.samples, mapping, proxy=proxy_negatives)
    neg = collect(det, negatives, mapping)
    blurred = collect(det, unclear, mapping)
    wall = time.perf_counter() - t0
    if not pos.samples:
        raise InputError(f"none of the {len(dataset.samples)} images of {dataset.source} could be read")
    data = Dataset(pos.samples, dataset.class_names, dataset.source)
    names = dataset.class_names
    coco = metrics.coco_map(metrics.coco_evaluation(data, pos.sizes, pos.preds, max_dets=max_dets), names)
    prf_ev = metrics.coco_evaluation(data, pos.sizes, pos.preds, iou_thrs=metrics.PRF_IOUS, max_dets=max_dets)
    frames = Dataset(pos.samples + neg.samples, names, dataset.source)
    preds = pos.preds + neg.preds
    truth = metrics.frame_truth(frames)
    frame = metrics.frame_level(truth, preds, names, conf)
    frame["negatives"] = _negatives_note(len(neg.samples), int((truth[: len(pos.samples)] < 0).sum()))
    scores = np.array([p.frame_score for p in preds])
    auc_value = metrics.auc(scores, truth >= 0)
    report: dict[str, Any] = {
        "classes": list(names),
        "class_mapping": how,
        "n_images": len(pos.samples),
        "n_negative_images": len(neg.samples),
        "n_skipped": len(pos.skipped) + len(neg.skipped),
        "skipped": pos.skipped + neg.skipped,
        "conf": conf,
        "coco": {k: v for k, v in coco.items() if k != "pr_curves"},
        "prf": metrics.precision_recall_f1(prf_ev, names, conf),
        "frame": frame,
        "auc": {"value": auc_value, "n_positive": int((truth >= 0).sum()), "n_negative": int((truth < 0).sum())},
        "overlap": metrics.overlap_buckets(data, pos.preds, conf),
        "timing": {"wall_s": round(wall, 2),
                   "median_detect_ms": round(statistics.median(pos.times_ms + neg.times_ms), 3)},
        "pr_curves": coco["pr_curves"],
    }
    if auc_value is None:
        report["auc"]["reason"] = NO_NEGATIVES
    else:
        fpr, tpr = metrics.roc_curve(scores, truth >= 0)
        report["roc_curve"] = {"fpr": np.round(fpr, 5).tolist(), "tpr": np.round(tpr, 5).tolist()}
    if proxy_negatives:
        pos_scores = np.array([p.frame_score for p, s in zip(pos.preds, pos.samples, strict=True) if len(s.boxes)])
        proxy = np.array(pos.proxy_scores)
        report["auc_proxy"] = {
            "value": metrics.auc(np.r_[pos_scores, proxy], np.r_[np.ones(len(pos_scores), bool),
                                                               np.zeros(len(proxy), bool)]),
            "n_positive": len(pos_scores),
            "n_negative": len(proxy),
            "definition": PROXY_DEFINITION,
        }
    report.update(_multitask_report(pos, neg, blurred, getattr(getattr(det, "spec", None), "decoder_params", {}).get("frame_classes")))
    return EvalRun(report, [s.path for s in pos.samples], pos.preds, [s.path for s in neg.samples], neg.preds,
                   pos.samples)


def _multitask_report(pos: Collected, neg: Collected, unclear: Collected, classes: Any) -> dict[str, Any]:
    """``mask`` and ``triage`` parts of the report (empty for box-only models)."""
    out: dict[str, Any] = {}
    counts = pos.mask_counts + neg.mask_counts
    if counts:  # Dice / IoU over frames with a polyp in their mask; polyp-free frames: any mask is an alarm
        empty = [c for c in counts if c[2] == 0]
        out["mask"] = {**mask_summary([c for c in counts if c[2] > 0]), "n_empty": len(empty),
                       "empty_with_mask": sum(1 for c in empty if c[1] > 0)}
    labels = pos.frame_labels + neg.frame_labels + unclear.frame_labels
    if classes and labels and all(x is not None for x in labels):
        truth = (["polyp" if len(s.boxes) else "normal" for s in pos.samples] + ["normal"] * len(neg.samples)
                 + ["unclear"] * len(unclear.samples))
        out["triage"] = triage_metrics(truth, [str(x) for x in labels], [str(c) for c in classes])
    return out


def _negatives_note(n_dir: int, n_in_data: int) -> str:
    parts = []
    if n_in_data:
        parts.append(f"{n_in_data} dataset images without boxes")
    if n_dir:
        parts.append(f"{n_dir} images from --negatives")
    return " + ".join(parts) if parts else "none (specificity and AUC undefined)"
