"""The build step before the TensorRT backend runs: which engine to load for a model file.

The backend (:class:`endoedge.runtime.tensorrt.TensorRTBackend`) runs engines only and never
builds (import-linter forbids ``endoedge.runtime`` to import this module or
:mod:`~endoedge.tensorrt.build`). :func:`endoedge.load` and ``endoedge bench`` call
:func:`model_for_backend` first:

* an ``.onnx`` is built once into the engine cache (``cache_dir``, default
  :func:`~endoedge.tensorrt.manifest.default_cache_dir`, keyed by
  :func:`~endoedge.tensorrt.manifest.cache_key`) with ``precision`` / ``batch``, and the cached
  engine is reused while the ONNX, TensorRT, GPU and options match;
* an engine with ``rebuild_if_stale`` is checked against this machine and the ONNX it names,
  and rebuilt in place from that ONNX when stale;
* any other file is returned as is (the backend checks an engine's manifest and refuses a stale
  engine or a file that is no engine).

For ``tensorrt-rtx`` an ``.onnx`` is built by TensorRT for RTX into the same cache, for the
compute capability of the GPU it will run on (asked through CUDA, so a GPU is needed).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from endoedge.data.media import ENGINE_SUFFIXES
from endoedge.errors import StaleEngineError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineRequest:
    """The build-step options of ``endoedge.load(..., backend="tensorrt")`` (the rest go to the backend).

    Attributes:
        precision: for an ``.onnx``: ``fp32`` / ``fp16`` / ``int8`` (``None`` = what the ONNX is).
        batch: for an ``.onnx``: ``(min, opt, max)`` batch profile (``None`` = the default).
        cache_dir: engine cache for an ``.onnx`` (``None`` = the default cache folder).
        rebuild_if_stale: rebuild an engine whose manifest does not match this machine or its
            ONNX (from the ONNX path it records) instead of letting the backend refuse it.
    """

    precision: str | None = None
    batch: tuple[int, int, int] | None = None
    cache_dir: str | Path | None = None
    rebuild_if_stale: bool = False


BUILD_OPTIONS = tuple(f.name for f in fields(EngineRequest))


def split_options(options: Mapping[str, Any]) -> tuple[EngineRequest, dict[str, Any]]:
    """``(build-step options, backend options)`` of ``endoedge.load``'s keyword options."""
    req = EngineRequest(**{k: v for k, v in options.items() if k in BUILD_OPTIONS})
    return req, {k: v for k, v in options.items() if k not in BUILD_OPTIONS}


def _gpu_target(index: int, cuda_bindings: str) -> tuple[str, ...]:
    """This GPU's compute capability as a TensorRT for RTX target (refused when it is none)."""
    from endoedge.errors import EngineBuildError
    from endoedge.tensorrt.cuda_mem import open_cuda
    from endoedge.tensorrt.gpu_info import query_gpu
    from endoedge.tensorrt.rtx import target_errors

    cuda = open_cuda(index, cuda_bindings)
    try:
        gpu = query_gpu(cuda, index)
    finally:
        cuda.close()
    errors = target_errors((gpu.compute_capability,))
    if errors:
        raise EngineBuildError(f"{gpu.name}: {errors[0]}")
    return (gpu.compute_capability,)


def prepare_engine(model: str | Path, req: EngineRequest | None = None, *, device: str = "auto",
                   cuda_bindings: str = "auto", runtime: str = "tensorrt") -> Path:
    """The engine the TensorRT backend runs for ``model`` (see the module docstring).

    Args:
        model: an ``.onnx`` or a TensorRT engine (with its manifest).
        req: the build-step options (``None`` = defaults).
        device: ``auto``, ``cuda`` or ``cuda:N`` (the GPU to build for / check against).
        cuda_bindings: ``auto``, ``cuda-python`` or ``pycuda``.
        runtime: ``tensorrt`` or ``rtx`` (TensorRT for RTX: an ``.onnx`` is built for this GPU's
            compute capability).

    Raises:
        EndoedgeError: no TensorRT/CUDA, build failure, a stale engine that cannot be rebuilt.
    """
    from endoedge.tensorrt.gpu_info import device_index

    req = req or EngineRequest()
    path = Path(model)
    index = device_index(device)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from endoedge.tensorrt.build import build_engine
        from endoedge.tensorrt.manifest import default_cache_dir
        from endoedge.tensorrt.plan import BuildRequest

        ccs = _gpu_target(index, cuda_bindings) if runtime == "rtx" else ()
        build_req = BuildRequest(precision=req.precision, batch=req.batch, runtime=runtime, compute_capabilities=ccs)
        result = build_engine(path, None, build_req,
                              cache_dir=req.cache_dir or default_cache_dir(), device=index,
                              cuda_bindings=cuda_bindings)
        logger.info("tensorrt | engine %s (%s)", result.engine_path, "cached" if result.reused else "built")
        return result.engine_path
    if suffix in ENGINE_SUFFIXES and req.rebuild_if_stale and runtime == "tensorrt":
        _rebuild_if_stale(path, index, cuda_bindings)
    return path  # anything else: the backend says what it runs


def _rebuild_if_stale(engine: Path, index: int, cuda_bindings: str) -> None:
    """Check ``engine`` against this machine and its ONNX; rebuild it in place when stale."""
    from endoedge.tensorrt.build import rebuild_stale
    from endoedge.tensorrt.compat import import_tensorrt
    from endoedge.tensorrt.cuda_mem import open_cuda
    from endoedge.tensorrt.gpu_info import query_gpu
    from endoedge.tensorrt.manifest import machine_info, read_manifest, verify_engine

    trt = import_tensorrt()
    cuda = open_cuda(index, cuda_bindings)
    try:
        machine = machine_info(str(trt.__version__), query_gpu(cuda, index))
    finally:
        cuda.close()
    manifest = read_manifest(engine)
    try:
        verify_engine(engine, manifest, machine)
    except StaleEngineError:
        rebuild_stale(engine, manifest, device=index, cuda_bindings=cuda_bindings)


def model_for_backend(backend: str, model: str | Path, device: str,
                      options: Mapping[str, Any]) -> tuple[Path, dict[str, Any]]:
    """What backend ``backend`` is constructed with: ``(model file, backend options)``.

    For ``tensorrt``: ``options`` split by :func:`split_options` and the engine prepared by
    :func:`prepare_engine` (``cuda_bindings`` is used there and passed on to the backend). Any
    other backend gets ``model`` and ``options`` unchanged. The one step :func:`endoedge.load`,
    :func:`endoedge.load_classifier` and ``endoedge bench`` take before constructing a backend.
    """
    if backend not in ("tensorrt", "tensorrt-rtx"):
        return Path(model), dict(options)
    req, rest = split_options(options)
    runtime = "rtx" if backend == "tensorrt-rtx" else "tensorrt"
    return prepare_engine(model, req, device=device, cuda_bindings=str(rest.get("cuda_bindings", "auto")),
                          runtime=runtime), rest
