"""The accuracy gate: a candidate model (INT8, FP16, another backend) against its reference.

:func:`compare_models` evaluates both on the same labelled data with
:func:`~endoedge.evaluation.evaluate_model` (pycocotools mAP, recall, frame sensitivity) and
runs both on the same pre-processed inputs to measure the raw-head error
(:func:`~endoedge.calibration.raw_heads.raw_head_errors`). The gate passes when the
candidate's mAP@0.5 is at most ``max_drop`` points (1 point = 0.01) below the reference's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from endoedge.calibration.report import CompareResult, GateMetrics, GateResult

if TYPE_CHECKING:
    from endoedge.evaluation import EvalSet
    from endoedge.spec.endoscopy import EndoscopyConfig

logger = logging.getLogger(__name__)

DEFAULT_MAX_DROP = 1.0  # mAP@0.5 points


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


def compare_models(
    reference: str | Path,
    candidate: str | Path,
    dataset: EvalSet,
    *,
    backend: str = "auto",
    device: str = "auto",
    max_drop: float = DEFAULT_MAX_DROP,
    endoscopy: EndoscopyConfig | None = None,
    reference_report: dict[str, Any] | None = None,
    **load_options: Any,
) -> CompareResult:
    """Evaluate ``reference`` and ``candidate`` on ``dataset`` and apply the mAP@0.5 gate.

    Args:
        reference_report: a previous :func:`~endoedge.evaluation.evaluate_model` report of
            ``reference`` on the same data (skips evaluating it again).
        Other arguments as :func:`~endoedge.evaluation.evaluate_model` (``**load_options``
        go to it unchanged, e.g. ``conf``, ``iou``, ``spec``).

    Returns:
        the two full evaluation reports, :func:`gate_result`, and the raw-head errors on the
        dataset's images pre-processed with the reference's spec (and endoscopy cleaning).
    """
    from endoedge.calibration.raw_heads import raw_errors_on_dataset
    from endoedge.evaluation import evaluate_model

    opts = {**dataset.options(), "backend": backend, "device": device, "endoscopy": endoscopy, **load_options}
    ref_rep = reference_report or evaluate_model(reference, dataset.data, **opts)
    cand_rep = evaluate_model(candidate, dataset.data, **opts)
    gate = gate_result(ref_rep, cand_rep, max_drop)
    raw = raw_errors_on_dataset(reference, candidate, dataset, device=device, endoscopy=endoscopy,
                                spec=load_options.get("spec"))
    split = dataset.split
    return CompareResult(reference_model=str(reference), candidate_model=str(candidate), data=str(dataset.data),
                         split=None if split is None else str(split), n_images=cand_rep["n_images"],
                         gate=gate, raw_heads=raw, reference=ref_rep, candidate=cand_rep)


_LABELS = {"map50": "COCO mAP@0.5", "map50_95": "COCO mAP@0.5:0.95", "recall50": "recall @IoU 0.5",
           "precision50": "precision @IoU 0.5", "sensitivity": "frame sensitivity"}


def format_compare(result: CompareResult) -> str:
    """The comparison as a printed table (what ``endoedge eval --compare`` shows)."""
    g = result.gate
    lines = [f"accuracy gate: {result.candidate_model} vs reference {result.reference_model}",
             f"data {result.data}" + (f" (split {Path(result.split).name})" if result.split else "")
             + f", {result.n_images} images",
             f"  {'metric':<22}{'reference':>10}{'candidate':>11}{'delta (points)':>16}"]
    for key, label in _LABELS.items():
        r, c, d = getattr(g.reference, key), getattr(g.candidate, key), getattr(g.delta_points, key)
        lines.append(f"  {label:<22}{_f(r):>10}{_f(c):>11}{'n/a' if d is None else f'{d:+.2f}':>16}")
    raw = result.raw_heads
    if raw.skipped is None:
        lines.append(f"raw heads on the same pre-processed inputs ({raw.n_images} images):")
        lines.append(f"  {'output':<18}{'max abs err':>12}{'mean abs err':>14}{'nmse':>10}{'cosine':>10}")
        for name, s in raw.outputs.items():
            lines.append(f"  {name:<18}{s.max_abs_err:>12.4g}{s.mean_abs_err:>14.4g}"
                         f"{s.nmse:>10.3g}{s.cosine:>10.5f}")
    else:
        lines.append(f"raw heads: {raw.skipped}")
    verdict = "PASS" if g.passed else "FAIL"
    lines.append(f"gate: mAP@0.5 drop {g.drop_points:+.2f} points (limit {g.max_drop_points:g}): {verdict}")
    return "\n".join(lines)


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
