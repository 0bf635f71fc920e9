"""Logic of the TensorRT backend, CUDA bindings selection and the calibrator cache, on CPU.

FAKES, CLEARLY: ``FakeTrt`` and ``FakeCuda`` below are stand-ins written for these tests. They
check endoedge's own bookkeeping (batch chunking and padding, when shapes are set and buffers
grow, address rebinding, CUDA-graph capture order, that deactivate frees everything, which
bindings are chosen). They verify nothing about TensorRT or CUDA themselves; the real thing is
in tests/test_trt_gpu.py (``@pytest.mark.trt``, skipped without TensorRT and a GPU).
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from endoedge.errors import BackendUnavailableError, InputError, ModelFormatError, StaleEngineError
from endoedge.runtime.tensorrt import TensorRTBackend, batch_chunks
from endoedge.tensorrt import cuda_mem
from endoedge.tensorrt.calibrator import cache_identity, cache_matches, check_batch, write_cache
from endoedge.tensorrt.cuda_mem import CudaApi, CudaError, CudaPythonApi, PinnedBuffer
from endoedge.tensorrt.gpu_info import GpuInfo
from endoedge.tensorrt.manifest import MachineInfo, make_manifest, write_manifest
from endoedge.tensorrt.prepare import EngineRequest, prepare_engine


# -- batch split ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "lo", "hi", "expected"), [
    (1, 1, 8, [(0, 1, 1)]),
    (8, 1, 8, [(0, 8, 8)]),
    (19, 1, 8, [(0, 8, 8), (8, 16, 8), (16, 19, 3)]),
    (3, 4, 8, [(0, 3, 4)]),
    (9, 4, 8, [(0, 8, 8), (8, 9, 4)]),
    (2, 2, 2, [(0, 2, 2)]),
])
def test_batch_chunks(n, lo, hi, expected):
    assert batch_chunks(n, lo, hi) == expected


def test_batch_chunks_rejects_nonsense():
    with pytest.raises(ValueError, match="bad batch split"):
        batch_chunks(0, 1, 8)


# -- FAKE CUDA (host memory standing in for device memory) ---------------------------------------------
class FakeCuda(CudaApi):
    """FAKE: device pointers index numpy byte arrays; copies are immediate. Logic tests only."""

    name = "fake-cuda"
    supports_graphs = True

    def __init__(self):
        self.mem, self.next, self.log = {}, 0x1000, []
        self.hosts, self.events, self.streams, self.graphs, self.closed = set(), set(), set(), set(), False
        self.capturing = False

    def device_count(self):
        return 1

    def device_properties(self, index):
        return b"Fake GPU\x00", 8, 7, 16

    def malloc(self, nbytes):
        self.next += 0x1000 + nbytes
        self.mem[self.next] = np.zeros(nbytes, np.uint8)
        self.log.append(("malloc", nbytes))
        return self.next

    def free(self, ptr):
        del self.mem[ptr]

    def host_alloc(self, nbytes):
        arr = np.zeros(nbytes, np.uint8)
        self.hosts.add(id(arr))
        return arr, arr

    def host_free(self, handle):
        self.hosts.discard(id(handle))

    def stream_create(self):
        self.streams.add("s")
        return "s"

    def stream_handle(self, stream):
        return 7

    def stream_synchronize(self, stream):
        pass

    def stream_destroy(self, stream):
        self.streams.discard(stream)

    def memcpy_htod_async(self, dst, src, nbytes, stream):
        self.mem[dst][:nbytes] = src.reshape(-1).view(np.uint8)[:nbytes]

    def memcpy_dtoh_async(self, dst, src, nbytes, stream):
        dst.reshape(-1).view(np.uint8)[:nbytes] = self.mem[src][:nbytes]

    def event_create(self):
        e = object()
        self.events.add(e)
        return e

    def event_record(self, event, stream):
        pass

    def event_elapsed_ms(self, start, end):
        return 0.25

    def event_destroy(self, event):
        self.events.discard(event)

    def graph_capture_begin(self, stream):
        self.capturing = True
        self.log.append(("capture",))

    def graph_capture_end(self, stream):
        self.capturing = False
        g = object()
        self.graphs.add(g)
        return g

    def graph_launch(self, graph_exec, stream):
        self.log.append(("launch",))
        FakeTrt.last_context.run()

    def graph_destroy(self, graph_exec):
        self.graphs.discard(graph_exec)

    def close(self):
        self.closed = True


class FakeTrt:
    """FAKE TensorRT module: an engine whose output ``scores[n, 3]`` is the per-channel input sum."""

    __version__ = "10.3.0.30"
    last_context = None
    TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")

    class ILogger:
        def __init__(self):
            pass

    @staticmethod
    def nptype(dt):
        return np.float32

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, data):
            return FakeEngine() if data == b"fake plan" else None


class FakeEngine:
    num_io_tensors = 2

    def get_tensor_name(self, i):
        return ("images", "scores")[i]

    def get_tensor_mode(self, name):
        return "in" if name == "images" else "out"

    def get_tensor_dtype(self, name):
        return "float"

    def get_tensor_shape(self, name):
        return (-1, 3, 4, 4) if name == "images" else (-1, 3)

    def get_tensor_profile_shape(self, name, index):
        return [(2, 3, 4, 4), (2, 3, 4, 4), (4, 3, 4, 4)]

    def create_execution_context(self):
        FakeTrt.last_context = FakeContext()
        return FakeTrt.last_context


class FakeContext:
    def __init__(self):
        self.shape, self.addr, self.calls = None, {}, []

    def set_input_shape(self, name, shape):
        self.calls.append(("shape", tuple(shape)))
        self.shape = tuple(shape)
        return 2 <= shape[0] <= 4

    def get_tensor_shape(self, name):
        return (self.shape[0], 3)

    def set_tensor_address(self, name, ptr):
        self.addr[name] = ptr

    def execute_async_v3(self, handle):
        self.calls.append(("execute", handle, CUDA.capturing))
        if not CUDA.capturing:
            self.run()
        return True

    def run(self):
        n = self.shape[0]
        x = CUDA.mem[self.addr["images"]][: n * 48 * 4].view(np.float32).reshape(n, 3, 16)
        CUDA.mem[self.addr["scores"]][: n * 12].view(np.float32)[:] = x.sum(-1).ravel()


CUDA = FakeCuda()


@pytest.fixture
def fake_engine(tmp_path, monkeypatch):
    """A FAKE engine file + real manifest, with TensorRT and CUDA replaced by the fakes above."""
    global CUDA
    CUDA = FakeCuda()
    engine = tmp_path / "fake.engine"
    engine.write_bytes(b"fake plan")
    machine = MachineInfo(FakeTrt.__version__, GpuInfo("Fake GPU", "8.7", 16))
    monkeypatch.setattr("endoedge.tensorrt.manifest.machine_info", lambda v, gpu, root=None: machine)
    write_manifest(engine, make_manifest(
        onnx_path=tmp_path / "absent.onnx", onnx_sha256="0" * 64, machine=machine, precision="fp32",
        int8_source=None, calibration_hash=None, profiles=[], io=[], version_compatible=False,
        hardware_compatibility="none", dla_core=None, spec={}))
    monkeypatch.setattr("endoedge.tensorrt.compat.import_tensorrt", lambda: FakeTrt)
    monkeypatch.setattr("endoedge.tensorrt.cuda_mem.open_cuda", lambda index, prefer: CUDA)
    monkeypatch.setattr("endoedge.tensorrt.trt_logger.make_trt_logger", lambda trt: types.SimpleNamespace(errors=[]))
    return engine


def _frames_batch(frames, n):
    """Real pixels: 4x4 crops of the colonoscopy frames, CHW float32."""
    crops = [f[60 + 4 * i : 64 + 4 * i, 100:104].transpose(2, 0, 1) for i, f in enumerate((frames * n)[:n])]
    return np.stack(crops).astype(np.float32) / 255


def test_fake_engine_flow_shapes_buffers_chunks(fake_engine, frames):
    be = TensorRTBackend(fake_engine)
    assert CUDA.log == []  # nothing CUDA before activate()
    with be:
        assert (be.input_name, be.output_names, be.max_batch) == ("images", ("scores",), None)
        x = _frames_batch(frames, 3)
        out = be.infer({"images": x})["scores"]
        np.testing.assert_allclose(out, x.reshape(3, 3, 16).sum(-1), rtol=1e-6)
        be.infer({"images": x})
        ctx = FakeTrt.last_context
        assert [c for c in ctx.calls if c[0] == "shape"] == [("shape", (3, 3, 4, 4))]  # set once per shape
        mallocs = len(CUDA.log)
        be.infer({"images": x[:2]})  # smaller: no new buffers
        assert len(CUDA.log) == mallocs
        one = be.infer({"images": x[:1]})["scores"]  # below the profile minimum: padded to 2, sliced back
        assert one.shape == (1, 3)
        np.testing.assert_allclose(one, x[:1].reshape(1, 3, 16).sum(-1), rtol=1e-6)
        big = _frames_batch(frames, 9)
        out9 = be.infer({"images": big})["scores"]  # above the maximum (4): chunks 4 + 4 + 1->2
        np.testing.assert_allclose(out9, big.reshape(9, 3, 16).sum(-1), rtol=1e-6)
        assert be.last_gpu_timings() == {"h2d": 0.25, "compute": 0.25, "d2h": 0.25}
        with pytest.raises(InputError, match="need a batch"):
            be.infer({"images": np.zeros((0, 3, 4, 4), np.float32)})
    assert not CUDA.mem
    assert not CUDA.hosts
    assert not CUDA.events
    assert not CUDA.streams
    assert CUDA.closed


def test_fake_engine_cuda_graph_captured_after_one_plain_run(fake_engine, frames):
    with TensorRTBackend(fake_engine, cuda_graph=True) as be:
        x = _frames_batch(frames, 2)
        for _ in range(3):
            np.testing.assert_allclose(be.infer({"images": x})["scores"], x.reshape(2, 3, 16).sum(-1), rtol=1e-6)
        ctx = FakeTrt.last_context
        assert [c[2] for c in ctx.calls if c[0] == "execute"] == [False, True]  # plain, then captured
        assert [e[0] for e in CUDA.log if e[0] in ("capture", "launch")] == ["capture", "launch", "launch"]
        be.infer({"images": _frames_batch(frames, 3)})  # new shape: graph dropped, plain run again
        assert len(CUDA.graphs) == 0
    assert not CUDA.graphs


def test_stale_fake_engine_is_refused_in_one_line(fake_engine, monkeypatch):
    other = MachineInfo("10.3.0.30", GpuInfo("Other GPU", "8.7", 16))
    monkeypatch.setattr("endoedge.tensorrt.manifest.machine_info", lambda v, gpu, root=None: other)
    with pytest.raises(StaleEngineError, match=r"gpu.name is 'Fake GPU' in the engine but this machine has 'Other GPU'"):
        TensorRTBackend(fake_engine).activate()
    assert CUDA.closed
    assert not CUDA.mem


def test_stale_engine_rebuild_needs_its_onnx(fake_engine, monkeypatch):
    other = MachineInfo("10.3.0.31", GpuInfo("Fake GPU", "8.7", 16))
    monkeypatch.setattr("endoedge.tensorrt.manifest.machine_info", lambda v, gpu, root=None: other)
    with pytest.raises(StaleEngineError, match="cannot rebuild .* its ONNX .* is not on this machine"):
        prepare_engine(fake_engine, EngineRequest(rebuild_if_stale=True))  # the build step before the backend
    assert CUDA.closed


def test_fresh_engine_is_not_rebuilt_and_runs(fake_engine):
    assert prepare_engine(fake_engine, EngineRequest(rebuild_if_stale=True)) == fake_engine
    assert fake_engine.read_bytes() == b"fake plan"
    with TensorRTBackend(fake_engine) as be:
        assert be.manifest is not None
        assert be.manifest.onnx_sha256 == "0" * 64
        assert be.describe() == "tensorrt 10.3.0.30 fp32 on Fake GPU"


@pytest.mark.parametrize(("name", "needle"), [
    ("m.onnx", r"runs built engines, not the ONNX 'm.onnx'; load it with endoedge.load\(path, backend='tensorrt'\)"
               r".* or build it with `endoedge build .*m.onnx -o .*m.engine`"),
    ("m.pt", r"runs .onnx or .engine/.plan/.trt files, not 'm.pt'"),  # .onnx: through endoedge.load
])
def test_backend_runs_engines_only(tmp_path, name, needle):
    """The backend never builds: an ONNX given to it directly is refused in one line saying what to use."""
    model = tmp_path / name
    model.write_bytes(b"x")
    with pytest.raises(ModelFormatError, match=needle) as info:
        TensorRTBackend(model).activate()
    assert "\n" not in str(info.value)


# -- CUDA bindings selection and error checking (FAKE modules) ---------------------------------------
class FakeCudart:
    """FAKE cudart: every call returns ``(err, *values)`` like cuda-python."""

    cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def cudaSetDevice(self, i):
        return (0,)

    def cudaMalloc(self, n):
        return (2, None) if n > 100 else (0, 1234)

    def cudaGetErrorName(self, err):
        return (0, b"cudaErrorMemoryAllocation")


def test_cuda_python_errors_name_the_call_and_error():
    api = CudaPythonApi(FakeCudart())
    assert api.malloc(10) == 1234
    with pytest.raises(CudaError, match=r"CUDA cudaMalloc failed: cudaErrorMemoryAllocation \(2\)"):
        api.malloc(1000)


def test_open_cuda_prefers_cuda_bindings_then_old_name_then_pycuda(monkeypatch):
    available: dict[str, object] = {}

    def fake_import(name):
        if name in available:
            return available[name]
        raise ImportError(f"No module named '{name}'")

    monkeypatch.setattr(cuda_mem, "importlib", types.SimpleNamespace(import_module=fake_import))
    with pytest.raises(BackendUnavailableError, match=r"cuda-python: ImportError.*; pycuda: ImportError.*endoedge\[trt\]"):
        cuda_mem.open_cuda()
    available["cuda.cudart"] = FakeCudart()
    assert isinstance(cuda_mem.open_cuda(), CudaPythonApi)
    available["cuda.bindings.runtime"] = new = FakeCudart()
    assert cuda_mem.open_cuda().cudart is new
    with pytest.raises(BackendUnavailableError, match="pycuda: ImportError"):
        cuda_mem.open_cuda(prefer="pycuda")
    with pytest.raises(BackendUnavailableError, match="unknown CUDA bindings"):
        cuda_mem.open_cuda(prefer="cupy")


def test_pycuda_has_no_graphs():
    class NoGraphs(FakeCuda):
        supports_graphs = False

    with pytest.raises(BackendUnavailableError, match="CUDA graphs need cuda-python"):
        CudaApi.graph_capture_begin(NoGraphs(), "s")


def test_pinned_buffer_grows_only_when_needed():
    cuda = FakeCuda()
    buf = PinnedBuffer(cuda)
    assert buf.ensure(1000)
    assert buf.capacity == 1000
    assert not buf.ensure(400)
    assert buf.ensure(4000)
    assert len(cuda.mem) == 1
    view = buf.host((2, 3), np.dtype(np.float32))
    assert view.shape == (2, 3)
    assert view.dtype == np.float32
    buf.release()
    buf.release()
    assert not cuda.mem
    assert not cuda.hosts


# -- calibrator cache and batches -----------------------------------------------------------------
def test_calibration_cache_is_tied_to_data_batch_and_trt(tmp_path):
    cache = tmp_path / "calib.cache"
    ident = cache_identity("h1", "10.3.0.30", (4, 3, 320, 320))
    assert not cache_matches(cache, ident)
    write_cache(cache, b"TRT-1030-EntropyCalibration2\n", ident)
    assert cache_matches(cache, ident)
    assert not cache_matches(cache, cache_identity("h2", "10.3.0.30", (4, 3, 320, 320)))
    assert not cache_matches(cache, cache_identity("h1", "10.16.1", (4, 3, 320, 320)))
    assert not cache_matches(cache, cache_identity("h1", "10.3.0.30", (8, 3, 320, 320)))


def test_check_batch(frames):
    x = _frames_batch(frames, 2).astype(np.float64)
    out = check_batch({"images": x}, "images", (2, 3, 4, 4))
    assert out.dtype == np.float32
    assert out.flags.c_contiguous
    with pytest.raises(InputError, match="network input is 'images'"):
        check_batch({"x": x}, "images", (2, 3, 4, 4))
    with pytest.raises(InputError, match="expects \\[4, 3, 4, 4\\]"):
        check_batch({"images": x}, "images", (4, 3, 4, 4))


# -- the real cuda-python bindings (installed with torch on Linux; importable without a GPU) -----------
def _cudart_names_used() -> set[str]:
    import re
    from pathlib import Path

    text = Path(cuda_mem.__file__).read_text(encoding="utf-8")
    return set(re.findall(r"self\.cudart\.([A-Za-z_][\w.]*)", text))


def test_every_cudart_name_cuda_mem_uses_exists_in_the_installed_bindings():
    """Static, against the real module: names and enum members CudaPythonApi touches."""
    cudart = pytest.importorskip("cuda.bindings.runtime")
    used = _cudart_names_used()
    assert {"cudaMalloc", "cudaMemcpyAsync", "cudaStreamBeginCapture", "cudaGraphInstantiate"} <= used
    for dotted in used:
        obj = cudart
        for part in dotted.split("."):
            assert hasattr(obj, part), f"cuda.bindings.runtime has no {dotted}"
            obj = getattr(obj, part)


def test_real_cuda_python_without_a_gpu_is_one_line():
    pytest.importorskip("cuda.bindings.runtime")
    from tests.conftest import _has_cuda

    if _has_cuda():
        pytest.skip("a CUDA device is usable here; see test_real_cuda_round_trip")
    with pytest.raises(BackendUnavailableError, match=r"CUDA is not usable here \(CUDA cudaSetDevice failed: cudaError"):
        cuda_mem.open_cuda(prefer="cuda-python")


@pytest.mark.gpu
def test_real_cuda_round_trip(frames):
    """Real CUDA (cuda-python): pinned buffers, async copies both ways, events, a captured graph of copies."""
    api = cuda_mem.open_cuda(prefer="cuda-python")
    try:
        x = _frames_batch(frames, 4)
        a, b = PinnedBuffer(api), PinnedBuffer(api)
        a.ensure(x.nbytes)
        b.ensure(x.nbytes)
        stream = api.stream_create()
        e0, e1 = api.event_create(), api.event_create()
        host = a.host(x.shape, x.dtype)
        np.copyto(host, x)
        api.event_record(e0, stream)
        api.memcpy_htod_async(a.device, host, x.nbytes, stream)
        back = b.host(x.shape, x.dtype)
        api.memcpy_dtoh_async(back, a.device, x.nbytes, stream)
        api.event_record(e1, stream)
        api.stream_synchronize(stream)
        np.testing.assert_array_equal(back, x)
        assert api.event_elapsed_ms(e0, e1) >= 0
        info = __import__("endoedge.tensorrt.gpu_info", fromlist=["query_gpu"]).query_gpu(api, 0)
        assert info.sm_count > 0
        for e in (e0, e1):
            api.event_destroy(e)
        api.stream_destroy(stream)
        a.release()
        b.release()
    finally:
        api.close()
