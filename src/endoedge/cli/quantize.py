"""``endoedge quantize MODEL.onnx --calib SRC -o MODEL.int8.onnx``: Q/DQ INT8 or FP16 + the gate."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from endoedge.cli._common import check_output_file, open_output
from endoedge.errors import InputError

logger = logging.getLogger(__name__)


def add_parser(sub: Any) -> None:
    """Register the ``quantize`` subcommand."""
    from endoedge.calibration.quantize import METHODS
    from endoedge.evaluation.compare import DEFAULT_MAX_DROP

    p = sub.add_parser(
        "quantize",
        help="INT8 (explicit Q/DQ, TensorRT-ready) or FP16 ONNX, with an accuracy gate",
        description="Write an INT8 copy of an FP32 endoedge ONNX in the explicit Q/DQ form TensorRT "
        "8.6-11 parses (symmetric int8, zero points 0, per-channel Conv weights, float biases), "
        "calibrated with ONNX Runtime on the CPU on images pre-processed exactly as the runtime "
        "does; or an FP16 copy with float32 inputs/outputs. With --eval, compare it with the FP32 "
        "model on a labelled set and exit 1 when mAP@0.5 drops more than --max-drop points; an "
        "INT8 model that fails is repaired by keeping its most sensitive layers in float. The "
        "output file is kept either way.",
    )
    p.add_argument("model", help="FP32 .onnx exported by endoedge (or Ultralytics)")
    p.add_argument("-o", "--output", required=True, help="output .onnx (refused if it exists, unless --force)")
    p.add_argument("--force", action="store_true", help="replace an existing --output")
    p.add_argument("--precision", choices=("int8", "fp16"), default="int8", help="default int8")
    cal = p.add_argument_group("INT8 calibration")
    cal.add_argument("--calib", metavar="SRC", help="calibration images: folder (recursive), glob, video, "
                     "or labelled dataset (Kvasir-SEG / COCO json / YOLO); never the evaluation images")
    cal.add_argument("--calib-split", metavar="FILE", help="keep only the image stems in FILE (e.g. a train split)")
    cal.add_argument("--method", choices=METHODS, default="minmax",
                     help="calibration: minmax (default; TensorRT's 'max'), entropy (KL), percentile (99.999)")
    cal.add_argument("--num-images", type=int, default=500, help="calibration images (default 500, spread over the source)")
    cal.add_argument("--batch", type=int, help="calibration batch size (default 8, or the model's fixed "
                     "batch); the last batch is padded with the first images")
    cal.add_argument("--seed", type=int, default=0, help="selection seed (default 0)")
    gate = p.add_argument_group("accuracy gate")
    gate.add_argument("--eval", metavar="DATA", help="labelled set to compare on (Kvasir-SEG / COCO json / YOLO)")
    gate.add_argument("--split", help="file of image stems of DATA to evaluate, e.g. data/splits/kvasir_seg_val.txt")
    gate.add_argument("--format", default="auto", choices=("auto", "kvasir", "coco", "yolo"), help="DATA layout")
    gate.add_argument("--max-drop", type=float, default=DEFAULT_MAX_DROP,
                      help=f"largest allowed mAP@0.5 drop in points (default {DEFAULT_MAX_DROP:g})")
    gate.add_argument("--max-fallback", type=int, default=10,
                      help="INT8: most layers to keep in float to pass the gate (default 10; 0 = none)")
    gate.add_argument("--sensitivity-images", type=int, default=32,
                      help="calibration images the per-layer ranking measures on (default 32, spread)")
    p.add_argument("--json", metavar="PATH", help="report path (default: OUTPUT with .quant.json)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Quantize / convert, check, gate; write the report. Exit 1 when the gate fails."""
    from endoedge.data.onnx_facts import onnx_facts
    from endoedge.spec import ModelSpec, read_onnx_metadata

    model, out = Path(args.model), Path(args.output)
    if out.resolve() == model.resolve():
        raise InputError("--output must differ from the input model")
    props = read_onnx_metadata(model)
    if not any(k.startswith("endoedge.") for k in props) and not {"names", "imgsz"} <= set(props):
        raise InputError(f"'{model}' has no endoedge or Ultralytics metadata, so its pre-processing is "
                         "unknown and calibration would be wrong; quantize an `endoedge export` or an "
                         "Ultralytics ONNX")
    spec = ModelSpec.from_metadata(props, where=str(model))
    _check_numbers(args)
    already = onnx_facts(model).precision
    if already != "fp32":
        raise InputError(f"'{model}' is already {'Q/DQ INT8' if already == 'int8' else 'FP16'}; "
                         "quantize the FP32 export (endoedge export) instead")
    inputs = [model] + [Path(p) for p in (args.calib, args.calib_split, args.eval, args.split) if p]
    check_output_file(out, "--output", inputs=inputs, force=args.force, allowed_suffixes=(".onnx",))
    json_path = Path(args.json) if args.json else out.with_suffix(".quant.json")
    check_output_file(json_path, "--json", inputs=[*inputs, out], force=True)
    report: dict[str, Any] = {"model": str(model), "output": str(out), "precision": args.precision}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="endoedge-quant-") as tmp:
        if args.precision == "fp16":
            from endoedge.calibration.quantize import convert_fp16

            convert_fp16(model, out)
            print(f"wrote {out} (FP16 weights and activations, float32 inputs/outputs; runs in ONNX Runtime)")
            passed = _gate(args, model, out, report, data=None, cache=None, tmp=Path(tmp))
        else:
            passed = _int8(args, model, out, spec, report, Path(tmp))
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    with open_output(json_path) as fh:
        json.dump(report, fh, indent=1, default=str)
        fh.write("\n")
    print(f"report written to {json_path} ({report['wall_s']:.0f} s)")
    if passed is False:
        print(f"endoedge quantize: gate FAILED: mAP@0.5 dropped {report['gate']['drop_points']:.2f} points "
              f"(limit {args.max_drop:g}); {out} is kept for inspection", file=sys.stderr)
        return 1
    return 0


def _check_numbers(args: argparse.Namespace) -> None:
    """Counts and limits are checked before any work."""
    for flag, value, low in (("--num-images", args.num_images, 1), ("--batch", args.batch, 1),
                             ("--max-fallback", args.max_fallback, 0), ("--sensitivity-images", args.sensitivity_images, 1)):
        if value is not None and value < low:
            raise InputError(f"{flag} must be at least {low}, got {value}")
    if not (args.max_drop >= 0):  # also refuses NaN
        raise InputError(f"--max-drop must be a number of points >= 0, got {args.max_drop}")
    if args.precision == "fp16" and args.calib:
        raise InputError("--calib only applies to --precision int8 (FP16 needs no calibration)")


def _int8(args: argparse.Namespace, model: Path, out: Path, spec: Any, report: dict[str, Any], tmp: Path) -> bool | None:
    from endoedge.calibration import load_calibration_data
    from endoedge.calibration.qdq_check import check_qdq
    from endoedge.calibration.quantize import quantize_int8

    if not args.calib:
        raise InputError("INT8 needs calibration images: --calib SRC (folder, glob, video or labelled set)")
    input_name, fixed_batch = _input(model)
    batch = args.batch or fixed_batch or 8
    if fixed_batch and batch != fixed_batch:
        raise InputError(f"'{model}' has a fixed batch of {fixed_batch}; use --batch {fixed_batch}")
    data = load_calibration_data(args.calib, spec, num_images=args.num_images, batch_size=batch,
                                 input_name=input_name, seed=args.seed, split=args.calib_split)
    print(f"calibration: {data.num_images} images from {args.calib}"
          + (f" ({Path(args.calib_split).name})" if args.calib_split else "")
          + f", batch {data.batch_size}, sha256 {data.content_hash[:16]}..."
          + (f", {len(data.skipped)} unreadable skipped" if data.skipped else ""))
    report["calibration"] = data.describe()
    if args.eval:
        _refuse_overlap(data, args)
    cache = tmp / "ranges.json"
    result = quantize_int8(model, out, data, method=args.method, cache_path=cache)
    qdq = check_qdq(out)
    print(f"wrote {out} (INT8 Q/DQ, {args.method} calibration); {qdq.summary()}")
    report.update(method=args.method, qdq=qdq.summary(), qdq_violations=qdq.violations,
                  metadata=result.metadata)
    if qdq.violations:
        raise InputError(f"the quantized model breaks TensorRT's Q/DQ rules: {qdq.violations[0]}")
    return _gate(args, model, out, report, data=data, cache=cache, tmp=tmp)


def _gate(args: argparse.Namespace, model: Path, out: Path, report: dict[str, Any], *,
          data: Any, cache: Path | None, tmp: Path) -> bool | None:
    """Compare with the FP32 model; for INT8, fall back layer by layer. ``None`` = no --eval."""
    from endoedge.evaluation.compare import compare_models, format_compare

    if not args.eval:
        print("no --eval DATA given: accuracy NOT checked; run `endoedge eval --compare "
              f"{model} {out} DATA` before deploying")
        return None
    opts = {"split": args.split, "fmt": args.format, "max_drop": args.max_drop, "device": "cpu"}
    cmp = compare_models(model, out, args.eval, **opts)
    print(format_compare(cmp))
    report["gate"] = cmp["gate"]
    report["raw_heads"] = cmp["raw_heads"]
    if cmp["gate"]["passed"] or data is None or args.max_fallback <= 0:
        return bool(cmp["gate"]["passed"])
    return _fallback(args, model, out, report, data, cache, cmp, opts)


def _fallback(args: argparse.Namespace, model: Path, out: Path, report: dict[str, Any], data: Any,
              cache: Path | None, first: dict[str, Any], opts: dict[str, Any]) -> bool:
    from endoedge.calibration.qdq_check import check_qdq
    from endoedge.calibration.quantize import quantize_int8
    from endoedge.calibration.sensitivity import greedy_fallback, rank_layers
    from endoedge.evaluation.compare import compare_models, format_compare

    n_batches = max(1, -(-args.sensitivity_images // data.batch_size))
    print(f"INT8 fails the gate: ranking layers by sensitivity on {n_batches * data.batch_size} "
          "calibration images ...")
    def progress(done: int, total: int) -> None:
        if done % 10 == 0 or done == total:
            logger.info("sensitivity: %d/%d layers", done, total)

    ranking = rank_layers(model, out, data, n_batches=n_batches, progress=progress)
    print(f"  full INT8 raw-head error (proxy) {ranking['full_int8_error']:.4g}; most costly layers:")
    print(f"  {'node':<40}{'op':>6}{'error if float':>16}{'gain':>12}")
    for x in ranking["layers"][:10]:
        print(f"  {x['node']:<40}{x['op_type']:>6}{x['error_if_float']:>16.4g}{x['gain']:>12.4g}")
    report["sensitivity"] = {**ranking, "layers": ranking["layers"][:50]}
    last: dict[str, Any] = {}

    def quantize(nodes: list[str]) -> Path:
        quantize_int8(model, out, data, method=args.method, nodes_to_exclude=nodes, cache_path=cache)
        return out

    def gate(path: Path) -> dict[str, Any]:
        last["cmp"] = compare_models(model, path, args.eval, reference_report=first["reference"], **opts)
        return dict(last["cmp"]["gate"])

    result = greedy_fallback(ranking, quantize, gate, max_layers=args.max_fallback)
    report["fallback"] = {"steps": result["steps"], "float_nodes": result["float_nodes"]}
    if "cmp" in last:
        print(format_compare(last["cmp"]))
        report["gate"] = last["cmp"]["gate"]
        report["raw_heads"] = last["cmp"]["raw_heads"]
    qdq = check_qdq(out)
    report["qdq"] = qdq.summary()
    names = ", ".join(result["float_nodes"]) or "none"
    print(f"kept in float ({len(result['float_nodes'])}): {names}; {qdq.summary()}")
    return bool(result["passed"])


def _refuse_overlap(data: Any, args: argparse.Namespace) -> None:
    """Calibrating on evaluation images inflates the gate: refuse it."""
    from endoedge.evaluation import load_eval_dataset

    evalset = load_eval_dataset(args.eval, fmt=args.format, split=args.split)
    eval_paths = {s.path.resolve() for s in evalset.samples}
    shared = [it for it in data.items if it.path.resolve() in eval_paths]
    if shared:
        raise InputError(
            f"{len(shared)} calibration images are also evaluation images (e.g. {shared[0].path.name}); "
            "calibrate on other images, e.g. --calib-split with the train split"
        )


def _input(model: Path) -> tuple[str, int | None]:
    """The model's input name and its fixed batch size (``None`` when dynamic)."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    inits = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise InputError(f"'{model}' has {len(inputs)} inputs; endoedge quantizes single-input detectors")
    dims = inputs[0].type.tensor_type.shape.dim
    return inputs[0].name, (int(dims[0].dim_value) or None) if dims else None
