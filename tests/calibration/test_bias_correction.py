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


def test_layers_measured_together_get_the_one_layer_per_pass_corrections(ssdlite, int8, calib, tmp_path, monkeypatch):
    """Layers none of which feeds another share a pass; the corrections are bit-identical to
    measuring one layer per pass in graph order (Nagel et al.'s sequential definition)."""
    import onnx

    from endoedge.calibration import bias_correction as bcm

    model = onnx.load(str(int8.path))
    names = [n.output[0] for n in bcm._quantized_convs(model)]
    groups = bcm._levels(model, names)
    assert sorted(i for g in groups for i in g) == list(range(len(names)))
    assert len(groups) < len(names)  # the SSD heads' parallel branches share passes
    # every quantized layer upstream of a layer sits in an earlier group (an independent graph walk)
    group_of = {names[i]: k for k, g in enumerate(groups) for i in g}
    producer = {o: n for n in model.graph.node for o in n.output}
    for name in names:
        seen, stack = set(), [i for i in producer[name].input if i]
        while stack:
            t = stack.pop()
            if t in seen or t not in producer:
                continue
            seen.add(t)
            if t in group_of:
                assert group_of[t] < group_of[name], (t, name)
            stack.extend(i for i in producer[t].input if i)

    feeds = list(calib)[:1]
    grouped, single = tmp_path / "grouped.onnx", tmp_path / "single.onnx"
    shutil.copy(int8.path, grouped)
    shutil.copy(int8.path, single)
    a = bcm.correct_biases(ssdlite[2], grouped, feeds)
    monkeypatch.setattr(bcm, "_levels", lambda model, names: [[i] for i in range(len(names))])
    b = bcm.correct_biases(ssdlite[2], single, feeds)
    assert a == b
    ga = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(grouped)).graph.initializer}
    gb = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(single)).graph.initializer}
    assert ga.keys() == gb.keys()
    assert all(np.array_equal(ga[k], gb[k]) for k in ga)
