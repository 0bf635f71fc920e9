"""Weight scales wide enough for the float bias to fit int32: ONNX Runtime's fused integer Conv
then computes what the Q/DQ graph says (the oracle: the same graph run with ONNX Runtime's graph
optimizations off, where every QuantizeLinear/DequantizeLinear runs as written and the bias is
added in float, as TensorRT does)."""

from __future__ import annotations

import numpy as np
import pytest

from endoedge.calibration.qdq_check import check_qdq

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

X_SCALE, Y_SCALE = 0.02, 0.05
BIAS = np.array([0.1, 3.0], np.float32)  # channel 1: weights all ~1e-9, a bias of 3.0


def _graph(path):
    """x -> Q/DQ -> Conv(Q/DQ weights per channel, float bias) -> Q/DQ -> y: the shape ONNX
    Runtime fuses into an integer Conv."""
    h, nh = onnx.helper, onnx.numpy_helper
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (2, 2, 3, 3)).astype(np.float32)
    w[1] *= 1e-8
    w_scale = (np.abs(w).reshape(2, -1).max(axis=1) / 127).astype(np.float32)
    inits = [nh.from_array(w, "w"), nh.from_array(w_scale, "w_scale"), nh.from_array(np.zeros(2, np.int8), "w_zp"),
             nh.from_array(BIAS, "b"), nh.from_array(np.array(X_SCALE, np.float32), "x_scale"),
             nh.from_array(np.array(0, np.int8), "zp"), nh.from_array(np.array(Y_SCALE, np.float32), "y_scale")]
    nodes = [h.make_node("QuantizeLinear", ["x", "x_scale", "zp"], ["xq"]),
             h.make_node("DequantizeLinear", ["xq", "x_scale", "zp"], ["xd"]),
             h.make_node("QuantizeLinear", ["w", "w_scale", "w_zp"], ["wq"], axis=0),
             h.make_node("DequantizeLinear", ["wq", "w_scale", "w_zp"], ["wd"], axis=0),
             h.make_node("Conv", ["xd", "wd", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             h.make_node("QuantizeLinear", ["c", "y_scale", "zp"], ["cq"]),
             h.make_node("DequantizeLinear", ["cq", "y_scale", "zp"], ["y"])]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 8, 8])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2, 8, 8])], inits)
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), str(path))


def _run(path, optimized: bool):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    x = np.random.default_rng(1).uniform(-1, 1, (1, 2, 8, 8)).astype(np.float32)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]


def test_a_bias_beyond_int32_is_lost_by_the_fused_kernel_and_kept_after_widening(tmp_path):
    from endoedge.calibration.int32_bias import (
        ClampedLayer,
        clamped_bias_channels,
        clamped_bias_layers,
        widen_weight_scales,
    )

    path = tmp_path / "conv.onnx"
    _graph(path)
    assert clamped_bias_layers(path) == [ClampedLayer("conv", 1, 2, pytest.approx(3.0))]
    assert clamped_bias_channels(path) == 1
    plain, fused = _run(path, optimized=False), _run(path, optimized=True)
    assert abs(plain[0, 1].mean() - 3.0) <= Y_SCALE  # as written: the bias is there
    assert abs(fused[0, 1].mean()) <= Y_SCALE  # ONNX Runtime's integer kernel clamps it away
    before = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}

    assert widen_weight_scales(path) == 1
    assert clamped_bias_channels(path) == 0
    assert widen_weight_scales(path) == 0  # nothing left to widen: the file is not rewritten
    after = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    assert after.keys() == before.keys()
    assert [k for k in after if not np.array_equal(after[k], before[k])] == ["w_scale"]
    assert after["w_scale"][0] == before["w_scale"][0]  # the other channel's scale is untouched
    assert after["w_scale"][1] * X_SCALE * np.iinfo(np.int32).max >= BIAS[1]
    fused, plain_after = _run(path, optimized=True), _run(path, optimized=False)
    np.testing.assert_allclose(fused, plain_after, atol=Y_SCALE)
    np.testing.assert_allclose(plain_after[0, 0], plain[0, 0])  # channel 0 computes what it did
    assert abs(fused[0, 1].mean() - 3.0) <= Y_SCALE
    assert check_qdq(path).ok


def test_quantize_widens_by_default_and_records_it(ssdlite, calib, tmp_path):
    import json

    from endoedge.calibration.int32_bias import clamped_bias_channels
    from endoedge.calibration.quantize import quantize_int8

    res = quantize_int8(ssdlite[2], tmp_path / "m.onnx", calib, method="minmax")  # the default
    rec = json.loads(res.metadata["endoedge.quant_int32_bias"])
    assert rec["channels_widened"] >= 0
    assert clamped_bias_channels(res.path) == 0
    assert check_qdq(res.path).ok
    off = quantize_int8(ssdlite[2], tmp_path / "n.onnx", calib, method="minmax", int32_bias=False,
                        cache_path=tmp_path / "ranges.json")
    assert "endoedge.quant_int32_bias" not in off.metadata
