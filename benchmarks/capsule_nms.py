"""Does soft or matrix NMS lift the capsule bleeding detector's box mAP (issue 18)?

The shipped capsule detector often boxes a group of neighbouring bleeding spots that annotators boxed
one by one (benchmarks/RESULTS.md, "Capsule bleeding detector"). Hard NMS removes a box that overlaps
a better one; soft NMS (Bodla et al. 2017: scores decayed by the overlap, Gaussian or linear) and
matrix NMS (Wang et al. 2020, SOLOv2: the same decay computed for all boxes at once) keep such boxes
with lower scores, which can only help a ranking metric if the separate spots' boxes are there.
This runs the shipped file once over the held-out WCEBleedGen frames at score 0.001 with NMS
effectively off (IoU 0.99, 300 boxes a frame), applies each variant to those candidates (at most
100 boxes a frame, COCO's limit) and scores them with endoedge's COCO evaluation (pycocotools).

    python benchmarks/capsule_nms.py [--model CAPSULE.pt] [--json benchmarks/results/capsule_nms.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from capsule_tta import DATA, MODEL, ROOT, SPLIT  # the same frames and file as the TTA benchmark

KEEP = 100
Boxes = tuple[np.ndarray, np.ndarray]


def hard_nms(c: np.ndarray, thr: float) -> Boxes:
    import torch
    import torchvision

    keep = torchvision.ops.nms(torch.from_numpy(c[:, :4]).float(), torch.from_numpy(c[:, 4]).float(), thr)
    k = keep.numpy()[:KEEP]
    return c[k, :4], c[k, 4]


def soft_nms(c: np.ndarray, method: str, param: float, floor: float = 0.001) -> Boxes:
    """Soft NMS (one box picked per step): Gaussian ``s * exp(-iou^2 / sigma)`` or linear
    ``s * (1 - iou)`` above ``Nt``."""
    from endoedge.postprocess.temporal import box_iou

    boxes, scores = c[:, :4].copy(), c[:, 4].copy()
    out_b: list[np.ndarray] = []
    out_s: list[float] = []
    while len(scores) and len(out_s) < KEEP:
        i = int(np.argmax(scores))
        out_b.append(boxes[i])
        out_s.append(float(scores[i]))
        picked = boxes[i:i + 1]
        boxes, scores = np.delete(boxes, i, 0), np.delete(scores, i)
        if not len(scores):
            break
        iou = box_iou(picked, boxes)[0]
        scores = scores * np.exp(-(iou**2) / param) if method == "gauss" else np.where(iou > param, scores * (1 - iou), scores)
        alive = scores > floor
        boxes, scores = boxes[alive], scores[alive]
    return np.array(out_b, np.float32).reshape(-1, 4), np.array(out_s, np.float32)


def matrix_nms(c: np.ndarray, method: str, sigma: float) -> Boxes:
    """Matrix NMS: each box's decay is the minimum over higher-scored boxes of
    f(iou) / f(that box's own largest overlap with a higher-scored box)."""
    from endoedge.postprocess.temporal import box_iou

    c = c[np.argsort(-c[:, 4])]
    boxes, scores = c[:, :4], c[:, 4]
    if not len(scores):
        return boxes, scores
    iou = np.triu(box_iou(boxes, boxes), 1)
    comp = iou.max(0)[:, None]
    if method == "gauss":
        decay = np.exp(-(iou**2 - comp**2) / sigma).min(0)
    else:
        decay = ((1 - iou) / (1 - comp)).min(0)
    s = scores * decay
    order = np.argsort(-s)[:KEEP]
    return boxes[order], s[order]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=MODEL)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "capsule_nms.json")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if not args.model.is_file():
        ap.error(f"model '{args.model}' does not exist")
    if not DATA.is_dir():
        ap.error(f"WCEBleedGen not found at {DATA} (see ../shared/data/README.md)")
    import cv2
    import torch

    import endoedge
    from endoedge.evaluation import load_eval_dataset
    from endoedge.evaluation.metrics import Prediction, coco_evaluation, coco_map

    torch.set_num_threads(args.threads)
    data = load_eval_dataset(DATA, fmt="yolo", split=SPLIT, class_names=["bleeding"])
    sizes, cands = [], []
    t0 = time.perf_counter()
    with endoedge.load(args.model, score_threshold=0.001, iou_threshold=0.99, max_detections=300) as det:
        shipped_iou = float(det.spec.iou_threshold)
        for s in data.samples:
            image = cv2.imread(str(s.path))
            sizes.append(image.shape[:2])
            d = det.detect(image)
            cands.append(np.concatenate([d.boxes, d.scores[:, None]], 1))
    detect_s = time.perf_counter() - t0

    def score(fn: Callable[[np.ndarray], Boxes]) -> dict[str, float]:
        preds = []
        for c in cands:
            b, s = fn(c)
            preds.append(Prediction(b.astype(np.float32), s.astype(np.float32), np.zeros(len(s), np.int64)))
        m = coco_map(coco_evaluation(data, sizes, preds), ["bleeding"])
        return {"map50": round(m["map50"], 4), "map50_95": round(m["map50_95"], 4)}

    variants: list[tuple[str, Callable[[np.ndarray], Boxes]]] = []
    for thr in (0.4, 0.5, 0.55):
        variants.append((f"hard NMS {thr:g}", lambda c, t=thr: hard_nms(c, t)))
    for sg in (0.1, 0.2, 0.3, 0.5):
        variants.append((f"soft NMS Gaussian sigma {sg:g}", lambda c, s=sg: soft_nms(c, "gauss", s)))
    for nt in (0.3, 0.4, 0.5):
        variants.append((f"soft NMS linear Nt {nt:g}", lambda c, n=nt: soft_nms(c, "linear", n)))
    for sg in (0.1, 0.2, 0.5, 1.0):
        variants.append((f"matrix NMS Gaussian sigma {sg:g}", lambda c, s=sg: matrix_nms(c, "gauss", s)))
    variants.append(("matrix NMS linear", lambda c: matrix_nms(c, "linear", 0.0)))
    rows = []
    for name, fn in variants:
        rows.append({"merge": name, **score(fn)})
        print(f"{name:>32}  mAP@0.5 {rows[-1]['map50']:.4f}  @0.5:0.95 {rows[-1]['map50_95']:.4f}", flush=True)
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "model": args.model.name,
           "shipped_nms_iou": shipped_iou, "split": str(SPLIT.relative_to(ROOT)), "frames": len(sizes),
           "detect_s": round(detect_s, 1), "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
