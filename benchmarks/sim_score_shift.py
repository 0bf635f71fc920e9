"""Simulate a label-free score-shift correction of INT8 copies (issue 14, session 10).

For each copy: the mean score shift of FP32's boxes >= the threshold, measured FP32 vs copy on 120
Kvasir-SEG *train* frames (no labels used), is taken off the copy's scores (the same as moving the copy's
threshold by it); boxes kept and alarm shares on ``bench_quant_xcentre.py``'s sets are printed before and
after. Reads the copies and the cached FP32 predictions ``bench_quant_draws.py`` leaves in ``--work``.

    python benchmarks/sim_score_shift.py --model yolov8n=runs/q/yolov8n.onnx --copies default_s1,default_s2

Per set the printed list is [kept before, kept after, alarm share before, after, FP32's alarm share].
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_quant_xcentre as xc  # noqa: E402  (a sibling script, not a package)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, metavar="NAME=ONNX")
    ap.add_argument("--copies", required=True, help="comma-separated labels of copies in --work")
    ap.add_argument("--work", default="runs/quant_draws")
    args = ap.parse_args()
    name, _, path = args.model.partition("=")
    model, work = Path(path), Path(args.work)
    cache = work / f"{name}.fp32preds.pkl"
    if not model.is_file() or not cache.is_file():
        ap.error(f"needs the FP32 model and {cache} (run bench_quant_draws.py first)")

    labels = args.copies.split(",")
    missing = [str(work / f"{name}.{label}.onnx") for label in labels if not (work / f"{name}.{label}.onnx").is_file()]
    if missing:
        ap.error(f"no copy {', '.join(missing)} (make it with bench_quant_draws.py --work {work})")

    from endoedge.evaluation.agreement import agreement

    thr = xc.threshold_of(model)
    sets = xc.frame_sets()
    ref = pickle.loads(cache.read_bytes())  # noqa: S301 - our own cache
    train = [xc.KVASIR / "images" / f"{s}.jpg" for s in xc._stems(xc.SPLITS / "kvasir_seg_train.txt")][::7][:120]
    ref_train = xc.predictions(model, train)
    for label in labels:
        copy = work / f"{name}.{label}.onnx"
        a = agreement(ref_train, xc.predictions(copy, train), thr)
        delta = a.mean_score_shift or 0.0
        row = {}
        for k, v in sets.items():
            cp = xc.predictions(copy, v)
            moved = [replace(p, scores=(p.scores - delta).astype(p.scores.dtype)) for p in cp]
            r0, r1 = xc.compare(ref[k], cp, thr), xc.compare(ref[k], moved, thr)
            row[k] = [r0["box_agreement"], r1["box_agreement"], r0["alarm_share_candidate"],
                      r1["alarm_share_candidate"], r0["alarm_share_reference"]]
        print(label, f"delta {delta:+.4f} pairs {a.shift_pairs}",
              json.dumps({k: [None if x is None else round(x, 3) for x in v] for k, v in row.items()}), flush=True)


if __name__ == "__main__":
    main()
