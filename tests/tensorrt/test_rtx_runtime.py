"""The ``tensorrt-rtx`` backend: what runs without a GPU (registry, manifest checks, the one-line
refusal on a CPU), over REAL engines built here by TensorRT for RTX; the GPU run is marked ``gpu``
and skipped here with the reason (``benchmarks/gpu_check.sh`` is the prepared GPU check).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import endoedge
from endoedge.cli import main
from endoedge.errors import BackendUnavailableError, EndoedgeError, ModelFormatError
from endoedge.runtime import auto_backend, backend_names, get_backend_class
from endoedge.spec import spec_for_foreign_yolo
from endoedge.tensorrt.gpu_info import GpuInfo
from endoedge.tensorrt.manifest import (
    MachineInfo,
    read_manifest,
    stale_field,
    verify_manifest,
    write_manifest,
)
from tests.tensorrt.test_trt_manifest import _manifest, tiny_onnx

META = spec_for_foreign_yolo("yolov8", ("polyp",), (32, 32)).to_metadata()


@pytest.fixture(scope="module")
def rtx_engine(tmp_path_factory):
    """A real TensorRT for RTX engine (tiny Conv, targets 8.6 and 8.9) and its manifest."""
    pytest.importorskip("tensorrt_rtx_bindings", reason="needs TensorRT for RTX (tensorrt-rtx-cu12-* wheels)")
    from endoedge.tensorrt.build import build_engine
    from endoedge.tensorrt.plan import BuildRequest

    d = tmp_path_factory.mktemp("rtx_rt")
    src = tiny_onnx(d / "tiny.onnx", meta=META)
    req = BuildRequest(runtime="rtx", compute_capabilities=("8.6", "8.9"))
    return build_engine(src, d / "tiny.engine", req).engine_path


def test_registered_by_name():
    assert "tensorrt-rtx" in backend_names()
    cls = get_backend_class("tensorrt-rtx")
    assert (cls.name, cls.extra, cls.requires, cls.flavour) == ("tensorrt-rtx", "trt-rtx", ("tensorrt_rtx_bindings",),
                                                                 "rtx")
    be = cls("x.engine", device="cuda:0")  # constructing touches nothing
    assert not be.is_active
    assert be.last_gpu_timings() is None


@pytest.mark.trt_rtx
def test_auto_backend_reads_the_manifest_flavour(rtx_engine, tmp_path):
    assert auto_backend(rtx_engine) == "tensorrt-rtx"
    full = tmp_path / "full.engine"
    full.write_bytes(b"plan")
    write_manifest(full, _manifest())
    assert auto_backend(full) == "tensorrt"
    assert auto_backend(tmp_path / "no_manifest.engine") == "tensorrt"


@pytest.mark.trt_rtx
def test_without_a_gpu_activation_is_one_clear_error(rtx_engine):
    import importlib

    from endoedge.tensorrt.cuda_mem import open_cuda

    try:
        open_cuda(0, "auto").close()
    except EndoedgeError:
        pass
    else:
        pytest.skip("a CUDA device is usable here")
    be = get_backend_class("tensorrt-rtx")(rtx_engine)
    with pytest.raises(BackendUnavailableError) as info:
        be.activate()
    msg = str(info.value)
    assert "\n" not in msg
    assert "CUDA" in msg
    assert not be.is_active
    # and the CLI: `endoedge detect` on the engine (auto backend) ends in that one line
    rc = main(["detect", str(endoedge.__path__[0] + "/assets/holohub/0001.jpg"), "--model", str(rtx_engine),
               "-o", str(rtx_engine.parent / "out")])
    assert rc == 1
    importlib.import_module("tensorrt_rtx_bindings")  # the module itself imports fine on a CPU


def test_full_tensorrt_engine_is_refused_before_cuda(tmp_path):
    engine = tmp_path / "a100.engine"
    engine.write_bytes(b"plan")
    write_manifest(engine, _manifest())
    with pytest.raises(ModelFormatError, match=r"built by full TensorRT .*backend='tensorrt'"):
        get_backend_class("tensorrt-rtx")(engine).activate()


# -- the manifest against a GPU (pure: stale_field / verify_manifest) ---------------------------
@pytest.mark.trt_rtx
@pytest.mark.parametrize(("cc", "fits"), [("8.6", True), ("8.9", True), ("12.0", False), ("8.7", False),
                                          ("7.5", False)])
def test_targets_must_contain_the_gpu(rtx_engine, cc, fits):
    m = read_manifest(rtx_engine)
    here = MachineInfo(m.trt_version, GpuInfo("Some GPU", cc, 40), flavour="rtx")
    found = stale_field(m, here)
    assert (found is None) == fits
    if not fits:
        assert found[0] == "compute_capabilities"
        with pytest.raises(EndoedgeError, match=r"compute_capabilities is '8.6,8.9' in the engine.*--runtime rtx "
                                                r"--compute-capability 8.6,8.9"):
            verify_manifest(m, here, engine_path=rtx_engine)


@pytest.mark.trt_rtx
def test_version_flavour_and_default_targets(rtx_engine):
    m = read_manifest(rtx_engine)
    gpu = GpuInfo("NVIDIA L4", "8.9", 58)
    assert stale_field(m, MachineInfo("1.8.0.1", gpu, flavour="rtx"))[0] == "trt_version"
    assert stale_field(m, MachineInfo("10.3.0", gpu))[0] == "flavour"
    default = dataclasses.replace(m, compute_capabilities=())  # the Ampere+ default engine
    assert stale_field(default, MachineInfo(m.trt_version, gpu, flavour="rtx")) is None
    turing = GpuInfo("Tesla T4", "7.5", 40)
    assert stale_field(default, MachineInfo(m.trt_version, turing, flavour="rtx"))[0] == "compute_capabilities"
    aot = MachineInfo(m.trt_version, GpuInfo("none (ahead-of-time build)", "", 0), flavour="rtx")
    assert stale_field(m, aot) is None  # a build machine without a GPU does not check targets


@pytest.mark.gpu
@pytest.mark.trt_rtx
def test_runs_on_a_gpu_like_onnxruntime(rtx_engine):
    """On a GPU among the targets: the engine's output equals ONNX Runtime's on the same input."""
    import onnxruntime as ort

    src = read_manifest(rtx_engine).onnx_path
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    ref = ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    with get_backend_class("tensorrt-rtx")(rtx_engine) as be:
        got = be.infer({"images": x})
    np.testing.assert_allclose(next(iter(got.values())), ref, rtol=1e-3, atol=1e-3)
