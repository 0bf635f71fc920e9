"""ONNX -> TensorRT engine + manifest, and the engine cache: the TensorRT calls of ``endoedge build``.

The decisions are made by :func:`endoedge.tensorrt.plan.make_plan` (unit-tested per line
without TensorRT); this module executes a plan with the API of the line it runs on, behind
version guards on :class:`~endoedge.tensorrt.compat.TrtVersion`:

* ``builder.create_network(flags)`` with ``EXPLICIT_BATCH`` only on 8.x and ``STRONGLY_TYPED``
  only on 10.x when the plan asks for it (11.x is always strongly typed);
* ``trt.OnnxParser(network, logger).parse_from_file(path)``; on failure every
  ``parser.get_error(i)`` is listed in the error;
* ``config.set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes)``, one optimization profile
  (``set_shape(name, min, opt, max)``), ``BuilderFlag.FP16/INT8`` (<= 10), the entropy
  calibrator + calibration profile (<= 10), DLA (``default_device_type``, ``DLA_core``,
  ``GPU_FALLBACK``), ``VERSION_COMPATIBLE``, ``hardware_compatibility_level``;
* the timing cache exactly as NVIDIA's ``samples/python/common.py`` does it;
* ``builder.build_serialized_network(network, config)``.

* TensorRT for RTX (``req.runtime == "rtx"``): no CUDA is opened; the targets are named
  (:func:`endoedge.tensorrt.rtx.set_targets`) and the engine is built ahead of time, on a CPU.

Full TensorRT was not executed on the development machines (no GPU there): that path is written
from NVIDIA's bindings and samples and its names are checked statically per line. The TensorRT
for RTX path runs in the test suite: real builds from real ONNX files.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from endoedge.data.onnx_facts import OnnxFacts, onnx_facts
from endoedge.errors import EndoedgeError, EngineBuildError, InputError, StaleEngineError
from endoedge.tensorrt.compat import TrtVersion, import_tensorrt, import_tensorrt_rtx, trt_version
from endoedge.tensorrt.engine_manifest import (
    EngineIdentity,
    EngineManifest,
    TensorIO,
    parse_profile,
)
from endoedge.tensorrt.manifest import (
    MachineInfo,
    cache_key,
    cached_engine_path,
    machine_info,
    make_manifest,
    manifest_path,
    read_manifest,
    stale_field,
    write_manifest,
)
from endoedge.tensorrt.plan import BuildPlan, BuildRequest, make_plan, request_from_manifest
from endoedge.tensorrt.rtx import AOT_GPU, set_targets
from endoedge.tensorrt.trt_logger import make_trt_logger

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

# One representative of every supported line: errors all of them report do not depend on the
# TensorRT installed, so they are raised before TensorRT is imported.
_LINES = (TrtVersion(8, 6, 1), TrtVersion(10, 3, 0), TrtVersion(11, 4, 0))
_RTX_LINES = (TrtVersion(1, 7, 1, rtx=True),)


class CalibrationBatches(Protocol):
    """Calibration data for the implicit INT8 calibrator (:class:`endoedge.calibration.CalibrationData`)."""

    content_hash: str

    def __iter__(self) -> Iterator[Mapping[str, np.ndarray]]: ...


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build_engine` produced (or found up to date)."""

    engine_path: Path
    manifest: EngineManifest
    plan: BuildPlan
    reused: bool


def precheck(req: BuildRequest, facts: OnnxFacts) -> None:
    """Raise what every supported TensorRT line refuses, before TensorRT is imported.

    The first error all lines share; else, when every line has some error, the first one of
    the 10.x line that names no version. Line-specific problems wait for the installed line.
    With ``req.runtime == "rtx"`` the TensorRT for RTX line's first error.
    """
    if req.runtime == "rtx":
        make_plan(req, _RTX_LINES[0], facts).check()
        return
    plans = [make_plan(req, v, facts) for v in _LINES]
    common = set.intersection(*(set(p.errors) for p in plans))
    for err in plans[0].errors:
        if err in common:
            raise EngineBuildError(err)
    if all(p.errors for p in plans):
        for err in plans[1].errors:
            if f"TensorRT {_LINES[1]}" not in err and str(_LINES[1]) not in err:
                raise EngineBuildError(err)


def _dtype_name(trt: ModuleType, dtype: Any) -> str:
    import numpy as np

    try:
        return np.dtype(trt.nptype(dtype)).name
    except (TypeError, KeyError, ValueError):
        return str(dtype).rsplit(".", 1)[-1].lower()


def _network_io(trt: ModuleType, network: Any) -> list[TensorIO]:
    io = []
    for i in range(network.num_inputs):
        t = network.get_input(i)
        io.append(TensorIO(str(t.name), "input", _dtype_name(trt, t.dtype), tuple(int(d) for d in t.shape)))
    for i in range(network.num_outputs):
        t = network.get_output(i)
        io.append(TensorIO(str(t.name), "output", _dtype_name(trt, t.dtype), tuple(int(d) for d in t.shape)))
    return io


def _parser_errors(parser: Any) -> list[str]:
    """Each ONNX parser error as ``node N (Op 'name'): message``."""
    out = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        desc = str(err.desc() if hasattr(err, "desc") else err).replace("\n", " ")
        node = int(getattr(err, "node", lambda: -1)())
        if node < 0:
            out.append(desc)
            continue
        op = str(getattr(err, "node_operator", lambda: "")())
        name = str(getattr(err, "node_name", lambda: "")())
        out.append(f"node {node} ({op} '{name}'): {desc}")
    return out


def _set_profile(builder: Any, shapes: dict[str, dict[str, list[int]]]) -> Any:
    profile = builder.create_optimization_profile()
    for name, s in shapes.items():
        profile.set_shape(name, s["min"], s["opt"], s["max"])
    return profile


def build_serialized(trt: ModuleType, plan: BuildPlan, onnx_path: Path, *, calibrator: Any = None,
                     timing_cache: Path | None = None) -> tuple[bytes, list[TensorIO]]:
    """Parse ``onnx_path`` and build the plan; returns ``(engine bytes, io records)``.

    Raises:
        EngineBuildError: the parser or the builder failed (their messages are included).
    """
    ver = trt_version(trt)
    if ver != plan.trt_version:
        raise EngineBuildError(f"the plan is for TensorRT {plan.trt_version}, this is {ver}")
    log = make_trt_logger(trt)
    trt.init_libnvinfer_plugins(log, "")
    builder = trt.Builder(log)
    flags = 0
    if ver.needs_explicit_batch_flag:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if ver.has_strongly_typed_flag and not ver.strongly_typed_only and plan.strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, log)
    if not parser.parse_from_file(str(onnx_path)):
        errors = _parser_errors(parser)
        raise EngineBuildError(f"TensorRT {ver}'s ONNX parser rejected '{onnx_path.name}': "
                               + " | ".join(errors or log.errors or ["no reason given"]))
    config = builder.create_builder_config()
    if plan.workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    if plan.set_profile:
        config.add_optimization_profile(_set_profile(builder, plan.profile))
    if ver.has_compute_capabilities:
        set_targets(trt, config, plan.compute_capabilities)
    if ver.has_precision_flags:
        if plan.fp16_flag:
            config.set_flag(trt.BuilderFlag.FP16)
        if plan.int8_flag:
            config.set_flag(trt.BuilderFlag.INT8)
    if ver.has_implicit_calibration and plan.use_calibrator:
        config.int8_calibrator = calibrator
        if plan.set_profile and plan.calib_profile is not None:
            config.set_calibration_profile(_set_profile(builder, plan.calib_profile))
    if ver.has_dla and plan.dla_core is not None:
        cores = int(builder.num_DLA_cores)
        if plan.dla_core >= cores:
            raise EngineBuildError(f"--dla {plan.dla_core}: this device has {cores} DLA core(s)"
                                   + (" (none: not a Jetson Xavier/Orin)" if cores == 0 else ""))
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if ver.has_version_compatible and plan.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if ver.has_hardware_compatibility and plan.hardware_compat == "ampere+":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if ver.has_same_compute_capability and plan.hardware_compat == "same-cc":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY
    if not ver.has_timing_cache:
        timing_cache = None  # TensorRT for RTX: a deprecated no-op (the plan warned)
    if timing_cache is not None:  # NVIDIA samples/python/common.py
        buf = timing_cache.read_bytes() if timing_cache.is_file() else b""
        cache = config.create_timing_cache(buf)
        config.set_timing_cache(cache, True)  # ignore_mismatch: a cache from another device is dropped
    io = _network_io(trt, network)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        reason = log.errors[-1] if log.errors else "see the TensorRT log above"
        if ver.rtx and "SM75" in reason and "GEMM" in reason:  # measured with TensorRT for RTX 1.7.1
            reason += ("; Turing (7.5) has no FP32 matrix-multiply kernels in TensorRT for RTX: build the FP16 ONNX "
                       "(`endoedge quantize MODEL.onnx --precision fp16`) for 7.5, or drop 7.5")
        raise EngineBuildError(f"TensorRT {ver} could not build '{onnx_path.name}' ({plan.precision}): {reason}")
    if timing_cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        timing_cache.write_bytes(memoryview(config.get_timing_cache().serialize()))
    return bytes(memoryview(serialized)), io


def calibrator_shape(plan: BuildPlan) -> tuple[int, ...]:
    """The calibration batch shape: the calibration profile's shape (``(calib_batch, C, H, W)``)."""
    return tuple(plan.calib_profile[plan.input_name]["opt"]) if plan.calib_profile else ()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _identity(plan: BuildPlan, facts: OnnxFacts, machine: MachineInfo, calibration_hash: str | None) -> EngineIdentity:
    """The cache-key fields of the engine this plan would build here."""
    return EngineIdentity(
        onnx_sha256=facts.sha256, trt_version=machine.trt_version, gpu=machine.gpu, precision=plan.precision,
        int8_source=plan.int8_source, profiles=(parse_profile(plan.profile),), dla_core=plan.dla_core,
        calibration_hash=calibration_hash, version_compatible=plan.version_compatible,
        hardware_compatibility=plan.hardware_compat, flavour=machine.flavour,
        compute_capabilities=plan.compute_capabilities if machine.flavour == "rtx" else ())


def _up_to_date(engine: Path, ident: EngineIdentity, machine: MachineInfo, facts: OnnxFacts) -> EngineManifest | None:
    """The existing engine's manifest when it is exactly what would be built, else ``None``."""
    if not (engine.is_file() and manifest_path(engine).is_file()):
        return None
    try:
        manifest = read_manifest(engine)
        if cache_key(manifest) != cache_key(ident) or stale_field(manifest, machine, onnx_sha256=facts.sha256):
            return None
    except (EndoedgeError, ValueError, KeyError, TypeError):  # a broken manifest means: rebuild
        return None
    return manifest


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path | None,
    req: BuildRequest,
    *,
    cache_dir: str | Path | None = None,
    force: bool = False,
    timing_cache: str | Path | None = None,
    calibration: Callable[[], CalibrationBatches] | None = None,
    calib_cache: str | Path | None = None,
    device: int = 0,
    cuda_bindings: str = "auto",
) -> BuildResult:
    """Build ``onnx_path`` into ``engine_path`` (or into ``cache_dir``, keyed as HoloHub does) + manifest.

    Args:
        onnx_path: the ONNX (its ``metadata_props`` become the manifest's ``spec``).
        engine_path: where to write; ``None`` = only into ``cache_dir``. With both, the cached
            engine is copied there.
        req: the build options.
        cache_dir: engine cache folder: an engine with the same key is reused, not rebuilt.
        force: rebuild even when an up-to-date engine exists.
        timing_cache: TensorRT timing cache file (read if present, written after the build).
        calibration: a zero-argument callable returning the calibration data (iterable of
            ``{input: float32 NCHW}`` batches with ``content_hash``); called only when the plan
            uses the implicit calibrator.
        calib_cache: the calibrator's cache file.
        device: CUDA device ordinal.
        cuda_bindings: ``auto``, ``cuda-python`` or ``pycuda``.

    Raises:
        EndoedgeError: bad options for this TensorRT line, no TensorRT/CUDA, parser/build failure.
    """
    from endoedge.jetson.platform import is_jetson
    from endoedge.tensorrt.cuda_mem import open_cuda
    from endoedge.tensorrt.gpu_info import query_gpu

    facts = onnx_facts(onnx_path)
    precheck(req, facts)
    if engine_path is None and cache_dir is None:
        raise InputError("give an output engine path (-o) or an engine cache folder (--cache-dir)")
    rtx = req.runtime == "rtx"
    trt = import_tensorrt_rtx() if rtx else import_tensorrt()
    ver = trt_version(trt)
    cuda = None if rtx else open_cuda(device, cuda_bindings)  # RTX builds ahead of time: no GPU
    calibrator = None
    try:
        if cuda is None:
            machine = MachineInfo(str(trt.__version__), AOT_GPU, flavour="rtx")
            plan = make_plan(req, ver, facts).check()
        else:
            machine = machine_info(str(trt.__version__), query_gpu(cuda, device))
            plan = make_plan(req, ver, facts, jetson=is_jetson(), gpu_cc=machine.gpu.cc_tuple).check()
        for w in plan.warnings:
            logger.warning("%s", w)
        data = calibration() if plan.use_calibrator and calibration is not None else None
        if plan.use_calibrator and data is None:
            raise EngineBuildError("--precision int8 with the calibrator needs calibration data (--calib SRC)")
        calib_hash = str(data.content_hash) if data is not None else None
        ident = _identity(plan, facts, machine, calib_hash)
        target = Path(engine_path) if engine_path is not None else None
        if cache_dir is not None:
            built_at = cached_engine_path(cache_dir, facts.path, plan.precision, cache_key(ident))
            built_at.parent.mkdir(parents=True, exist_ok=True)
        elif target is not None:
            built_at = target
        else:  # checked above; kept for the type checker
            raise InputError("give an output engine path (-o) or an engine cache folder (--cache-dir)")
        manifest = None if force else _up_to_date(built_at, ident, machine, facts)
        reused = manifest is not None
        if manifest is None:
            if built_at.exists() and not force and cache_dir is None:
                raise InputError(f"'{built_at}' exists and was built from another ONNX, TensorRT, GPU, targets "
                                 "or options; pass --force to replace it")
            logger.info("building %s: %s", built_at, plan.describe())
            if plan.use_calibrator and cuda is not None:
                from endoedge.tensorrt.calibrator import make_entropy_calibrator

                calibrator = make_entropy_calibrator(
                    trt, data or (), content_hash=str(calib_hash), input_name=plan.input_name,
                    batch_shape=calibrator_shape(plan),
                    cuda=cuda, cache_file=Path(calib_cache) if calib_cache else None)
            blob, io = build_serialized(trt, plan, facts.path, calibrator=calibrator,
                                        timing_cache=Path(timing_cache) if timing_cache else None)
            if calibrator is not None:
                if calibrator.error is not None:
                    raise calibrator.error
                logger.info("calibrated on %d batches of %s", calibrator.count, list(calibrator_shape(plan)))
            _write_atomic(built_at, blob)
            manifest = make_manifest(
                onnx_path=facts.path, onnx_sha256=facts.sha256, machine=machine, precision=plan.precision,
                int8_source=plan.int8_source, calibration_hash=calib_hash, profiles=ident.profiles, io=io,
                version_compatible=plan.version_compatible, hardware_compatibility=plan.hardware_compat,
                dla_core=plan.dla_core, spec=facts.metadata, flavour=machine.flavour,
                compute_capabilities=ident.compute_capabilities)
            write_manifest(built_at, manifest)
        if target is not None and target.resolve() != built_at.resolve():
            shutil.copyfile(built_at, target)
            write_manifest(target, manifest)
        return BuildResult(target or built_at, manifest, plan, reused)
    finally:
        if calibrator is not None:
            calibrator.close()
        if cuda is not None:
            cuda.close()


def rebuild_stale(engine_path: str | Path, manifest: EngineManifest, *, device: int = 0,
                  cuda_bindings: str = "auto") -> BuildResult:
    """Rebuild a stale engine in place from the ONNX and options its manifest records.

    Raises:
        StaleEngineError: the ONNX is gone, or the engine was calibrated (the data is not recorded).
    """
    onnx = Path(manifest.onnx_path or "")
    if not manifest.onnx_path or not onnx.is_file():
        raise StaleEngineError(f"cannot rebuild '{engine_path}': its ONNX '{onnx}' is not on this machine; "
                               f"build it with `endoedge build MODEL.onnx -o {engine_path} --force`")
    if manifest.int8_source == "calibrator":
        raise StaleEngineError(f"cannot rebuild '{engine_path}' by itself: it was INT8-calibrated; run "
                               f"`endoedge build {onnx} --precision int8 --calib SRC -o {engine_path} --force`")
    logger.warning("rebuilding stale engine %s from %s", engine_path, onnx)
    return build_engine(onnx, engine_path, request_from_manifest(manifest), force=True, device=device,
                        cuda_bindings=cuda_bindings)
