"""CUDA memory, streams, events and graphs for the TensorRT backend: cuda-python or pycuda.

:func:`open_cuda` returns a :class:`CudaApi`, a small interface over

* **cuda-python** (TensorRT 8.6+ samples; ``from cuda.bindings import runtime as cudart``,
  falling back to ``from cuda import cudart`` for cuda-python < 12.6.1). Every call returns
  ``(err, *values)``; :meth:`CudaPythonApi._check` turns a non-zero ``err`` into
  :class:`CudaError` with ``cudaGetErrorName``. CUDA graphs are available here.
* **pycuda** (JetPack 5 / Python 3.8, where cuda-python wheels do not match the CUDA 11.4
  driver): the device's *primary* context is retained and pushed, because TensorRT uses the
  runtime API's primary context. No CUDA graphs.

Nothing happens at import; modules are imported and the device initialised in
:func:`open_cuda`, called from the backend's ``activate()``. Pinned (page-locked) host buffers
come back as numpy ``uint8`` arrays the caller views as its dtype. Device pointers are ``int``.
:class:`~endoedge.errors.CudaError` is defined in :mod:`endoedge.errors`; it stays importable here.
"""

from __future__ import annotations

import abc
import ctypes
import importlib
import logging
from typing import Any

import numpy as np

from endoedge.errors import BackendUnavailableError, CudaError

logger = logging.getLogger(__name__)


class CudaApi(abc.ABC):
    """What the TensorRT backend needs from CUDA. Handles (streams, events, graphs) are opaque."""

    name: str = "cuda"
    supports_graphs: bool = False

    @abc.abstractmethod
    def device_count(self) -> int: ...

    @abc.abstractmethod
    def device_properties(self, index: int) -> tuple[str | bytes, int, int, int]:
        """``(name, cc major, cc minor, SM count)`` of device ``index``."""

    @abc.abstractmethod
    def malloc(self, nbytes: int) -> int: ...

    @abc.abstractmethod
    def free(self, ptr: int) -> None: ...

    @abc.abstractmethod
    def host_alloc(self, nbytes: int) -> tuple[Any, np.ndarray]:
        """Pinned host memory: ``(handle for host_free, uint8 array of nbytes)``."""

    @abc.abstractmethod
    def host_free(self, handle: Any) -> None: ...

    @abc.abstractmethod
    def stream_create(self) -> Any: ...

    @abc.abstractmethod
    def stream_handle(self, stream: Any) -> int:
        """The ``cudaStream_t`` as an int (what ``execute_async_v3`` takes)."""

    @abc.abstractmethod
    def stream_synchronize(self, stream: Any) -> None: ...

    @abc.abstractmethod
    def stream_destroy(self, stream: Any) -> None: ...

    @abc.abstractmethod
    def memcpy_htod_async(self, dst: int, src: np.ndarray, nbytes: int, stream: Any) -> None: ...

    @abc.abstractmethod
    def memcpy_dtoh_async(self, dst: np.ndarray, src: int, nbytes: int, stream: Any) -> None: ...

    @abc.abstractmethod
    def event_create(self) -> Any: ...

    @abc.abstractmethod
    def event_record(self, event: Any, stream: Any) -> None: ...

    @abc.abstractmethod
    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        """Milliseconds between two recorded, completed events."""

    @abc.abstractmethod
    def event_destroy(self, event: Any) -> None: ...

    # CUDA graphs (cuda-python only)
    def graph_capture_begin(self, stream: Any) -> None:
        raise BackendUnavailableError(f"CUDA graphs need cuda-python; {self.name} has none (use cuda_graph=False)")

    def graph_capture_end(self, stream: Any) -> Any:
        raise BackendUnavailableError(f"CUDA graphs need cuda-python; {self.name} has none")

    def graph_launch(self, graph_exec: Any, stream: Any) -> None:
        raise BackendUnavailableError(f"CUDA graphs need cuda-python; {self.name} has none")

    def graph_destroy(self, graph_exec: Any) -> None:
        return None

    def close(self) -> None:
        """Release what opening took (pycuda: pop the primary context)."""
        return


def _pinned_array(ptr: int, nbytes: int) -> np.ndarray:
    """A numpy uint8 view of ``nbytes`` of host memory at ``ptr`` (NVIDIA's common_runtime.py)."""
    buf = ctypes.cast(ptr, ctypes.POINTER(ctypes.c_ubyte))
    return np.ctypeslib.as_array(buf, (nbytes,))


class CudaPythonApi(CudaApi):
    """cuda-python's runtime bindings (``cudart``), device ``index`` made current."""

    name = "cuda-python"
    supports_graphs = True

    def __init__(self, cudart: Any, index: int = 0) -> None:
        self.cudart = cudart
        self._check(cudart.cudaSetDevice(index), "cudaSetDevice")

    def _check(self, result: Any, call: str) -> Any:
        """``(err, *values)`` -> values (``None``, one value, or a tuple); raise on an error."""
        if isinstance(result, tuple):
            err, values = result[0], result[1:]
        else:
            err, values = result, ()
        if int(err) != 0:
            name = self.cudart.cudaGetErrorName(err)
            text = name[1] if isinstance(name, tuple) else name
            text = text.decode() if isinstance(text, bytes) else str(text)
            raise CudaError(f"CUDA {call} failed: {text} ({int(err)})")
        if not values:
            return None
        return values[0] if len(values) == 1 else values

    def device_count(self) -> int:
        return int(self._check(self.cudart.cudaGetDeviceCount(), "cudaGetDeviceCount"))

    def device_properties(self, index: int) -> tuple[str | bytes, int, int, int]:
        prop = self._check(self.cudart.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
        return prop.name, int(prop.major), int(prop.minor), int(prop.multiProcessorCount)

    def malloc(self, nbytes: int) -> int:
        return int(self._check(self.cudart.cudaMalloc(nbytes), "cudaMalloc"))

    def free(self, ptr: int) -> None:
        self._check(self.cudart.cudaFree(ptr), "cudaFree")

    def host_alloc(self, nbytes: int) -> tuple[Any, np.ndarray]:
        ptr = int(self._check(self.cudart.cudaMallocHost(nbytes), "cudaMallocHost"))
        return ptr, _pinned_array(ptr, nbytes)

    def host_free(self, handle: Any) -> None:
        self._check(self.cudart.cudaFreeHost(handle), "cudaFreeHost")

    def stream_create(self) -> Any:
        return self._check(self.cudart.cudaStreamCreate(), "cudaStreamCreate")

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def stream_synchronize(self, stream: Any) -> None:
        self._check(self.cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def stream_destroy(self, stream: Any) -> None:
        self._check(self.cudart.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def memcpy_htod_async(self, dst: int, src: np.ndarray, nbytes: int, stream: Any) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.cudart.cudaMemcpyAsync(dst, src.ctypes.data, nbytes, kind, stream), "cudaMemcpyAsync(H2D)")

    def memcpy_dtoh_async(self, dst: np.ndarray, src: int, nbytes: int, stream: Any) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.cudart.cudaMemcpyAsync(dst.ctypes.data, src, nbytes, kind, stream), "cudaMemcpyAsync(D2H)")

    def event_create(self) -> Any:
        return self._check(self.cudart.cudaEventCreate(), "cudaEventCreate")

    def event_record(self, event: Any, stream: Any) -> None:
        self._check(self.cudart.cudaEventRecord(event, stream), "cudaEventRecord")

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        return float(self._check(self.cudart.cudaEventElapsedTime(start, end), "cudaEventElapsedTime"))

    def event_destroy(self, event: Any) -> None:
        self._check(self.cudart.cudaEventDestroy(event), "cudaEventDestroy")

    def graph_capture_begin(self, stream: Any) -> None:
        mode = self.cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal  # as in TensorRT's CUDA-graph guide
        self._check(self.cudart.cudaStreamBeginCapture(stream, mode), "cudaStreamBeginCapture")

    def graph_capture_end(self, stream: Any) -> Any:
        graph = self._check(self.cudart.cudaStreamEndCapture(stream), "cudaStreamEndCapture")
        try:
            graph_exec = self._check(self.cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        finally:
            self._check(self.cudart.cudaGraphDestroy(graph), "cudaGraphDestroy")
        return graph_exec

    def graph_launch(self, graph_exec: Any, stream: Any) -> None:
        self._check(self.cudart.cudaGraphLaunch(graph_exec, stream), "cudaGraphLaunch")

    def graph_destroy(self, graph_exec: Any) -> None:
        self._check(self.cudart.cudaGraphExecDestroy(graph_exec), "cudaGraphExecDestroy")


class PycudaApi(CudaApi):
    """pycuda on the primary context of device ``index`` (JetPack 5)."""

    name = "pycuda"

    def __init__(self, driver: Any, index: int = 0) -> None:
        self.cuda = driver
        driver.init()
        if index >= driver.Device.count():
            raise BackendUnavailableError(f"CUDA device {index} does not exist ({driver.Device.count()} found)")
        self._ctx = driver.Device(index).retain_primary_context()
        self._ctx.push()
        self._allocs: dict[int, Any] = {}

    def device_count(self) -> int:
        return int(self.cuda.Device.count())

    def device_properties(self, index: int) -> tuple[str | bytes, int, int, int]:
        dev = self.cuda.Device(index)
        major, minor = dev.compute_capability()
        sms = dev.get_attribute(self.cuda.device_attribute.MULTIPROCESSOR_COUNT)
        return dev.name(), int(major), int(minor), int(sms)

    def malloc(self, nbytes: int) -> int:
        alloc = self.cuda.mem_alloc(nbytes)
        self._allocs[int(alloc)] = alloc
        return int(alloc)

    def free(self, ptr: int) -> None:
        alloc = self._allocs.pop(ptr, None)
        if alloc is not None:
            alloc.free()

    def host_alloc(self, nbytes: int) -> tuple[Any, np.ndarray]:
        arr = self.cuda.pagelocked_empty(nbytes, np.uint8)
        return arr, arr

    def host_free(self, handle: Any) -> None:
        base = getattr(handle, "base", None)
        if base is not None and hasattr(base, "free"):
            base.free()

    def stream_create(self) -> Any:
        return self.cuda.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def stream_synchronize(self, stream: Any) -> None:
        stream.synchronize()

    def stream_destroy(self, stream: Any) -> None:
        return None  # freed with the object

    def memcpy_htod_async(self, dst: int, src: np.ndarray, nbytes: int, stream: Any) -> None:
        self.cuda.memcpy_htod_async(dst, src.reshape(-1).view(np.uint8)[:nbytes], stream)

    def memcpy_dtoh_async(self, dst: np.ndarray, src: int, nbytes: int, stream: Any) -> None:
        self.cuda.memcpy_dtoh_async(dst.reshape(-1).view(np.uint8)[:nbytes], src, stream)

    def event_create(self) -> Any:
        return self.cuda.Event()

    def event_record(self, event: Any, stream: Any) -> None:
        event.record(stream)

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        return float(end.time_since(start))

    def event_destroy(self, event: Any) -> None:
        return None

    def close(self) -> None:
        for ptr in list(self._allocs):
            self.free(ptr)
        self._ctx.pop()
        self._ctx.detach()


def import_cudart() -> Any:
    """cuda-python's runtime module: ``cuda.bindings.runtime`` (>= 12.6.1), else ``cuda.cudart``."""
    try:
        return importlib.import_module("cuda.bindings.runtime")
    except ImportError:
        return importlib.import_module("cuda.cudart")


def open_cuda(index: int = 0, prefer: str = "auto") -> CudaApi:
    """Open CUDA on device ``index`` with cuda-python (``prefer="auto"`` tries it first) or pycuda.

    Raises:
        BackendUnavailableError: neither package imports (the message names both errors).
    """
    if prefer not in ("auto", "cuda-python", "pycuda"):
        raise BackendUnavailableError(f"unknown CUDA bindings '{prefer}'; use auto, cuda-python or pycuda")
    errors: list[str] = []
    if prefer in ("auto", "cuda-python"):
        try:
            cudart = import_cudart()
        except Exception as err:  # noqa: BLE001 - a CUDA library may fail with OSError
            errors.append(f"cuda-python: {type(err).__name__}: {err}")
        else:
            try:
                return CudaPythonApi(cudart, index)
            except CudaError as err:
                raise BackendUnavailableError(
                    f"CUDA is not usable here ({err}); the tensorrt backend needs an NVIDIA GPU with a driver "
                    "at least as new as the cuda-python CUDA version"
                ) from err
    if prefer in ("auto", "pycuda"):
        try:
            driver = importlib.import_module("pycuda.driver")
        except Exception as err:  # noqa: BLE001
            errors.append(f"pycuda: {type(err).__name__}: {err}")
        else:
            return PycudaApi(driver, index)
    raise BackendUnavailableError(
        "the tensorrt backend needs CUDA Python bindings, but " + "; ".join(errors)
        + "; install them with pip install 'endoedge[trt]' (cuda-python), or pycuda on JetPack 5"
    )


class PinnedBuffer:
    """A pinned host array and a device allocation of the same capacity, grown only when needed."""

    def __init__(self, cuda: CudaApi) -> None:
        self.cuda = cuda
        self.capacity = 0
        self.device = 0
        self._host_handle: Any = None
        self._host: np.ndarray = np.empty(0, np.uint8)

    def ensure(self, nbytes: int) -> bool:
        """Make room for ``nbytes``; returns True when the buffers were (re)allocated."""
        if nbytes <= self.capacity:
            return False
        self.release()
        size = max(int(nbytes), 256)
        self.device = self.cuda.malloc(size)
        self._host_handle, self._host = self.cuda.host_alloc(size)
        self.capacity = size
        return True

    def host(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        """A view of the pinned host memory as ``shape`` / ``dtype`` (must fit the capacity)."""
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        return self._host[:nbytes].view(dtype).reshape(shape)

    def release(self) -> None:
        """Free both allocations (safe to call twice)."""
        if self.capacity:
            self.cuda.free(self.device)
            self.cuda.host_free(self._host_handle)
        self.capacity, self.device, self._host_handle = 0, 0, None
        self._host = np.empty(0, np.uint8)
