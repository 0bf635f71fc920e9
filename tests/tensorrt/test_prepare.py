"""The build step before the TensorRT backend (``endoedge.tensorrt.prepare``), on FAKE TensorRT/CUDA.

The fakes are the ones of test_trt_build_logic / test_trt_runtime_logic (stand-ins that record
what endoedge does; they verify nothing about TensorRT itself).
"""

from __future__ import annotations

import logging

import pytest

from endoedge.errors import InputError
from endoedge.tensorrt.manifest import cache_key, cached_engine_path, read_manifest
from endoedge.tensorrt.prepare import (
    EngineRequest,
    model_for_backend,
    prepare_engine,
    split_options,
)
from tests.tensorrt.test_trt_build_logic import onnx_pair, use_fake  # noqa: F401 - fixtures


def test_split_options_between_build_step_and_backend(tmp_path):
    opts = {"precision": "fp16", "batch": (1, 2, 4), "cache_dir": tmp_path, "rebuild_if_stale": True,
            "cuda_graph": True, "cuda_bindings": "pycuda"}
    req, rest = split_options(opts)
    assert req == EngineRequest(precision="fp16", batch=(1, 2, 4), cache_dir=tmp_path, rebuild_if_stale=True)
    assert rest == {"cuda_graph": True, "cuda_bindings": "pycuda"}
    assert split_options({}) == (EngineRequest(), {})


def test_other_backends_get_model_and_options_unchanged(tmp_path):
    opts = {"intra_op_threads": 2}
    assert model_for_backend("onnxruntime", tmp_path / "m.onnx", "cpu", opts) == (tmp_path / "m.onnx", opts)


def test_onnx_is_built_once_into_the_cache(use_fake, onnx_pair, tmp_path, caplog):  # noqa: F811
    use_fake("10.3.0")
    cache = tmp_path / "cache"
    opts = {"precision": "fp16", "cache_dir": cache, "cuda_graph": True}
    with caplog.at_level(logging.INFO, logger="endoedge.tensorrt.prepare"):
        engine, rest = model_for_backend("tensorrt", onnx_pair[0], "cuda:0", opts)
        again, _ = model_for_backend("tensorrt", onnx_pair[0], "cuda", opts)
    assert rest == {"cuda_graph": True}  # the backend's options
    assert again == engine
    assert engine == cached_engine_path(cache, onnx_pair[0], "fp16", cache_key(read_manifest(engine)))
    assert [r.getMessage().rsplit(" ", 1)[-1] for r in caplog.records] == ["(built)", "(cached)"]
    assert sorted(p.name for p in cache.iterdir()) == [engine.name, engine.name + ".json"]


def test_default_cache_dir_from_the_environment(use_fake, onnx_pair, tmp_path, monkeypatch):  # noqa: F811
    use_fake("10.3.0")
    monkeypatch.setenv("ENDOEDGE_ENGINE_CACHE", str(tmp_path / "env-cache"))
    assert prepare_engine(onnx_pair[0]).parent == tmp_path / "env-cache"


def test_cpu_is_refused_before_building(onnx_pair):  # noqa: F811
    with pytest.raises(InputError, match="runs on an NVIDIA GPU"):
        prepare_engine(onnx_pair[0], device="cpu")


def test_other_files_pass_through_for_the_backend_to_refuse(tmp_path):
    ckpt = tmp_path / "m.pt"
    assert prepare_engine(ckpt, EngineRequest(rebuild_if_stale=True)) == ckpt
