"""INT8 Q/DQ and FP16 ONNX: TensorRT's Q/DQ rules on the files the quantizer writes and ONNX
Runtime validation against FP32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from endoedge.calibration.qdq_check import check_qdq

pytest.importorskip("pycocotools")


def _run(model, feed):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model) if not hasattr(model, "SerializeToString")
                                else model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


def _cos(a, b) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def test_int8_file_passes_trt_qdq_rules_keeps_metadata_and_runs(ssdlite, int8, calib):
    import onnx

    rep = check_qdq(int8.path)
    assert rep.ok, rep.violations
    src = onnx.load(str(ssdlite[2]))
    n_conv = sum(n.op_type == "Conv" for n in src.graph.node)
    assert len(rep.quantized_convs) == n_conv - 12 == rep.n_per_channel_weights
    # the output-layer rule: exactly the 12 last head convs stay float, and the file says which
    assert sorted(rep.float_convs) == sorted(int8.output_layers)
    assert len(int8.output_layers) == 12
    assert all("/head/" in n for n in int8.output_layers)
    out = onnx.load(str(int8.path))
    props = {p.key: p.value for p in out.metadata_props}
    for p in src.metadata_props:  # the ModelSpec travels unchanged
        assert props[p.key] == p.value
    assert props["endoedge.precision"] == "int8"
    assert props["endoedge.quant_method"] == "minmax"
    assert json.loads(props["endoedge.quant_float_outputs"]) == int8.output_layers
    assert props["endoedge.calibration_sha256"] == calib.content_hash
    # biases stay float initializers (TensorRT cannot dequantize int32)
    inits = {t.name: t for t in out.graph.initializer}
    biases = [n.input[2] for n in out.graph.node if n.op_type == "Conv" and len(n.input) > 2]
    assert biases
    assert all(inits[b].data_type == onnx.TensorProto.FLOAT for b in biases)
    feed = next(iter(calib))
    ref, got = _run(ssdlite[2], feed), _run(int8.path, feed)
    # An untrained demo model is fragile under INT8; the outputs must still follow FP32's.
    cos = [_cos(r, g) for r, g in zip(ref, got, strict=True)]
    assert all(np.isfinite(g).all() for g in got)
    assert min(cos) > 0.5, cos
    import endoedge

    with endoedge.load(int8.path) as det:  # the Detector API opens it like any endoedge ONNX
        assert det.spec.class_names == ssdlite[0].spec.class_names


def test_checker_rejects_onnxruntime_default_quantization(ssdlite, calib, tmp_path):
    """ORT's defaults (asymmetric uint8 activations, int32 biases, per-tensor weights) are what
    TensorRT refuses: the checker must name each."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    out = tmp_path / "default.onnx"
    quantize_static(str(ssdlite[2]), str(out), calib.as_ort_reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"])
    rep = check_qdq(out)
    text = "\n".join(rep.violations)
    assert not rep.ok
    assert "UINT8" in text
    assert "bias" in text
    assert "per tensor" in text
    assert "FAILS" in rep.summary()


def test_fp16_file_matches_fp32_in_onnxruntime(ssdlite, calib, tmp_path):
    import onnx
    import onnxruntime as ort

    from endoedge.calibration.quantize import convert_fp16

    res = convert_fp16(ssdlite[2], tmp_path / "m.fp16.onnx")
    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    assert all(t.type == "tensor(float)" for t in [*sess.get_inputs(), *sess.get_outputs()])
    model = onnx.load(str(res.path))
    assert sum(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer) > 50
    assert {p.key: p.value for p in model.metadata_props}["endoedge.precision"] == "fp16"
    for feed in calib:
        for r, g in zip(_run(ssdlite[2], feed), _run(res.path, feed), strict=True):
            scale = float(np.abs(r).max())
            assert float(np.abs(r - g).max()) < 0.02 * scale
            assert _cos(r, g) > 0.9999


@pytest.mark.ultralytics
def test_fp16_of_an_ultralytics_yolov8_runs_and_agrees(tmp_path, frames):
    """Ultralytics heads cast their Range anchor grid to float32 and some exports repeat
    value_info entries; the FP16 copy must still load in ONNX Runtime (it was refused before)
    and keep FP32's boxes at the threshold on real frames."""
    pytest.importorskip("ultralytics")
    import endoedge
    from endoedge.calibration.quantize import convert_fp16
    from endoedge.evaluation.agreement import agreement
    from endoedge.evaluation.metrics import Prediction
    from tests.postprocess.test_ultralytics import build_ultralytics_onnx

    fp32 = build_ultralytics_onnx("v8/yolov8.yaml", "yolov8n.yaml", tmp_path, frames, dynamic=True)
    fp16 = convert_fp16(fp32, tmp_path / "y.fp16.onnx").path
    preds = []
    for path in (fp32, fp16):
        with endoedge.load(path, score_threshold=0.001) as det:
            preds.append([Prediction(d.boxes.astype(np.float64), d.scores, d.class_ids)
                          for d in det.detect_batch(frames)])
    a = agreement(preds[0], preds[1], threshold=0.25)
    assert a.reference_boxes > 0
    assert a.box_agreement >= 0.9


def test_a_relative_model_path_is_pre_processed(ssdlite, calib, tmp_path, monkeypatch):
    """ONNX Runtime's pre-processing runs in a temporary folder; a model named relative to the
    caller's working directory must still reach it (it used to fail there and be skipped silently)."""
    import shutil

    import onnxruntime.quantization as q

    from endoedge.calibration.quantize import quantize_int8

    shutil.copy(ssdlite[2], tmp_path / "rel.onnx")
    monkeypatch.chdir(tmp_path)
    seen: list[bool] = []
    real = q.quant_pre_process

    def spy(src, *args, **kwargs):
        seen.append(Path(src).is_file())
        return real(src, *args, **kwargs)

    monkeypatch.setattr(q, "quant_pre_process", spy)
    quantize_int8("rel.onnx", "rel.int8.onnx", calib, method="minmax", bias_correction=False)
    assert seen == [True]
    assert (tmp_path / "rel.int8.onnx").is_file()
