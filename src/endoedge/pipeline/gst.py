"""GStreamer through PyGObject: lazy initialisation and zero-copy access to video buffers.

``gi`` is imported on first use only. Without GStreamer or PyGObject, :func:`gst` raises one
:class:`~endoedge.errors.BackendUnavailableError` naming the Debian/Ubuntu packages and the pip
extra to install.

PyGObject's ``Gst.Buffer.map()`` hands Python a *copy* of the data (``bytes``). To avoid copying
every frame, :class:`BufferView` maps the buffer with ``gst_buffer_map`` through ctypes and wraps
the mapped memory in a read-only numpy array; the sample is kept alive and the buffer unmapped
when the view is released. The first buffer of each run is checked against PyGObject's own copy;
if they differ (an unexpected PyGObject layout) endoedge falls back to the copy and says so once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from types import SimpleNamespace
from typing import Any

import numpy as np

from endoedge.errors import BackendUnavailableError

logger = logging.getLogger(__name__)

APT_PACKAGES = (
    "gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad "
    "gstreamer1.0-libav gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 libgirepository1.0-dev "
    "libcairo2-dev"
)
_INSTALL_HINT = (
    f"install GStreamer (apt-get install {APT_PACKAGES}) and PyGObject "
    "(pip install 'endoedge[gst]'); on Jetson both come with JetPack (python3-gi)"
)

_lock = threading.Lock()
_ns: SimpleNamespace | None = None


def gst() -> SimpleNamespace:
    """Import and initialise GStreamer once; returns a namespace with ``Gst``, ``GstApp``, ``GstVideo``.

    Raises:
        BackendUnavailableError: PyGObject or the GStreamer introspection data is missing.
    """
    global _ns
    with _lock:
        if _ns is not None:
            return _ns
        _preload_libgcc()
        try:
            import gi

            gi.require_version("Gst", "1.0")
            gi.require_version("GstApp", "1.0")
            gi.require_version("GstVideo", "1.0")
            from gi.repository import Gst, GstApp, GstVideo
        except Exception as err:  # noqa: BLE001 - ImportError, ValueError (typelib missing), ...
            raise BackendUnavailableError(
                f"GStreamer is not usable from Python ({type(err).__name__}: {err}); {_INSTALL_HINT}"
            ) from err
        Gst.init(None)
        _ns = SimpleNamespace(Gst=Gst, GstApp=GstApp, GstVideo=GstVideo, version=Gst.version_string())
        return _ns


def _preload_libgcc() -> None:
    """Load libgcc_s globally before GStreamer pulls in libunwind.

    libgstreamer links libunwind, whose ``_Unwind_*`` symbols would otherwise win for libraries
    loaded later: C++ exceptions thrown inside torch then abort the process (seen with
    torch.onnx.export after Gst.init). Loading libgcc_s first keeps its unwinder in front.
    """
    try:
        ctypes.CDLL(ctypes.util.find_library("gcc_s") or "libgcc_s.so.1", mode=ctypes.RTLD_GLOBAL)
    except OSError:
        logger.debug("libgcc_s not preloaded", exc_info=True)


def has_element(name: str) -> bool:
    """Whether the GStreamer element factory ``name`` is installed."""
    return gst().Gst.ElementFactory.find(name) is not None


class _MapInfo(ctypes.Structure):
    _fields_ = [  # noqa: RUF012 - ctypes layout of GstMapInfo (gst/gstmemory.h)
        ("memory", ctypes.c_void_p),
        ("flags", ctypes.c_int),
        ("data", ctypes.c_void_p),
        ("size", ctypes.c_size_t),
        ("maxsize", ctypes.c_size_t),
        ("user_data", ctypes.c_void_p * 4),
        ("_gst_reserved", ctypes.c_void_p * 4),
    ]


_GST_MAP_READ = 1
_libgst: Any = None
_zero_copy_ok: bool | None = None


def _lib() -> Any:
    global _libgst
    if _libgst is None:
        lib = ctypes.CDLL(ctypes.util.find_library("gstreamer-1.0") or "libgstreamer-1.0.so.0")
        lib.gst_buffer_map.argtypes = [ctypes.c_void_p, ctypes.POINTER(_MapInfo), ctypes.c_int]
        lib.gst_buffer_map.restype = ctypes.c_int
        lib.gst_buffer_unmap.argtypes = [ctypes.c_void_p, ctypes.POINTER(_MapInfo)]
        lib.gst_buffer_unmap.restype = None
        _libgst = lib
    return _libgst


def _buffer_pointer(buf: Any) -> int | None:
    # A PyGObject boxed wrapper is PyObject_HEAD followed by the C pointer (pygboxed.h).
    return ctypes.c_void_p.from_address(id(buf) + object.__basicsize__).value


class BufferView:
    """A read-only ``H x W x 3`` uint8 BGR view of a GStreamer video sample.

    Args:
        sample: a ``Gst.Sample`` whose caps are ``video/x-raw,format=BGR``.
        width, height, stride: from the caps (``GstVideo.VideoInfo``); ``stride`` in bytes per row,
            which may exceed ``3 * width`` (rows padded to 4 bytes).

    Keep the view while the array is in use and call :meth:`release` afterwards (also done on
    garbage collection). ``array`` is not valid after :meth:`release`.
    """

    __slots__ = ("_info", "_ptr", "_sample", "array")

    def __init__(self, sample: Any, width: int, height: int, stride: int) -> None:
        global _zero_copy_ok
        buf = sample.get_buffer()
        self._sample = sample
        self._ptr: int | None = None
        self._info = _MapInfo()
        need = stride * (height - 1) + 3 * width
        data: Any = None
        if _zero_copy_ok is not False:
            ptr = _buffer_pointer(buf)
            if ptr and _lib().gst_buffer_map(ptr, ctypes.byref(self._info), _GST_MAP_READ):
                self._ptr = ptr
                if self._info.size < need:
                    self.release()
                    raise ValueError(f"video buffer holds {self._info.size} bytes, caps need {need}")
                data = (ctypes.c_uint8 * self._info.size).from_address(self._info.data)
                if _zero_copy_ok is None:
                    _zero_copy_ok = self._matches_copy(buf, data)
                    if not _zero_copy_ok:
                        logger.warning("zero-copy buffer mapping disagrees with PyGObject; copying frames")
                        self.release()
                        self._sample = sample
                        data = None
        if data is None:
            data = buf.extract_dup(0, buf.get_size())
            if len(data) < need:
                raise ValueError(f"video buffer holds {len(data)} bytes, caps need {need}")
        flat = np.frombuffer(data, dtype=np.uint8)
        self.array = np.lib.stride_tricks.as_strided(
            flat, shape=(height, width, 3), strides=(stride, 3, 1), writeable=False
        )

    @staticmethod
    def _matches_copy(buf: Any, data: Any) -> bool:
        n = min(4096, buf.get_size())
        return bytes(memoryview(data)[:n]) == buf.extract_dup(0, n)

    def release(self) -> None:
        """Unmap the buffer and drop the sample (idempotent)."""
        if self._ptr is not None:
            _lib().gst_buffer_unmap(self._ptr, ctypes.byref(self._info))
            self._ptr = None
        self._sample = None

    def __del__(self) -> None:
        self.release()
