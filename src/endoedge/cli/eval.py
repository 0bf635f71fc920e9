"""``endoedge eval MODEL DATA``: COCO mAP, P/R/F1, frame-level result, AUC, overlap buckets.

``endoedge eval --compare REF CANDIDATE [DATA] [--agree FRAMES]``: the gate at the reference's
operating threshold (box agreement, frame sensitivity, precision, recall, false alarms on
``--negatives``; mAP@0.5 as the secondary check; raw-head errors), on a labelled set and/or on
unlabelled frames; exit 1 when a criterion fails.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from endoedge.cli._common import (
    ENDOSCOPY_HELP,
    add_foreign_model_options,
    check_output_file,
    endoscopy_option,
    foreign_spec,
    open_output,
)
from endoedge.cli._gate import add_gate_options
from endoedge.errors import InputError

if TYPE_CHECKING:
    from endoedge.cli._common import SubParsers

logger = logging.getLogger(__name__)


def add_parser(sub: SubParsers) -> None:
    """Register the ``eval`` subcommand."""
    from endoedge.runtime import backend_names

    p = sub.add_parser(
        "eval",
        help="evaluate a model on a labelled dataset (mAP, P/R/F1, frame level, AUC, overlap)",
        description="Run a model over a Kvasir-SEG, COCO json or YOLO dataset once, at score "
        "threshold 0.001, and report: COCO mAP@0.5 and @0.5:0.95 (pycocotools); precision, "
        "recall, F1 per class at IoU 0.45/0.50/0.55 at the operating threshold --conf; the "
        "frame-level confusion matrix with 'background', sensitivity, specificity, accuracy; the "
        "AUC of the frame score (max detection score; needs --negatives: Kvasir-SEG has no "
        "polyp-free frames, so it is reported as n/a with the reason); and the share of ground-"
        "truth boxes whose best detection overlaps >= 60/70/80/90%%. Unreadable images are "
        "skipped and listed. With --compare REF CANDIDATE DATA: evaluate both models and gate the "
        "candidate at the reference's score threshold (box agreement, frame sensitivity, false "
        "alarms on --negatives, mAP@0.5 as the secondary check); with --agree FRAMES (DATA then "
        "optional) also on unlabelled frames; exit 1 when a criterion fails.",
    )
    p.add_argument("paths", nargs="+", metavar="MODEL DATA",
                   help="MODEL DATA; with --compare: REF CANDIDATE DATA (DATA optional with --agree). MODEL: "
                   ".onnx (endoedge or Ultralytics) or endoedge checkpoint; DATA: Kvasir-SEG folder, COCO .json, "
                   "or YOLO folder")
    p.add_argument("--compare", action="store_true",
                   help="gate: the paths are REF CANDIDATE DATA (e.g. FP32, INT8, val set)")
    gate = p.add_argument_group("with --compare: the gate at the reference's score threshold")
    add_gate_options(gate)
    p.add_argument("--split", help="file of image stems to evaluate (one a line), e.g. data/splits/kvasir_seg_val.txt")
    p.add_argument("--format", default="auto", choices=("auto", "kvasir", "coco", "yolo"), help="dataset layout")
    p.add_argument("--images", help="image folder of a COCO json (default: beside the json)")
    p.add_argument("--names", help="comma-separated class names of a YOLO dataset (default: classes.txt)")
    p.add_argument("--negatives", help="folder of polyp-free images (frame-level specificity and AUC)")
    op = p.add_argument_group("operating point (with --negatives: the sensitivity vs false-alarm-frame curve)")
    op.add_argument("--target-fa", type=float, metavar="SHARE",
                    help="choose the lowest score threshold at which at most this share of the polyp-free "
                    "frames shows a box (e.g. 0.02), and report the sensitivity it costs")
    op.add_argument("--target-sensitivity", type=float, metavar="SHARE",
                    help="instead: choose the highest score threshold at which at least this share of the "
                    "labelled polyp frames has a box on the polyp (e.g. 0.9), and report the false alarms it "
                    "leaves on --negatives")
    op.add_argument("--save-operating-point", metavar="OUT.pt",
                    help="with --target-fa or --target-sensitivity (or --conf T --reason TEXT): write a copy of the checkpoint "
                    "MODEL whose default threshold is the chosen one, with the choice recorded in its metadata (exports carry it)")
    op.add_argument("--reason", metavar="TEXT",
                    help="with --conf T --save-operating-point: store T as a threshold given by hand (e.g. when the "
                    "polyp-free frames cannot place a target), with this reason and what T measures here")
    vid = p.add_argument_group("video metrics (ordered frame folders or videos; MODEL alone is enough)")
    vid.add_argument("--video-negatives", action="append", default=[], metavar="PATH",
                     help="polyp-free sequence(s): a video, a frame folder (natural order) or a folder of "
                     "them; reports frames with a box and false activations per minute (repeatable)")
    vid.add_argument("--video-polyps", action="append", default=[], metavar="PATH",
                     help="sequence(s) whose every frame shows a polyp: shown sensitivity, toggles per 100 "
                     "frames, frames to first detection (repeatable); raw detections and the stabilized "
                     "overlay (the model's stored onset/hold/smoothing, as `endoedge run`) side by side")
    vid.add_argument("--fps", type=float, default=25.0, help="frame rate for per-minute rates (default 25)")
    p.add_argument("--unclear", metavar="DIR",
                   help="multi-task models: folder of unreadable (blurred, smeared, ...) frames, triage truth "
                   "'unclear' (write one with benchmarks/make_triage_set.py)")
    p.add_argument("--proxy-negatives", action="store_true",
                   help="also report a PROXY AUC whose negatives are box-free strips of the positive "
                   "images (biased; labelled as such)")
    p.add_argument("--backend", default="auto", help=f"auto or one of: {', '.join(backend_names())}")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda[:N] (onnxruntime also tensorrt[:N])")
    p.add_argument("--conf", type=float, help="operating score threshold for P/R/F1, frame level and "
                   "overlap (default: the model's)")
    p.add_argument("--iou", type=float, help="NMS IoU threshold (default: the model's)")
    p.add_argument("--endoscopy", metavar="OPTIONS", help=ENDOSCOPY_HELP + " (default: as stored in the model)")
    p.add_argument("--json", metavar="PATH", help="write the full report (with PR curves) as JSON")
    p.add_argument("--plot", metavar="PATH", help="write PR curves (and ROC with negatives) as PNG")
    add_foreign_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate; print the table; write JSON/PNG when asked. Exit 0 (1 on errors)."""
    from endoedge.cli._gate import gate_limits

    videos = bool(args.video_negatives or args.video_polyps)
    want = ((2, 3) if args.agree else (3,)) if args.compare else ((1, 2) if videos else (2,))
    if len(args.paths) not in want:
        raise InputError(f"expected {'REF CANDIDATE DATA' if args.compare else 'MODEL DATA'}, "
                         f"got {len(args.paths)} paths" + ("" if args.compare else
                                                            " (three paths need --compare)")
                         + (" (or REF CANDIDATE with --agree FRAMES)" if args.compare and not args.agree else ""))
    if args.json:
        check_output_file(args.json, "--json", inputs=args.paths, force=True)
    if args.plot:
        check_output_file(args.plot, "--plot", inputs=args.paths, force=True, allowed_suffixes=(".png",))
    gate_limits(args)  # limits, --conf, --agree-images: before any work
    if args.agree and not args.compare:
        raise InputError("--agree compares a candidate with its reference: use --compare REF CANDIDATE --agree FRAMES")
    if args.compare and args.plot:
        raise InputError("--plot draws a single model's PR curves; run `endoedge eval MODEL DATA --plot` "
                         "for each model (the --compare report is the table and --json)")
    if args.compare:
        return _compare(args)
    if args.target_fa is not None and not (args.negatives and len(args.paths) == 2):
        raise InputError("--target-fa chooses the threshold on polyp-free frames: give MODEL DATA --negatives DIR")
    if args.target_sensitivity is not None:
        if args.target_fa is not None:
            raise InputError("give one of --target-fa and --target-sensitivity, not both")
        if len(args.paths) != 2:
            raise InputError("--target-sensitivity chooses the threshold on labelled polyp frames: give MODEL DATA")
        if not 0.0 < args.target_sensitivity <= 1.0:  # before any detection pass (NaN fails too)
            raise InputError(f"--target-sensitivity must be a share within (0, 1], e.g. 0.9; got {args.target_sensitivity}")
    if args.reason is not None:
        if args.target_fa is not None or args.target_sensitivity is not None:
            raise InputError("--reason records a threshold given by hand (--conf T): drop it with --target-fa or "
                             "--target-sensitivity, which record their own rule")
        if args.conf is None or not args.save_operating_point or len(args.paths) != 2:
            raise InputError("--reason goes with a threshold given by hand: MODEL DATA --conf T --reason TEXT "
                             "--save-operating-point OUT.pt")
        if not args.reason.strip():
            raise InputError("--reason is empty: say why this threshold (it is stored in the checkpoint)")
        if not 0.0 < args.conf < 1.0:  # before the detection pass
            raise InputError(f"--conf {args.conf}: a threshold given by hand must be within (0, 1)")
    if args.save_operating_point:
        if args.target_fa is None and args.target_sensitivity is None and args.reason is None:
            raise InputError("--save-operating-point stores the point --target-fa or --target-sensitivity chooses: "
                             "add one of them (or --conf T --reason TEXT for a threshold given by hand)")
        check_output_file(args.save_operating_point, "--save-operating-point", inputs=args.paths, force=True,
                          allowed_suffixes=(".pt",))
    if args.fps <= 0:
        raise InputError(f"--fps must be > 0, got {args.fps}")
    args.model = args.paths[0]
    report: dict = {}
    if len(args.paths) == 2:
        args.data = args.paths[1]
        report = _evaluate(args)
    if videos:
        report["video"] = _videos(args)
    if args.json:
        with open_output(Path(args.json)) as fh:
            json.dump({k: v for k, v in report.items() if k != "header"}, fh, indent=1)
            fh.write("\n")
        print(f"report written to {args.json}")
    return 0


def _evaluate(args: argparse.Namespace) -> dict:
    """MODEL DATA: the table, the operating curve with negatives; the report."""
    from endoedge.evaluation import evaluate_run
    from endoedge.evaluation.operating import (
        choose_for_sensitivity,
        choose_threshold,
        curve_from_run,
        format_curve,
        given_threshold,
        save_operating_point,
    )
    from endoedge.evaluation.report import format_table, plot_curves

    names = [n.strip() for n in args.names.split(",") if n.strip()] if args.names else None
    run = evaluate_run(
        args.model, args.data, split=args.split, fmt=args.format, images_dir=args.images,
        class_names=names, backend=args.backend, device=args.device, conf=args.conf, iou=args.iou,
        negatives=args.negatives, proxy_negatives=args.proxy_negatives, unclear=args.unclear,
        endoscopy=endoscopy_option(args.endoscopy), spec=foreign_spec(args),
    )
    report = run.report
    split = f" ({Path(args.split).name})" if args.split else ""
    report["header"] = f"endoedge eval: {args.model} [{report['backend']}] on {args.data}{split}"
    print(format_table(report))
    curve = curve_from_run(run)
    if curve.negative.size or args.target_sensitivity is not None or args.reason is not None:
        where = (f"{args.negatives or args.data}: {curve.negative.size} polyp-free frames; {args.data}{split}: "
                 f"{curve.hit.size} polyp frames")
        chosen = (choose_threshold(curve, args.target_fa, chosen_on=where) if args.target_fa is not None else
                  choose_for_sensitivity(curve, args.target_sensitivity, chosen_on=where)
                  if args.target_sensitivity is not None else
                  given_threshold(curve, args.conf, args.reason, chosen_on=where) if args.reason is not None else None)
        print(format_curve(curve, report["conf"], chosen))
        report["operating_curve"] = curve.table([report["conf"]] + ([chosen.score_threshold] if chosen else []))
        if chosen is not None:
            report["operating_point"] = chosen.to_dict()
            sens = "n/a" if chosen.sensitivity is None else f"{100 * chosen.sensitivity:.1f}%"
            fa = chosen.evidence() or "no polyp-free frames given (--negatives)"
            print(f"operating point ({chosen.describe()}): score >= {chosen.score_threshold:g} shows a box on "
                  f"{fa}; sensitivity {sens}")
            if args.save_operating_point:
                out = save_operating_point(args.model, chosen, args.save_operating_point)
                print(f"checkpoint with this operating point written to {out}")
    if args.plot:
        print(f"curves written to {plot_curves(report, args.plot)}")
    for item in report["skipped"]:
        logger.warning("skipped %s: %s", item["path"], item["error"])
    return report


def _videos(args: argparse.Namespace) -> dict:
    """The video metrics of --video-negatives / --video-polyps, printed; their report."""
    from endoedge.detector import load
    from endoedge.evaluation.video import format_video
    from endoedge.evaluation.video_runner import evaluate_sequences, raw_boxes, stabilized_boxes
    from endoedge.spec.stabilize import StabilizeConfig

    with load(args.model, backend=args.backend, device=args.device, iou_threshold=args.iou,
              endoscopy=endoscopy_option(args.endoscopy), spec=foreign_spec(args)) as base:
        det = base.with_thresholds(score_threshold=args.conf) if args.conf is not None else base
        stored = det.spec.stabilize
        config = StabilizeConfig.from_dict(stored) if stored else StabilizeConfig()
        outputs = {"raw": raw_boxes, "stabilized": stabilized_boxes(config)}
        result = evaluate_sequences(det, args.video_negatives, args.video_polyps, fps=args.fps, outputs=outputs)
        result["stabilize"] = config.to_dict()
        threshold = det.spec.score_threshold
    from endoedge.evaluation.video import VideoMetrics

    n = len(result["sequences"])
    print(f"Video metrics at score >= {threshold:g} ({n} sequences, {args.fps:g} fps):")
    for name, m in result["metrics"].items():
        print(format_video(name, VideoMetrics(**m)))
    result["score_threshold"] = threshold
    return result


def _compare(args: argparse.Namespace) -> int:
    """``--compare REF CANDIDATE [DATA] [--agree FRAMES]``: print the gates; exit 1 when one fails."""
    from dataclasses import replace

    from endoedge.calibration.agreement import (
        AgreementGate,
        agreement_frames,
        format_agreement_result,
    )
    from endoedge.calibration.compare import compare_models, format_compare
    from endoedge.cli._gate import gate_limits, report_failure
    from endoedge.evaluation import EvalSet

    limits = gate_limits(args)
    ref, cand = args.paths[:2]
    data = args.paths[2] if len(args.paths) == 3 else None
    args.model = ref  # foreign_spec reads a foreign ONNX's input size from it
    spec, endoscopy = foreign_spec(args), endoscopy_option(args.endoscopy)
    agree = None
    if args.agree:  # the frames are found before any work
        items = agreement_frames(args.agree, num_images=args.agree_images)
        agree = AgreementGate(ref, items, source=args.agree, conf=args.conf, min_agreement=limits.min_agreement,
                              max_score_shift=limits.max_score_shift,
                              backend=args.backend, device=args.device, spec=spec, endoscopy=endoscopy)
    names = [n.strip() for n in args.names.split(",") if n.strip()] if args.names else None
    result = None
    if data is not None:
        result = compare_models(
            ref, cand, EvalSet(data, split=args.split, fmt=args.format, images_dir=args.images, class_names=names),
            backend=args.backend, device=args.device, limits=limits, conf=args.conf, iou=args.iou,
            negatives=args.negatives, endoscopy=endoscopy, spec=spec,
        )
        print(format_compare(result))
    agreement = agree.check(cand) if agree is not None else None
    if agreement is not None:
        print(format_agreement_result(agreement))
    if result is not None:
        result = replace(result, agreement=agreement)
    report = result.to_dict() if result is not None else agreement.to_dict() if agreement is not None else {}
    if args.json:
        with open_output(Path(args.json)) as fh:
            json.dump(report, fh, indent=1, default=str)
            fh.write("\n")
        print(f"report written to {args.json}")
    failures = result.failures if result is not None else agreement.failures if agreement is not None else []
    if failures:
        return report_failure("eval", failures, f" ({cand} against {ref})")
    return 0
