"""``endoedge.load(..., backend="tensorrt")``: the build step runs in load(), the backend gets an engine.

TensorRT is not installed here, so the backend class is replaced by a recorder that stops the
load once it is constructed, and the builder by a recorder (or the FAKE TensorRT/CUDA of
tests/tensorrt). Nothing about TensorRT itself is verified.
"""

from __future__ import annotations

import types

import pytest

import endoedge
from endoedge.errors import StaleEngineError
from endoedge.spec import spec_for_foreign_yolo
from endoedge.tensorrt.gpu_info import GpuInfo
from endoedge.tensorrt.manifest import MachineInfo, default_cache_dir
from endoedge.tensorrt.plan import BuildRequest
from tests.tensorrt.test_trt_manifest import tiny_onnx
from tests.tensorrt.test_trt_runtime_logic import fake_engine  # noqa: F401 - fixture

SPEC = spec_for_foreign_yolo("yolov8", ("polyp",), (32, 32))


class Constructed(Exception):
    """Raised by the recorder backend: what load() constructed it with."""


class Recorder:
    def __init__(self, model_path, *, device="auto", **options):
        raise Constructed(model_path, device, options)


@pytest.fixture
def recorded(monkeypatch):
    monkeypatch.setattr("endoedge.detector.check_available", lambda name: Recorder)
    monkeypatch.setattr("endoedge.classifier.check_available", lambda name: Recorder)
    builds = []

    def build_engine(onnx, engine, req, *, cache_dir=None, device=0, cuda_bindings="auto", **kw):
        builds.append((onnx, engine, req, cache_dir, device, cuda_bindings))
        return types.SimpleNamespace(engine_path=cache_dir / "tiny.fp16.0123456789abcdef.engine", reused=False)

    monkeypatch.setattr("endoedge.tensorrt.build.build_engine", build_engine)
    return builds


def test_onnx_is_built_by_load_and_the_backend_gets_the_engine(recorded, tmp_path):
    onnx = tiny_onnx(tmp_path / "tiny.onnx", meta=SPEC.to_metadata())
    with pytest.raises(Constructed) as info:
        endoedge.load(onnx, backend="tensorrt", device="cuda:1", precision="fp16", batch=(1, 2, 4),
                      cache_dir=tmp_path / "c", cuda_graph=True, cuda_bindings="pycuda")
    path, device, options = info.value.args
    assert recorded == [(onnx, None, BuildRequest(precision="fp16", batch=(1, 2, 4)), tmp_path / "c", 1, "pycuda")]
    assert path == tmp_path / "c" / "tiny.fp16.0123456789abcdef.engine"
    assert (device, options) == ("cuda:1", {"cuda_graph": True, "cuda_bindings": "pycuda"})


def test_default_cache_dir(recorded, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("ENDOEDGE_ENGINE_CACHE", raising=False)
    onnx = tiny_onnx(tmp_path / "tiny.onnx", meta=SPEC.to_metadata())
    with pytest.raises(Constructed):
        endoedge.load(onnx, backend="tensorrt")
    assert recorded[0][3] == default_cache_dir() == tmp_path / "xdg" / "endoedge" / "engines"


def test_classifier_onnx_goes_through_the_same_step(recorded, tmp_path):
    from endoedge.spec import ModelSpec

    meta = {**SPEC.to_metadata(), "endoedge.decoder": "classify"}
    onnx = tiny_onnx(tmp_path / "cls.onnx", meta=ModelSpec.from_metadata(meta).to_metadata())
    with pytest.raises(Constructed) as info:
        endoedge.load_classifier(onnx, backend="tensorrt", precision="fp16", cache_dir=tmp_path / "c")
    assert info.value.args[0].suffix == ".engine"
    assert info.value.args[2] == {}


def test_stale_engine_is_rebuilt_by_load_not_by_the_backend(fake_engine, monkeypatch):  # noqa: F811
    monkeypatch.setattr("endoedge.detector.check_available", lambda name: Recorder)
    other = MachineInfo("10.3.0.31", GpuInfo("Fake GPU", "8.7", 16))
    monkeypatch.setattr("endoedge.tensorrt.manifest.machine_info", lambda v, gpu, root=None: other)
    with pytest.raises(StaleEngineError, match="cannot rebuild .* its ONNX .* is not on this machine"):
        endoedge.load(fake_engine, spec=SPEC, rebuild_if_stale=True)
    with pytest.raises(Constructed) as info:  # without the flag the backend gets it (and refuses it when active)
        endoedge.load(fake_engine, spec=SPEC)
    assert info.value.args[0] == fake_engine
    assert info.value.args[2] == {}
