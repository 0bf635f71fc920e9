"""How far does a quantized copy move the scores of FP32's boxes, and how many of those boxes sit
near the threshold (issue 14)? Scored on issue 14's cross-centre polyp sets (``bench_quant_xcentre``).

For every FP32 box at the model's threshold, the copy's box with the highest IoU (>= 0.5, detections
down to score 0.001) gives the score difference (0 when there is none); "lost" = the copy's score
falls under the threshold. Reported per set: the mean, SD and median |difference|, the boxes lost, the
boxes within 0.05 above the threshold and how many of those were lost, and a Wilson 95% interval of
the share kept (the goal is >= 95% kept per set; one box is ~2 points on a 50-box set).

    python benchmarks/bench_int8_score_noise.py --pair ssd=SSD.onnx,SSD.int8.onnx \\
        --pair yolov8n=Y.onnx,Y.int8.onnx --json benchmarks/results/int8_score_noise.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_quant_xcentre as xc  # noqa: E402  (a sibling script, not a package)

SETS = ("kvasir_val", "pg_A_pos", "pg_B_pos")


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of the proportion k/n."""
    p = k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(mid - half, 3), round(mid + half, 3)


def noise(ref: list, cand: list, thr: float) -> dict:
    """Score differences of the reference's boxes at ``thr`` (see the module docstring)."""
    from endoedge.postprocess.temporal import box_iou

    diffs, scores = [], []
    for r, c in zip(ref, cand, strict=True):
        rb, rs = r.boxes[r.scores >= thr], r.scores[r.scores >= thr]
        if not len(rb):
            continue
        iou = box_iou(rb, c.boxes) if len(c.boxes) else np.zeros((len(rb), 0))
        best = iou.argmax(axis=1) if iou.shape[1] else np.zeros(len(rb), int)
        hit = iou[np.arange(len(rb)), best] >= 0.5 if iou.shape[1] else np.zeros(len(rb), bool)
        got = np.where(hit, c.scores[best] if iou.shape[1] else 0.0, 0.0)
        diffs.append(got - rs)
        scores.append(rs)
    d, s = np.concatenate(diffs), np.concatenate(scores)
    lost = (s + d) < thr
    near = s < thr + 0.05
    n = len(d)
    return {"threshold": thr, "boxes": n, "lost": int(lost.sum()), "kept_wilson95": wilson(n - int(lost.sum()), n),
            "diff_mean": round(float(d.mean()), 4), "diff_sd": round(float(d.std()), 4),
            "diff_median_abs": round(float(np.median(np.abs(d))), 4),
            "within_0.05_above": int(near.sum()), "lost_of_those": int((lost & near).sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pair", action="append", required=True, metavar="NAME=FP32,COPY")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    sets = xc.frame_sets()
    out: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "models": {}}
    for item in args.pair:
        name, _, files = item.partition("=")
        fp32, _, copy = files.partition(",")
        if not (Path(fp32).is_file() and Path(copy).is_file()):
            ap.error(f"--pair {item!r}: give NAME=FP32.onnx,COPY.onnx of existing files")
        thr = xc.threshold_of(Path(fp32))
        out["models"][name] = {"fp32": fp32, "copy": copy, "sets": {}}
        for set_name in SETS:
            rec = noise(xc.predictions(Path(fp32), sets[set_name]), xc.predictions(Path(copy), sets[set_name]), thr)
            out["models"][name]["sets"][set_name] = rec
            print(name, set_name, rec, flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
