"""TensorRT backend: runs a built ``.engine`` (checked against its manifest); it never builds one.

An ``.onnx`` is built into the engine cache before the backend is constructed, by
:func:`endoedge.load` / ``endoedge bench`` (:mod:`endoedge.tensorrt.prepare`, which also
rebuilds stale engines on ``rebuild_if_stale``) or by ``endoedge build``.

Execution follows NVIDIA's ``samples/python/common_runtime.py`` with the name-based I/O API
(TensorRT >= 8.5): one CUDA stream; per call the input is copied into a pinned host buffer,
``cudaMemcpyAsync`` host->device, ``context.set_input_shape`` (only when the shape changes),
``context.set_tensor_address`` for every tensor (only when a buffer moved),
``context.execute_async_v3(stream)``, device->host copies of the outputs into pinned buffers, one
``cudaStreamSynchronize``. Buffers grow only when a larger batch arrives. Batches above the
profile's maximum run in chunks; a batch below its minimum is padded (outputs sliced back).
With ``cuda_graph=True`` the enqueue is captured once per input shape (after one plain run, as
TensorRT requires after a shape change) and replayed with ``cudaGraphLaunch``.

CUDA events around the copies and the enqueue give :meth:`TensorRTBackend.last_gpu_timings`
(H2D, GPU compute, D2H in ms, as trtexec reports them), used by ``endoedge bench``.

Nothing CUDA or TensorRT happens at import or in ``__init__``; ``activate()`` does it all and
``deactivate()`` frees everything. Not executed on the development machines (no GPU there).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from endoedge.data.media import ENGINE_SUFFIXES
from endoedge.errors import BackendUnavailableError, EndoedgeError, InputError, ModelFormatError
from endoedge.runtime.base import Backend

if TYPE_CHECKING:
    from endoedge.tensorrt.cuda_mem import CudaApi, PinnedBuffer
    from endoedge.tensorrt.engine_manifest import EngineManifest
    from endoedge.tensorrt.manifest import MachineInfo
    from endoedge.tensorrt.trt_logger import TrtLogger

logger = logging.getLogger(__name__)


def batch_chunks(n: int, lo: int, hi: int) -> list[tuple[int, int, int]]:
    """Split a batch of ``n`` into runs an engine with batch range ``lo..hi`` accepts.

    Returns ``(start, stop, run_batch)`` per run: ``stop - start`` real images, padded up to
    ``run_batch`` (>= ``lo``) by repeating the last image.
    """
    if n < 1 or not 1 <= lo <= hi:
        raise ValueError(f"bad batch split: n={n}, range {lo}..{hi}")
    out = []
    for start in range(0, n, hi):
        stop = min(n, start + hi)
        out.append((start, stop, max(lo, stop - start)))
    return out


class TensorRTBackend(Backend):
    """Runs a TensorRT engine on an NVIDIA GPU (see the module docstring).

    Args:
        model_path: a ``.engine`` (``.plan``, ``.trt``) with its ``.engine.json`` manifest; an
            ``.onnx`` is refused with how to build it (``endoedge.load`` or ``endoedge build``).
        device: ``auto``, ``cuda`` or ``cuda:N``.
        cuda_graph: capture the enqueue in a CUDA graph (needs cuda-python).
        cuda_bindings: ``auto`` (cuda-python, else pycuda), ``cuda-python`` or ``pycuda``.
    """

    name = "tensorrt"
    extra = "trt"
    requires = ("tensorrt",)
    flavour = "tensorrt"  # the engine manifest's flavour this backend runs

    def __init__(self, model_path: str | Path, *, device: str = "auto", cuda_graph: bool = False,
                 cuda_bindings: str = "auto") -> None:
        super().__init__(model_path, device=device)
        self.cuda_graph = cuda_graph
        self.cuda_bindings = cuda_bindings
        self.engine_path: Path | None = None
        self.manifest: EngineManifest | None = None
        self.trt_version = ""
        self._reset()

    def _reset(self) -> None:
        self._cuda: CudaApi | None = None
        self._logger: TrtLogger | None = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._events: list[Any] = []
        self._bufs: dict[str, PinnedBuffer] = {}
        self._dtypes: dict[str, np.dtype[Any]] = {}
        self._shape: tuple[int, ...] | None = None
        self._out_shapes: dict[str, tuple[int, ...]] = {}
        self._graph: Any = None
        self._graph_ready = False  # one plain run happened after the last shape change
        self._range = (1, 1)
        self._timed = False

    # -- activation ------------------------------------------------------------------------
    def _check_model(self) -> None:
        """An existing engine file; an ``.onnx`` is refused with how to build it (``endoedge.load`` builds one)."""
        path = self.model_path
        if not path.is_file():
            raise ModelFormatError(f"model '{path}' does not exist")
        if path.suffix.lower() == ".onnx":
            raise ModelFormatError(
                f"the tensorrt backend runs built engines, not the ONNX '{path.name}'; load it with "
                f"endoedge.load(path, backend='tensorrt') (builds it once into the engine cache) or build it "
                f"with `endoedge build {path} -o {path.with_suffix('.engine')}`")
        if path.suffix.lower() not in ENGINE_SUFFIXES:
            raise ModelFormatError(f"the tensorrt backend runs .onnx or {'/'.join(ENGINE_SUFFIXES)} files, not "
                                   f"'{path.name}' (export a checkpoint with `endoedge export`)")

    def _import_trt(self) -> ModuleType:
        """The TensorRT module this backend runs engines with (full TensorRT here)."""
        from endoedge.tensorrt.compat import import_tensorrt

        return import_tensorrt()

    def _machine(self, cuda: CudaApi, index: int) -> MachineInfo:
        """What the engine's manifest is checked against: this TensorRT and GPU."""
        from endoedge.tensorrt.gpu_info import query_gpu
        from endoedge.tensorrt.manifest import machine_info

        return machine_info(self.trt_version, query_gpu(cuda, index))

    def _check_flavour(self, manifest: EngineManifest) -> None:
        """Refuse an engine of the other TensorRT flavour with the backend that runs it."""
        if manifest.flavour == self.flavour:
            return
        other = "tensorrt-rtx" if manifest.flavour == "rtx" else "tensorrt"
        built = "TensorRT for RTX" if manifest.flavour == "rtx" else "full TensorRT"
        raise ModelFormatError(f"'{self.model_path.name}' was built by {built} {manifest.trt_version}; run it with "
                               f"backend='{other}' (--backend {other})")

    def _activate(self) -> None:
        from endoedge.tensorrt.compat import trt_version
        from endoedge.tensorrt.cuda_mem import open_cuda
        from endoedge.tensorrt.gpu_info import device_index
        from endoedge.tensorrt.manifest import read_manifest, verify_engine
        from endoedge.tensorrt.trt_logger import make_trt_logger

        index = device_index(self.device)
        self._check_model()
        trt = self._import_trt()
        ver = trt_version(trt)
        self.trt_version = str(trt.__version__)
        try:
            cuda = self._cuda = open_cuda(index, self.cuda_bindings)
            if self.cuda_graph and not cuda.supports_graphs:
                raise BackendUnavailableError(f"cuda_graph=True needs cuda-python; {cuda.name} has no CUDA graphs")
            machine = self._machine(cuda, index)
            engine_path = self.engine_path = self.model_path
            manifest = self.manifest = read_manifest(engine_path)
            self._check_flavour(manifest)
            verify_engine(engine_path, manifest, machine)
            log = self._logger = make_trt_logger(trt)  # must outlive the runtime, engine and context
            self._runtime = trt.Runtime(log)
            if ver.has_version_compatible and manifest.version_compatible:
                self._runtime.engine_host_code_allowed = True  # the plan embeds its lean runtime
            if ver.has_dla and manifest.dla_core is not None:
                self._runtime.DLA_core = manifest.dla_core
            self._engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
            if self._engine is None:
                reason = log.errors[-1] if log.errors else "see the TensorRT log"
                raise ModelFormatError(f"TensorRT {ver} could not load '{engine_path.name}': {reason}; "
                                       "rebuild it with `endoedge build ... --force`")
            self._context = self._engine.create_execution_context()
            self._bind_io(trt)
            self._stream = cuda.stream_create()
            self._events = [cuda.event_create() for _ in range(4)]
            self.device = f"cuda:{index}"  # what it runs on (bench rows, describe())
        except BaseException:
            self._deactivate()
            raise

    @property
    def _api(self) -> CudaApi:
        """The CUDA API of the active backend."""
        if self._cuda is None:
            raise EndoedgeError(f"{self.name} backend is not active; call activate() or use `with`")
        return self._cuda

    def _bind_io(self, trt: ModuleType) -> None:
        from endoedge.tensorrt.cuda_mem import PinnedBuffer

        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise ModelFormatError(f"'{self.model_path.name}' has {len(inputs)} inputs; endoedge runs single-input detectors")
        self.input_name = inputs[0]
        self.output_names = tuple(n for n in names if n != self.input_name)
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self._bufs = {n: PinnedBuffer(self._api) for n in names}
        shape = tuple(engine.get_tensor_shape(self.input_name))
        if shape[0] < 0:
            lo, _, hi = engine.get_tensor_profile_shape(self.input_name, 0)
            self._range = (int(lo[0]), int(hi[0]))
            self.max_batch = None  # any batch: chunked / padded to the profile's range in _infer
        else:
            self._range = (int(shape[0]), int(shape[0]))
            self.max_batch = int(shape[0])

    # -- inference -------------------------------------------------------------------------
    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = np.asarray(feed[self.input_name])
        if x.ndim < 1 or x.shape[0] < 1:
            raise InputError(f"tensorrt backend: input '{self.input_name}' has shape {list(x.shape)}; need a batch")
        x = np.ascontiguousarray(x, dtype=self._dtypes[self.input_name])
        lo, hi = self._range
        runs = batch_chunks(int(x.shape[0]), lo, hi)
        if len(runs) == 1 and runs[0][2] == x.shape[0]:
            return self._run(x, x.shape[0])
        parts = []
        for start, stop, size in runs:
            chunk = x[start:stop]
            if size > stop - start:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - (stop - start), axis=0)])
            parts.append({k: v.copy() for k, v in self._run(chunk, stop - start).items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in self.output_names}

    def _prepare(self, shape: tuple[int, ...]) -> None:
        """New input shape: set it, read the output shapes, grow buffers, rebind addresses."""
        ctx = self._context
        if not ctx.set_input_shape(self.input_name, shape):
            raise InputError(f"tensorrt backend: input shape {list(shape)} is outside the engine's profile "
                             f"(batch {self._range[0]}..{self._range[1]}, manifest {self._profiles_text()})")
        self._out_shapes = {n: tuple(int(d) for d in ctx.get_tensor_shape(n)) for n in self.output_names}
        dynamic = [n for n, s in self._out_shapes.items() if any(d < 0 for d in s)]
        if dynamic:
            raise ModelFormatError(f"'{self.model_path.name}' has data-dependent output shapes ({', '.join(dynamic)}); "
                                   "endoedge runs engines with fixed-size outputs (NMS outside the engine)")
        shapes = {self.input_name: shape, **self._out_shapes}
        for name, s in shapes.items():
            nbytes = int(np.prod(s, dtype=np.int64)) * self._dtypes[name].itemsize
            self._bufs[name].ensure(nbytes)
            ctx.set_tensor_address(name, int(self._bufs[name].device))
        self._shape = shape
        self._drop_graph()

    def _enqueue(self, handle: int) -> None:
        if self.cuda_graph and self._graph_ready:
            if self._graph is None:
                self._capture(handle)
            if self._graph is not None:
                self._api.graph_launch(self._graph, self._stream)
                return
        if not self._context.execute_async_v3(handle):
            raise InputError(f"TensorRT could not enqueue '{self.model_path.name}' for input {list(self._shape or ())}")
        self._graph_ready = True

    def _capture(self, handle: int) -> None:
        try:
            self._api.graph_capture_begin(self._stream)
            ok = self._context.execute_async_v3(handle)
            graph = self._api.graph_capture_end(self._stream)
        except Exception as err:  # noqa: BLE001 - some engines cannot be captured; run without
            logger.warning("%s | CUDA graph capture failed (%s); running without graphs", self.name, err)
            self.cuda_graph = False
            return
        if not ok:
            self._api.graph_destroy(graph)
            self.cuda_graph = False
            return
        self._graph = graph

    def _run(self, x: np.ndarray, real: int) -> dict[str, np.ndarray]:
        cuda, stream = self._api, self._stream
        shape = tuple(int(d) for d in x.shape)
        if shape != self._shape:
            self._prepare(shape)
        inp = self._bufs[self.input_name]
        host = inp.host(shape, self._dtypes[self.input_name])
        np.copyto(host, x)
        ev = self._events
        cuda.event_record(ev[0], stream)
        cuda.memcpy_htod_async(inp.device, host, x.nbytes, stream)
        cuda.event_record(ev[1], stream)
        self._enqueue(cuda.stream_handle(stream))
        cuda.event_record(ev[2], stream)
        out = {}
        for name in self.output_names:
            buf, s = self._bufs[name], self._out_shapes[name]
            arr = buf.host(s, self._dtypes[name])
            cuda.memcpy_dtoh_async(arr, buf.device, arr.nbytes, stream)
            out[name] = arr[:real] if arr.ndim and arr.shape[0] == shape[0] else arr
        cuda.event_record(ev[3], stream)
        cuda.stream_synchronize(stream)
        self._timed = True
        return out

    def last_gpu_timings(self) -> dict[str, float] | None:
        """CUDA-event times of the last run, ms: ``h2d``, ``compute`` (enqueue to done), ``d2h``.

        ``None`` before the first run. Of a chunked call, only the last chunk.
        """
        if not (self._timed and self._events):
            return None
        c, ev = self._api, self._events
        return {"h2d": c.event_elapsed_ms(ev[0], ev[1]), "compute": c.event_elapsed_ms(ev[1], ev[2]),
                "d2h": c.event_elapsed_ms(ev[2], ev[3])}

    # -- teardown --------------------------------------------------------------------------
    def _drop_graph(self) -> None:
        if self._graph is not None:
            self._api.graph_destroy(self._graph)
        self._graph = None
        self._graph_ready = False

    def _deactivate(self) -> None:
        cuda = self._cuda
        if cuda is not None:
            if self._stream is not None:
                cuda.stream_synchronize(self._stream)
            self._drop_graph()
            for buf in self._bufs.values():
                buf.release()
            for event in self._events:
                cuda.event_destroy(event)
            if self._stream is not None:
                cuda.stream_destroy(self._stream)
        self._context = None  # context before engine before runtime
        self._engine = None
        self._runtime = None
        if cuda is not None:
            cuda.close()
        self._reset()

    def _profiles_text(self) -> str:
        """The manifest's profiles as the JSON file holds them (for messages)."""
        return str(self.manifest.to_dict()["profiles"]) if self.manifest is not None else "None"

    def describe(self) -> str:
        """TensorRT version, precision and GPU of the loaded engine."""
        m = self.manifest
        gpu = m.gpu.name if m is not None and m.flavour != "rtx" else self.device
        precision = m.precision if m is not None else ""  # trt-api: ignore - the manifest's, not ILayer.precision
        return f"{self.name} {self.trt_version or '?'} {precision} on {gpu}".strip()

    def metadata(self) -> dict[str, str]:
        """The ONNX ``metadata_props`` the engine was built from (manifest ``spec``)."""
        return dict(self.manifest.spec) if self.manifest is not None else {}
