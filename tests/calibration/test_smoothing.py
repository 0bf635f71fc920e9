"""Activation smoothing (``quantize --smooth``): the float graph computes what it did (ONNX Runtime
on the original file is the oracle), each Conv's input channels come closer to one range, other
consumers of a smoothed tensor see it unscaled, and the INT8 copy keeps TensorRT's Q/DQ rules
(checked by the real TensorRT for RTX parser where it is installed)."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from endoedge.calibration.qdq_check import check_qdq
from endoedge.calibration.smoothing import smooth_conv_inputs
from endoedge.errors import ExportError

ort = pytest.importorskip("onnxruntime")


def _run(model, feed):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)


def _branching_model() -> onnx.ModelProto:
    """x -> Conv(3->8) -> Relu -> t; t feeds a dense Conv, a depthwise Conv and an Add (t + t).
    The first Conv's output channels are scaled 1..300x, so t's channel ranges spread widely."""
    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * np.geomspace(1, 300, 8, dtype=np.float32)[:, None, None, None]
    w2 = rng.standard_normal((4, 8, 1, 1)).astype(np.float32)
    w3 = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (w3, "w3"),
                                                       (rng.standard_normal(8).astype(np.float32), "b3"))]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["t"], name="relu"),
        helper.make_node("Conv", ["t", "w2"], ["dense"], name="dense"),
        helper.make_node("Conv", ["t", "w3", "b3"], ["dw"], name="dw", group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["t", "t"], ["twice"], name="add"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 16, 16])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, c, 16, 16])
                               for n, c in (("dense", 4), ("dw", 8), ("twice", 8))],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds(n=3):
    rng = np.random.default_rng(5)
    return [{"x": rng.random((2, 3, 16, 16), dtype=np.float32)} for _ in range(n)]


def test_float_result_is_unchanged_and_channel_spread_shrinks():
    model, feeds = _branching_model(), _feeds()
    ref = _run(model, feeds[0])
    sm = smooth_conv_inputs(model, feeds, alpha=0.5)
    onnx.checker.check_model(model)
    got = _run(model, feeds[0])
    for r, g in zip(ref, got, strict=True):
        np.testing.assert_allclose(g, r, rtol=2e-5, atol=2e-4 * float(np.abs(r).max()))
    # dense and depthwise Conv smoothed; conv1 reads the graph input and is left alone
    assert (sm.layers, sm.images) == (2, 6)
    assert sm.spread_after < 0.5 * sm.spread_before
    muls = [n for n in model.graph.node if n.op_type == "Mul"]
    assert sorted(n.name for n in muls) == ["dense_smooth", "dw_smooth"]
    add = next(n for n in model.graph.node if n.op_type == "Add")
    assert list(add.input) == ["t", "t"]  # the other consumer sees t unscaled
    order = [n.name for n in model.graph.node]
    assert order.index("dense_smooth") == order.index("dense") - 1


def test_excluded_convs_are_left_alone_and_alpha_zero_equalises_weights_only():
    model, feeds = _branching_model(), _feeds(1)
    w_dw = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "w3")).copy()
    sm = smooth_conv_inputs(model, feeds, alpha=0.5, exclude={"dw"})
    assert sm.layers == 1
    np.testing.assert_array_equal(numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "w3")), w_dw)
    model = _branching_model()
    w_dense = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "w2")).copy()
    ref = _run(model, feeds[0])
    smooth_conv_inputs(model, feeds, alpha=0.0)
    for r, g in zip(ref, _run(model, feeds[0]), strict=True):
        np.testing.assert_allclose(g, r, rtol=2e-5, atol=2e-4 * float(np.abs(r).max()))
    # alpha 0: s = 1 / max|W_c|, normalised to a geometric mean of 1: weights move, the result does not
    assert not np.array_equal(numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "w2")), w_dense)


def test_bad_alpha_and_no_frames_are_one_line_errors():
    with pytest.raises(ExportError, match="within"):
        smooth_conv_inputs(_branching_model(), _feeds(1), alpha=1.5)
    with pytest.raises(ExportError, match="no calibration batch"):
        smooth_conv_inputs(_branching_model(), [], alpha=0.5)


def test_shipped_shape_model_stays_equal_in_float(ssdlite, calib):
    model = onnx.load(str(ssdlite[2]))
    feeds = list(calib.batches(0, 2))
    ref = _run(model, feeds[0])
    sm = smooth_conv_inputs(model, feeds, alpha=0.5)
    assert sm.layers > 10
    for r, g in zip(ref, _run(model, feeds[0]), strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-3 * max(1.0, float(np.abs(r).max())))


def test_smoothed_int8_copy_keeps_the_qdq_rules(ssdlite, calib, tmp_path):
    from endoedge.calibration.quantize import quantize_int8

    res = quantize_int8(ssdlite[2], tmp_path / "s.int8.onnx", calib, method="minmax", smooth=0.5)
    rep = check_qdq(res.path)
    assert rep.ok, rep.violations
    assert '"alpha": 0.5' in res.metadata["endoedge.quant_smoothing"]
    q = onnx.load(str(res.path))
    smoothed = [n for n in q.graph.node if n.op_type == "Mul" and n.name.endswith("_smooth")]
    assert smoothed
    for mul in smoothed:  # Mul -> QuantizeLinear -> DequantizeLinear -> Conv: per-tensor activation scale
        qn = next(n for n in q.graph.node if n.input and n.input[0] == mul.output[0])
        assert qn.op_type == "QuantizeLinear"
        assert numpy_helper.to_array(next(i for i in q.graph.initializer if i.name == qn.input[1])).size == 1
    with pytest.raises(ExportError, match="needs the calibration images"):
        quantize_int8(ssdlite[2], tmp_path / "x.onnx", None, smooth=0.5)
    with pytest.raises(ExportError, match="do not combine"):
        quantize_int8(ssdlite[2], tmp_path / "x.onnx", calib, smooth=0.5, weight_rounding=True)


@pytest.mark.trt_rtx
def test_real_tensorrt_rtx_parser_accepts_the_smoothed_copy(ssdlite, calib, tmp_path):
    if importlib.util.find_spec("tensorrt_rtx_bindings") is None:
        pytest.skip("needs TensorRT for RTX (tensorrt-rtx-cu12-* wheels; `make venv` installs them)")
    import tensorrt_rtx_bindings as trt

    from endoedge.calibration.quantize import quantize_int8

    res = quantize_int8(ssdlite[2], tmp_path / "s.int8.onnx", calib, method="minmax", smooth=0.5)
    log = trt.Logger(trt.Logger.ERROR)
    net = trt.Builder(log).create_network(0)
    parser = trt.OnnxParser(net, log)
    assert parser.parse_from_file(str(res.path)), [str(parser.get_error(i)) for i in range(parser.num_errors)]


def test_quantize_cli_smooths_and_says_so(ssdlite, sets, tmp_path, capsys):
    from endoedge.cli import main

    out = tmp_path / "q.onnx"
    rc = main(["quantize", str(ssdlite[2]), "-o", str(out), "--calib", str(sets / "calib"), "--num-images", "4",
               "--batch", "2", "--method", "minmax", "--no-bias-correction", "--smooth", "0.5", "--no-gate"])
    text = capsys.readouterr().out
    assert rc == 0, text
    line = next(x for x in text.splitlines() if x.startswith("smoothed the inputs of "))
    assert "(alpha 0.5, 4 calibration frames)" in line
    assert check_qdq(out).ok
    meta = {p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props}
    assert '"alpha": 0.5' in meta["endoedge.quant_smoothing"]


def test_a_cache_made_without_smoothing_is_refused_with_it(ssdlite, calib, int8, tmp_path):
    from endoedge.calibration.quantize import quantize_int8

    cache = int8.path.parent / "ranges.json"  # the session's minmax copy, made without smoothing
    with pytest.raises(ExportError, match="made without smoothing"):
        quantize_int8(ssdlite[2], tmp_path / "s.onnx", calib, method="minmax", cache_path=cache, smooth=0.5)
    made = tmp_path / "smoothed_ranges.json"
    quantize_int8(ssdlite[2], tmp_path / "a.onnx", calib, method="minmax", cache_path=made, smooth=0.5)
    again = quantize_int8(ssdlite[2], tmp_path / "b.onnx", calib, method="minmax", cache_path=made, smooth=0.5)
    assert check_qdq(again.path).ok
