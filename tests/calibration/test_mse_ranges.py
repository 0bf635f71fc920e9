"""MSE activation ranges (``quantize --method mse``): the error model against quantizing the values
themselves, the search against an exhaustive one, and the Q/DQ file and cache it makes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from endoedge.calibration.mse_ranges import mse_threshold, quantization_mse
from endoedge.calibration.qdq_check import check_qdq
from endoedge.errors import ExportError


def _heavy_tailed(n: int = 400_000) -> np.ndarray:
    """|x| of an activation-like sample: a bulk plus a few rare large values."""
    rng = np.random.default_rng(7)
    v = np.abs(rng.standard_normal(n)).astype(np.float32)
    v[:: n // 50] *= 9.0
    return v


def test_error_model_matches_quantizing_the_values():
    v = _heavy_tailed()
    hist, edges = np.histogram(v, bins=2048, range=(0.0, float(v.max())))
    edges = edges.astype(np.float32)
    for t in (edges[300], edges[900], edges[-1]):
        step = t / 127
        q = np.clip(np.round(v / step), -127, 127) * step  # symmetric int8, as TensorRT quantizes
        measured = float(np.mean((v.astype(np.float64) - q) ** 2))
        assert quantization_mse(hist, edges, np.array([t]))[0] == pytest.approx(measured, rel=0.02)


def test_search_finds_the_exhaustive_minimum_and_clips_outliers():
    v = _heavy_tailed()
    hist, edges = np.histogram(v, bins=2048, range=(0.0, float(v.max())))
    every = quantization_mse(hist, edges, edges[1:])
    t = mse_threshold(hist, edges)
    assert t == pytest.approx(float(edges[1:][np.argmin(every)]))
    assert t < float(v.max())  # the rare large values are clipped: cheaper than coarse steps


def test_empty_and_zero_tensors_keep_their_range():
    edges = np.linspace(0.0, 2.0, 2049, dtype=np.float32)
    assert mse_threshold(np.zeros(2048, np.int64), edges) == pytest.approx(2.0)
    assert mse_threshold(np.ones(2048, np.int64), np.zeros(2049, np.float32)) == 0.0


def test_mse_copy_passes_the_qdq_rules_and_its_cache_is_only_reused_by_mse(ssdlite, calib, tmp_path):
    from endoedge.calibration.quantize import quantize_int8

    cache = tmp_path / "mse.json"
    res = quantize_int8(ssdlite[2], tmp_path / "m.int8.onnx", calib, method="mse", cache_path=cache)
    rep = check_qdq(res.path)
    assert rep.ok, rep.violations
    assert res.metadata["endoedge.quant_method"] == "mse"
    payload = json.loads(cache.read_text())
    assert payload["endoedge_method"] == "mse"
    again = quantize_int8(ssdlite[2], tmp_path / "m2.int8.onnx", None, method="mse", cache_path=cache)
    assert check_qdq(again.path).ok
    with pytest.raises(ExportError, match="holds MSE ranges, not percentile"):
        quantize_int8(ssdlite[2], tmp_path / "p.int8.onnx", None, method="percentile", cache_path=cache)
