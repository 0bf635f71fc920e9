"""How much does an FP32 detector itself change at its threshold under input changes nobody can see?

Issue 14's goals compare an INT8/FP16 copy with its FP32 model frame by frame at the operating
threshold (boxes kept, false-alarm frames). This benchmark measures the same numbers for the FP32
model against itself on the same frames after an imperceptible change of the input:

* ``jpeg95``: the frame re-encoded as JPEG at quality 95 (one more compression step, as a capture
  or recording path adds; PSNR ~40-45 dB);
* ``shift1``: the frame moved by one pixel (right and down; the edge row/column repeated).

If the FP32 model already drops or adds that many borderline boxes under such changes, a copy's
difference of the same size is noise of the model at its threshold, not a defect of the copy.
Same frame sets and agreement functions as ``bench_quant_xcentre.py``.

Usage::

    python benchmarks/bench_noise_floor.py --model ssd=det.onnx --model yolov8n=y8n.onnx \
        [--copy ssd=det.int8.onnx] --json benchmarks/results/noise_floor.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
from bench_quant_xcentre import LOW_CONF, compare, frame_sets, threshold_of

PERTURB = ("jpeg95", "shift1")


def perturb(rgb: np.ndarray, kind: str) -> np.ndarray:
    """``rgb`` (H x W x 3 uint8) after the imperceptible change ``kind`` (see the docstring)."""
    import cv2

    if kind == "jpeg95":
        ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise RuntimeError("JPEG encode failed")
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()
    if kind == "shift1":
        return np.pad(rgb, ((1, 0), (1, 0), (0, 0)), mode="edge")[:-1, :-1].copy()
    raise ValueError(kind)


def predictions(model: Path, paths: list[Path], kinds: tuple[str, ...]) -> dict[str, list]:
    """Per input variant (``orig`` + ``kinds``), each frame's detections at the low threshold."""
    import endoedge
    from endoedge.data.imageio import read_image
    from endoedge.evaluation.metrics import Prediction

    out: dict[str, list] = {k: [] for k in ("orig", *kinds)}
    with endoedge.load(model, score_threshold=LOW_CONF, max_detections=300) as det:
        for p in paths:
            img = read_image(p)
            for k in out:
                d = det.detect(img if k == "orig" else perturb(img, k))
                out[k].append(Prediction(boxes=d.boxes.astype(np.float64), scores=d.scores, labels=d.class_ids))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", required=True, metavar="NAME=ONNX")
    ap.add_argument("--copy", action="append", default=[], metavar="NAME=ONNX",
                    help="a quantized copy of model NAME, compared with it on the original frames")
    ap.add_argument("--json", type=Path, help="write the raw records here")
    args = ap.parse_args()
    models = dict(m.split("=", 1) for m in args.model)
    copies = dict(c.split("=", 1) for c in args.copy)
    sets = frame_sets()
    res: dict = {"machine": f"{platform.machine()}, {platform.node()}",
                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "models": {}}
    for name, path in models.items():
        thr = threshold_of(Path(path))
        rows: dict = {}
        for set_name, paths in sets.items():
            preds = predictions(Path(path), paths, PERTURB)
            rows[set_name] = {k: compare(preds["orig"], preds[k], thr) for k in PERTURB}
            if name in copies:
                cand = predictions(Path(copies[name]), paths, ())["orig"]
                rows[set_name]["copy"] = compare(preds["orig"], cand, thr)
            print(name, set_name, json.dumps({k: (v["box_agreement"], v["alarm_share_reference"],
                                                  v["alarm_share_candidate"]) for k, v in rows[set_name].items()}),
                  flush=True)
        res["models"][name] = {"path": str(path), "threshold": thr, "sets": rows}
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    print(table(res))


def table(res: dict) -> str:
    """Markdown: per model and variant, boxes kept on the polyp sets and false-alarm frames on the
    polyp-free sets."""
    lines = ["| model | vs FP32 on the original frames | boxes kept: Kvasir val / PG-A pos / PG-B pos "
             "| false-alarm frames original -> variant: PG-A neg / PG-B neg |", "|---|---|---|---|"]
    for name, m in res["models"].items():
        variants = [k for k in m["sets"]["kvasir_val"]]
        for k in variants:
            s = m["sets"]
            kept = " / ".join(f"{100 * s[x][k]['box_agreement']:.1f}%" for x in ("kvasir_val", "pg_A_pos", "pg_B_pos"))
            fa = " / ".join(f"{100 * s[x][k]['alarm_share_reference']:.1f}% -> "
                            f"{100 * s[x][k]['alarm_share_candidate']:.1f}%" for x in ("pg_A_neg", "pg_B_neg"))
            lines.append(f"| {name} (thr {m['threshold']:g}) | {k} | {kept} | {fa} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
