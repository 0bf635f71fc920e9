"""Empirical bias correction of an INT8 Q/DQ copy: the per-channel output means of the quantized
layers move towards FP32's (measured with ONNX Runtime against the FP32 model itself), and the
file still follows TensorRT's Q/DQ rules (only float biases change)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from endoedge.calibration.qdq_check import check_qdq

pytest.importorskip("onnxruntime")


def _head_means(model, names, feeds):
    from endoedge.calibration.bias_correction import _layer_means, probe_session

    return _layer_means(probe_session(model, names), names, feeds)


def test_bias_correction_moves_layer_means_to_fp32_and_keeps_qdq_rules(ssdlite, int8, calib, tmp_path):
    import onnx

    from endoedge.calibration.bias_correction import _quantized_convs, correct_biases

    fixed = tmp_path / "bc.onnx"
    shutil.copy(int8.path, fixed)
    feeds = list(calib)[:2]  # 4 of the 8 calibration frames: one forward pass of them per layer
    bc = correct_biases(ssdlite[2], fixed, feeds)
    # every quantized Conv but those whose bias tensor is shared (onnxslim dedupes equal constants)
    assert len(check_qdq(int8.path).quantized_convs) - 2 <= bc.layers <= len(check_qdq(int8.path).quantized_convs)
    assert bc.images == sum(len(next(iter(f.values()))) for f in feeds) == 4
    assert bc.mean_abs_shift_after < 0.2 * bc.mean_abs_shift_before

    # an independent look: the last quantized layers' means, FP32 vs before vs after
    before, after, ref = onnx.load(str(int8.path)), onnx.load(str(fixed)), onnx.load(str(ssdlite[2]))
    names = [n.output[0] for n in _quantized_convs(before)][-6:]
    r, b, a = (_head_means(m, names, feeds) for m in (ref, before, after))
    err_b = np.mean([np.abs(x - y).mean() for x, y in zip(r, b, strict=True)])
    err_a = np.mean([np.abs(x - y).mean() for x, y in zip(r, a, strict=True)])
    assert err_a < err_b

    rep = check_qdq(fixed)
    assert rep.ok, rep.violations
    assert sorted(rep.quantized_convs) == sorted(check_qdq(int8.path).quantized_convs)
    # same nodes, same Q/DQ scales; only float Conv biases differ
    assert [n.op_type for n in after.graph.node] == [n.op_type for n in before.graph.node]
    old = {t.name: onnx.numpy_helper.to_array(t) for t in before.graph.initializer}
    biases = {n.input[2] for n in after.graph.node if n.op_type == "Conv" and len(n.input) > 2}
    changed = []
    for t in after.graph.initializer:
        new = onnx.numpy_helper.to_array(t)
        if t.name not in old:
            changed.append(t.name)  # a bias added to a Conv without one
            assert t.data_type == onnx.TensorProto.FLOAT
        elif not np.array_equal(new, old[t.name]):
            assert t.name in biases, t.name
            assert t.data_type == onnx.TensorProto.FLOAT
            changed.append(t.name)
    assert changed


def test_quantize_with_bias_correction_records_it(ssdlite, calib, tmp_path):
    import onnx

    from endoedge.calibration.quantize import quantize_int8
    from endoedge.errors import ExportError

    res = quantize_int8(ssdlite[2], tmp_path / "m.onnx", calib, method="minmax", bias_correction=True,
                        bias_correction_images=4)
    rec = json.loads(res.metadata["endoedge.quant_bias_correction"])
    assert rec["images"] == 4
    assert rec["layers"] > 0
    props = {p.key: p.value for p in onnx.load(str(res.path)).metadata_props}
    assert json.loads(props["endoedge.quant_bias_correction"]) == rec
    with pytest.raises(ExportError, match="needs the calibration images"):
        quantize_int8(ssdlite[2], tmp_path / "n.onnx", None, cache_path=tmp_path / "none.json",
                      bias_correction=True)
