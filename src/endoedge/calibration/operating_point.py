"""The gate at the operating point: limits, the labelled-set comparison, its criteria and text.

A cart shows boxes at one score threshold, so a quantized copy is judged there: against the
reference (FP32) at the reference's threshold, it must keep at least ``min_agreement`` of the
reference's boxes (:mod:`endoedge.evaluation.agreement`), lose at most
``max_sensitivity_drop`` points of frame sensitivity, raise at most ``max_false_alarm_rise``
points more false alarms on polyp-free frames (when there are any), and lose at most
``max_drop`` points of COCO mAP@0.5 (the threshold-free secondary check).

Example::

    from endoedge.calibration.operating_point import GateLimits

    limits = GateLimits(min_agreement=0.97)
    limits.check()  # InputError with the CLI flag's name when a limit is out of range
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from endoedge.calibration.report import (
    Criterion,
    GateResult,
    OperatingMetrics,
    OperatingPoint,
    added_boxes_criterion,
    score_shift_criterion,
)
from endoedge.errors import InputError

if TYPE_CHECKING:
    from endoedge.evaluation.agreement import Agreement
    from endoedge.evaluation.runner import EvalRun

DEFAULT_MAX_DROP = 1.0  # COCO mAP@0.5 points
DEFAULT_MIN_AGREEMENT = 0.95  # share of the reference's boxes kept
DEFAULT_MAX_SENSITIVITY_DROP = 1.0  # frame sensitivity points
DEFAULT_MAX_FALSE_ALARM_RISE = 0.5  # false-alarm share points on polyp-free frames
# largest mean upward score shift of the reference's boxes (score units); chosen on 50 copies in
# benchmarks/RESULTS.md: every copy above +0.01 raised false alarms on another centre by >= 3.6 points
DEFAULT_MAX_SCORE_SHIFT = 0.01


@dataclass(frozen=True)
class GateLimits:
    """The gate's bounds (the ``endoedge quantize`` / ``eval --compare`` options).

    Attributes:
        min_agreement: smallest share (0..1) of the reference's boxes the candidate must keep.
        max_sensitivity_drop: largest frame-sensitivity drop, in points (1 point = 0.01).
        max_false_alarm_rise: largest false-alarm share rise on polyp-free frames, in points.
        max_drop: largest COCO mAP@0.5 drop, in points.
        max_score_shift: largest mean upward shift of the reference's boxes' scores (score
            units, label-free; applied when at least 20 boxes are matched).
    """

    min_agreement: float = DEFAULT_MIN_AGREEMENT
    max_sensitivity_drop: float = DEFAULT_MAX_SENSITIVITY_DROP
    max_false_alarm_rise: float = DEFAULT_MAX_FALSE_ALARM_RISE
    max_drop: float = DEFAULT_MAX_DROP
    max_score_shift: float = DEFAULT_MAX_SCORE_SHIFT

    def check(self) -> None:
        """Refuse limits out of range (NaN included), naming the CLI flag.

        Raises:
            InputError: a limit out of range.
        """
        if not 0.0 <= self.min_agreement <= 1.0:
            raise InputError(f"--min-agreement must be a share in [0, 1], got {self.min_agreement}")
        for flag, value in (("--max-sensitivity-drop", self.max_sensitivity_drop),
                            ("--max-false-alarm-rise", self.max_false_alarm_rise), ("--max-drop", self.max_drop)):
            if not (value >= 0) or math.isinf(value):
                raise InputError(f"{flag} must be a number of points >= 0, got {value}")
        if not 0.0 <= self.max_score_shift <= 1.0:
            raise InputError(f"--max-score-shift must be a score difference in [0, 1], got {self.max_score_shift}")


def check_threshold(conf: float | None) -> None:
    """Refuse an operating threshold outside [0.001, 1] (the detection pass runs at 0.001)
    before any work.

    Raises:
        InputError: ``conf`` is out of range.
    """
    from endoedge.evaluation import MAP_CONF

    if conf is not None and not MAP_CONF <= conf <= 1.0:
        raise InputError(f"--conf must be a score threshold in [0, 1], at least the detection pass's "
                         f"{MAP_CONF:g}; got {conf}")


def operating_metrics(report: Mapping[str, Any]) -> OperatingMetrics:
    """One model's :class:`OperatingMetrics` from its evaluation report (at the report's ``conf``)."""
    prf = report["prf"].get("0.50", {}).get("all", {})
    spec = report["frame"]["specificity"]
    return OperatingMetrics(sensitivity=report["frame"]["sensitivity"], precision=prf.get("precision"),
                            recall=prf.get("recall"), false_alarm=None if spec is None else 1.0 - spec)


def operating_point(ref: EvalRun, cand: EvalRun, threshold: float) -> OperatingPoint:
    """Both models at ``threshold`` on the same evaluated images (matched by path)."""
    from endoedge.evaluation.agreement import agreement

    cand_by_path = dict(zip(cand.paths, cand.predictions, strict=True))
    pairs = [(p, cand_by_path[path]) for path, p in zip(ref.paths, ref.predictions, strict=True)
             if path in cand_by_path]
    agree = agreement([r for r, _ in pairs], [c for _, c in pairs], threshold)
    r, c = operating_metrics(ref.report), operating_metrics(cand.report)
    delta = {k: None if getattr(r, k) is None or getattr(c, k) is None
             else round(100 * (getattr(c, k) - getattr(r, k)), 3) for k in ("sensitivity", "precision", "recall",
                                                                            "false_alarm")}
    n_neg = int(ref.report["frame"]["n_negative"])
    return OperatingPoint(threshold=threshold, n_images=len(pairs), n_negative_images=n_neg, reference=r,
                          candidate=c, delta_points=OperatingMetrics(**delta), agreement=agree)


def judge(op: OperatingPoint, gate: GateResult, limits: GateLimits) -> GateResult:
    """``gate`` (the mAP@0.5 comparison) with every criterion applied; ``passed`` = all passed.

    The sensitivity criterion applies when both sensitivities are defined, the false-alarm
    criterion when there are polyp-free frames; the box agreement (``None`` fails) and the
    added boxes always, the score shift when enough boxes are matched.
    """
    from dataclasses import replace

    crit = [Criterion.judge("box_agreement", op.agreement.box_agreement, limits.min_agreement),
            added_boxes_criterion(op.agreement, limits.min_agreement)]
    shift = score_shift_criterion(op.agreement, limits.max_score_shift)
    if shift is not None:
        crit.append(shift)
    d = op.delta_points
    if d.sensitivity is not None:
        crit.append(Criterion.judge("sensitivity_drop", -d.sensitivity, limits.max_sensitivity_drop))
    if d.false_alarm is not None:
        crit.append(Criterion.judge("false_alarm_rise", d.false_alarm, limits.max_false_alarm_rise))
    crit.append(Criterion.judge("map50_drop", gate.drop_points, limits.max_drop))
    return replace(gate, criteria=tuple(crit), passed=all(x.passed for x in crit))


_ROWS = {"sensitivity": "frame sensitivity", "precision": "precision @IoU 0.5", "recall": "recall @IoU 0.5",
         "false_alarm": "false-alarm share"}


def format_operating_point(op: OperatingPoint) -> list[str]:
    """The primary block of the gate table: metrics at the threshold and the box agreement."""
    lines = [f"at the operating point (score >= {op.threshold:g}; the reference's threshold):",
             f"  {'metric':<22}{'reference':>10}{'candidate':>11}{'delta (points)':>16}"]
    for key, label in _ROWS.items():
        r, c, d = getattr(op.reference, key), getattr(op.candidate, key), getattr(op.delta_points, key)
        lines.append(f"  {label:<22}{_f(r):>10}{_f(c):>11}{'n/a' if d is None else f'{d:+.2f}':>16}")
    if op.n_negative_images == 0:
        lines.append("  (false-alarm share: no polyp-free frames; pass --negatives DIR)")
    else:
        lines.append(f"  (false-alarm share on {op.n_negative_images} polyp-free frames)")
    return lines + format_agreement(op.agreement)


def format_agreement(a: Agreement) -> list[str]:
    """Box agreement, extra boxes, frame agreement and score shift, one fact a line."""
    extra = "n/a" if a.extra_share is None else f"{100 * a.extra_share:.1f}%"
    return [
        f"  box agreement {_f(a.box_agreement)}: {a.kept} of {a.reference_boxes} reference boxes kept "
        f"(same class, IoU >= {a.iou_threshold:g}); candidate extra boxes {extra} ({a.extra} of {a.candidate_boxes})",
        f"  frame agreement {_f(a.frame_agreement)}: alarm in both {a.frames_both}, neither {a.frames_neither}, "
        f"reference only {a.frames_reference_only}, candidate only {a.frames_candidate_only} ({a.n_frames} frames)",
        "  mean score shift of matched boxes "
        + ("n/a" if a.mean_score_shift is None else f"{a.mean_score_shift:+.4f}") + f" ({a.shift_pairs} boxes)",
    ]


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
