"""The accuracy gate: a candidate model (INT8, FP16, another backend) against its reference.

:func:`compare_models` evaluates both on the same labelled data with
:func:`~endoedge.evaluation.evaluate_model` (pycocotools mAP, recall, frame sensitivity) and
runs both on the same pre-processed inputs to measure the raw-head error
(:func:`raw_head_errors`). The gate passes when the candidate's mAP@0.5 is at most
``max_drop`` points (1 point = 0.01) below the reference's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_MAX_DROP = 1.0  # mAP@0.5 points


class _Stats:
    """Streaming error statistics of one output tensor (float64 accumulators)."""

    def __init__(self) -> None:
        self.n = 0
        self.max_abs = 0.0
        self.sum_abs = 0.0
        self.sum_sq_err = 0.0
        self.dot = 0.0
        self.sum_ref_sq = 0.0
        self.sum_cand_sq = 0.0
        self.sum_ref = 0.0

    def add(self, ref: np.ndarray, cand: np.ndarray) -> None:
        r = ref.astype(np.float64, copy=False).ravel()
        c = cand.astype(np.float64, copy=False).ravel()
        d = np.abs(r - c)
        self.n += r.size
        self.max_abs = max(self.max_abs, float(d.max(initial=0.0)))
        self.sum_abs += float(d.sum())
        self.sum_sq_err += float(np.dot(d, d))
        self.dot += float(np.dot(r, c))
        self.sum_ref_sq += float(np.dot(r, r))
        self.sum_cand_sq += float(np.dot(c, c))
        self.sum_ref += float(r.sum())

    def result(self) -> dict[str, float]:
        n = max(self.n, 1)
        var = self.sum_ref_sq / n - (self.sum_ref / n) ** 2
        denom = np.sqrt(self.sum_ref_sq * self.sum_cand_sq)
        return {
            "max_abs_err": self.max_abs,
            "mean_abs_err": self.sum_abs / n,
            "rmse": float(np.sqrt(self.sum_sq_err / n)),
            "nmse": float(self.sum_sq_err / n / var) if var > 0 else float("inf"),
            "cosine": float(self.dot / denom) if denom > 0 else 1.0,
        }


def raw_head_errors(ref: Any, cand: Any, feeds: Iterable[Mapping[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    """Error of ``cand``'s raw outputs against ``ref``'s on the same inputs, per output.

    Args:
        ref, cand: active backends (:class:`~endoedge.runtime.Backend`) with the same outputs.
        feeds: batches ``{input_name: array}`` (e.g. a
            :class:`~endoedge.calibration.CalibrationData`); fed to both unchanged.

    Returns:
        ``{output: {max_abs_err, mean_abs_err, rmse, nmse, cosine}}``: ``nmse`` = mean squared
        error / variance of the reference values (0 = identical, 1 = as bad as a constant);
        ``cosine`` = cosine similarity of the flattened tensors over all inputs.
    """
    stats: dict[str, _Stats] = {}
    for feed in feeds:
        want = {cand.input_name: next(iter(feed.values()))}
        r_out = ref.infer({ref.input_name: want[cand.input_name]})
        c_out = cand.infer(want)
        for name, value in r_out.items():
            if name in c_out:
                stats.setdefault(name, _Stats()).add(value, c_out[name])
    return {k: v.result() for k, v in stats.items()}


def headline(report: Mapping[str, Any]) -> dict[str, float | None]:
    """The numbers the gate compares, from an :func:`evaluate_model` report."""
    prf = report["prf"].get("0.50", {}).get("all", {})
    return {
        "map50": report["coco"]["map50"],
        "map50_95": report["coco"]["map50_95"],
        "recall50": prf.get("recall"),
        "precision50": prf.get("precision"),
        "sensitivity": report["frame"]["sensitivity"],
    }


def gate_result(ref: Mapping[str, Any], cand: Mapping[str, Any], max_drop: float) -> dict[str, Any]:
    """Deltas in points (candidate - reference, x100) and the mAP@0.5 verdict."""
    r, c = headline(ref), headline(cand)
    delta = {k: None if r[k] is None or c[k] is None else round(100 * (c[k] - r[k]), 3)  # type: ignore[operator]
             for k in r}
    drop = -(delta["map50"] or 0.0)
    return {"reference": r, "candidate": c, "delta_points": delta, "metric": "map50",
            "max_drop_points": max_drop, "drop_points": round(drop, 3), "passed": bool(drop <= max_drop + 1e-9)}


def compare_models(
    reference: str | Path,
    candidate: str | Path,
    data: str | Path,
    *,
    split: str | Path | None = None,
    fmt: str = "auto",
    images_dir: str | Path | None = None,
    class_names: list[str] | None = None,
    backend: str = "auto",
    device: str = "auto",
    max_drop: float = DEFAULT_MAX_DROP,
    endoscopy: Any = None,
    reference_report: dict[str, Any] | None = None,
    **load_options: Any,
) -> dict[str, Any]:
    """Evaluate ``reference`` and ``candidate`` on ``data`` and apply the mAP@0.5 gate.

    Args:
        reference_report: a previous :func:`evaluate_model` report of ``reference`` on the same
            data (skips evaluating it again).
        Other arguments as :func:`~endoedge.evaluation.evaluate_model`.

    Returns:
        ``{"reference", "candidate", "gate", "raw_heads", "n_images", ...}``: the two full
        evaluation reports, :func:`gate_result`, and :func:`raw_head_errors` on the dataset's
        images pre-processed with the reference's spec (and endoscopy cleaning).
    """
    from endoedge.evaluation import evaluate_model

    opts = {"split": split, "fmt": fmt, "images_dir": images_dir, "class_names": class_names,
            "backend": backend, "device": device, "endoscopy": endoscopy, **load_options}
    ref_rep = reference_report or evaluate_model(reference, data, **opts)
    cand_rep = evaluate_model(candidate, data, **opts)
    gate = gate_result(ref_rep, cand_rep, max_drop)
    raw = raw_errors_on_dataset(reference, candidate, data, split=split, fmt=fmt, images_dir=images_dir,
                                class_names=class_names, device=device, endoscopy=endoscopy,
                                spec=load_options.get("spec"))
    return {"reference_model": str(reference), "candidate_model": str(candidate), "data": str(data),
            "split": None if split is None else str(split), "n_images": cand_rep["n_images"],
            "gate": gate, "raw_heads": raw, "reference": ref_rep, "candidate": cand_rep}


def raw_errors_on_dataset(reference: str | Path, candidate: str | Path, data: str | Path, *,
                          split: str | Path | None = None, fmt: str = "auto",
                          images_dir: str | Path | None = None, class_names: list[str] | None = None,
                          device: str = "auto", endoscopy: Any = None, spec: Any = None,
                          max_images: int = 500) -> dict[str, Any]:
    """:func:`raw_head_errors` of two models on a labelled dataset's images (up to
    ``max_images``, spread as the calibration selection is), pre-processed as the reference's
    spec says. Only for ONNX models (checkpoints give ``{"skipped": reason}``)."""
    from endoedge.calibration.data import CalibrationData
    from endoedge.calibration.sources import Item, select
    from endoedge.evaluation import load_eval_dataset
    from endoedge.runtime.ort import OnnxRuntimeBackend
    from endoedge.spec import ModelSpec, read_onnx_metadata

    if not all(str(p).lower().endswith(".onnx") for p in (reference, candidate)):
        return {"skipped": "raw-head errors are measured between two ONNX files"}
    if spec is None:
        spec = ModelSpec.from_metadata(read_onnx_metadata(reference), where=str(reference))
    if endoscopy is not None:
        from dataclasses import replace

        spec = replace(spec, endoscopy=endoscopy.to_dict() if endoscopy.active else None)
    dataset = load_eval_dataset(data, fmt=fmt, split=split, images_dir=images_dir, class_names=class_names)
    items = select([Item(str(s.path.parent), s.path) for s in dataset.samples], max_images)
    # Batches that tile the images exactly (no padding repeats), where the models allow it.
    batch = max(d for d in range(1, 9) if len(items) % d == 0) if _dynamic_batch(reference) else 1
    feeds = CalibrationData(spec, items, source=str(data), batch_size=batch, max_cache_mb=0)
    dev = "cpu" if device == "auto" else device
    with OnnxRuntimeBackend(reference, device=dev) as ref, OnnxRuntimeBackend(candidate, device=dev) as cand:
        errors = raw_head_errors(ref, cand, feeds)
    return {"n_images": feeds.num_images, "outputs": errors}


def _dynamic_batch(path: str | Path) -> bool:
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return bool(dims) and not dims[0].dim_value


def format_compare(report: Mapping[str, Any]) -> str:
    """The comparison as a printed table (what ``endoedge eval --compare`` shows)."""
    g = report["gate"]
    lines = [f"accuracy gate: {report['candidate_model']} vs reference {report['reference_model']}",
             f"data {report['data']}" + (f" (split {Path(report['split']).name})" if report.get("split") else "")
             + f", {report['n_images']} images",
             f"  {'metric':<22}{'reference':>10}{'candidate':>11}{'delta (points)':>16}"]
    labels = {"map50": "COCO mAP@0.5", "map50_95": "COCO mAP@0.5:0.95", "recall50": "recall @IoU 0.5",
              "precision50": "precision @IoU 0.5", "sensitivity": "frame sensitivity"}
    for key, label in labels.items():
        r, c, d = g["reference"][key], g["candidate"][key], g["delta_points"][key]
        lines.append(f"  {label:<22}{_f(r):>10}{_f(c):>11}{'n/a' if d is None else f'{d:+.2f}':>16}")
    raw = report.get("raw_heads", {})
    if "outputs" in raw:
        lines.append(f"raw heads on the same pre-processed inputs ({raw['n_images']} images):")
        lines.append(f"  {'output':<18}{'max abs err':>12}{'mean abs err':>14}{'nmse':>10}{'cosine':>10}")
        for name, s in raw["outputs"].items():
            lines.append(f"  {name:<18}{s['max_abs_err']:>12.4g}{s['mean_abs_err']:>14.4g}"
                         f"{s['nmse']:>10.3g}{s['cosine']:>10.5f}")
    elif raw:
        lines.append(f"raw heads: {raw.get('skipped')}")
    verdict = "PASS" if g["passed"] else "FAIL"
    lines.append(f"gate: mAP@0.5 drop {g['drop_points']:+.2f} points (limit {g['max_drop_points']:g}): {verdict}")
    return "\n".join(lines)


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
