"""Export: ONNX validity, metadata, dynamic batch, parity check and its failure."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

pytest.importorskip("torch")

from endoedge.errors import ExportError, ParityError  # noqa: E402
from endoedge.export import check_parity, export_onnx  # noqa: E402
from endoedge.preprocess import real_looking_batch  # noqa: E402
from endoedge.spec import ModelSpec, read_onnx_metadata  # noqa: E402


def test_exported_onnx_is_valid_and_self_describing(ssdlite):
    loaded, ckpt, onnx_path = ssdlite
    model = onnx.load(str(onnx_path))
    onnx.checker.check_model(model, full_check=True)
    opset = {o.domain: o.version for o in model.opset_import}[""]
    assert opset >= 17
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["bbox_regression", "cls_logits"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    ops = {n.op_type for n in model.graph.node}
    assert "NonMaxSuppression" not in ops  # NMS stays outside the graph
    meta = read_onnx_metadata(onnx_path)
    for key in ("arch", "class_names", "input_size", "mean", "std", "color_order", "resize",
                "decoder", "decoder_params", "version", "source_sha256"):
        assert f"endoedge.{key}" in meta
    spec = ModelSpec.from_metadata(meta)
    assert spec.class_names == ("normal", "unclear", "tumor")
    assert spec.source_sha256 == loaded.sha256
    np.testing.assert_array_equal(spec.decoder_params["priors"], loaded.spec.decoder_params["priors"])


def test_parity_report_and_dynamic_batch(ssdlite):
    loaded, _, onnx_path = ssdlite
    report = check_parity(onnx_path, loaded, batch_sizes=(1, 2, 4))
    assert report.ok
    assert report.batch_sizes == (1, 2, 4)
    assert all(o.max_abs < 1e-3 for o in report.outputs)
    assert len(report.lines()) == 2


def test_parity_catches_a_broken_export(ssdlite, tmp_path):
    loaded, _, onnx_path = ssdlite
    model = onnx.load(str(onnx_path))
    # Perturb the largest weight tensor as a broken conversion would.
    init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    arr = onnx.numpy_helper.to_array(init).copy()
    arr *= 1.5
    init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    with pytest.raises(ParityError, match="disagree"):
        check_parity(bad, loaded)


def test_static_batch_export_and_opset_guard(ssdlite, tmp_path):
    loaded, _, _ = ssdlite
    res = export_onnx(loaded, tmp_path / "static.onnx", dynamic_batch=False, simplify=False, opset=18)
    dim0 = onnx.load(str(res.path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_value == 1
    assert check_parity(res.path, loaded).batch_sizes == (1,)
    with pytest.raises(ExportError, match="opset 13"):
        export_onnx(loaded, tmp_path / "old.onnx", opset=13)


def test_real_looking_batch_is_not_blank(ssdlite):
    batch = real_looking_batch(ssdlite[0].spec, 2)
    assert batch.shape == (2, 3, 320, 320)
    assert batch.std() > 0.2
    assert not np.array_equal(batch[0], batch[1])


def test_fixed_batch_model_runs_in_chunks(ssdlite, frames, tmp_path):
    import endoedge

    loaded, _, onnx_path = ssdlite
    static = export_onnx(loaded, tmp_path / "b1.onnx", dynamic_batch=False).path
    with endoedge.load(static, device="cpu") as fixed, endoedge.load(onnx_path, device="cpu") as dyn:
        assert fixed.backend.max_batch == 1
        assert dyn.backend.max_batch is None
        for a, b in zip(fixed.detect_batch(frames), dyn.detect_batch(frames), strict=True):
            np.testing.assert_array_equal(a.class_ids, b.class_ids)
            np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)
            np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)


def test_efficientnet_ssd_exports_with_parity(effssd):
    loaded, _, onnx_path = effssd
    model = onnx.load(str(onnx_path))
    onnx.checker.check_model(model, full_check=True)
    assert [o.name for o in model.graph.output] == ["bbox_regression", "cls_logits"]
    spec = ModelSpec.from_metadata(read_onnx_metadata(onnx_path))
    assert spec.arch == "ssdlite320_efficientnet_lite0"
    assert spec.preprocess.input_size == (320, 320)
    assert spec.decoder_params["priors"].shape == (3234, 4)
    assert check_parity(onnx_path, loaded, batch_sizes=(1, 2)).ok
