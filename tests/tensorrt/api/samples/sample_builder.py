"""Test fixture for the static TensorRT API check: a realistic builder + runtime, guarded per line.

Never imported or run by the tests (it needs TensorRT); ``test_trt_api.py`` feeds its source to
the checker and expects no violation. It follows the patterns of NVIDIA's samples
(``samples/python/common*.py``, ``detectron2/build_engine.py``) as quoted in the reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from endoedge.tensorrt.compat import import_tensorrt, trt_version


def build_engine(onnx_path: Path, precision: str, batch: tuple[int, int, int], cache: Path | None) -> bytes:
    """Parse an ONNX file and build a serialized engine with the line's precision API."""
    trt = import_tensorrt()
    ver = trt_version(trt)
    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    flags = 0
    if ver.needs_explicit_batch_flag:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError("; ".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    if ver.has_precision_flags:
        if precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
    elif precision != "fp32" and not ver.strongly_typed_only:
        raise ValueError("unreachable: every line without precision flags is strongly typed")
    profile = builder.create_optimization_profile()
    name = network.get_input(0).name
    shape = tuple(network.get_input(0).shape)[1:]
    profile.set_shape(name, (batch[0], *shape), (batch[1], *shape), (batch[2], *shape))
    config.add_optimization_profile(profile)
    if cache is not None:
        timing = config.create_timing_cache(cache.read_bytes() if cache.is_file() else b"")
        config.set_timing_cache(timing, True)
    if ver.has_dla and builder.num_DLA_cores > 0:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = 0
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError("TensorRT returned no engine")
    if cache is not None:
        cache.write_bytes(memoryview(config.get_timing_cache().serialize()))
    return bytes(plan)


def attach_calibrator(config: Any, batches: list[np.ndarray], cache_file: Path) -> Any:
    """Implicit INT8 calibration (TensorRT <= 10 only).

    TensorRT lines: 8.6, 10.x
    """
    trt = import_tensorrt()

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = list(batches)

        def get_batch_size(self) -> int:
            return int(self.batches[0].shape[0])

        def get_batch(self, names: list[str]) -> list[int] | None:
            return None

        def read_calibration_cache(self) -> bytes | None:
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache: bytes) -> None:
            cache_file.write_bytes(bytes(cache))

    calib = EntropyCalibrator()
    config.int8_calibrator = calib
    return calib


def maybe_strongly_typed(builder: Any, want: bool) -> Any:
    """A strongly typed network on 10.x (on 11.x every network is; the flag is a no-op there)."""
    trt = import_tensorrt()
    ver = trt_version(trt)
    flags = 0
    if want and ver.has_strongly_typed_flag and ver.major == 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    if hasattr(trt.BuilderFlag, "FP8"):
        _ = trt.BuilderFlag.FP8
    return builder.create_network(flags)


def make_allocator() -> Any:
    """A data-dependent-shape output allocator (NMS outputs)."""
    trt = import_tensorrt()

    class Allocator(trt.IOutputAllocator):
        def __init__(self) -> None:
            trt.IOutputAllocator.__init__(self)
            self.shapes: dict[str, tuple[int, ...]] = {}

        def reallocate_output_async(self, tensor_name: str, memory: int, size: int, alignment: int, stream: int) -> int:
            return memory

        def notify_shape(self, tensor_name: str, shape: Any) -> None:
            self.shapes[tensor_name] = tuple(shape)

    return Allocator()


def run_engine(plan: bytes, images: np.ndarray, stream: int, ptrs: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """Deserialize and run once with the name-based I/O API (8.5+)."""
    trt = import_tensorrt()
    ver = trt_version(trt)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(plan)
    if ver.major >= 10:
        context = engine.create_execution_context(trt.ExecutionContextAllocationStrategy.STATIC)
    else:
        context = engine.create_execution_context()
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            low, _opt, high = engine.get_tensor_profile_shape(name, 0)
            if not low[0] <= images.shape[0] <= high[0]:
                raise ValueError("batch outside the profile")
            context.set_input_shape(name, images.shape)
        dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        shapes[name] = tuple(context.get_tensor_shape(name))
        _ = trt.volume(shapes[name]) * dtype.itemsize
        context.set_tensor_address(name, ptrs[name])
    if not context.execute_async_v3(stream):
        raise RuntimeError("execute_async_v3 failed")
    mem = engine.device_memory_size_v2 if hasattr(engine, "device_memory_size_v2") else engine.device_memory_size
    if ver.strongly_typed_only:
        return shapes
    _ = engine.get_device_memory_size_for_profile(0) + mem
    return shapes
