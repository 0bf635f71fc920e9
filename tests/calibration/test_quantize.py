"""INT8 Q/DQ and FP16 ONNX: TensorRT's Q/DQ rules on the files the quantizer writes, ONNX Runtime
validation against FP32, the accuracy gate (a black-frame calibration must fail it), the
sensitivity search, and the shipped polyp detector's INT8 passing the gate on Kvasir-SEG."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from endoedge.calibration.qdq_check import check_qdq
from endoedge.cli import main

pytest.importorskip("pycocotools")

REPO = Path(__file__).resolve().parents[2]
KVASIR = REPO.parent / "shared" / "data" / "kvasir-seg"


def _run(model, feed):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model) if not hasattr(model, "SerializeToString")
                                else model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


def _cos(a, b) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


@pytest.fixture(scope="module")
def sets(tmp_path_factory, ssdlite, sample_paths):
    """A pseudo-labelled COCO set (the FP32 model's top-3 boxes per frame as ground truth, so
    FP32 scores well), mirrored frames for calibration (disjoint from it), and black frames."""
    import endoedge
    from endoedge.data.imageio import read_image

    root = tmp_path_factory.mktemp("qsets")
    for d in ("data", "calib", "black"):
        (root / d).mkdir()
    images, anns = [], []
    with endoedge.load(ssdlite[2]) as det:
        names = det.spec.class_names
        for i, p in enumerate(sample_paths):
            img = cv2.resize(read_image(p), (480, 270), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(root / "data" / f"f{i}.png"), img)
            cv2.imwrite(str(root / "calib" / f"c{i}.png"), np.ascontiguousarray(img[:, ::-1]))
            cv2.imwrite(str(root / "black" / f"b{i}.png"), np.zeros_like(img))
            r = det.detect(img)
            images.append({"id": i + 1, "file_name": f"f{i}.png", "height": 270, "width": 480})
            for b, c in zip(r.boxes[:3].tolist(), r.class_ids[:3].tolist(), strict=True):
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": c + 1, "iscrowd": 0,
                             "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])})
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(names)]
    (root / "data" / "ann.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


@pytest.fixture(scope="module")
def calib(ssdlite, sets):
    from endoedge.calibration import load_calibration_data

    return load_calibration_data(sets / "calib", ssdlite[0].spec, num_images=8, batch_size=2)


@pytest.fixture(scope="module")
def int8(ssdlite, calib, tmp_path_factory):
    from endoedge.calibration.quantize import quantize_int8

    out = tmp_path_factory.mktemp("int8") / "model.int8.onnx"
    return quantize_int8(ssdlite[2], out, calib, method="minmax")


def test_int8_file_passes_trt_qdq_rules_keeps_metadata_and_runs(ssdlite, int8, calib):
    import onnx

    rep = check_qdq(int8.path)
    assert rep.ok, rep.violations
    src = onnx.load(str(ssdlite[2]))
    n_conv = sum(n.op_type == "Conv" for n in src.graph.node)
    assert len(rep.quantized_convs) == n_conv == rep.n_per_channel_weights
    assert not rep.float_convs
    out = onnx.load(str(int8.path))
    props = {p.key: p.value for p in out.metadata_props}
    for p in src.metadata_props:  # the ModelSpec travels unchanged
        assert props[p.key] == p.value
    assert props["endoedge.precision"] == "int8"
    assert props["endoedge.quant_method"] == "minmax"
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


def test_bypassing_every_quantized_node_gives_fp32_back(ssdlite, int8, calib):
    import onnx

    from endoedge.calibration.sensitivity import bypass_nodes, quantized_nodes

    q = onnx.load(str(int8.path))
    nodes = quantized_nodes(q)
    assert len(nodes) > 50
    back = bypass_nodes(q, {n for n, _ in nodes})
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in back.graph.node)
    feed = next(iter(calib))
    for r, g in zip(_run(ssdlite[2], feed), _run(back, feed), strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)


def test_rank_layers_and_greedy_fallback(ssdlite, int8, calib):
    import onnx

    from endoedge.calibration.sensitivity import greedy_fallback, quantized_nodes, rank_layers

    names = [n for n, _ in quantized_nodes(onnx.load(str(int8.path)))][:4]
    ranking = rank_layers(ssdlite[2], int8.path, calib, n_batches=2, nodes=names)
    assert {x["node"] for x in ranking["layers"]} == set(names)
    gains = [x["gain"] for x in ranking["layers"]]
    assert gains == sorted(gains, reverse=True)
    assert ranking["full_int8_error"] > 0
    # Logic of the greedy loop with a labelled fake gate (passes once 2 layers are float).
    fake = {"layers": [{"node": n, "gain": 1.0 / (i + 1)} for i, n in enumerate("abcd")]}
    seen = []

    def quantize(nodes):
        seen.append(list(nodes))
        return Path("x.onnx")

    result = greedy_fallback(fake, quantize, lambda p: {"passed": len(seen[-1]) >= 2, "drop_points": 3.0 - len(seen[-1])},
                             max_layers=3)
    assert result["passed"]
    assert result["float_nodes"] == ["a", "b"]
    assert len(result["steps"]) == 2


def test_gate_catches_black_frame_calibration(ssdlite, int8, sets, tmp_path, capsys):
    data = str(sets / "data" / "ann.json")
    assert main(["eval", "--compare", str(ssdlite[2]), str(ssdlite[2]), data]) == 0
    assert "PASS" in capsys.readouterr().out
    good_json = tmp_path / "good.json"
    rc = main(["eval", "--compare", str(ssdlite[2]), str(int8.path), data, "--max-drop", "100",
               "--json", str(good_json)])
    assert rc == 0
    good = json.loads(good_json.read_text())
    bad_path = tmp_path / "black.int8.onnx"
    rc = main(["quantize", str(ssdlite[2]), "-o", str(bad_path), "--calib", str(sets / "black"),
               "--eval", data, "--max-fallback", "0", "--json", str(tmp_path / "bad.json")])
    captured = capsys.readouterr()
    assert rc == 1
    assert "gate FAILED" in captured.err
    assert bad_path.is_file()
    bad = json.loads((tmp_path / "bad.json").read_text())
    assert bad["gate"]["passed"] is False
    assert bad["gate"]["drop_points"] > good["gate"]["drop_points"] + 20
    assert bad["gate"]["candidate"]["map50"] < 0.2 < good["gate"]["candidate"]["map50"]
    assert set(good["raw_heads"]["outputs"]) == {"bbox_regression", "cls_logits"}
    rc = main(["eval", "--compare", str(ssdlite[2]), str(bad_path), data])
    assert rc == 1
    assert "gate FAILED" in capsys.readouterr().err


def test_quantize_cli_errors(ssdlite, sets, tmp_path, capsys):
    out = str(tmp_path / "o.onnx")
    assert main(["quantize", str(ssdlite[2]), "-o", out]) == 1
    assert "--calib" in capsys.readouterr().err
    rc = main(["quantize", str(ssdlite[2]), "-o", out, "--calib", str(sets / "data"),
               "--eval", str(sets / "data" / "ann.json")])
    assert rc == 1
    assert "also evaluation images" in capsys.readouterr().err
    assert main(["quantize", str(ssdlite[2]), "-o", out, "--calib", str(tmp_path / "nowhere")]) == 1
    assert "likely causes" in capsys.readouterr().err
    assert main(["eval", str(ssdlite[2]), str(ssdlite[2]), str(sets / "data" / "ann.json")]) == 1
    assert "--compare" in capsys.readouterr().err


@pytest.mark.shared_data
@pytest.mark.slow
def test_shipped_polyp_detector_int8_passes_gate_on_kvasir_val(tmp_path):
    """Calibrated on the train split only; gate on the 120-image val split (target: <= 1 point)."""
    from endoedge.models.pretrained import shipped_checkpoint

    fp32 = tmp_path / "polyp.onnx"
    assert main(["export", str(shipped_checkpoint()), "-o", str(fp32), "--no-check"]) == 0
    out, report = tmp_path / "polyp.int8.onnx", tmp_path / "polyp.json"
    rc = main(["quantize", str(fp32), "-o", str(out), "--calib", str(KVASIR),
               "--calib-split", str(REPO / "data/splits/kvasir_seg_train.txt"), "--eval", str(KVASIR),
               "--split", str(REPO / "data/splits/kvasir_seg_val.txt"), "--json", str(report)])
    rep = json.loads(report.read_text())
    assert rc == 0, rep["gate"]
    assert rep["gate"]["passed"]
    assert rep["gate"]["drop_points"] <= 1.0
    assert rep["gate"]["reference"]["map50"] > 0.9
    assert check_qdq(out).ok
