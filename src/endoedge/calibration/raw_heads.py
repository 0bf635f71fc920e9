"""Raw-head errors: a candidate model's raw outputs against its reference's on the same inputs.

The accuracy gate (:mod:`endoedge.calibration.compare`) reports them next to the mAP deltas:
they show how far quantization moved the tensors the decoder reads, per output.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from endoedge.calibration.report import HeadError, RawHeadErrors

if TYPE_CHECKING:
    from endoedge.evaluation import EvalSet
    from endoedge.runtime.base import Backend
    from endoedge.spec import ModelSpec
    from endoedge.spec.endoscopy import EndoscopyConfig

logger = logging.getLogger(__name__)


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

    def result(self) -> HeadError:
        n = max(self.n, 1)
        var = self.sum_ref_sq / n - (self.sum_ref / n) ** 2
        denom = np.sqrt(self.sum_ref_sq * self.sum_cand_sq)
        return HeadError(
            max_abs_err=self.max_abs,
            mean_abs_err=self.sum_abs / n,
            rmse=float(np.sqrt(self.sum_sq_err / n)),
            nmse=float(self.sum_sq_err / n / var) if var > 0 else float("inf"),
            cosine=float(self.dot / denom) if denom > 0 else 1.0,
        )


def raw_head_errors(ref: Backend, cand: Backend, feeds: Iterable[Mapping[str, np.ndarray]]) -> dict[str, HeadError]:
    """Error of ``cand``'s raw outputs against ``ref``'s on the same inputs, per output.

    Args:
        ref, cand: active backends (:class:`~endoedge.runtime.Backend`) with the same outputs.
        feeds: batches ``{input_name: array}`` (e.g. a
            :class:`~endoedge.calibration.CalibrationData`); fed to both unchanged.

    Returns:
        ``{output: HeadError}`` over all inputs (outputs ``cand`` lacks are left out).
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


def raw_errors_on_dataset(reference: str | Path, candidate: str | Path, dataset: EvalSet, *,
                          device: str = "auto", endoscopy: EndoscopyConfig | None = None,
                          spec: ModelSpec | None = None, max_images: int = 500) -> RawHeadErrors:
    """:func:`raw_head_errors` of two models on a labelled dataset's images (up to
    ``max_images``, spread as the calibration selection is), pre-processed as the reference's
    spec says. Only for ONNX models (checkpoints give a result with ``skipped`` set)."""
    from endoedge.calibration.data import CalibrationData
    from endoedge.calibration.sources import Item, select
    from endoedge.runtime.ort import OnnxRuntimeBackend
    from endoedge.spec import ModelSpec, read_onnx_metadata

    if not all(str(p).lower().endswith(".onnx") for p in (reference, candidate)):
        return RawHeadErrors(skipped="raw-head errors are measured between two ONNX files")
    if spec is None:
        spec = ModelSpec.from_metadata(read_onnx_metadata(reference), where=str(reference))
    if endoscopy is not None:
        from dataclasses import replace

        spec = replace(spec, endoscopy=endoscopy.to_dict() if endoscopy.active else None)
    samples = dataset.load().samples
    items = select([Item(str(s.path.parent), s.path) for s in samples], max_images)
    # Batches that tile the images exactly (no padding repeats), where the models allow it.
    batch = max(d for d in range(1, 9) if len(items) % d == 0) if _dynamic_batch(reference) else 1
    feeds = CalibrationData(spec, items, source=str(dataset.data), batch_size=batch, max_cache_mb=0)
    dev = "cpu" if device == "auto" else device
    with OnnxRuntimeBackend(reference, device=dev) as ref, OnnxRuntimeBackend(candidate, device=dev) as cand:
        errors = raw_head_errors(ref, cand, feeds)
    return RawHeadErrors(outputs=errors, n_images=feeds.num_images)


def _dynamic_batch(path: str | Path) -> bool:
    from endoedge.spec import load_onnx_proto

    dims = load_onnx_proto(path).graph.input[0].type.tensor_type.shape.dim
    return bool(dims) and not dims[0].dim_value
