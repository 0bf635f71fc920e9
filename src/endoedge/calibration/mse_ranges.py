"""Activation ranges that minimise the INT8 quantization error (``quantize --method mse``).

For each activation tensor ONNX Runtime's percentile calibrator collects a histogram of ``|x|``
(2048 bins from 0 to the largest value seen, over every calibration batch). For a symmetric
per-tensor INT8 range ``[-t, t]`` (scale ``t / 127``, TensorRT's explicit quantization) the mean
squared error of the values is the rounding error of those inside the range plus the clipping
error ``(|x| - t)^2`` of those outside. :func:`mse_threshold` evaluates it exactly for values spread
uniformly within each histogram bin (closed form of the sawtooth's square) at every bin edge and
returns the edge with the least error: the range NVIDIA's pytorch-quantization and ModelOpt call
``mse`` calibration. Unlike ``minmax`` it clips rare large values; unlike ``percentile`` how much it
clips depends on what the clipping costs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

NUM_BINS = 2048
LEVELS = 127  # symmetric int8: -127..127 (TensorRT)
_COARSE = 16  # candidate thresholds: every 16th bin edge, then each edge near the best


def _sawtooth_integral(x: np.ndarray, step: np.ndarray) -> np.ndarray:
    """``integral_0^x (u - step * round(u / step))^2 du`` (elementwise, ``x >= 0``)."""
    y = x + 0.5 * step
    n = np.floor(y / step)
    r = y - n * step - 0.5 * step
    # Each full step adds step^3 / 12; u = 0 sits mid-step (y = step / 2), hence the last term.
    return n * step**3 / 12.0 + (r**3 + (0.5 * step) ** 3) / 3.0 - step**3 / 24.0


def quantization_mse(hist: np.ndarray, edges: np.ndarray, thresholds: np.ndarray,
                     levels: int = LEVELS) -> np.ndarray:
    """Mean squared error of quantizing the values of an ``|x|`` histogram to
    ``[-t, t]`` with ``levels`` steps per side, for each ``t`` in ``thresholds``.

    Values are taken as spread uniformly within their bin; ``thresholds`` should be bin edges
    (a bin that straddles ``t`` is counted as clipped from ``t``).
    """
    counts = hist.astype(np.float64)
    lo, hi = edges[:-1].astype(np.float64), edges[1:].astype(np.float64)
    width = np.maximum(hi - lo, 1e-30)
    t = thresholds.astype(np.float64)[:, None]  # T x 1
    step = t / levels
    inside = hi[None, :] <= t + 1e-12 * t
    rounding = (_sawtooth_integral(np.broadcast_to(hi, inside.shape), step)
                - _sawtooth_integral(np.broadcast_to(lo, inside.shape), step)) / width
    a = np.maximum(lo[None, :] - t, 0.0)
    b = np.maximum(hi[None, :] - t, 0.0)
    clipping = (b**3 - a**3) / (3.0 * width)
    err = np.where(inside, rounding, clipping)
    total: np.ndarray = (err * counts).sum(axis=1) / max(counts.sum(), 1.0)
    return total


def mse_threshold(hist: np.ndarray, edges: np.ndarray, levels: int = LEVELS) -> float:
    """The bin edge ``t`` with the least :func:`quantization_mse` (the largest value for an
    all-zero or empty tensor)."""
    top = float(edges[-1])
    if top <= 0.0 or hist.sum() == 0:
        return top
    # Coarse to fine: every _COARSE-th edge (always the top one), then every edge around the best.
    idx = np.arange(len(edges) - 1, 0, -_COARSE)[::-1]
    best = int(idx[int(np.argmin(quantization_mse(hist, edges, edges[idx], levels)))])
    fine = np.arange(max(1, best - _COARSE), min(len(edges) - 1, best + _COARSE) + 1)
    return float(edges[fine[int(np.argmin(quantization_mse(hist, edges, edges[fine], levels)))]])


def collect_histograms(model: Path, op_types: list[str], reader: Any, chunk: int, tmp: Path,
                       providers: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``|x|`` histograms (counts, edges) of the inputs/outputs ORT calibrates for ``op_types``,
    over every batch of ``reader`` (in passes of ``chunk`` batches)."""
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    calibrator = create_calibrator(
        model, op_types, augmented_model_path=str(tmp / "augmented_mse.onnx"),
        calibrate_method=CalibrationMethod.Percentile, providers=providers,
        extra_options={"symmetric": True, "num_bins": NUM_BINS, "percentile": 99.999},
    )
    n = len(reader)
    for start in range(0, n, chunk):
        reader.set_range(start_index=start, end_index=min(start + chunk, n))
        calibrator.collect_data(reader)
    return {name: (h[0], h[1]) for name, h in calibrator.collector.histogram_dict.items()}


def write_range_cache(histograms: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> dict[str, float]:
    """MSE thresholds of ``histograms`` written as an ONNX Runtime calibration cache for
    ``quantize_static(calibrate_method=Percentile, calibration_cache_path=path)``; returns them."""
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        TensorData,
        TensorsData,
        save_tensors_data,
    )

    thresholds = {name: mse_threshold(h, e) for name, (h, e) in histograms.items()}
    data = {name: TensorData(lowest=np.array(-t, np.float32), highest=np.array(t, np.float32))
            for name, t in thresholds.items()}
    save_tensors_data(TensorsData(CalibrationMethod.Percentile, data), path)
    # Mark the cache as endoedge's MSE ranges (ORT ignores the extra key), so a percentile cache
    # is never taken for an MSE one or the other way round.
    payload = json.loads(path.read_text())
    payload["endoedge_method"] = "mse"
    path.write_text(json.dumps(payload))
    return thresholds


def cache_method(path: Path) -> str | None:
    """``"mse"`` for a cache written by :func:`write_range_cache`, else ``None``."""
    try:
        value = json.loads(path.read_text()).get("endoedge_method")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
