"""``endoedge quantize MODEL.onnx --calib SRC -o MODEL.int8.onnx``: Q/DQ INT8 or FP16 + the gate."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from endoedge.cli._common import check_output_file, open_output
from endoedge.errors import InputError

if TYPE_CHECKING:
    from endoedge.cli._common import SubParsers

logger = logging.getLogger(__name__)


def add_parser(sub: SubParsers) -> None:
    """Register the ``quantize`` subcommand."""
    from endoedge.calibration.quantize import METHODS
    from endoedge.cli._gate import add_gate_options

    p = sub.add_parser(
        "quantize",
        help="INT8 (explicit Q/DQ, TensorRT-ready) or FP16 ONNX, gated at the operating point",
        description="Write an INT8 copy of an FP32 endoedge ONNX in the explicit Q/DQ form TensorRT "
        "8.6-11 parses (symmetric int8, zero points 0, per-channel Conv weights, float biases), "
        "calibrated with ONNX Runtime on the CPU on images pre-processed exactly as the runtime "
        "does; or an FP16 copy with float32 inputs/outputs. Then gate it against the FP32 model at "
        "the model's score threshold: with --eval, on a labelled set (box agreement, frame "
        "sensitivity, false alarms on --negatives, and mAP@0.5); with --agree, on unlabelled frames "
        "(box agreement both ways and the upward score shift); with neither, on calibration frames "
        "held out of calibration (--no-gate skips it). Exit 1 when a gate fails; an INT8 model that "
        "fails is first repaired by keeping its most sensitive layers in float, and a repair that "
        "passes is judged again on frames neither calibration nor the repair saw. The output file is "
        "kept either way.",
    )
    p.add_argument("model", help="FP32 .onnx exported by endoedge (or Ultralytics)")
    p.add_argument("-o", "--output", required=True, help="output .onnx (refused if it exists, unless --force)")
    p.add_argument("--force", action="store_true", help="replace an existing --output")
    p.add_argument("--precision", choices=("int8", "fp16"), default="int8", help="default int8")
    cal = p.add_argument_group("INT8 calibration")
    cal.add_argument("--calib", metavar="SRC", help="calibration images: folder (recursive), glob, video, "
                     "or labelled dataset (Kvasir-SEG / COCO json / YOLO); never the evaluation images. "
                     "FP16: only the frames of the default agreement gate")
    cal.add_argument("--calib-split", metavar="FILE", help="keep only the image stems in FILE (e.g. a train split)")
    cal.add_argument("--method", choices=METHODS, default="entropy",
                     help="calibration: entropy (default; ONNX Runtime's KL-divergence calibrator), "
                     "minmax (TensorRT's 'max'; the default before issue 14), percentile (99.999), "
                     "mse (per tensor the range with the least INT8 error, as ModelOpt's 'mse')")
    cal.add_argument("--quantize-output-layers", action="store_true",
                     help="also quantize the layers that feed the outputs directly (class/box head convs, "
                     "DFL, decode arithmetic); by default they stay float (benchmarks/RESULTS.md)")
    cal.add_argument("--float-output-depth", type=int, default=None, metavar="N",
                     help="INT8: keep the layers within N weighted layers of an output in float (default 1: "
                     "those that feed the outputs directly; 2 adds the layers feeding those, ...)")
    cal.add_argument("--bias-correction", action=argparse.BooleanOptionalAction, default=None,
                     help="INT8: correct the quantized convolutions' float biases so their per-channel output "
                     "means match FP32's on 16 calibration frames (default on; benchmarks/RESULTS.md)")
    cal.add_argument("--weight-rounding", action=argparse.BooleanOptionalAction, default=None,
                     help="INT8: re-round the quantized convolutions' weights (floor or ceil) for the least "
                     "output error on the bias-correction frames (benchmarks/RESULTS.md)")
    cal.add_argument("--smooth", type=float, nargs="?", const=0.5, default=None, metavar="ALPHA",
                     help="INT8: divide each quantized convolution's input channels by per-channel scales in "
                     "front of its quantizer and fold them into its weights, moving the channels' range spread "
                     "into the per-channel weight scales (SmoothQuant; ALPHA 0-1, default 0.5; benchmarks/RESULTS.md)")
    cal.add_argument("--num-images", type=int, default=500, help="calibration images (default 500, spread over the source)")
    cal.add_argument("--batch", type=int, help="calibration batch size (default 8, or the model's fixed "
                     "batch); the last batch is padded with the first images")
    cal.add_argument("--seed", type=int, default=0, help="selection seed (default 0)")
    gate = p.add_argument_group("gate (at the model's score threshold; FP32 is the reference)")
    gate.add_argument("--eval", metavar="DATA", help="labelled set to compare on (Kvasir-SEG / COCO json / YOLO)")
    gate.add_argument("--split", help="file of image stems of DATA to evaluate, e.g. data/splits/kvasir_seg_val.txt")
    gate.add_argument("--format", default="auto", choices=("auto", "kvasir", "coco", "yolo"), help="DATA layout")
    gate.add_argument("--negatives", metavar="DIR", help="with --eval: polyp-free frames (false-alarm share)")
    gate.add_argument("--conf", type=float, help="operating score threshold of the gates (default: the model's)")
    add_gate_options(gate)
    gate.add_argument("--no-gate", action="store_true",
                      help="without --eval/--agree: do not hold calibration frames out and gate on them")
    gate.add_argument("--max-fallback", type=int, default=10,
                      help="INT8: most layers to keep in float to pass the gate (default 10; 0 = none)")
    gate.add_argument("--fallback-tries", type=int, metavar="N",
                      help="INT8: most layers to try in float (each one re-quantizes and re-runs the gates; a "
                      "layer stays float only when the copy comes closer to passing; default 2 x --max-fallback)")
    gate.add_argument("--sensitivity-images", type=int, default=32,
                      help="frames the per-layer ranking measures on (default 32, spread): the --agree or "
                      "held-out frames when that gate runs, else calibration images")
    p.add_argument("--json", metavar="PATH", help="report path (default: OUTPUT with .quant.json)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Quantize / convert, check, gate; write the report. Exit 1 when a gate fails."""
    from endoedge.calibration.gate import QuantOptions, quantize_gated
    from endoedge.cli._gate import gate_limits, report_failure
    from endoedge.data.onnx_facts import onnx_facts
    from endoedge.spec import ModelSpec, read_onnx_metadata

    model, out = Path(args.model), Path(args.output)
    if out.resolve() == model.resolve():
        raise InputError("--output must differ from the input model")
    _check_numbers(args)
    limits = gate_limits(args)
    props = read_onnx_metadata(model)
    if not any(k.startswith("endoedge.") for k in props) and not {"names", "imgsz"} <= set(props):
        raise InputError(f"'{model}' has no endoedge or Ultralytics metadata, so its pre-processing is "
                         "unknown and calibration would be wrong; quantize an `endoedge export` or an "
                         "Ultralytics ONNX")
    spec = ModelSpec.from_metadata(props, where=str(model))
    already = onnx_facts(model).precision
    if already != "fp32":
        raise InputError(f"'{model}' is already {'Q/DQ INT8' if already == 'int8' else 'FP16'}; "
                         "quantize the FP32 export (endoedge export) instead")
    inputs = [model] + [Path(p) for p in (args.calib, args.calib_split, args.eval, args.split, args.agree,
                                          args.negatives) if p]
    check_output_file(out, "--output", inputs=inputs, force=args.force, allowed_suffixes=(".onnx",))
    json_path = Path(args.json) if args.json else out.with_suffix(".quant.json")
    check_output_file(json_path, "--json", inputs=[*inputs, out], force=True)
    options = QuantOptions(
        precision=args.precision, calib=args.calib, calib_split=args.calib_split, method=args.method,
        float_output_layers=not args.quantize_output_layers, float_output_depth=args.float_output_depth or 1,
        bias_correction=args.bias_correction is not False, weight_rounding=bool(args.weight_rounding),
        smooth=args.smooth, num_images=args.num_images, batch=args.batch,
        seed=args.seed, eval_data=args.eval,
        split=args.split, fmt=args.format, negatives=args.negatives, conf=args.conf, agree=args.agree,
        agree_images=args.agree_images, holdout=not args.no_gate, max_drop=limits.max_drop,
        min_agreement=limits.min_agreement, max_sensitivity_drop=limits.max_sensitivity_drop,
        max_false_alarm_rise=limits.max_false_alarm_rise, max_score_shift=limits.max_score_shift,
        max_fallback=args.max_fallback,
        fallback_tries=args.fallback_tries, sensitivity_images=args.sensitivity_images,
    )
    report = quantize_gated(model, out, options, spec=spec, echo=print)
    with open_output(json_path) as fh:
        json.dump(report.to_dict(), fh, indent=1, default=str)
        fh.write("\n")
    print(f"report written to {json_path} ({report.wall_s:.0f} s)")
    if report.passed is False:
        return report_failure("quantize", report.failures, f"; {out} is kept for inspection")
    return 0


def _check_numbers(args: argparse.Namespace) -> None:
    """Counts, limits and option combinations are checked before any work."""
    for flag, value, low in (("--num-images", args.num_images, 1), ("--batch", args.batch, 1),
                             ("--max-fallback", args.max_fallback, 0), ("--float-output-depth", args.float_output_depth, 1),
                             ("--fallback-tries", args.fallback_tries, 1),
                             ("--sensitivity-images", args.sensitivity_images, 1)):
        if value is not None and value < low:
            raise InputError(f"{flag} must be at least {low}, got {value}")
    if args.smooth is not None and args.weight_rounding:
        raise InputError("--smooth and --weight-rounding do not combine (the rounding measures each layer's input in "
                         "the FP32 model, which smoothing rescales): drop one")
    if args.smooth is not None and not 0.0 <= args.smooth <= 1.0:
        raise InputError(f"--smooth takes a strength within 0-1 (0.5 if left out), got {args.smooth}")
    if args.no_gate and (args.eval or args.agree):
        raise InputError("--no-gate skips the held-out agreement gate; it contradicts --eval/--agree (drop one)")
    if args.quantize_output_layers and args.float_output_depth is not None:
        raise InputError("--quantize-output-layers and --float-output-depth contradict each other (drop one)")
    for flag, on in (("--quantize-output-layers", args.quantize_output_layers),
                     ("--float-output-depth", args.float_output_depth is not None),
                     ("--bias-correction", args.bias_correction is not None),
                     ("--weight-rounding", args.weight_rounding is not None),
                     ("--smooth", args.smooth is not None)):
        if on and args.precision != "int8":
            raise InputError(f"{flag} is an INT8 option; drop it for --precision fp16")
    if args.negatives and not args.eval:
        raise InputError("--negatives counts false alarms in the --eval gate; pass --eval DATA too")
    if args.precision == "fp16" and args.calib and (args.eval or args.agree):
        raise InputError("--calib only names the frames of FP16's default agreement gate; with --eval/--agree "
                         "it would not be used (drop it)")
    if args.precision == "fp16" and args.calib_split and not args.calib:
        raise InputError("--calib-split filters --calib; pass --calib SRC too")
