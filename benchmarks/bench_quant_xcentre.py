"""Cross-centre INT8/FP16 benchmark (issue 14): does a quantized copy keep FP32's boxes at the
operating threshold on frames from centres that neither training nor calibration saw?

For each FP32 ONNX given (the shipped SSD exported by ``endoedge export``, an Ultralytics YOLOv8n
export, ...) and each recipe, the copy is calibrated on Kvasir-SEG TRAIN images (the data the
shipped detector was trained on) and compared with its FP32 model on:

* ``kvasir_val``: the 120 Kvasir-SEG validation images (labelled: COCO mAP@0.5 and frame
  sensitivity at the threshold, besides box agreement);
* ``pg_A_pos`` / ``pg_B_pos``: PolypGen polyp frames of centres A and B (unlabelled): box
  agreement and alarm frames;
* ``pg_A_neg`` / ``pg_B_neg``: PolypGen polyp-free frames of centres A and B: false-alarm share
  (frames with a box >= the threshold) of both models.

Every number is at the FP32 model's own operating threshold (its ``endoedge.score_threshold`` or
Ultralytics' 0.25). Each model runs every frame once at a low threshold and is filtered after.
Raw per-set records go to ``benchmarks/results/quant_xcentre.json``; the table goes between the
``quant-xcentre`` markers of RESULTS.md.

Usage::

    python benchmarks/bench_quant_xcentre.py --model ssd=/tmp/det.onnx --model yolov8n=/tmp/y8n.onnx \
        [--recipes fp16,int8] [--calib-images 500]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
KVASIR = SHARED / "kvasir-seg"
SPLITS = HERE.parent / "data" / "splits"
RESULTS = HERE / "RESULTS.md"
RAW = HERE / "results" / "quant_xcentre.json"
START, END = "<!-- quant-xcentre:start -->", "<!-- quant-xcentre:end -->"
LOW_CONF = 0.001


def _stems(path: Path) -> list[str]:
    return [s.strip() for s in path.read_text().splitlines() if s.strip() and not s.startswith("#")]


def frame_sets(neg_splits: list[Path] | None = None) -> dict[str, list[Path]]:
    """The evaluation frames by set name (see the module docstring).

    ``neg_splits``: PolypGen negatives split files (``data/splits/polypgen_negatives/*.txt``); when
    given, ``pg_*_neg`` hold only the sequences they list (for a model trained on the others).
    """
    sets = {"kvasir_val": [KVASIR / "images" / f"{s}.jpg" for s in _stems(SPLITS / "kvasir_seg_val.txt")]}
    keep = {seq for p in neg_splits for seq in _stems(p)} if neg_splits else None
    for centre in ("A", "B"):
        sets[f"pg_{centre}_pos"] = sorted((SHARED / "polypgen" / "positive-unlabelled" / f"centre_{centre}").rglob("*.jpg"))
        neg = sorted((SHARED / "polypgen" / "negative" / f"centre_{centre}").rglob("*.jpg"))
        if keep is not None:
            neg = [f for f in neg if f"centre_{centre}/{f.parent.name}" in keep]
        sets[f"pg_{centre}_neg"] = neg
    return sets


def make_copy(model: Path, recipe: str, out: Path, calib_images: int) -> float:
    """Write the quantized copy with the CLI's default recipe (no gate); return seconds."""
    cmd = [sys.executable, "-m", "endoedge.cli", "quantize", str(model), "-o", str(out), "--force",
           "--precision", "fp16" if recipe == "fp16" else "int8"]
    if recipe == "int8-old":  # the recipe before issue 14: minmax, output layers quantized too
        cmd += ["--method", "minmax", "--quantize-output-layers"]
    elif recipe == "int8-minmax":  # ablation: minmax with output layers float
        cmd += ["--method", "minmax"]
    elif recipe == "int8-nobc":  # the default before bias correction: entropy, output layers float
        cmd += ["--no-bias-correction"]
    elif recipe == "int8-wr":  # the default + output-aware weight rounding
        cmd += ["--weight-rounding"]
    elif recipe == "int8-mse":  # the default with MSE activation ranges instead of entropy
        cmd += ["--method", "mse"]
    elif recipe.startswith("int8-sq"):  # the default + activation smoothing (int8-sq = alpha 0.5, int8-sq75 = 0.75)
        cmd += ["--smooth", f"0.{recipe.removeprefix('int8-sq') or '5'}"]
    elif recipe.startswith("int8-d"):  # ablation: the layers within N weighted layers of an output float
        cmd += ["--float-output-depth", recipe.removeprefix("int8-d")]
    if recipe != "fp16":
        cmd += ["--calib", str(KVASIR), "--calib-split", str(SPLITS / "kvasir_seg_train.txt"),
                "--num-images", str(calib_images)]
    cmd += ["--no-gate"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise RuntimeError(f"`{' '.join(cmd[2:])}` failed: {last}")
    return time.perf_counter() - t0


def predictions(model: Path, paths: list[Path]) -> list:
    """Each frame's detections at the low threshold (dataset class index = model class index)."""
    import numpy as np

    import endoedge
    from endoedge.data.imageio import read_image
    from endoedge.evaluation.metrics import Prediction

    out = []
    with endoedge.load(model, score_threshold=LOW_CONF, max_detections=300) as det:
        for p in paths:
            d = det.detect(read_image(p))
            out.append(Prediction(boxes=d.boxes.astype(np.float64), scores=d.scores, labels=d.class_ids))
    return out


def threshold_of(model: Path) -> float:
    """The model's operating score threshold (its metadata's, else endoedge's default)."""
    import endoedge

    with endoedge.load(model) as det:
        return float(det.spec.score_threshold)


def compare(ref_preds: list, cand_preds: list, threshold: float) -> dict:
    """Agreement + alarm shares of two prediction lists of the same frames."""
    from endoedge.evaluation.agreement import agreement

    a = agreement(ref_preds, cand_preds, threshold)
    n = a.n_frames
    return {**a.to_dict(),
            "alarm_share_reference": round((a.frames_both + a.frames_reference_only) / n, 4),
            "alarm_share_candidate": round((a.frames_both + a.frames_candidate_only) / n, 4)}


def labelled(model: Path) -> dict:
    """mAP@0.5 and frame sensitivity at the model's threshold on Kvasir-SEG val."""
    from endoedge.evaluation import evaluate_model

    rep = evaluate_model(model, KVASIR, split=SPLITS / "kvasir_seg_val.txt", device="cpu")
    return {"map50": rep["coco"]["map50"], "sensitivity": rep["frame"]["sensitivity"], "conf": rep["conf"]}


def run(models: dict[str, Path], recipes: list[str], calib_images: int, work: Path) -> dict:
    """Every model x recipe x set; raw records."""
    sets = frame_sets()
    out: dict = {"machine": f"{platform.processor() or platform.machine()}, {platform.node()}",
                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "calib_images": calib_images,
                 "sets": {k: len(v) for k, v in sets.items()}, "models": {}}
    for name, model in models.items():
        thr = threshold_of(model)
        ref = {k: predictions(model, v) for k, v in sets.items()}
        entry: dict = {"path": str(model), "threshold": thr, "fp32": labelled(model), "recipes": {}}
        for recipe in recipes:
            copy = work / f"{name}.{recipe}.onnx"
            try:
                secs = make_copy(model, recipe, copy, calib_images)
            except RuntimeError as err:  # kept in the results: a recipe that cannot make a copy is a finding
                entry["recipes"][recipe] = {"error": str(err)}
                print(name, recipe, "FAILED:", err, flush=True)
                continue
            rec: dict = {"quantize_s": round(secs, 1), "labelled": labelled(copy), "sets": {}}
            for k, v in sets.items():
                rec["sets"][k] = compare(ref[k], predictions(copy, v), thr)
            entry["recipes"][recipe] = rec
            print(name, recipe, json.dumps({k: (s["box_agreement"], s["alarm_share_reference"],
                                                s["alarm_share_candidate"]) for k, s in rec["sets"].items()}),
                  flush=True)
        out["models"][name] = entry
    return out


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def table(res: dict) -> str:
    """The markdown table RESULTS.md shows."""
    lines = [f"Measured {res['date']} on {res['machine']} (ONNX Runtime CPU); calibration: {res['calib_images']} "
             "Kvasir-SEG train images; frames per set: " + ", ".join(f"{k} {n}" for k, n in res["sets"].items()) + ".",
             "",
             "| model | copy | threshold | mAP@0.5 FP32 -> copy (Kvasir val) | frame sens. FP32 -> copy (Kvasir val) "
             "| boxes kept: Kvasir val / PG-A pos / PG-B pos | false-alarm frames FP32 -> copy: PG-A neg / PG-B neg |",
             "|---|---|---|---|---|---|---|"]
    for name, e in res["models"].items():
        for recipe, r in e["recipes"].items():
            if "error" in r:
                lines.append(f"| {name} | {recipe} | {e['threshold']:g} | failed: {r['error']} | | | |")
                continue
            s, f, c = r["sets"], e["fp32"], r["labelled"]
            kept = " / ".join(_pct(s[k]["box_agreement"]) for k in ("kvasir_val", "pg_A_pos", "pg_B_pos"))
            fa = " / ".join(f"{_pct(s[k]['alarm_share_reference'])} -> {_pct(s[k]['alarm_share_candidate'])}"
                            for k in ("pg_A_neg", "pg_B_neg"))
            lines.append(f"| {name} | {recipe} | {e['threshold']:g} | {f['map50']:.3f} -> {c['map50']:.3f} "
                         f"| {_pct(f['sensitivity'])} -> {_pct(c['sensitivity'])} | {kept} | {fa} |")
    return "\n".join(lines)


def write_results(res: dict) -> None:
    """Raw JSON + the table between the markers of RESULTS.md (appended when absent)."""
    RAW.parent.mkdir(parents=True, exist_ok=True)
    if RAW.is_file():  # models measured in an earlier run stay (a run may measure one model)
        old = json.loads(RAW.read_text())
        res["models"] = {**{k: v for k, v in old.get("models", {}).items() if k not in res["models"]},
                         **res["models"]}
    RAW.write_text(json.dumps(res, indent=1) + "\n")
    text = RESULTS.read_text()
    block = f"{START}\n{table(res)}\n{END}"
    if START in text and END in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END):]
    else:
        text += f"\n## INT8/FP16 across centres (issue 14)\n\n{block}\n"
    RESULTS.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", required=True, metavar="NAME=ONNX")
    ap.add_argument("--recipes", default="fp16,int8-old,int8-nobc,int8",
                    help="fp16, int8 (today's default: entropy, output layers float, bias correction), int8-old (minmax, output "
                    "layers quantized: the recipe before issue 14), int8-minmax (minmax, output layers float), "
                    "int8-nobc (the default without bias correction), int8-wr (the default + --weight-rounding), "
                    "int8-mse (the default with --method mse), "
                    "int8-dN (N layers float from the outputs), int8-sq[NN] (--smooth 0.NN, default 0.5)")
    ap.add_argument("--calib-images", type=int, default=500)
    ap.add_argument("--work", default="/tmp/endoedge-xcentre")
    ap.add_argument("--no-write", action="store_true", help="print only (and --save-json)")
    ap.add_argument("--save-json", metavar="PATH", help="also write this run's raw records here")
    args = ap.parse_args()
    if not KVASIR.is_dir():
        raise SystemExit(f"needs the shared data folder {SHARED} (absent in a user's clone)")
    models: dict[str, Path] = {}
    for m in args.model:
        name, sep, path = m.partition("=")
        if not sep or not name or not Path(path).is_file():
            ap.error(f"--model {m!r}: give NAME=PATH of an existing FP32 .onnx")
        models[name] = Path(path)
    recipes = args.recipes.split(",")
    unknown = sorted(r for r in set(recipes) - {"fp16", "int8", "int8-old", "int8-minmax", "int8-nobc", "int8-wr", "int8-mse"}
                     if not (r.startswith("int8-d") and r.removeprefix("int8-d").isdigit())
                     and not (r.startswith("int8-sq") and (r.removeprefix("int8-sq") or "5").isdigit()))
    if unknown:
        ap.error(f"unknown recipe(s) {unknown}; use fp16, int8, int8-old, int8-minmax, int8-nobc, int8-wr, int8-mse, int8-dN (N layers float from the outputs), int8-sq[NN] (--smooth 0.NN, default 0.5)")
    if args.calib_images < 1:
        ap.error("--calib-images must be >= 1")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    res = run(models, recipes, args.calib_images, work)
    print(table(res))
    if args.save_json:
        Path(args.save_json).write_text(json.dumps(res, indent=1) + "\n")
    if not args.no_write:
        write_results(res)


if __name__ == "__main__":
    main()
