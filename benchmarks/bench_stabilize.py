"""Temporal stabilization (issue 15): what ``endoedge run`` SHOWS on PolypGen video, raw vs stabilized.

The detector runs once over every frame (raw boxes at the model's threshold); the stabilizer of
``endoedge run`` (:class:`~endoedge.pipeline.stabilize.DetectionStabilizer`, reset per sequence)
then replays those boxes for each config of a small onset/hold sweep, so every row sees the same
detections. Two kinds of sequences:

* ``neg_A`` / ``neg_B``: PolypGen polyp-FREE sequences of centres A and B (14 ordered, temporally
  subsampled sequences, 500 frames, played in natural frame order): false-alarm frame share
  (frames showing a box), false activations (a box appearing) and toggles (box on <-> off) per
  100 frames.
* ``pos_A`` / ``pos_B``: the 50 + 50 PolypGen polyp frames of centres A and B are single stills
  of different polyps, NOT a sequence (consecutive files show other scenes), so each is turned
  into a short clip with a smooth synthetic camera path (random-walk shift, zoom, small rotation,
  blur, JPEG re-encoding; seeded): shown-box presence, toggles per 100 frames, frames to the
  first shown box. Unlabelled: any box counts as present.

Nothing derived from the frames is written except the aggregate numbers: a JSON summary under
``benchmarks/results/stabilize_polypgen.json`` and a table between the ``stabilize`` markers
of RESULTS.md.

Usage::

    endoedge export src/endoedge/models/weights/polyp_ssdlite320_effl0_kvasir.pt -o /tmp/polyp.onnx
    nice -n 10 python benchmarks/bench_stabilize.py --model /tmp/polyp.onnx [--clip-frames 25]
"""

from __future__ import annotations

import argparse
import json
import pickle
import platform
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
POLYPGEN = HERE.parent.parent / "shared" / "data" / "polypgen"
RESULTS = HERE / "RESULTS.md"
RAW = HERE / "results" / "stabilize_polypgen.json"
START, END = "<!-- stabilize:start -->", "<!-- stabilize:end -->"
SWEEP = [None, (2, 0), (2, 3), (3, 0), (3, 3), (3, 5), (4, 5), (6, 5), (3, 8)]


def sequences() -> dict[str, list[list[Path]]]:
    """Polyp-free sequences per centre, each a list of frames in natural order."""
    from endoedge.data.media import natural_key

    out = {}
    for centre in ("A", "B"):
        seqs = sorted((POLYPGEN / "negative" / f"centre_{centre}").glob("seq*_neg"), key=natural_key)
        out[f"neg_{centre}"] = [sorted(s.glob("*.jpg"), key=natural_key) for s in seqs]
    return out


def motion_clip(image: np.ndarray, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` frames of ``image`` under a smooth random camera path (shift, zoom, roll, blur, JPEG)."""
    h, w = image.shape[:2]
    shift = np.cumsum(rng.normal(0, 0.012, (n, 2)), axis=0) * (w, h)  # ~1% of the frame per step
    zoom = 1.1 + np.cumsum(rng.normal(0, 0.01, n))
    roll = np.cumsum(rng.normal(0, 0.6, n))  # degrees
    frames = []
    for i in range(n):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), float(roll[i]), float(np.clip(zoom[i], 0.9, 1.4)))
        m[:, 2] += shift[i]
        f = cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_CONSTANT)
        sigma = float(rng.choice([0, 0, 0.8, 1.5]))
        if sigma:
            f = cv2.GaussianBlur(f, (0, 0), sigma)
        ok, buf = cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(70, 95))])
        frames.append(cv2.imdecode(buf, cv2.IMREAD_COLOR))
    return frames


def detect_all(det, frames) -> list:
    """Raw detections of each frame (a list of Detections; a multi-task model's masks dropped: the
    stabilizer works on boxes, and 4,500 source-size masks would not fit in memory)."""
    from dataclasses import replace

    return [replace(d, mask=None) if d.mask is not None else d for d in (det.detect(f) for f in frames)]


def replay(raw_seqs: list[list], config, class_names) -> tuple[list[np.ndarray], list[float]]:
    """Boxes shown per frame (count) for each sequence, and the stabilizer's ms per frame."""
    from endoedge.pipeline.stabilize import DetectionStabilizer
    from endoedge.spec.stabilize import StabilizeConfig

    if config is None:
        return [np.array([len(d) for d in seq]) for seq in raw_seqs], []
    stab = DetectionStabilizer(StabilizeConfig(onset=config[0], hold=config[1]), class_names)
    shown, ms = [], []
    for seq in raw_seqs:
        stab.reset()
        counts = []
        for d in seq:
            t0 = time.perf_counter_ns()
            counts.append(len(stab.update(d).shown))
            ms.append((time.perf_counter_ns() - t0) / 1e6)
        shown.append(np.array(counts))
    return shown, ms


def metrics(shown: list[np.ndarray]) -> dict[str, float]:
    """Pooled over sequences: share of frames with a box, toggles/activations per 100 frames.

    ``flicker_per_100`` counts only the toggles after a sequence's first shown box (the one
    switch-on of a polyp coming into view is not flicker; short clips would overweight it).
    """
    frames = sum(len(s) for s in shown)
    on = [s > 0 for s in shown]
    toggles = sum(int(np.count_nonzero(o[1:] != o[:-1])) for o in on)
    after = [o[int(np.argmax(o)):] for o in on if o.any()]
    flicker = sum(int(np.count_nonzero(o[1:] != o[:-1])) for o in after)
    onsets = sum(int(o[0]) + int(np.count_nonzero(o[1:] & ~o[:-1])) for o in on)
    first = [int(np.argmax(o)) if o.any() else len(o) for o in on]
    return {"frames": frames, "box_share": float(np.mean(np.concatenate(on))),
            "toggles_per_100": 100 * toggles / frames, "activations_per_100": 100 * onsets / frames,
            "flicker_per_100": 100 * flicker / frames,
            "frames_to_first_box": float(np.mean(first))}


def main() -> None:
    import endoedge

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="the shipped polyp detector's ONNX")
    ap.add_argument("--clip-frames", type=int, default=25, help="frames per synthetic polyp clip")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, help="pickle of the raw detections: written once, reused after "
                    "(outside the repo: it is derived from the frames)")
    ap.add_argument("--json", type=Path, default=RAW, help=f"summary JSON (default {RAW.relative_to(RAW.parents[2])})")
    ap.add_argument("--no-results", action="store_true", help="leave RESULTS.md alone (e.g. for another model)")
    args = ap.parse_args()
    det = endoedge.load(args.model, device="cpu")
    if args.cache is not None and args.cache.is_file():
        with args.cache.open("rb") as f:
            raw = pickle.load(f)
    else:
        raw = run_detector(det, args.clip_frames, args.seed)
        if args.cache is not None:
            with args.cache.open("wb") as f:
                pickle.dump(raw, f)
    rows = sweep(raw, det.class_names)
    det.close()
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": f"{platform.machine()}, "
            f"{platform.node()}", "model": Path(args.model).name, "threshold": det.spec.score_threshold,
            "clip_frames": args.clip_frames, "seed": args.seed, "smooth": 0.5, "iou": 0.3}
    args.json.parent.mkdir(exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    table = render(meta, rows)
    print(table)
    text = RESULTS.read_text()
    if not args.no_results and START in text and END in text:
        head, rest = text.split(START, 1)
        RESULTS.write_text(head + START + "\n" + table + "\n" + END + rest.split(END, 1)[1])


def run_detector(det, clip_frames: int, seed: int) -> dict[str, list[list]]:
    """Raw detections per set, per sequence, per frame."""
    rng = np.random.default_rng(seed)
    raw: dict[str, list[list]] = {}
    t0 = time.time()
    for name, seqs in sequences().items():
        raw[name] = [detect_all(det, [cv2.imread(str(p)) for p in seq]) for seq in seqs]
        print(f"{name}: {sum(map(len, seqs))} frames ({time.time() - t0:.0f} s)", flush=True)
    for centre in ("A", "B"):
        stills = sorted((POLYPGEN / "positive-unlabelled" / f"centre_{centre}").glob("*.jpg"))
        clips = []
        for p in stills:
            img = cv2.imread(str(p))
            img = cv2.resize(img, (960, round(960 * img.shape[0] / img.shape[1])), interpolation=cv2.INTER_AREA)
            clips.append(detect_all(det, motion_clip(img, clip_frames, rng)))
        raw[f"pos_{centre}"] = clips
        print(f"pos_{centre}: {len(clips)} clips x {clip_frames} frames ({time.time() - t0:.0f} s)", flush=True)
    return raw


def sweep(raw: dict[str, list[list]], class_names) -> list[dict]:
    """Metrics of every :data:`SWEEP` config on every set."""
    rows = []
    for config in SWEEP:
        row: dict = {"config": "off" if config is None else f"onset {config[0]}, hold {config[1]}"}
        all_ms: list[float] = []
        for name, seqs in raw.items():
            shown, ms = replay(seqs, config, class_names)
            row[name] = metrics(shown)
            all_ms += ms
        if all_ms:
            row["stabilize_ms"] = {"mean": float(np.mean(all_ms)), "p99": float(np.percentile(all_ms, 99))}
        rows.append(row)
    return rows


def render(meta: dict, rows: list[dict]) -> str:
    """The Markdown table of the sweep."""
    lines = [f"Measured {meta['date']} on {meta['machine']} (ONNX Runtime CPU), model {meta['model']} at its "
             f"threshold {meta['threshold']}, smoothing {meta['smooth']}, track IoU {meta['iou']}; polyp clips: "
             f"{meta['clip_frames']} frames each, seed {meta['seed']}.", "",
             "| shown boxes | polyp-free A: box frames / activations per 100 / toggles per 100 | polyp-free B: same | "
             "polyp clips A: presence / toggles per 100 (after the first box) / frames to first box | polyp clips B: same | "
             "stabilize ms mean / p99 |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        neg = [f"{r[k]['box_share']:.1%} / {r[k]['activations_per_100']:.1f} / {r[k]['toggles_per_100']:.1f}"
               for k in ("neg_A", "neg_B")]
        pos = [f"{r[k]['box_share']:.2f} / {r[k]['toggles_per_100']:.1f} ({r[k]['flicker_per_100']:.1f}) / "
               f"{r[k]['frames_to_first_box']:.1f}"
               for k in ("pos_A", "pos_B")]
        ms = r.get("stabilize_ms")
        lat = "-" if ms is None else f"{ms['mean']:.3f} / {ms['p99']:.3f}"
        lines.append(f"| {r['config']} | {neg[0]} | {neg[1]} | {pos[0]} | {pos[1]} | {lat} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
