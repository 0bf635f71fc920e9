"""INT8 copies across calibration draws and recipe variants (issue 14), scored like
``bench_quant_xcentre.py`` (same frame sets, same agreement and alarm measures at FP32's threshold).

``bench_quant_xcentre.py`` goes through the CLI with one calibration draw (seed 0); this calls
:func:`endoedge.calibration.quantize.quantize_int8` directly so a variant can name any of its
arguments and the calibration seed: how much of a recipe's outcome is the recipe, and how much the
draw of 500 Kvasir-SEG train images?

    python benchmarks/bench_quant_draws.py --model yolov8n=runs/q/yolov8n.onnx \\
        --variants '{"default_s1": {"seed": 1}, "sq50_s1": {"seed": 1, "smooth": 0.5}}' \\
        --out benchmarks/results/quant_draws_yolov8n.json

``--score LABEL=ONNX`` scores a copy that already exists (e.g. the file the README's ``endoedge
quantize`` command wrote) the same way, without quantizing.

A variant is ``{label: {quantize_int8 keyword arguments, plus "seed" (calibration draw, default 0)
and "bc" (bias correction, default true)}}``. FP32's predictions are cached beside the copies
(``--work``). Records are merged into ``--out`` by label as each variant finishes.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_quant_xcentre as xc  # noqa: E402  (a sibling script, not a package)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, metavar="NAME=ONNX")
    ap.add_argument("--variants", default="{}", help="JSON object {label: {quantize_int8 kwargs, seed, bc}}")
    ap.add_argument("--score", action="append", default=[], metavar="LABEL=ONNX",
                    help="also score an existing copy (e.g. what `endoedge quantize` wrote) as LABEL")
    ap.add_argument("--work", default="runs/quant_draws", help="copies and cached FP32 predictions")
    ap.add_argument("--out", required=True, help="raw JSON (merged by label)")
    ap.add_argument("--calib-images", type=int, default=500)
    ap.add_argument("--neg-split", action="append", type=Path, default=[], metavar="SPLIT",
                    help="score false alarms only on the PolypGen negative sequences this split file lists "
                         "(repeatable; e.g. polypgen_neg_val.txt and polypgen_neg_test.txt for a model trained "
                         "on polypgen_neg_train.txt)")
    args = ap.parse_args()
    name, sep, path = args.model.partition("=")
    model = Path(path)
    if not sep or not model.is_file():
        ap.error(f"--model {args.model!r}: give NAME=PATH of an existing FP32 .onnx")
    try:
        variants = json.loads(args.variants)
    except json.JSONDecodeError as err:
        ap.error(f"--variants is not JSON: {err}")
    if not isinstance(variants, dict) or not all(isinstance(v, dict) for v in variants.values()):
        ap.error("--variants must be a JSON object of objects")
    scored = dict(s.partition("=")[::2] for s in args.score)
    for label, copy_path in scored.items():
        if not label or not Path(copy_path).is_file():
            ap.error(f"--score {label}={copy_path}: give LABEL=PATH of an existing copy")
    if not variants and not scored:
        ap.error("nothing to do: give --variants and/or --score")

    import inspect

    from endoedge.calibration.quantize import quantize_int8

    known = set(inspect.signature(quantize_int8).parameters) - {"model_path", "output", "data", "cache_path",
                                                                "bias_correction"} | {"seed", "bc"}
    for label, kw in variants.items():
        unknown = sorted(set(kw) - known)
        if unknown:
            ap.error(f"variant {label!r}: unknown argument(s) {unknown}; use {', '.join(sorted(known))}")

    import onnx

    from endoedge.calibration import load_calibration_data
    from endoedge.spec import ModelSpec, read_onnx_metadata

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    for split in args.neg_split:
        if not split.is_file():
            ap.error(f"--neg-split {split}: not a file (a data/splits/polypgen_negatives/*.txt)")
    sets = xc.frame_sets(args.neg_split or None)
    thr = xc.threshold_of(model)
    # FP32's predictions are cached per frame set: a --neg-split run never reads another set's cache
    neg_tag = "".join(f".{p.stem}" for p in args.neg_split)
    cache = work / f"{name}{neg_tag}.fp32preds.pkl"
    if cache.is_file():
        ref = pickle.loads(cache.read_bytes())  # noqa: S301 - our own cache
    else:
        ref = {k: xc.predictions(model, v) for k, v in sets.items()}
        cache.write_bytes(pickle.dumps(ref))
    spec = ModelSpec.from_metadata(read_onnx_metadata(model), where=str(model))
    inp = onnx.load(str(model), load_external_data=False).graph.input[0].name
    fp32 = xc.labelled(model)
    out_path = Path(args.out)
    res = json.loads(out_path.read_text()) if out_path.is_file() else {}
    res.update({"model": str(model), "threshold": thr, "fp32": fp32, "sets": {k: len(v) for k, v in sets.items()},
                "calib_images": args.calib_images, "neg_splits": [str(p) for p in args.neg_split]})
    res.setdefault("variants", {})
    data, data_seed = None, None
    for label, copy_path in scored.items():
        _record(res, out_path, name, label, {"scored_file": copy_path}, Path(copy_path), None, fp32, ref, sets, thr)
    for label, kw in variants.items():
        kw = dict(kw)
        seed, bc = int(kw.pop("seed", 0)), bool(kw.pop("bc", True))
        if "op_types" in kw:
            kw["op_types"] = tuple(kw["op_types"])
        if data is None or seed != data_seed:
            data = load_calibration_data(xc.KVASIR, spec, num_images=args.calib_images, batch_size=8,
                                         input_name=inp, split=xc.SPLITS / "kvasir_seg_train.txt", seed=seed)
            data_seed = seed
        copy = work / f"{name}.{label}.onnx"
        t0 = time.time()
        quantize_int8(model, copy, data, cache_path=work / f"{name}.{label}.ranges.json", bias_correction=bc, **kw)
        _record(res, out_path, name, label, variants[label], copy, round(time.time() - t0, 1), fp32, ref, sets, thr)


def _record(res: dict, out_path: Path, name: str, label: str, args: dict, copy: Path, quantize_s: float | None,
            fp32: dict, ref: dict, sets: dict, thr: float) -> None:
    """Score ``copy`` against FP32's cached predictions, merge it into ``out_path`` and print one line."""
    rec = {"args": args, "quantize_s": quantize_s, "labelled": xc.labelled(copy),
           "sets": {k: xc.compare(ref[k], xc.predictions(copy, v), thr) for k, v in sets.items()}}
    res["variants"][label] = rec
    res["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out_path.write_text(json.dumps(res, indent=1) + "\n")
    s = rec["sets"]
    print(f"{name} {label}: mAP {fp32['map50']:.3f}->{rec['labelled']['map50']:.3f} "
          f"sens {fp32['sensitivity']:.3f}->{rec['labelled']['sensitivity']:.3f} "
          f"kept {s['kvasir_val']['box_agreement']:.3f}/{s['pg_A_pos']['box_agreement']:.3f}/"
          f"{s['pg_B_pos']['box_agreement']:.3f} "
          f"FA {s['pg_A_neg']['alarm_share_reference']:.3f}->{s['pg_A_neg']['alarm_share_candidate']:.3f} / "
          f"{s['pg_B_neg']['alarm_share_reference']:.3f}->{s['pg_B_neg']['alarm_share_candidate']:.3f} "
          f"shift {[round(x['mean_score_shift'] or 0, 3) for x in s.values()]}", flush=True)


if __name__ == "__main__":
    main()
