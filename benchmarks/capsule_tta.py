"""Does test-time augmentation lift the capsule bleeding detector's box mAP (issue 18)?

Capsule studies are read in batch, so a reader could afford several passes per frame. This runs the
shipped capsule detector over the held-out WCEBleedGen frames (``data/splits/wcebleedgen/wcebleedgen_val.txt``)
as read and flipped (horizontal, vertical, both: a capsule frame has no up or down), maps each
view's boxes back to the frame (xyxy, source pixels), merges the views by NMS or by weighted box
fusion (WBF: overlapping boxes averaged by score, the fused score scaled by the share of views that
found it; Solovyev et al. 2021) and scores every variant with endoedge's own COCO evaluation
(pycocotools) at score 0.001, as ``benchmarks/capsule_bleeding.py`` does.

    python benchmarks/capsule_tta.py [--model CAPSULE.pt] [--json benchmarks/results/capsule_tta.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

DATA = ROOT.parent / "shared" / "data" / "wcebleedgen" / "train"
SPLIT = ROOT / "data" / "splits" / "wcebleedgen" / "wcebleedgen_val.txt"
MODEL = ROOT / "src" / "endoedge" / "models" / "weights" / "capsule_bleeding_ssdlite320_effl0_wcebleedgen.pt"
FLIPS = {"none": None, "h": 1, "v": 0, "hv": -1}  # cv2.flip codes


def unflip(boxes: np.ndarray, view: str, width: int, height: int) -> np.ndarray:
    """Boxes found on a flipped view, in the unflipped frame's pixels (xyxy)."""
    b = boxes.copy()
    if "h" in view:
        b[:, [0, 2]] = width - boxes[:, [2, 0]]
    if "v" in view:
        b[:, [1, 3]] = height - boxes[:, [3, 1]]
    return b


def wbf(boxes: np.ndarray, scores: np.ndarray, iou_thr: float, views: int) -> tuple[np.ndarray, np.ndarray]:
    """Weighted box fusion of one frame's boxes from ``views`` passes (xyxy; scores in 0..1)."""
    from endoedge.postprocess.temporal import box_iou

    order = np.argsort(-scores, kind="stable")
    fused: list[np.ndarray] = []
    members: list[list[int]] = []
    for i in order:
        if fused:
            ious = box_iou(boxes[i:i + 1], np.stack(fused))[0]
            j = int(np.argmax(ious))
            if ious[j] >= iou_thr:
                members[j].append(int(i))
                w = scores[members[j]]
                fused[j] = (boxes[members[j]] * w[:, None]).sum(0) / w.sum()
                continue
        fused.append(boxes[i].astype(np.float64))
        members.append([int(i)])
    if not fused:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    score = np.array([scores[m].mean() * min(len(m), views) / views for m in members])
    return np.stack(fused).astype(np.float32), score.astype(np.float32)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=MODEL)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "capsule_tta.json")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import cv2
    import torch
    import torchvision

    import endoedge
    from endoedge.evaluation import load_eval_dataset
    from endoedge.evaluation.metrics import Prediction, coco_evaluation, coco_map

    torch.set_num_threads(args.threads)
    data = load_eval_dataset(DATA, fmt="yolo", split=SPLIT, class_names=["bleeding"])
    t0 = time.perf_counter()
    per_view: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {v: [] for v in FLIPS}
    sizes = []
    with endoedge.load(args.model, score_threshold=0.001) as det:
        nms_iou = float(det.spec.iou_threshold)
        for s in data.samples:
            image = cv2.imread(str(s.path))
            h, w = image.shape[:2]
            sizes.append((h, w))
            for view, code in FLIPS.items():
                d = det.detect(image if code is None else cv2.flip(image, code))
                per_view[view].append((unflip(d.boxes, view, w, h), d.scores.copy()))
    detect_s = time.perf_counter() - t0

    def score(preds: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
        p = [Prediction(b, s, np.zeros(len(s), np.int64)) for b, s in preds]
        m = coco_map(coco_evaluation(data, sizes, p), ["bleeding"])
        return {"map50": round(m["map50"], 4), "map50_95": round(m["map50_95"], 4)}

    rows = [{"views": "none", "merge": f"model NMS {nms_iou:g}", **score(per_view["none"])}]
    for views in (["none", "h"], list(FLIPS)):
        for thr in (0.4, 0.5, 0.55):
            merged = []
            for i in range(len(sizes)):
                b = np.concatenate([per_view[v][i][0] for v in views])
                s = np.concatenate([per_view[v][i][1] for v in views])
                keep = torchvision.ops.nms(torch.from_numpy(b).float(), torch.from_numpy(s).float(), thr).numpy()[:300]
                merged.append((b[keep], s[keep]))
            rows.append({"views": "+".join(views), "merge": f"NMS {thr:g}", **score(merged)})
            merged = [wbf(np.concatenate([per_view[v][i][0] for v in views]),
                          np.concatenate([per_view[v][i][1] for v in views]), thr, len(views))
                      for i in range(len(sizes))]
            rows.append({"views": "+".join(views), "merge": f"WBF {thr:g}", **score(merged)})
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "model": args.model.name,
           "split": str(SPLIT.relative_to(ROOT)), "frames": len(sizes), "detect_s": round(detect_s, 1), "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    for r in rows:
        print(f"{r['views']:>12} {r['merge']:>14}  mAP@0.5 {r['map50']:.4f}  @0.5:0.95 {r['map50_95']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
