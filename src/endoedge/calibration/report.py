"""Typed results of the accuracy gate and of ``endoedge quantize``, and their JSON form.

:class:`CompareResult` (with :class:`GateResult` and :class:`RawHeadErrors`) is what
:func:`~endoedge.calibration.compare.compare_models` returns and ``endoedge eval --compare
--json`` writes; :class:`QuantReport` is what :func:`~endoedge.calibration.gate.quantize_gated`
returns and ``endoedge quantize --json`` writes. ``to_dict()`` gives exactly the JSON layout
(keys, order, values) of those files. The operating-point gate added :class:`Criterion`,
:class:`OperatingMetrics`, :class:`OperatingPoint` and :class:`AgreementResult`; their keys are
appended after the older ones, which keep their names, order and meaning (``passed`` is the
verdict of every criterion).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from endoedge.calibration.sensitivity import FallbackResult, LayerRanking
from endoedge.evaluation.agreement import Agreement

if TYPE_CHECKING:
    from endoedge.evaluation.runner import EvalRun

REPORT_TOP_LAYERS = 50  # ranked layers kept in the quantize report


@dataclass(frozen=True)
class GateMetrics:
    """The numbers the gate compares, from one :func:`~endoedge.evaluation.evaluate_model` report.

    As measured: fractions in [0, 1]; in :attr:`GateResult.delta_points`: candidate minus
    reference in points (x100). ``None`` = not defined (e.g. precision without detections).

    Attributes:
        map50: COCO mAP@0.5.
        map50_95: COCO mAP@0.5:0.95.
        recall50: recall at IoU 0.5 (all classes) at the operating threshold.
        precision50: precision at IoU 0.5 (all classes) at the operating threshold.
        sensitivity: frame-level sensitivity.
    """

    map50: float | None
    map50_95: float | None
    recall50: float | None
    precision50: float | None
    sensitivity: float | None

    def to_dict(self) -> dict[str, float | None]:
        """JSON-ready ``{"map50", "map50_95", "recall50", "precision50", "sensitivity"}``."""
        return asdict(self)


# name -> (label, unit, whether the value is a minimum or a maximum, value format); a unit-less
# value is a share or a score difference (counts 100 points in a shortfall)
_CRITERIA = {
    "box_agreement": ("box agreement", "", "min", ".3f"),
    "added_boxes": ("boxes the copy adds", "", "max", ".3f"),
    "score_shift": ("mean score shift", "", "max", "+.3f"),
    "sensitivity_drop": ("frame sensitivity drop", " points", "max", "+.2f"),
    "false_alarm_rise": ("false-alarm rise", " points", "max", "+.2f"),
    "map50_drop": ("mAP@0.5 drop", " points", "max", "+.2f"),
    "mask_dice": ("mask Dice vs the reference", "", "min", ".3f"),
    "frame_label_agreement": ("frame-label agreement", "", "min", ".3f"),
    "mask_dice_drop": ("mask Dice drop", " points", "max", "+.2f"),
    "triage_accuracy_drop": ("triage accuracy drop", " points", "max", "+.2f"),
}


@dataclass(frozen=True)
class Criterion:
    """One check of the gate.

    Attributes:
        name: ``box_agreement`` (share of the reference's boxes kept, at least ``limit``),
            ``sensitivity_drop`` (frame sensitivity, reference minus candidate, points),
            ``false_alarm_rise`` (false-alarm share on polyp-free frames, candidate minus
            reference, points) or ``map50_drop`` (COCO mAP@0.5, reference minus candidate,
            points); the last three at most ``limit``. ``added_boxes`` (share of the candidate's
            boxes that match no reference box: new false alarms, at most ``1 - min_agreement``)
            is the box agreement read the other way. ``score_shift`` (the mean candidate-minus-reference
            score of the reference's boxes, label-free; at most ``limit``: a copy whose scores move up
            lifts candidates under the threshold into false alarms on polyp-free frames, which
            polyp frames cannot show). Multi-task models add ``mask_dice_drop``
            (mean mask Dice against the ground truth) and ``triage_accuracy_drop`` (frame-triage
            accuracy), reference minus candidate in points, at most ``limit``.
        value: the measured value (``None`` = could not be measured: fails).
        limit: the bound.
        passed: ``value`` is within ``limit``.
    """

    name: str
    value: float | None
    limit: float
    passed: bool

    @classmethod
    def judge(cls, name: str, value: float | None, limit: float) -> Criterion:
        """The criterion ``name`` (see the class doc) for ``value``; ``None`` fails."""
        minimum = _CRITERIA[name][2] == "min"
        ok = value is not None and (value >= limit - 1e-9 if minimum else value <= limit + 1e-9)
        return cls(name, None if value is None else round(value, 6), limit, bool(ok))

    @property
    def shortfall(self) -> float:
        """How far the value is outside its limit, in points (a share counts 100 points): 0 when
        passed, ``inf`` when not measured. Summed over a gate's criteria it orders failing
        candidates (:func:`shortfall`)."""
        if self.value is None:
            return float("inf")
        if self.passed:
            return 0.0
        minimum, scale = _CRITERIA[self.name][2] == "min", 1.0 if _CRITERIA[self.name][1] else 100.0
        return scale * max(0.0, (self.limit - self.value) if minimum else (self.value - self.limit))

    def describe(self) -> str:
        """E.g. ``box agreement 0.712 (min 0.95)`` or ``mAP@0.5 drop +0.16 points (max 1)``."""
        label, unit, kind, fmt = _CRITERIA[self.name]
        value = "n/a" if self.value is None else format(self.value, fmt)
        return f"{label} {value}{unit} ({kind} {self.limit:g})"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready ``{"name", "value", "limit", "passed"}``."""
        return asdict(self)


def added_boxes_criterion(agree: Agreement, min_agreement: float) -> Criterion:
    """``added_boxes``: the share of the candidate's boxes at the operating point that match no
    reference box, at most ``1 - min_agreement`` (the box agreement read the other way: a copy
    that keeps every box but adds new ones raises false alarms the box agreement cannot see)."""
    return Criterion.judge("added_boxes", agree.added_share, round(1.0 - min_agreement, 6))


MIN_SHIFT_PAIRS = 20  # fewer matched boxes: the mean shift is too noisy to judge (criterion not applied)


def score_shift_criterion(agree: Agreement, max_shift: float) -> Criterion | None:
    """``score_shift``: the mean candidate-minus-reference score of the reference's boxes at the
    operating point (:attr:`Agreement.mean_score_shift`), at most ``max_shift``; ``None`` (not
    applied) with fewer than :data:`MIN_SHIFT_PAIRS` matched boxes. Only an upward shift is
    bounded: a downward one loses boxes, which the box agreement already bounds."""
    if agree.mean_score_shift is None or agree.shift_pairs < MIN_SHIFT_PAIRS:
        return None
    return Criterion.judge("score_shift", agree.mean_score_shift, max_shift)


def shortfall(criteria: Iterable[Criterion]) -> float:
    """The sum of the criteria's :attr:`Criterion.shortfall` (0 = all passed; points)."""
    return float(sum(c.shortfall for c in criteria))


def verdict(criteria: tuple[Criterion, ...] | list[Criterion]) -> str:
    """One line: ``PASS: <every criterion>`` or ``FAIL: <the failed ones>``."""
    failed = [c for c in criteria if not c.passed]
    if not criteria:
        return "PASS: nothing to check"
    return ("FAIL: " + "; ".join(c.describe() for c in failed) if failed
            else "PASS: " + ", ".join(c.describe() for c in criteria))


@dataclass(frozen=True)
class GateResult:
    """The gate: candidate against reference (mAP@0.5 plus the operating-point criteria).

    Attributes:
        reference, candidate: the two models' :class:`GateMetrics`.
        delta_points: candidate minus reference, in points (1 point = 0.01), rounded to 0.001.
        metric: the mAP metric ``drop_points`` measures (``"map50"``).
        max_drop_points: the largest allowed mAP@0.5 drop, in points.
        drop_points: reference minus candidate mAP@0.5 in points (negative = candidate better).
        passed: every criterion passed (without ``criteria``: ``drop_points <= max_drop_points``).
        criteria: the checks, in order (box agreement, sensitivity, false alarms, mAP@0.5).
    """

    reference: GateMetrics
    candidate: GateMetrics
    delta_points: GateMetrics
    metric: str
    max_drop_points: float
    drop_points: float
    passed: bool
    criteria: tuple[Criterion, ...] = ()

    @property
    def reason(self) -> str:
        """The one-line verdict (:func:`verdict` of the criteria)."""
        if not self.criteria:
            return verdict([Criterion.judge("map50_drop", self.drop_points, self.max_drop_points)])
        return verdict(self.criteria)

    @property
    def box_agreement(self) -> float | None:
        """The measured box agreement (``None`` when not a criterion)."""
        return next((c.value for c in self.criteria if c.name == "box_agreement"), None)

    @property
    def failures(self) -> list[str]:
        """The failed criteria, described (empty when the gate passed)."""
        return [c.describe() for c in self._judged if not c.passed]

    @property
    def shortfall(self) -> float:
        """How far the candidate is from passing, in points (:func:`shortfall`; 0 = passed)."""
        return shortfall(self._judged)

    @property
    def _judged(self) -> tuple[Criterion, ...]:
        return self.criteria or (Criterion.judge("map50_drop", self.drop_points, self.max_drop_points),)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready, keys in the report's order (``criteria`` and ``reason`` last)."""
        out: dict[str, object] = {
            "reference": self.reference.to_dict(), "candidate": self.candidate.to_dict(),
            "delta_points": self.delta_points.to_dict(), "metric": self.metric,
            "max_drop_points": self.max_drop_points, "drop_points": self.drop_points, "passed": self.passed}
        if self.criteria:
            out["criteria"] = [c.to_dict() for c in self.criteria]
            out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class OperatingMetrics:
    """One model's frame- and box-level result at the operating threshold (fractions in [0, 1];
    in :attr:`OperatingPoint.delta_points` candidate minus reference in points).

    Attributes:
        sensitivity: share of frames with ground truth that raise an alarm (a box >= threshold).
        precision, recall: box precision and recall at IoU 0.5 (all classes).
        false_alarm: share of polyp-free frames (``--negatives`` and box-free dataset images)
            that raise an alarm (``None`` without such frames).
    """

    sensitivity: float | None
    precision: float | None
    recall: float | None
    false_alarm: float | None

    def to_dict(self) -> dict[str, float | None]:
        """JSON-ready ``{"sensitivity", "precision", "recall", "false_alarm"}``."""
        return asdict(self)


@dataclass(frozen=True)
class OperatingPoint:
    """A candidate against its reference at the reference's operating score threshold.

    Attributes:
        threshold: the operating score threshold.
        n_images: dataset images (the box agreement is measured on them).
        n_negative_images: polyp-free frames counted by ``false_alarm``.
        reference, candidate: :class:`OperatingMetrics`.
        delta_points: candidate minus reference, in points, rounded to 0.001.
        agreement: :class:`~endoedge.evaluation.agreement.Agreement` of the candidate's boxes
            with the reference's on the dataset images.
    """

    threshold: float
    n_images: int
    n_negative_images: int
    reference: OperatingMetrics
    candidate: OperatingMetrics
    delta_points: OperatingMetrics
    agreement: Agreement

    def to_dict(self) -> dict[str, object]:
        """JSON-ready, the attributes in order."""
        return {"threshold": self.threshold, "n_images": self.n_images,
                "n_negative_images": self.n_negative_images, "reference": self.reference.to_dict(),
                "candidate": self.candidate.to_dict(), "delta_points": self.delta_points.to_dict(),
                "agreement": self.agreement.to_dict()}


@dataclass(frozen=True)
class AgreementResult:
    """The label-free agreement gate: a candidate against its reference (FP32) on frames.

    Attributes:
        reference_model, candidate_model: the two model paths.
        source: the frames as given (``--agree``, or the calibration source they were held out of).
        held_out: the frames were held out of the calibration images.
        frames: the frames compared (``path`` or ``path#frame``).
        skipped: frames that could not be read (``path: reason``).
        agreement: :class:`~endoedge.evaluation.agreement.Agreement` at the operating threshold.
        criterion: the ``box_agreement`` :class:`Criterion`.
        added: the ``added_boxes`` :class:`Criterion` (the candidate's boxes FP32 does not have).
        shift: the ``score_shift`` :class:`Criterion` (``None``: too few matched boxes to judge).
        extra: multi-task models: the ``mask_dice`` (mean Dice of the candidate's mask against the
            reference's, both at 0.5) and ``frame_label_agreement`` (share of frames with the
            reference's frame label) criteria; empty for box-only models.
    """

    reference_model: str
    candidate_model: str
    source: str
    held_out: bool
    frames: list[str]
    skipped: list[str]
    agreement: Agreement
    criterion: Criterion
    extra: list[Criterion] = field(default_factory=list)
    added: Criterion | None = None
    shift: Criterion | None = None

    @property
    def criteria(self) -> list[Criterion]:
        """Every criterion: box agreement, added boxes, score shift, then the multi-task ones."""
        return [self.criterion, *(c for c in (self.added, self.shift) if c is not None), *self.extra]

    @property
    def passed(self) -> bool:
        """The box agreement, the added boxes (and, for multi-task models, mask and frame label) held."""
        return all(c.passed for c in self.criteria)

    @property
    def reason(self) -> str:
        """The one-line verdict."""
        return verdict(self.criteria)

    @property
    def failures(self) -> list[str]:
        """The failed criteria, described (empty when the gate passed)."""
        return [c.describe() for c in self.criteria if not c.passed]

    @property
    def shortfall(self) -> float:
        """How far the candidate is from passing, in points (:func:`shortfall`; 0 = passed)."""
        return shortfall(self.criteria)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready ``{"reference_model", ..., "agreement", "min_agreement", "passed", "reason"}``."""
        return {"reference_model": self.reference_model, "candidate_model": self.candidate_model,
                "source": self.source, "held_out": self.held_out, "n_frames": len(self.frames),
                "frames": list(self.frames), "skipped": list(self.skipped),
                "agreement": self.agreement.to_dict(), "min_agreement": self.criterion.limit,
                **({"added_boxes": self.added.to_dict()} if self.added is not None else {}),
                **({"score_shift": self.shift.to_dict()} if self.shift is not None else {}),
                "passed": self.passed, "reason": self.reason,
                **({"multitask": [c.to_dict() for c in self.extra]} if self.extra else {})}


@dataclass(frozen=True)
class HeadError:
    """Error of a candidate's raw output tensor against the reference's, over all inputs.

    Attributes:
        max_abs_err, mean_abs_err, rmse: in the output's own units.
        nmse: mean squared error / variance of the reference values (0 = identical, 1 = as bad
            as a constant; ``inf`` when the reference is constant).
        cosine: cosine similarity of the flattened tensors (1 = same direction).
    """

    max_abs_err: float
    mean_abs_err: float
    rmse: float
    nmse: float
    cosine: float

    def to_dict(self) -> dict[str, float]:
        """JSON-ready ``{"max_abs_err", "mean_abs_err", "rmse", "nmse", "cosine"}``."""
        return asdict(self)


@dataclass(frozen=True)
class RawHeadErrors:
    """Raw-head errors of two ONNX models on the same pre-processed images, or why they were skipped.

    Attributes:
        outputs: :class:`HeadError` per output name (empty when skipped).
        n_images: images measured on (``None`` when skipped).
        skipped: the reason they were not measured (``None`` when measured).
    """

    outputs: dict[str, HeadError] = field(default_factory=dict)
    n_images: int | None = None
    skipped: str | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready ``{"n_images", "outputs": {name: {...}}}`` or ``{"skipped": reason}``."""
        if self.skipped is not None:
            return {"skipped": self.skipped}
        return {"n_images": self.n_images, "outputs": {k: v.to_dict() for k, v in self.outputs.items()}}


@dataclass(frozen=True)
class CompareResult:
    """A candidate model compared with its reference on a labelled set (``eval --compare``).

    Attributes:
        reference_model, candidate_model: the two model paths.
        data: the labelled dataset.
        split: the split file of stems evaluated (``None`` = all images).
        n_images: images evaluated.
        gate: the mAP@0.5 verdict and deltas.
        raw_heads: raw-output errors on the same pre-processed inputs.
        reference, candidate: the full :func:`~endoedge.evaluation.evaluate_model` reports.
        operating_point: the models at the reference's operating threshold (``None`` when
            built without one).
        agreement: the label-free agreement gate (``--agree``), when it ran too.
        reference_run: the reference's evaluation with its detections, to compare another
            candidate without evaluating the reference again (not in the JSON).
    """

    reference_model: str
    candidate_model: str
    data: str
    split: str | None
    n_images: int
    gate: GateResult
    raw_heads: RawHeadErrors
    reference: dict[str, Any]
    candidate: dict[str, Any]
    operating_point: OperatingPoint | None = None
    agreement: AgreementResult | None = None
    reference_run: EvalRun | None = field(default=None, repr=False, compare=False)

    @property
    def passed(self) -> bool:
        """The gate's verdict (and the agreement gate's, when it ran)."""
        return self.gate.passed and (self.agreement is None or self.agreement.passed)

    @property
    def failures(self) -> list[str]:
        """Every failed criterion, described (empty when it passed)."""
        return self.gate.failures + ([] if self.agreement is None else self.agreement.failures)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the evaluation reports as they are: dump with ``default=str``); the
        operating point, the agreement gate and the overall ``passed`` follow the older keys."""
        out = {"reference_model": self.reference_model, "candidate_model": self.candidate_model,
               "data": self.data, "split": self.split, "n_images": self.n_images,
               "gate": self.gate.to_dict(), "raw_heads": self.raw_heads.to_dict(),
               "reference": self.reference, "candidate": self.candidate}
        if self.operating_point is not None:
            out["operating_point"] = self.operating_point.to_dict()
        if self.agreement is not None:
            out["agreement"] = self.agreement.to_dict()
        out["passed"] = self.passed
        return out


@dataclass
class QuantReport:
    """What :func:`~endoedge.calibration.gate.quantize_gated` did; ``None`` = that step did not run.

    Attributes:
        model: the FP32 input ONNX.
        output: the written ONNX (kept even when the gate fails).
        precision: ``"int8"`` or ``"fp16"``.
        calibration: :meth:`~endoedge.calibration.CalibrationData.describe` of the
            calibration set (INT8).
        method: calibration method (INT8).
        qdq: one-line summary of TensorRT's Q/DQ rules on the final file (INT8).
        qdq_violations: rule violations of the first quantization (INT8; empty, or it raised).
        metadata: the ``endoedge.*`` metadata the first quantization added (INT8).
        gate: the final accuracy gate (with an evaluation set).
        raw_heads: the final raw-head errors (with an evaluation set).
        sensitivity: the per-layer ranking (INT8 that failed the gate).
        fallback: the float-fallback steps (INT8 that failed the gate).
        wall_s: seconds the whole workflow took, rounded to 0.1.
        operating_point: the final comparison at the operating threshold (with an evaluation set).
        agreement: the final label-free agreement gate (``--agree`` or held-out frames).
        confirmation: after a float fallback that passed the agreement gate, the same gate on
            frames neither calibration nor the fallback saw (the verdict that counts then).
    """

    model: str
    output: str
    precision: str
    calibration: dict[str, Any] | None = None
    method: str | None = None
    qdq: str | None = None
    qdq_violations: list[str] | None = None
    metadata: dict[str, str] | None = None
    gate: GateResult | None = None
    raw_heads: RawHeadErrors | None = None
    sensitivity: LayerRanking | None = None
    fallback: FallbackResult | None = None
    wall_s: float = 0.0
    operating_point: OperatingPoint | None = None
    agreement: AgreementResult | None = None
    confirmation: AgreementResult | None = None

    @property
    def passed(self) -> bool | None:
        """Every gate that ran passed; ``None`` when accuracy was not checked."""
        verdicts = [g.passed for g in (self.gate, self.agreement, self.confirmation) if g is not None]
        return all(verdicts) if verdicts else None

    @property
    def failures(self) -> list[str]:
        """Every failed criterion of the final gates, described."""
        return ((self.gate.failures if self.gate is not None else [])
                + (self.agreement.failures if self.agreement is not None else [])
                + ([f"on frames the fallback did not see: {f}" for f in self.confirmation.failures]
                   if self.confirmation is not None else []))

    @property
    def float_nodes(self) -> list[str]:
        """Nodes kept in floating point by the fallback (empty without one)."""
        return [] if self.fallback is None else list(self.fallback.float_nodes)

    @property
    def calibration_sha256(self) -> str | None:
        """sha256 of the calibration tensors (INT8)."""
        return None if self.calibration is None else str(self.calibration["sha256"])

    @property
    def calibration_images(self) -> int | None:
        """Number of calibration images (INT8)."""
        return None if self.calibration is None else int(self.calibration["num_images"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, keys in the report's order; steps that did not run are left out;
        ``passed`` (the overall verdict) last when a gate ran."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, LayerRanking):
                value = value.to_dict(REPORT_TOP_LAYERS)
            elif isinstance(value, GateResult | RawHeadErrors | FallbackResult | OperatingPoint | AgreementResult):
                value = value.to_dict()
            out[f.name] = value
        if self.passed is not None:
            out["passed"] = self.passed
        return out
