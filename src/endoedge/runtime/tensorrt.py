"""TensorRT backend: runs a ``.engine`` (checked against its manifest) or builds an ``.onnx`` into the cache.

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
from typing import Any

import numpy as np

from endoedge.data.media import ENGINE_SUFFIXES
from endoedge.errors import BackendUnavailableError, InputError, ModelFormatError, StaleEngineError
from endoedge.runtime.base import Backend

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
        model_path: a ``.engine`` with its ``.engine.json`` manifest, or an ``.onnx`` (built
            once into ``cache_dir`` and reused while the ONNX, TensorRT, GPU and options match).
        device: ``auto``, ``cuda`` or ``cuda:N``.
        precision: for an ``.onnx``: ``fp32`` / ``fp16`` / ``int8`` (``None`` = what the ONNX is).
        batch: for an ``.onnx``: ``(min, opt, max)`` batch profile (``None`` = the default).
        cache_dir: engine cache for an ``.onnx`` (default :func:`~endoedge.tensorrt.manifest.default_cache_dir`).
        rebuild_if_stale: rebuild a ``.engine`` whose manifest does not match this machine or
            ONNX (from the ONNX path it records) instead of refusing it.
        cuda_graph: capture the enqueue in a CUDA graph (needs cuda-python).
        cuda_bindings: ``auto`` (cuda-python, else pycuda), ``cuda-python`` or ``pycuda``.
    """

    name = "tensorrt"
    extra = "trt"
    requires = ("tensorrt",)

    def __init__(self, model_path: str | Path, *, device: str = "auto", precision: str | None = None,
                 batch: tuple[int, int, int] | None = None, cache_dir: str | Path | None = None,
                 rebuild_if_stale: bool = False, cuda_graph: bool = False, cuda_bindings: str = "auto") -> None:
        super().__init__(model_path, device=device)
        self.precision = precision
        self.batch = batch
        self.cache_dir = cache_dir
        self.rebuild_if_stale = rebuild_if_stale
        self.cuda_graph = cuda_graph
        self.cuda_bindings = cuda_bindings
        self.engine_path: Path | None = None
        self.manifest: dict[str, Any] = {}
        self.trt_version = ""
        self._reset()

    def _reset(self) -> None:
        self._cuda: Any = None
        self._logger: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._events: list[Any] = []
        self._bufs: dict[str, Any] = {}
        self._dtypes: dict[str, np.dtype[Any]] = {}
        self._shape: tuple[int, ...] | None = None
        self._out_shapes: dict[str, tuple[int, ...]] = {}
        self._graph: Any = None
        self._graph_ready = False  # one plain run happened after the last shape change
        self._range = (1, 1)
        self._timed = False

    # -- activation ------------------------------------------------------------------------
    def _resolve_engine(self, machine: Any, index: int) -> Path:
        """The engine to load: build an ONNX into the cache; check (or rebuild) an engine."""
        from endoedge.data.hashing import file_sha256
        from endoedge.tensorrt.build import build_engine, rebuild_stale
        from endoedge.tensorrt.manifest import default_cache_dir, read_manifest, verify_manifest
        from endoedge.tensorrt.plan import BuildRequest

        path = self.model_path
        if path.suffix.lower() == ".onnx":
            req = BuildRequest(precision=self.precision, batch=self.batch)
            result = build_engine(path, None, req, cache_dir=self.cache_dir or default_cache_dir(),
                                  device=index, cuda_bindings=self.cuda_bindings)
            logger.info("%s | engine %s (%s)", self.name, result.engine_path, "cached" if result.reused else "built")
            return result.engine_path
        manifest = read_manifest(path)
        onnx = Path(str(manifest.get("onnx_path") or ""))
        sha = file_sha256(onnx) if onnx.is_file() else None
        try:
            verify_manifest(manifest, machine, engine_path=path, onnx_sha256=sha)
        except StaleEngineError:
            if not self.rebuild_if_stale:
                raise
            rebuild_stale(path, manifest, device=index, cuda_bindings=self.cuda_bindings)
        return path

    def _activate(self) -> None:
        from endoedge.tensorrt.build import make_trt_logger
        from endoedge.tensorrt.compat import import_tensorrt, trt_version
        from endoedge.tensorrt.cuda_mem import open_cuda
        from endoedge.tensorrt.gpu_info import device_index, query_gpu
        from endoedge.tensorrt.manifest import machine_info, read_manifest

        index = device_index(self.device)
        if not self.model_path.is_file():
            raise ModelFormatError(f"model '{self.model_path}' does not exist")
        if self.model_path.suffix.lower() not in (".onnx", *ENGINE_SUFFIXES):
            raise ModelFormatError(f"the tensorrt backend runs .onnx or {'/'.join(ENGINE_SUFFIXES)} files, "
                                   f"not '{self.model_path.name}' (export a checkpoint with `endoedge export`)")
        trt = import_tensorrt()
        ver = trt_version(trt)
        self.trt_version = str(trt.__version__)
        try:
            self._cuda = open_cuda(index, self.cuda_bindings)
            if self.cuda_graph and not self._cuda.supports_graphs:
                raise BackendUnavailableError(f"cuda_graph=True needs cuda-python; {self._cuda.name} has no CUDA graphs")
            machine = machine_info(self.trt_version, query_gpu(self._cuda, index))
            self.engine_path = self._resolve_engine(machine, index)
            self.manifest = read_manifest(self.engine_path)
            log = self._logger = make_trt_logger(trt)  # must outlive the runtime, engine and context
            self._runtime = trt.Runtime(log)
            if ver.has_version_compatible and self.manifest.get("version_compatible"):
                self._runtime.engine_host_code_allowed = True  # the plan embeds its lean runtime
            if ver.has_dla and self.manifest.get("dla_core") is not None:
                self._runtime.DLA_core = int(self.manifest["dla_core"])
            self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
            if self._engine is None:
                reason = log.errors[-1] if log.errors else "see the TensorRT log"
                raise ModelFormatError(f"TensorRT {ver} could not load '{self.engine_path.name}': {reason}; "
                                       "rebuild it with `endoedge build ... --force`")
            self._context = self._engine.create_execution_context()
            self._bind_io(trt)
            self._stream = self._cuda.stream_create()
            self._events = [self._cuda.event_create() for _ in range(4)]
            self.device = f"cuda:{index}"  # what it runs on (bench rows, describe())
        except BaseException:
            self._deactivate()
            raise

    def _bind_io(self, trt: Any) -> None:
        from endoedge.tensorrt.cuda_mem import PinnedBuffer

        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise ModelFormatError(f"'{self.model_path.name}' has {len(inputs)} inputs; endoedge runs single-input detectors")
        self.input_name = inputs[0]
        self.output_names = tuple(n for n in names if n != self.input_name)
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self._bufs = {n: PinnedBuffer(self._cuda) for n in names}
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
                             f"(batch {self._range[0]}..{self._range[1]}, manifest {self.manifest.get('profiles')})")
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
                self._cuda.graph_launch(self._graph, self._stream)
                return
        if not self._context.execute_async_v3(handle):
            raise InputError(f"TensorRT could not enqueue '{self.model_path.name}' for input {list(self._shape or ())}")
        self._graph_ready = True

    def _capture(self, handle: int) -> None:
        try:
            self._cuda.graph_capture_begin(self._stream)
            ok = self._context.execute_async_v3(handle)
            graph = self._cuda.graph_capture_end(self._stream)
        except Exception as err:  # noqa: BLE001 - some engines cannot be captured; run without
            logger.warning("%s | CUDA graph capture failed (%s); running without graphs", self.name, err)
            self.cuda_graph = False
            return
        if not ok:
            self._cuda.graph_destroy(graph)
            self.cuda_graph = False
            return
        self._graph = graph

    def _run(self, x: np.ndarray, real: int) -> dict[str, np.ndarray]:
        cuda, stream = self._cuda, self._stream
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
        c, ev = self._cuda, self._events
        return {"h2d": c.event_elapsed_ms(ev[0], ev[1]), "compute": c.event_elapsed_ms(ev[1], ev[2]),
                "d2h": c.event_elapsed_ms(ev[2], ev[3])}

    # -- teardown --------------------------------------------------------------------------
    def _drop_graph(self) -> None:
        if self._graph is not None:
            self._cuda.graph_destroy(self._graph)
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

    def describe(self) -> str:
        """TensorRT version, precision and GPU of the loaded engine."""
        gpu = (self.manifest.get("gpu") or {}).get("name", self.device)
        return f"{self.name} {self.trt_version or '?'} {self.manifest.get('precision', '')} on {gpu}".strip()

    def metadata(self) -> dict[str, str]:
        """The ONNX ``metadata_props`` the engine was built from (manifest ``spec``)."""
        return dict(self.manifest.get("spec") or {})
