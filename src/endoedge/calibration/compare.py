"""The accuracy gate: a candidate model (INT8, FP16, another backend) against its reference.

:func:`compare_models` evaluates both on the same labelled data with
:func:`~endoedge.evaluation.evaluate_run` (one detection pass each: pycocotools mAP, P/R and
frame sensitivity at the operating threshold, and the per-image detections), compares their
boxes at the reference's operating threshold
(:func:`~endoedge.calibration.operating_point.operating_point`) and runs both on the same
pre-processed inputs to measure the raw-head error
(:func:`~endoedge.calibration.raw_heads.raw_head_errors`). The gate passes when every
criterion of :class:`~endoedge.calibration.operating_point.GateLimits` holds: box agreement,
frame sensitivity, false alarms on polyp-free frames, and (secondary) mAP@0.5 at most
``max_drop`` points (1 point = 0.01) below the reference's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from endoedge.calibration.operating_point import (
    DEFAULT_MAX_DROP,
    GateLimits,
    format_operating_point,
    judge,
    operating_point,
)
from endoedge.calibration.report import CompareResult, GateMetrics, GateResult

if TYPE_CHECKING:
    from endoedge.evaluation import EvalSet
    from endoedge.evaluation.runner import EvalRun
    from endoedge.spec.endoscopy import EndoscopyConfig

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_DROP", "compare_models", "format_compare", "gate_result", "headline", "labelled_multitask_criteria"]


def headline(report: Mapping[str, Any]) -> GateMetrics:
    """The numbers the gate compares, from an :func:`~endoedge.evaluation.evaluate_model` report."""
    prf = report["prf"].get("0.50", {}).get("all", {})
    return GateMetrics(
        map50=report["coco"]["map50"],
        map50_95=report["coco"]["map50_95"],
        recall50=prf.get("recall"),
        precision50=prf.get("precision"),
        sensitivity=report["frame"]["sensitivity"],
    )


def gate_result(ref: Mapping[str, Any], cand: Mapping[str, Any], max_drop: float) -> GateResult:
    """Deltas in points (candidate - reference, x100) and the mAP@0.5 verdict of two
    :func:`~endoedge.evaluation.evaluate_model` reports."""
    r, c = headline(ref), headline(cand)
    delta: dict[str, float | None] = {}
    for f in fields(GateMetrics):
        rv, cv = getattr(r, f.name), getattr(c, f.name)
        delta[f.name] = None if rv is None or cv is None else round(100 * (cv - rv), 3)
    drop = -(delta["map50"] or 0.0)
    return GateResult(reference=r, candidate=c, delta_points=GateMetrics(**delta), metric="map50",
                      max_drop_points=max_drop, drop_points=round(drop, 3),
                      passed=bool(drop <= max_drop + 1e-9))


def _multitask_values(ref: Mapping[str, Any], cand: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """``{"mask_dice": (ref, cand), "triage_accuracy": (ref, cand)}`` for what both reports hold."""
    out: dict[str, tuple[float, float]] = {}
    for name, part, key in (("mask_dice", "mask", "dice"), ("triage_accuracy", "triage", "accuracy")):
        r, c = (ref.get(part) or {}).get(key), (cand.get(part) or {}).get(key)
        if r is not None and c is not None:
            out[name] = (float(r), float(c))
    return out


def labelled_multitask_criteria(gate: GateResult, ref: Mapping[str, Any], cand: Mapping[str, Any],
                       limits: GateLimits) -> GateResult:
    """``gate`` plus, for multi-task models, the drops of mean mask Dice and of frame-triage
    accuracy against the labels (reference minus candidate, points; each at most
    ``limits.max_drop``, the mAP@0.5 bound). Box-only reports leave ``gate`` unchanged."""
    from dataclasses import replace

    from endoedge.calibration.report import Criterion

    values = _multitask_values(ref, cand)
    if not values:
        return gate
    crit = [*gate.criteria, *(Criterion.judge(f"{name}_drop", round(100 * (r - c), 3), limits.max_drop)
                              for name, (r, c) in values.items())]
    return replace(gate, criteria=tuple(crit), passed=all(x.passed for x in crit))


def compare_models(
    reference: str | Path,
    candidate: str | Path,
    dataset: EvalSet,
    *,
    backend: str = "auto",
    device: str = "auto",
    max_drop: float = DEFAULT_MAX_DROP,
    limits: GateLimits | None = None,
    conf: float | None = None,
    negatives: str | Path | None = None,
    endoscopy: EndoscopyConfig | None = None,
    reference_run: EvalRun | None = None,
    **load_options: Any,
) -> CompareResult:
    """Evaluate ``reference`` and ``candidate`` on ``dataset`` and apply the gate.

    Args:
        max_drop: the mAP@0.5 limit in points when ``limits`` is not given.
        limits: every bound (default: :class:`~endoedge.calibration.operating_point.GateLimits`
            with ``max_drop``).
        conf: the operating score threshold of both models (default: the reference's).
        negatives: folder of polyp-free frames (false-alarm share).
        reference_run: a previous :func:`~endoedge.evaluation.evaluate_run` of ``reference``
            on the same data and options (skips evaluating it again).
        Other arguments as :func:`~endoedge.evaluation.evaluate_model` (``**load_options``
        go to it unchanged, e.g. ``iou``, ``spec``).

    Returns:
        the two full evaluation reports, the gate (:func:`gate_result` with every criterion),
        the operating point, and the raw-head errors on the dataset's images pre-processed with
        the reference's spec (and endoscopy cleaning).
    """
    from endoedge.calibration.raw_heads import raw_errors_on_dataset
    from endoedge.evaluation import evaluate_run

    limits = limits or GateLimits(max_drop=max_drop)
    opts = {**dataset.options(), "backend": backend, "device": device, "endoscopy": endoscopy,
            "negatives": negatives, **load_options}
    ref = reference_run or evaluate_run(reference, dataset.data, conf=conf, **opts)
    threshold = float(ref.report["conf"])  # the reference's operating point, for both models
    cand = evaluate_run(candidate, dataset.data, conf=threshold, **opts)
    op = operating_point(ref, cand, threshold)
    gate = labelled_multitask_criteria(judge(op, gate_result(ref.report, cand.report, limits.max_drop), limits),
                              ref.report, cand.report, limits)
    raw = raw_errors_on_dataset(reference, candidate, dataset, device=device, endoscopy=endoscopy,
                                spec=load_options.get("spec"))
    split = dataset.split
    return CompareResult(reference_model=str(reference), candidate_model=str(candidate), data=str(dataset.data),
                         split=None if split is None else str(split), n_images=cand.report["n_images"],
                         gate=gate, raw_heads=raw, reference=ref.report, candidate=cand.report,
                         operating_point=op, reference_run=ref)


def format_compare(result: CompareResult) -> str:
    """The comparison as printed text (what ``endoedge eval --compare`` shows): the operating
    point first, mAP as a secondary line, raw-head errors, the one-line verdict."""
    g, op = result.gate, result.operating_point
    negs = f" (+{op.n_negative_images} polyp-free frames)" if op is not None and op.n_negative_images else ""
    lines = [f"accuracy gate: {result.candidate_model} vs reference {result.reference_model}",
             f"data {result.data}" + (f" (split {Path(result.split).name})" if result.split else "")
             + f", {result.n_images} images" + negs]
    if op is not None:
        lines.extend(format_operating_point(op))
    r, c, d = g.reference, g.candidate, g.delta_points
    lines.append(f"secondary (all thresholds): COCO mAP@0.5 {_f(r.map50)} -> {_f(c.map50)} ({_d(d.map50)} points), "
                 f"mAP@0.5:0.95 {_f(r.map50_95)} -> {_f(c.map50_95)} ({_d(d.map50_95)} points)")
    for name, (rv, cv) in _multitask_values(result.reference, result.candidate).items():
        label = "mean mask Dice (vs labels)" if name == "mask_dice" else "frame-triage accuracy"
        lines.append(f"{label} {rv:.3f} -> {cv:.3f} ({100 * (cv - rv):+.2f} points)")
    raw = result.raw_heads
    if raw.skipped is None:
        lines.append(f"raw heads on the same pre-processed inputs ({raw.n_images} images):")
        lines.append(f"  {'output':<18}{'max abs err':>12}{'mean abs err':>14}{'nmse':>10}{'cosine':>10}")
        for name, s in raw.outputs.items():
            lines.append(f"  {name:<18}{s.max_abs_err:>12.4g}{s.mean_abs_err:>14.4g}"
                         f"{s.nmse:>10.3g}{s.cosine:>10.5f}")
    else:
        lines.append(f"raw heads: {raw.skipped}")
    lines.append(f"gate: {g.reason}")
    return "\n".join(lines)


def _d(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.2f}"


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
