"""The gate options ``endoedge quantize`` and ``endoedge eval --compare`` share, and their checks."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from endoedge.calibration.operating_point import GateLimits


def add_gate_options(group: argparse._ArgumentGroup) -> None:
    """``--agree``, ``--agree-images``, ``--min-agreement``, ``--max-sensitivity-drop``,
    ``--max-false-alarm-rise``, ``--max-score-shift`` and ``--max-drop`` (``--conf`` and ``--negatives`` are the
    subcommand's own)."""
    from endoedge.calibration.agreement import DEFAULT_AGREE_IMAGES
    from endoedge.calibration.compare import DEFAULT_MAX_DROP
    from endoedge.calibration.operating_point import (
        DEFAULT_MAX_FALSE_ALARM_RISE,
        DEFAULT_MAX_SCORE_SHIFT,
        DEFAULT_MAX_SENSITIVITY_DROP,
        DEFAULT_MIN_AGREEMENT,
    )

    group.add_argument("--agree", metavar="FRAMES",
                       help="label-free gate: unlabelled frames (folder, searched recursively; glob; video or "
                       "folder of videos) on which the copy must keep --min-agreement of FP32's boxes")
    group.add_argument("--agree-images", type=int, default=DEFAULT_AGREE_IMAGES, metavar="N",
                       help=f"frames of --agree used, spread over it: a video gives every k-th frame "
                       f"(default {DEFAULT_AGREE_IMAGES})")
    group.add_argument("--min-agreement", type=float, default=DEFAULT_MIN_AGREEMENT, metavar="SHARE",
                       help="smallest share of the reference's boxes (score >= its threshold) the copy must keep "
                       f"(same class, IoU >= 0.5; default {DEFAULT_MIN_AGREEMENT:g}); at most 1 - SHARE of the "
                       "copy's boxes may be new (extra boxes = new false alarms)")
    group.add_argument("--max-sensitivity-drop", type=float, default=DEFAULT_MAX_SENSITIVITY_DROP, metavar="POINTS",
                       help="largest frame-sensitivity drop at the threshold, in points "
                       f"(default {DEFAULT_MAX_SENSITIVITY_DROP:g})")
    group.add_argument("--max-false-alarm-rise", type=float, default=DEFAULT_MAX_FALSE_ALARM_RISE, metavar="POINTS",
                       help="largest rise of the share of polyp-free frames (--negatives) with a box, in points "
                       f"(default {DEFAULT_MAX_FALSE_ALARM_RISE:g})")
    group.add_argument("--max-score-shift", type=float, default=DEFAULT_MAX_SCORE_SHIFT, metavar="SCORE",
                       help="largest mean upward shift of the reference's box scores, label-free (default "
                       f"{DEFAULT_MAX_SCORE_SHIFT:g}; judged when >= 20 boxes match): scores moved up turn "
                       "candidates under the threshold into false alarms on polyp-free video")
    group.add_argument("--max-drop", type=float, default=DEFAULT_MAX_DROP, metavar="POINTS",
                       help=f"largest allowed COCO mAP@0.5 drop in points (default {DEFAULT_MAX_DROP:g}); with labels, "
                       "also the largest mask Dice and triage accuracy drop of a multi-task model")


def gate_limits(args: argparse.Namespace) -> GateLimits:
    """The limits of ``args``, checked with ``--conf`` and ``--agree-images`` before any work.

    Raises:
        InputError: a limit, the threshold or the frame count is out of range.
    """
    from endoedge.calibration.operating_point import GateLimits, check_threshold
    from endoedge.errors import InputError

    limits = GateLimits(args.min_agreement, args.max_sensitivity_drop, args.max_false_alarm_rise, args.max_drop,
                        args.max_score_shift)
    limits.check()
    check_threshold(args.conf)
    if args.agree_images < 1:
        raise InputError(f"--agree-images must be at least 1, got {args.agree_images}")
    return limits


def report_failure(command: str, failures: list[str], note: str = "") -> int:
    """Print the one-line failure to stderr; returns the exit status 1."""
    print(f"endoedge {command}: gate FAILED: {'; '.join(failures)}{note}", file=sys.stderr)
    return 1
