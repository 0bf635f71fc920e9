"""Typed results of the accuracy gate and of ``endoedge quantize``, and their JSON form.

:class:`CompareResult` (with :class:`GateResult` and :class:`RawHeadErrors`) is what
:func:`~endoedge.calibration.compare.compare_models` returns and ``endoedge eval --compare
--json`` writes; :class:`QuantReport` is what :func:`~endoedge.calibration.gate.quantize_gated`
returns and ``endoedge quantize --json`` writes. ``to_dict()`` gives exactly the JSON layout
(keys, order, values) of those files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from endoedge.calibration.sensitivity import FallbackResult, LayerRanking

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


@dataclass(frozen=True)
class GateResult:
    """The mAP@0.5 gate: candidate against reference.

    Attributes:
        reference, candidate: the two models' :class:`GateMetrics`.
        delta_points: candidate minus reference, in points (1 point = 0.01), rounded to 0.001.
        metric: the gated metric (``"map50"``).
        max_drop_points: the largest allowed drop, in points.
        drop_points: reference minus candidate mAP@0.5 in points (negative = candidate better).
        passed: ``drop_points <= max_drop_points``.
    """

    reference: GateMetrics
    candidate: GateMetrics
    delta_points: GateMetrics
    metric: str
    max_drop_points: float
    drop_points: float
    passed: bool

    def to_dict(self) -> dict[str, object]:
        """JSON-ready, keys in the report's order."""
        return {"reference": self.reference.to_dict(), "candidate": self.candidate.to_dict(),
                "delta_points": self.delta_points.to_dict(), "metric": self.metric,
                "max_drop_points": self.max_drop_points, "drop_points": self.drop_points,
                "passed": self.passed}


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

    @property
    def passed(self) -> bool:
        """The gate's verdict."""
        return self.gate.passed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the evaluation reports as they are: dump with ``default=str``)."""
        return {"reference_model": self.reference_model, "candidate_model": self.candidate_model,
                "data": self.data, "split": self.split, "n_images": self.n_images,
                "gate": self.gate.to_dict(), "raw_heads": self.raw_heads.to_dict(),
                "reference": self.reference, "candidate": self.candidate}


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

    @property
    def passed(self) -> bool | None:
        """The final gate's verdict; ``None`` when accuracy was not checked."""
        return None if self.gate is None else self.gate.passed

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
        """JSON-ready, keys in the report's order; steps that did not run are left out."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, LayerRanking):
                value = value.to_dict(REPORT_TOP_LAYERS)
            elif isinstance(value, GateResult | RawHeadErrors | FallbackResult):
                value = value.to_dict()
            out[f.name] = value
        return out
