"""``endoedge export WEIGHTS -o MODEL.onnx``: PyTorch checkpoint -> self-describing ONNX + parity."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from endoedge.cli._common import ENDOSCOPY_HELP, endoscopy_option, image_size
from endoedge.errors import InputError

if TYPE_CHECKING:
    from endoedge.cli._common import SubParsers

logger = logging.getLogger(__name__)


def add_parser(sub: SubParsers) -> None:
    """Register the ``export`` subcommand."""
    from endoedge.models import arch_names

    p = sub.add_parser(
        "export",
        help="export a PyTorch detector to ONNX (raw heads, metadata, parity check)",
        description="Export an endoedge checkpoint (or a bare torchvision state_dict with --arch "
        "and --classes) to ONNX: raw box regressions and class logits, no NMS, dynamic batch, "
        "everything needed to run it in metadata_props. Then compare ONNX Runtime with PyTorch "
        "on real-looking frames and exit 1 if they disagree beyond tolerance.",
    )
    p.add_argument("weights", help="endoedge checkpoint or torchvision state_dict (.pt/.pth)")
    p.add_argument("-o", "--output", required=True, help="output .onnx path")
    p.add_argument("--arch", help=f"architecture of a bare state_dict: {', '.join(arch_names())}")
    p.add_argument("--classes", help="foreground class names, comma-separated (background is implicit)")
    p.add_argument("--imgsz", type=image_size, help="square input size (resizable architectures only; a size "
                   "other than the checkpoint's training size needs --resize-anyway)")
    p.add_argument("--resize-anyway", action="store_true",
                   help="export at an --imgsz the checkpoint was not trained at (its boxes move: SSD anchors are "
                   "relative to the input; fine-tune at that size instead)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17; default 17)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch axis at 1")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxslim graph simplification")
    p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs PyTorch parity check")
    p.add_argument("--atol", type=float, default=1e-3, help="parity absolute tolerance")
    p.add_argument("--rtol", type=float, default=1e-3, help="parity relative tolerance")
    p.add_argument("--conf", type=float, help="default score threshold stored in the ONNX")
    p.add_argument("--iou", type=float, help="default NMS IoU threshold stored in the ONNX")
    p.add_argument("--max-det", type=int, help="default max detections stored in the ONNX")
    p.add_argument("--endoscopy", metavar="OPTIONS", help=ENDOSCOPY_HELP + "; stored in the ONNX")
    p.add_argument("--stabilize", metavar="OPTIONS",
                   help="temporal stabilization `endoedge run` uses on video, stored in the ONNX: "
                   "onset=K,hold=M,smooth=A,iou=T (defaults 3, 5, 0.5, 0.3)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export, then check parity unless ``--no-check``."""
    from dataclasses import replace
    from pathlib import Path

    from endoedge.export import check_parity, export_onnx
    from endoedge.models.checkpoint import load_checkpoint

    out = Path(args.output)
    if out.is_dir():
        raise InputError(f"-o '{out}' is a folder; give the ONNX file name (e.g. {out / 'model.onnx'})")
    if out.resolve() == Path(args.weights).resolve():
        raise InputError(f"-o '{out}' is the checkpoint itself; pick another -o (e.g. model.onnx)")
    size = (args.imgsz, args.imgsz) if args.imgsz else None
    loaded = load_checkpoint(args.weights, arch=args.arch, class_names=args.classes, input_size=size)
    trained = loaded.trained_input_size
    if size is not None and trained is not None and size != trained and not getattr(args, "resize_anyway", False):
        raise InputError(
            f"'{args.weights}' was trained at {trained[0]}x{trained[1]}; at --imgsz {size[0]} its boxes move (its "
            "anchors are relative to the input: the shipped polyp detector falls from mAP@0.5 0.927 to 0.128 at 512); "
            f"fine-tune at that size first (endoedge train --init {args.weights} --imgsz {size[0]} ...), drop "
            "--imgsz, or pass --resize-anyway"
        )
    loaded.spec = loaded.spec.with_thresholds(args.conf, args.iou, args.max_det)
    endoscopy = endoscopy_option(getattr(args, "endoscopy", None))
    if endoscopy is not None:
        loaded.spec = replace(loaded.spec, endoscopy=endoscopy.to_dict())
    if getattr(args, "stabilize", None):
        from endoedge.spec.stabilize import StabilizeConfig

        loaded.spec = replace(loaded.spec, stabilize=StabilizeConfig.parse(args.stabilize).to_dict())
    result = export_onnx(
        loaded,
        args.output,
        opset=args.opset,
        dynamic_batch=not args.static_batch,
        simplify=not args.no_simplify,
    )
    loaded = replace(loaded, spec=result.spec)
    pp = result.spec.preprocess
    print(
        f"exported {result.path} ({loaded.arch.name}, classes {', '.join(result.spec.class_names)}, "
        f"input {pp.input_size[0]}x{pp.input_size[1]}, opset {result.opset}, "
        f"{'simplified' if result.simplified else 'not simplified'})"
    )
    if args.no_check:
        print("parity check skipped (--no-check)")
        return 0
    report = check_parity(result.path, loaded, atol=args.atol, rtol=args.rtol, raise_on_failure=False)
    print(f"parity ONNX Runtime vs PyTorch (CPU, batch sizes {report.batch_sizes}):")
    for line in report.lines():
        print("  " + line)
    if not report.ok:
        print(f"endoedge export: error: parity check failed; the ONNX at {result.path} is kept for inspection",
              file=sys.stderr)
        return 1
    return 0
