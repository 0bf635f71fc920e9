"""Validation during training: COCO mAP with pycocotools, plus P/R/F1 at one operating point.

Detections come from the torchvision SSD's own ``postprocess_detections`` (score threshold
0.001, NMS 0.55, 300 per image: the mAP setting), computed on the network-input batch and
scaled back to **source-image pixels** (the resize is a stretch), where the ground truth is.
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Any

import numpy as np

from endoedge._optional import require
from endoedge.data.datasets import Dataset

logger = logging.getLogger(__name__)


def coco_gt(dataset: Dataset, sizes: list[tuple[int, int]]) -> Any:
    """A pycocotools ``COCO`` ground-truth object for ``dataset`` (image ids 1..N, class ids 1..C)."""
    coco_mod = require("pycocotools.coco", extra="torch", purpose="COCO evaluation")
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for i, (s, (h, w)) in enumerate(zip(dataset.samples, sizes, strict=True), start=1):
        images.append({"id": i, "width": w, "height": h, "file_name": s.path.name})
        for b, lab in zip(s.boxes.tolist(), s.labels.tolist(), strict=True):
            bw, bh = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(lab) + 1,
                         "bbox": [b[0], b[1], bw, bh], "area": bw * bh, "iscrowd": 0})
    gt = coco_mod.COCO()
    gt.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(dataset.class_names)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def predict(model: Any, batches: Any, anchors: Any) -> list[dict[str, np.ndarray]]:
    """Run the eval-mode SSD on normalized batches; boxes stay in network-input pixels."""
    torch = require("torch", extra="torch", purpose="evaluation")
    out: list[dict[str, np.ndarray]] = []
    model.eval()
    with torch.no_grad():
        for x in batches:
            feats = list(model.backbone(x).values())
            head = model.head(feats)
            size = (int(x.shape[-2]), int(x.shape[-1]))
            dets = model.postprocess_detections(head, [anchors] * len(x), [size] * len(x))
            out += [{k: v.cpu().numpy() for k, v in d.items()} for d in dets]
    return out


def max_scores(model: Any, batches: Any) -> np.ndarray:
    """Per image, the highest foreground score of any anchor (softmax over the classes, before
    NMS, which never lowers the maximum): whether the detector would show a box at a threshold
    is ``max_score >= threshold``."""
    torch = require("torch", extra="torch", purpose="evaluation")
    out: list[np.ndarray] = []
    model.eval()
    with torch.no_grad():
        for x in batches:
            head = model.head(list(model.backbone(x).values()))
            probs = torch.softmax(head["cls_logits"], -1)[..., 1:]
            out.append(probs.flatten(1).max(1).values.cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def evaluate(
    dets: list[dict[str, np.ndarray]],
    dataset: Dataset,
    sizes: list[tuple[int, int]],
    input_size: tuple[int, int],
    *,
    score_threshold: float = 0.25,
    iou_threshold: float = 0.5,
) -> dict[str, float]:
    """COCO mAP@0.5:0.95 and @0.5 (pycocotools), and P/R/F1 at ``score_threshold`` / IoU 0.5.

    Args:
        dets: per image ``{"boxes" (xyxy input pixels), "scores", "labels" (1-based)}``.
        sizes: source ``(height, width)`` per image.
        input_size: network input ``(height, width)`` the boxes refer to.
    """
    cocoeval = require("pycocotools.cocoeval", extra="torch", purpose="COCO evaluation")
    box_ops = require("torchvision.ops", extra="torch", purpose="evaluation")
    torch = require("torch", extra="torch", purpose="evaluation")
    gt = coco_gt(dataset, sizes)
    results = []
    tp = fp = 0
    n_gt = sum(len(s.boxes) for s in dataset.samples)
    for i, (d, (h, w), s) in enumerate(zip(dets, sizes, dataset.samples, strict=True), start=1):
        scale = np.array([w / input_size[1], h / input_size[0]] * 2, np.float32)
        boxes = d["boxes"] * scale
        for b, sc, lab in zip(boxes.tolist(), d["scores"].tolist(), d["labels"].tolist(), strict=True):
            results.append({"image_id": i, "category_id": int(lab),
                            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": float(sc)})
        keep = d["scores"] >= score_threshold
        kb, kl = boxes[keep], d["labels"][keep] - 1
        if len(kb) and len(s.boxes):
            iou = box_ops.box_iou(torch.from_numpy(kb), torch.from_numpy(s.boxes)).numpy()
            iou[kl[:, None] != s.labels[None, :]] = 0
            matched = set()
            for j in np.argsort(-d["scores"][keep]):  # greedy, highest score first
                g = int(iou[j].argmax())
                if iou[j, g] >= iou_threshold and g not in matched:
                    matched.add(g)
                    tp += 1
                else:
                    fp += 1
        else:
            fp += len(kb)
    stats = {"map50_95": 0.0, "map50": 0.0}
    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(results)
            ev = cocoeval.COCOeval(gt, dt, "bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        stats = {"map50_95": float(ev.stats[0]), "map50": float(ev.stats[1])}
    precision = tp / max(tp + fp, 1)
    recall = tp / max(n_gt, 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-9)
    return {**stats, "precision": precision, "recall": recall, "f1": f1}
