"""Old vs new polyp detector: Kvasir-SEG val and held-out PolypGen polyp-free sequences, one pass.

For each model, one detection pass (score >= 0.001, endoscopy cleaning as deployed) over the Kvasir
val split and the PolypGen negative sequences of ``data/splits/polypgen_negatives/*_val.txt`` and
``*_test.txt``. From the per-frame scores: COCO mAP@0.5 on Kvasir val; the operating curve on the
val negatives and the threshold meeting ``--target-fa`` there; then sensitivity and false-alarm
share on the TEST negatives at that threshold, at the model's own threshold and at 0.25; and at every
threshold of the curve, the share of PolypGen's positive-unlabelled polyp frames (centres A and B,
other centres' polyps, no boxes) that show a box.

    python benchmarks/bench_operating_point.py old=a.pt new=b.pt --json benchmarks/results/polyp_negatives.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SPLITS = REPO / "data" / "splits" / "polypgen_negatives"


def _negatives(part: str) -> list:
    from endoedge.data.datasets import load_negatives

    seqs = [ln.strip() for ln in (SPLITS / f"polypgen_neg_{part}.txt").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]
    return load_negatives([DATA / "polypgen" / "negative" / s for s in seqs], ("polyp",)).samples


def measure(model: str, target: float, endoscopy: str) -> dict:
    """One pass; the numbers of the module docstring."""
    from endoedge.cli._common import endoscopy_option
    from endoedge.data.datasets import load_dataset, load_negatives, read_stems
    from endoedge.detector import load
    from endoedge.evaluation.operating import Curve, choose_threshold, curve_from_run
    from endoedge.evaluation.runner import run_detector

    kvasir = load_dataset(DATA / "kvasir-seg").subset(read_stems(REPO / "data/splits/kvasir_seg_val.txt"))
    val, test = _negatives("val"), _negatives("test")
    # other centres' polyp frames (unlabelled): scored in the same pass, read as "any box at t"
    polyps = load_negatives([DATA / "polypgen" / "positive-unlabelled" / c for c in ("centre_A", "centre_B")],
                            ("polyp",)).samples
    t0 = time.perf_counter()
    with load(model, endoscopy=endoscopy_option(endoscopy)) as base:
        own = base.spec.score_threshold
        det = base.with_thresholds(score_threshold=0.001, max_detections=max(100, base.spec.max_detections))
        run = run_detector(det, kvasir, conf=own, negatives=val + test + polyps)
    full = curve_from_run(run)
    n_val, n_test = len(val), len(test)
    neg, pos = full.negative[:n_val + n_test], full.negative[n_val + n_test:]
    curves = {"val": Curve(full.hit, full.frame, neg[:n_val]), "test": Curve(full.hit, full.frame, neg[n_val:])}
    point = choose_threshold(curves["val"], target, chosen_on=f"PolypGen val sequences ({n_val} frames)")
    return {
        "model": model,
        "own_threshold": own,
        "map50": run.report["coco"]["map50"],
        "map50_95": run.report["coco"]["map50_95"],
        "chosen_on_val": point.to_dict(),
        "test": {f"{name}": curves["test"].at(t) for name, t in
                 (("at_0.25", 0.25), ("at_own", own), ("at_chosen", point.score_threshold))},
        "val_curve": curves["val"].table([own, point.score_threshold]),
        "test_curve": curves["test"].table([own, point.score_threshold]),
        "other_centre_polyp_frames_with_box": {f"{r['threshold']:g}": float((pos >= r["threshold"]).mean())
                                               for r in curves["test"].table([own, point.score_threshold])},
        "frame_scores": {"kvasir_hit": np.round(full.hit, 4).tolist(), "kvasir_frame": np.round(full.frame, 4).tolist(),
                         "val_negative": np.round(neg[:n_val], 4).tolist(),
                         "test_negative": np.round(neg[n_val:], 4).tolist(),
                         "polyp_unlabelled": np.round(pos, 4).tolist()},
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", metavar="NAME=PATH")
    ap.add_argument("--target-fa", type=float, default=0.02)
    ap.add_argument("--endoscopy", default="all")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    path = Path(args.json)
    results = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    for item in args.models:
        name, model = item.split("=", 1)
        r = measure(model, args.target_fa, args.endoscopy)
        results["runs"][name] = r
        results.update({"machine": f"{platform.processor() or platform.machine()}, {platform.node()}",
                        "date": time.strftime("%Y-%m-%d"), "endoscopy": args.endoscopy, "target_fa": args.target_fa})
        path.write_text(json.dumps(results, indent=1) + "\n")
        c, t = r["chosen_on_val"], r["test"]
        print(f"{name}: mAP@0.5 {r['map50']:.3f}; chosen on val: score >= {c['score_threshold']:g} "
              f"(val false alarms {100 * c['false_alarm_share']:.1f}%); TEST negatives with a box: "
              f"{100 * t['at_chosen']['false_alarm_share']:.1f}% at it, {100 * t['at_0.25']['false_alarm_share']:.1f}% "
              f"at 0.25; Kvasir val sensitivity {100 * t['at_chosen']['sensitivity']:.1f}% at it "
              f"({100 * t['at_0.25']['sensitivity']:.1f}% at 0.25)", flush=True)


if __name__ == "__main__":
    main()
