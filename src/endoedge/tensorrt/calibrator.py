"""Implicit INT8 calibration for TensorRT <= 10 (``IInt8EntropyCalibrator2``) and its cache file.

The calibrator is fed by any iterable of ``{input_name: float32 N x C x H x W array}`` batches
with a ``content_hash`` (the protocol of :func:`endoedge.calibration.load_calibration_data`).
``get_batch`` copies each batch into a pinned host buffer and from there, asynchronously, into a
device buffer; TensorRT reads the device pointer. The calibration cache (``--calib-cache FILE``)
is tied to the data, the batch shape and the TensorRT version (a cache reused after the data
changed is a known Ultralytics pitfall), so a JSON sidecar ``FILE.json`` records those and a
cache whose sidecar does not match is ignored and rewritten.

The class is made by :func:`make_entropy_calibrator` because its base class only exists once
TensorRT is imported. The cache checks (:func:`cache_matches`) are pure and unit-tested.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from endoedge.errors import EngineBuildError, InputError
from endoedge.tensorrt.compat import trt_version
from endoedge.tensorrt.cuda_mem import CudaApi, PinnedBuffer

logger = logging.getLogger(__name__)


def cache_identity(content_hash: str, trt_version_text: str, batch_shape: tuple[int, ...]) -> dict[str, Any]:
    """What a calibration cache is valid for: the data, the TensorRT version, the batch shape."""
    return {"content_hash": content_hash, "trt_version": trt_version_text, "batch_shape": list(batch_shape)}


def cache_matches(cache_file: Path, identity: dict[str, Any]) -> bool:
    """True when ``cache_file`` exists and its sidecar ``<file>.json`` equals ``identity``."""
    side = cache_file.with_name(cache_file.name + ".json")
    if not (cache_file.is_file() and side.is_file()):
        return False
    try:
        return bool(json.loads(side.read_text(encoding="utf-8")) == identity)
    except (OSError, ValueError):
        return False


def write_cache(cache_file: Path, data: bytes, identity: dict[str, Any]) -> None:
    """Write the cache bytes and its sidecar."""
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache_file.write_bytes(data)
    cache_file.with_name(cache_file.name + ".json").write_text(json.dumps(identity) + "\n", encoding="utf-8")


def check_batch(batch: Mapping[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
    """The batch's ``name`` array as C-contiguous float32 of ``shape``.

    Raises:
        InputError: the input is missing or has another shape.
    """
    if name not in batch:
        raise InputError(f"calibration batch has {sorted(batch)}, the network input is '{name}'")
    arr = np.ascontiguousarray(batch[name], dtype=np.float32)
    if tuple(arr.shape) != tuple(shape):
        raise InputError(f"calibration batch '{name}' has shape {list(arr.shape)}; the calibration profile "
                         f"expects {list(shape)} (match --calib-batch and the model input size)")
    return arr


def make_entropy_calibrator(
    trt: ModuleType,
    data: Iterable[Mapping[str, np.ndarray]],
    *,
    content_hash: str,
    input_name: str,
    batch_shape: tuple[int, ...],
    cuda: CudaApi,
    cache_file: Path | None = None,
) -> Any:
    """An ``IInt8EntropyCalibrator2`` over ``data`` (see the module docstring).

    Raises:
        EngineBuildError: this TensorRT has no implicit calibration (11.x).
    """
    ver = trt_version(trt)
    if ver.has_implicit_calibration:  # removed in TensorRT 11.0
        base = trt.IInt8EntropyCalibrator2
    else:
        raise EngineBuildError(f"TensorRT {ver} has no implicit INT8 calibration; build a Q/DQ ONNX instead")
    identity = cache_identity(content_hash, str(trt.__version__), batch_shape)

    class EntropyCalibrator(base):  # type: ignore[misc, valid-type]
        """Feeds calibration batches to TensorRT through pinned host and device buffers."""

        def __init__(self) -> None:
            base.__init__(self)  # pybind11 trampoline: the base must be initialised explicitly
            self.batches = iter(data)
            self.buffer = PinnedBuffer(cuda)
            self.stream = cuda.stream_create()
            self.count = 0
            self.error: BaseException | None = None  # an exception here would be lost inside TensorRT

        def get_batch_size(self) -> int:
            return int(batch_shape[0])

        def get_batch(self, names: list[str], *_: Any) -> list[int] | None:
            try:
                batch = next(self.batches)
            except StopIteration:
                return None
            short = np.shape(batch.get(input_name, ()))
            if len(short) == len(batch_shape) and short[0] < batch_shape[0] and tuple(short[1:]) == tuple(batch_shape[1:]):
                logger.info("calibration: dropping the short last batch (%d images)", short[0])
                return None
            try:
                arr = check_batch(batch, input_name, batch_shape)
                self.buffer.ensure(arr.nbytes)
                np.copyto(self.buffer.host(arr.shape, arr.dtype), arr)
                cuda.memcpy_htod_async(self.buffer.device, self.buffer.host(arr.shape, arr.dtype),
                                       arr.nbytes, self.stream)
                cuda.stream_synchronize(self.stream)
            except BaseException as err:  # noqa: BLE001 - re-raised after the build
                self.error = err
                return None
            self.count += 1
            return [self.buffer.device for _ in names]

        def read_calibration_cache(self) -> bytes | None:
            if cache_file is not None and cache_matches(cache_file, identity):
                logger.info("using calibration cache %s", cache_file)
                return cache_file.read_bytes()
            if cache_file is not None and cache_file.exists():
                logger.warning("calibration cache %s is for other data, batch or TensorRT; recalibrating", cache_file)
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            if cache_file is not None:
                write_cache(cache_file, bytes(memoryview(cache)), identity)

        def close(self) -> None:
            self.buffer.release()
            cuda.stream_destroy(self.stream)

    return EntropyCalibrator()
