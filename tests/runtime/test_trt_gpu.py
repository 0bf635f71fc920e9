"""Real TensorRT: build engines from the exported demo SSDLite and compare them with ONNX Runtime.

All ``@pytest.mark.trt``: skipped (with the reason) where TensorRT or an NVIDIA GPU is missing,
which is every development and CI machine of this project so far. Never run here.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.trt


def _batch(ssdlite, n):
    from endoedge.benchmarks.bench import make_feeds, sample_frames

    spec = ssdlite[0].spec
    return make_feeds("images", spec.preprocess, np.dtype(np.float32), n, sample_frames())[0]["images"]


def _ort(onnx_path, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"images": x}), strict=True))


@pytest.mark.parametrize(("precision", "atol", "rtol"), [("fp32", 1e-3, 1e-3), ("fp16", 5e-2, 5e-2)])
def test_engine_matches_onnxruntime(ssdlite, tmp_path, precision, atol, rtol):
    from endoedge.runtime.tensorrt import TensorRTBackend
    from endoedge.tensorrt.build import build_engine
    from endoedge.tensorrt.manifest import read_manifest
    from endoedge.tensorrt.plan import BuildRequest

    onnx_path = ssdlite[2]
    engine = tmp_path / f"ssd_{precision}.engine"
    result = build_engine(onnx_path, engine, BuildRequest(precision=precision, batch=(1, 2, 4)))
    manifest = read_manifest(engine)
    assert manifest.precision == precision
    assert manifest.spec["endoedge.decoder"] == "ssd"
    x = _batch(ssdlite, 3)
    want = _ort(onnx_path, x)
    with TensorRTBackend(engine) as be:
        got = be.infer({"images": x})
        timings = be.last_gpu_timings()
    for name, ref in want.items():
        np.testing.assert_allclose(got[name], ref, atol=atol, rtol=rtol, err_msg=f"{name} ({precision})")
    assert timings is not None
    assert timings["compute"] > 0
    assert not result.reused


def test_cache_builds_once_and_detector_matches_onnxruntime(ssdlite, tmp_path, frames):
    import endoedge

    cache = tmp_path / "cache"
    with endoedge.load(ssdlite[2], backend="tensorrt", cache_dir=cache, precision="fp32") as det:
        trt_dets = det.detect(frames[0])
    engines = sorted(cache.glob("*.engine"))
    assert len(engines) == 1
    with endoedge.load(ssdlite[2], backend="tensorrt", cache_dir=cache, precision="fp32"):
        pass
    assert sorted(cache.glob("*.engine")) == engines  # same ONNX, same GPU: built once
    with endoedge.load(engines[0]) as det:  # the cached engine runs by itself (spec from its manifest)
        again = det.detect(frames[0])
    with endoedge.load(ssdlite[2], backend="onnxruntime", device="cpu") as det:
        ort_dets = det.detect(frames[0])
    assert len(trt_dets) == len(ort_dets) == len(again)
    np.testing.assert_allclose(trt_dets.boxes, ort_dets.boxes, atol=0.5)


def test_cuda_graph_gives_the_same_outputs(ssdlite, tmp_path):
    from endoedge.runtime.tensorrt import TensorRTBackend
    from endoedge.tensorrt.build import build_engine
    from endoedge.tensorrt.plan import BuildRequest

    engine = tmp_path / "g.engine"
    build_engine(ssdlite[2], engine, BuildRequest(precision="fp32", batch=(1, 1, 2)))
    x = _batch(ssdlite, 2)
    with TensorRTBackend(engine) as plain, TensorRTBackend(engine, cuda_graph=True) as graph:
        want = {k: v.copy() for k, v in plain.infer({"images": x}).items()}
        for _ in range(3):
            got = graph.infer({"images": x})
        for k, v in want.items():
            np.testing.assert_array_equal(got[k], v)


def test_changed_onnx_is_refused_then_rebuilt(ssdlite, tmp_path):
    import shutil

    import onnx

    from endoedge.errors import StaleEngineError
    from endoedge.runtime.tensorrt import TensorRTBackend
    from endoedge.tensorrt.build import build_engine
    from endoedge.tensorrt.plan import BuildRequest
    from endoedge.tensorrt.prepare import EngineRequest, prepare_engine

    onnx_copy = tmp_path / "m.onnx"
    shutil.copyfile(ssdlite[2], onnx_copy)
    engine = tmp_path / "m.engine"
    build_engine(onnx_copy, engine, BuildRequest(precision="fp32"))
    model = onnx.load(str(onnx_copy))
    model.metadata_props.add(key="re-exported", value="yes")  # same graph, different file
    onnx.save(model, str(onnx_copy))
    with pytest.raises(StaleEngineError, match="onnx_sha256"):
        TensorRTBackend(engine).activate()
    assert prepare_engine(engine, EngineRequest(rebuild_if_stale=True)) == engine  # rebuilt in place
    with TensorRTBackend(engine) as be:
        assert be.manifest is not None
        assert be.manifest.onnx_sha256 != ""
