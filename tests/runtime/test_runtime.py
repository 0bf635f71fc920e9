"""Backends: registry, lifecycle, provider choice, torch-vs-ORT agreement, Detector API contracts."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

pytest.importorskip("torch")

import endoedge  # noqa: E402
from endoedge.errors import (  # noqa: E402
    BackendUnavailableError,
    EndoedgeError,
    InputError,
    ModelFormatError,
    UnknownNameError,
)
from endoedge.export import export_onnx  # noqa: E402
from endoedge.export.onnx_export import INPUT_NAME  # noqa: E402
from endoedge.models.checkpoint import load_checkpoint, load_for_torch, save_checkpoint  # noqa: E402
from endoedge.preprocess import real_looking_batch
from endoedge.runtime import (  # noqa: E402
    available_backends,
    backend_names,
    check_available,
    get_backend_class,
)
from endoedge.runtime.ort import OnnxRuntimeBackend, providers_for  # noqa: E402
from endoedge.runtime.pytorch import TorchBackend  # noqa: E402

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TRT = "TensorrtExecutionProvider"


@pytest.fixture(scope="module")
def batch(ssdlite):
    """Two bundled colonoscopy frames, pre-processed for the SSDLite demo model."""
    return real_looking_batch(ssdlite[0].spec, 2)


# -- registry -------------------------------------------------------------------------------
def test_registry_knows_both_backends():
    assert {"onnxruntime", "torch"} <= set(backend_names())
    assert {"onnxruntime", "torch"} <= set(available_backends())
    assert get_backend_class("onnxruntime") is OnnxRuntimeBackend
    assert check_available("torch") is TorchBackend


@pytest.mark.parametrize("lookup", [get_backend_class, check_available])
def test_unknown_backend_lists_known_ones(lookup):
    with pytest.raises(UnknownNameError) as info:
        lookup("openvino")
    msg = str(info.value)
    assert "openvino" in msg
    for name in ("onnxruntime", "torch"):
        assert name in msg


def test_load_with_unknown_backend_lists_known_ones(ssdlite):
    with pytest.raises(UnknownNameError, match="onnxruntime.*torch"):
        endoedge.load(ssdlite[2], backend="tflite")


# -- lifecycle ------------------------------------------------------------------------------
def test_infer_before_activate_raises(ssdlite, batch):
    backend = OnnxRuntimeBackend(ssdlite[2], device="cpu")
    assert not backend.is_active
    with pytest.raises(EndoedgeError, match="not active"):
        backend.infer({INPUT_NAME: batch})


def test_double_activate_only_warns(ssdlite, batch, caplog):
    backend = OnnxRuntimeBackend(ssdlite[2], device="cpu")
    backend.activate()
    try:
        first = backend.infer({INPUT_NAME: batch})
        with caplog.at_level(logging.WARNING, logger="endoedge.runtime.base"):
            backend.activate()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "ignored" in warnings[0].getMessage()
        assert backend.is_active
        second = backend.infer({INPUT_NAME: batch})  # the session still works
        for name in backend.output_names:
            np.testing.assert_array_equal(first[name], second[name])
    finally:
        backend.deactivate()
    backend.deactivate()  # deactivating an inactive backend is harmless


@pytest.mark.parametrize("cls", [OnnxRuntimeBackend, TorchBackend])
def test_context_manager_activates_and_deactivates(cls, ssdlite, batch):
    extra = {"loaded": ssdlite[0]} if cls is TorchBackend else {}
    backend = cls(ssdlite[2], device="cpu", **extra)
    with backend as active:
        assert active is backend
        assert backend.is_active
        assert backend.input_name == INPUT_NAME
        assert backend.output_names == ssdlite[0].arch.output_names
        out = backend.infer({INPUT_NAME: batch})
        assert set(out) == set(backend.output_names)
        with pytest.raises(InputError, match=INPUT_NAME):
            backend.infer({"input": batch})
    assert not backend.is_active
    with pytest.raises(EndoedgeError, match="not active"):
        backend.infer({INPUT_NAME: batch})


def test_context_manager_deactivates_on_error(ssdlite):
    backend = OnnxRuntimeBackend(ssdlite[2], device="cpu")
    with pytest.raises(RuntimeError, match="boom"), backend:
        raise RuntimeError("boom")
    assert not backend.is_active


def test_ort_cuda_unavailable_names_the_gpu_extra(ssdlite):
    import onnxruntime as ort

    if CUDA in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has the CUDA provider")
    backend = OnnxRuntimeBackend(ssdlite[2], device="cuda")
    with pytest.raises(BackendUnavailableError, match=r"endoedge\[gpu\]"):
        backend.activate()
    assert not backend.is_active


def test_ort_missing_model_file(tmp_path):
    with pytest.raises(ModelFormatError, match="does not exist"):
        OnnxRuntimeBackend(tmp_path / "gone.onnx", device="cpu").activate()


# -- providers_for --------------------------------------------------------------------------
def test_providers_auto_picks_cuda_when_listed():
    assert providers_for("auto", [TRT, CUDA, CPU]) == [(CUDA, {"device_id": 0}), CPU]
    assert providers_for("auto", [CPU]) == [CPU]


def test_providers_cpu_ignores_gpu_providers():
    assert providers_for("cpu", [TRT, CUDA, CPU]) == [CPU]


def test_providers_cuda_index():
    assert providers_for("cuda", [CUDA, CPU]) == [(CUDA, {"device_id": 0}), CPU]
    assert providers_for("cuda:2", [CUDA, CPU]) == [(CUDA, {"device_id": 2}), CPU]


def test_providers_tensorrt_with_device_index():
    assert providers_for("tensorrt:1", [TRT, CUDA, CPU]) == [
        (TRT, {"device_id": 1}),
        (CUDA, {"device_id": 1}),
        CPU,
    ]


def test_providers_tensorrt_without_trt_provider_names_what_is_missing():
    with pytest.raises(BackendUnavailableError, match=rf"needs {TRT}, but") as info:
        providers_for("tensorrt", [CUDA, CPU])
    assert "endoedge[gpu]" in str(info.value)


@pytest.mark.parametrize("device", ["tpu", "opencl", "cuda:first", "metal:0"])
def test_providers_unknown_device_raises(device):
    with pytest.raises(BackendUnavailableError, match=device):
        providers_for(device, [CUDA, CPU])


# -- torch backend --------------------------------------------------------------------------
def test_torch_backend_without_a_loaded_model_says_how(ssdlite):
    with pytest.raises(ModelFormatError, match="runs a loaded model"):
        TorchBackend(ssdlite[2], device="cpu").activate()


def test_torch_backend_from_onnx_finds_source_checkpoint(ssdlite, batch):
    loaded, ckpt, onnx_path = ssdlite
    with OnnxRuntimeBackend(onnx_path, device="cpu") as ort_b, TorchBackend(
        onnx_path, device="cpu", loaded=load_for_torch(onnx_path)
    ) as torch_b:
        assert torch_b.output_names == ort_b.output_names
        got = ort_b.infer({INPUT_NAME: batch})
        ref = torch_b.infer({INPUT_NAME: batch})
    assert loaded.spec.source_checkpoint == str(ckpt.resolve())
    for name in ref:
        assert got[name].shape == ref[name].shape
        assert got[name].shape[0] == batch.shape[0]
        np.testing.assert_allclose(got[name], ref[name], atol=1e-3, rtol=1e-3)


@pytest.fixture
def private_export(ssdlite, tmp_path):
    """A copy of the SSDLite checkpoint in tmp_path and an ONNX exported from that copy."""
    ckpt = shutil.copy(ssdlite[1], tmp_path / "private.pt")
    loaded = load_checkpoint(ckpt)
    onnx_path = export_onnx(loaded, tmp_path / "private.onnx", simplify=False).path
    return loaded, tmp_path / "private.pt", onnx_path


@pytest.mark.parametrize("how", ["deleted", "moved"])
def test_torch_backend_missing_source_checkpoint(private_export, how):
    _, ckpt, onnx_path = private_export
    if how == "deleted":
        ckpt.unlink()
    else:
        ckpt.rename(ckpt.with_name("elsewhere.pt"))
    with pytest.raises(ModelFormatError, match="no longer exists"):
        load_for_torch(onnx_path)
    with pytest.raises(ModelFormatError, match="no longer exists"):
        endoedge.load(onnx_path, backend="torch", device="cpu")


def test_torch_backend_changed_source_checkpoint(private_export):
    loaded, ckpt, onnx_path = private_export
    save_checkpoint(ckpt, loaded, notes="fine-tuned after the export")
    with pytest.raises(ModelFormatError, match="sha256"):
        load_for_torch(onnx_path)


def test_torch_backend_onnx_without_source_checkpoint(private_export, tmp_path):
    import onnx

    _, _, onnx_path = private_export
    model = onnx.load(str(onnx_path))
    for prop in model.metadata_props:
        if prop.key in ("endoedge.source_checkpoint", "endoedge.source_sha256"):
            prop.value = ""
    anonymous = tmp_path / "anonymous.onnx"
    onnx.save(model, str(anonymous))
    with pytest.raises(ModelFormatError, match="no source checkpoint"):
        load_for_torch(anonymous)
    with endoedge.load(anonymous, device="cpu") as det:  # ONNX Runtime does not need it
        assert det.backend.name == "onnxruntime"


def test_load_torch_from_checkpoint_and_from_onnx_agree(ssdlite, frames):
    loaded, ckpt, onnx_path = ssdlite
    score = loaded.spec.score_threshold / 2  # more boxes make the comparison stricter
    with endoedge.load(ckpt, backend="torch", device="cpu", score_threshold=score) as a, \
            endoedge.load(onnx_path, backend="torch", device="cpu", score_threshold=score) as b:
        assert a.backend.name == b.backend.name == "torch"
        assert a.class_names == b.class_names == loaded.spec.class_names
        total = 0
        for image in frames:
            da, db = a.detect(image), b.detect(image)
            total += len(da)
            np.testing.assert_array_equal(da.boxes, db.boxes)
            np.testing.assert_array_equal(da.scores, db.scores)
            np.testing.assert_array_equal(da.class_ids, db.class_ids)
            assert da.labels == db.labels
    assert total > 0


def test_auto_backend_follows_the_file_type(ssdlite):
    _, ckpt, onnx_path = ssdlite
    with endoedge.load(ckpt, device="cpu") as det:
        assert det.backend.name == "torch"
    with endoedge.load(onnx_path, device="cpu") as det:
        assert det.backend.name == "onnxruntime"
        assert "onnxruntime" in repr(det)


# -- Detector -------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["onnx", "checkpoint"])
def test_detect_batch_equals_single_calls(ssdlite, frames, which):
    loaded, ckpt, onnx_path = ssdlite
    path = onnx_path if which == "onnx" else ckpt
    images = frames[:3]
    assert len({im.shape for im in images}) == 3
    score = loaded.spec.score_threshold / 2
    with endoedge.load(path, device="cpu", score_threshold=score) as det:
        assert det.backend.max_batch is None  # dynamic batch axis
        singles = [det.detect(im) for im in images]
        batched = det.detect_batch(images)
        assert det.detect_batch([]) == []
    assert len(batched) == len(images)
    assert sum(len(d) for d in singles) > 0
    for one, many, image in zip(singles, batched, images, strict=True):
        assert len(one) == len(many)
        np.testing.assert_array_equal(one.class_ids, many.class_ids)
        np.testing.assert_allclose(one.scores, many.scores, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(one.boxes, many.boxes, rtol=1e-4, atol=1e-2)
        h, w = image.shape[:2]
        assert np.all(many.boxes[:, 0::2] <= w)
        assert np.all(many.boxes[:, 1::2] <= h)


def test_timings_are_positive_after_a_call(ssdlite, frames):
    with endoedge.load(ssdlite[2], device="cpu") as det:
        assert det.timings.total == 0.0
        det.detect(frames[0])
        t = det.timings
    assert t.preprocess > 0
    assert t.infer > 0
    assert t.postprocess > 0
    assert t.total == pytest.approx(t.preprocess + t.infer + t.postprocess)


@pytest.mark.parametrize(
    "thresholds",
    [
        {"score_threshold": 1.5},
        {"score_threshold": -0.1},
        {"iou_threshold": 1.01},
        {"iou_threshold": -1.0},
        {"max_detections": 0},
    ],
)
def test_thresholds_out_of_range_raise(ssdlite, thresholds):
    name = next(iter(thresholds))
    with pytest.raises(InputError, match=name):
        endoedge.load(ssdlite[2], device="cpu", **thresholds)
    with pytest.raises(InputError, match=name):
        ssdlite[0].spec.with_thresholds(**thresholds)


def test_thresholds_change_the_results(ssdlite, frames):
    loaded, _, onnx_path = ssdlite
    default = loaded.spec.score_threshold
    with endoedge.load(onnx_path, device="cpu", score_threshold=default / 2) as low, \
            endoedge.load(onnx_path, device="cpu", max_detections=1) as one:
        many = low.detect(frames[0])
        assert many.scores.min() >= default / 2
        assert len(one.detect(frames[0])) <= 1


def test_ort_thread_options_give_the_same_outputs(ssdlite, batch):
    """intra_op_threads=1 and spin=False change scheduling, never results."""
    with OnnxRuntimeBackend(ssdlite[2], device="cpu") as ref:
        want = ref.infer({INPUT_NAME: batch})
    with OnnxRuntimeBackend(ssdlite[2], device="cpu", intra_op_threads=1, spin=False) as backend:
        got = backend.infer({INPUT_NAME: batch})
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-5)
