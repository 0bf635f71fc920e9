"""Would two thresholds in the stabilizer (show high, keep low) close issue 15's gaps?

Hysteresis is the usual answer when a detector is both too loud on normal mucosa and too quiet on
polyps: start showing a track only when its (smoothed) score reaches a high ``show`` threshold,
then keep it on screen while detections at a lower ``keep`` threshold continue it. This measures
that on the shipped polyp detector before building it into ``endoedge run``:

1. the detector (its stored frame cleaning) runs once at score 0.05 over the PolypGen polyp-free
   sequences, split as trained (``data/splits/polypgen_negatives``: train / VAL / TEST), and over
   the synthetic polyp clips of ``benchmarks/bench_stabilize.py`` (the same seeded camera path over
   each positive-unlabelled still of centres A and B, 40 frames as in RESULTS);
2. ``endoedge run``'s own stabilizer (:class:`~endoedge.postprocess.temporal.BoxStabilizer`, onset
   3, hold 5, reset per sequence) replays the detections at or above ``keep``; a shown track is
   drawn only from the first frame its smoothed score reaches ``show`` (then until it ends).

Reported per (show, keep): share of polyp-free frames showing a box (VAL, TEST, train sequences)
and the shown-box presence on the polyp clips. ``show = keep = `` the model's threshold is
today's behaviour.

    python benchmarks/stabilize_hysteresis.py --model polyp.pt [--cache /tmp/raw.pkl]
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
SPLITS = ROOT / "data" / "splits" / "polypgen_negatives"
Raw = dict[str, list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]]]


def collect(model: Path, clip_frames: int, seed: int) -> Raw:
    """Detections at score 0.05 per set, per sequence, per frame: ``(boxes, scores, class_ids)``."""
    import cv2
    from bench_stabilize import POLYPGEN, motion_clip

    import endoedge
    from endoedge.data.media import natural_key

    raw: Raw = {}
    with endoedge.load(model, device="cpu", score_threshold=0.05) as det:
        def run(frames) -> list:
            return [(d.boxes.copy(), d.scores.copy(), d.class_ids.copy()) for d in map(det.detect, frames)]

        for split in ("val", "test", "train"):
            names = [s.strip() for s in (SPLITS / f"polypgen_neg_{split}.txt").read_text().splitlines()
                     if s.strip() and not s.startswith("#")]
            raw[f"neg_{split}"] = [run(cv2.imread(str(p)) for p in sorted(
                (POLYPGEN / "negative" / n).glob("*.jpg"), key=natural_key)) for n in names]
        rng = np.random.default_rng(seed)
        for centre in ("A", "B"):
            clips = []
            for p in sorted((POLYPGEN / "positive-unlabelled" / f"centre_{centre}").glob("*.jpg")):
                img = cv2.imread(str(p))
                img = cv2.resize(img, (960, round(960 * img.shape[0] / img.shape[1])), interpolation=cv2.INTER_AREA)
                clips.append(run(motion_clip(img, clip_frames, rng)))
            raw[f"pos_{centre}"] = clips
    return raw


def shown_share(seqs: list, show: float, keep: float) -> float:
    """Share of frames showing a box under (show, keep) hysteresis on top of the default stabilizer."""
    from endoedge.postprocess.temporal import BoxStabilizer
    from endoedge.spec.stabilize import StabilizeConfig

    stab = BoxStabilizer(StabilizeConfig())
    on = []
    for seq in seqs:
        stab.reset()
        armed: set[int] = set()
        for boxes, scores, classes in seq:
            k = scores >= keep
            s = stab.update(boxes[k], scores[k], classes[k])
            armed.update(s.track_ids[s.scores >= show].tolist())
            on.append(bool(np.isin(s.track_ids, list(armed)).any()))
    return float(np.mean(on))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="polyp detector (checkpoint or ONNX)")
    ap.add_argument("--cache", type=Path, help="pickle of the detections: written once, reused after")
    ap.add_argument("--clip-frames", type=int, default=40, help="frames per synthetic polyp clip (bench_stabilize's RESULTS rows: 40)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "stabilize_hysteresis.json")
    args = ap.parse_args()
    import endoedge

    with endoedge.load(args.model, device="cpu") as det:
        thr = float(det.spec.score_threshold)
    if args.cache is not None and args.cache.is_file():
        raw = pickle.loads(args.cache.read_bytes())
    else:
        raw = collect(args.model, args.clip_frames, args.seed)
        if args.cache is not None:
            args.cache.write_bytes(pickle.dumps(raw))
    rows = []
    for show in (thr, 0.4, 0.5, 0.6, 0.7):
        for keep in (0.1, 0.15, 0.2, thr):
            if keep > show:
                continue
            row = {"show": round(show, 4), "keep": round(keep, 4),
                   **{k: round(shown_share(v, show, keep), 4) for k, v in raw.items()}}
            rows.append(row)
            print(" ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "model": args.model.name,
           "threshold": thr, "stabilize": "onset 3, hold 5, smooth 0.5, iou 0.3", "clip_frames": args.clip_frames,
           "seed": args.seed, "frames": {k: sum(map(len, v)) for k, v in raw.items()}, "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
