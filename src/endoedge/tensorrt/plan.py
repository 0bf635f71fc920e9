"""What a TensorRT build will do, decided without TensorRT: :class:`BuildPlan` from the request,
the TensorRT line and the ONNX's facts. :mod:`endoedge.tensorrt.build` then only executes it.

Per TensorRT line (facts in ``shared/reference/tensorrt-jetson-gstreamer.md`` section 1):

* **8.5 / 8.6** (JetPack 5.1 / 6.0): ``EXPLICIT_BATCH`` network flag (the ONNX parser needs it);
  precision through ``BuilderFlag.FP16`` / ``INT8``; INT8 from a Q/DQ ONNX (FP16 + INT8 flags, so
  the unquantized layers may run in FP16) or the implicit entropy calibrator.
* **10.x** (JetPack 6.1+ / 7.x): networks are always explicit-batch (no flag). Weakly typed with
  builder flags as on 8.x, except that an **FP16-typed ONNX** (from ``endoedge quantize
  --precision fp16``) is built ``STRONGLY_TYPED``: its author already chose every tensor's type,
  strong typing keeps exactly those (as TensorRT 11 does) and precision flags "are not required
  and should not be specified". A float32 Q/DQ ONNX stays weakly typed with FP16 + INT8 flags,
  ModelOpt's advice for 10.x (``trtexec --best``); strongly typed it would keep every
  non-quantized layer in FP32. The calibrator works but is deprecated (10.1); precision flags are
  deprecated from 10.12 (warnings, not errors).
* **11.x**: always strongly typed; no precision flags, no calibrator. FP16 needs an FP16 ONNX,
  INT8 a Q/DQ ONNX; anything else is refused with the command that makes the right ONNX.
* **TensorRT for RTX** (``TrtVersion(..., rtx=True)``): typed as 11.x; no DLA, no version or
  hardware compatibility, no timing cache; targets named with ``--compute-capability``
  (:mod:`endoedge.tensorrt.rtx`), which full TensorRT refuses.

Every problem is collected in :attr:`BuildPlan.errors` as one line saying what is wrong and what
to do; :meth:`BuildPlan.check` raises the first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from endoedge.data.onnx_facts import OnnxFacts
from endoedge.errors import EngineBuildError, InputError
from endoedge.tensorrt.compat import TrtVersion
from endoedge.tensorrt.rtx import target_errors, targets_text

if TYPE_CHECKING:
    from endoedge.tensorrt.engine_manifest import EngineManifest

PRECISIONS = ("fp32", "fp16", "int8")
HARDWARE_COMPAT = ("none", "ampere+", "same-cc")
DEFAULT_DYNAMIC_BATCH = (1, 1, 8)  # min:opt:max when the ONNX batch axis is dynamic and --batch is not given
QUANTIZE_FP16 = "make it with `endoedge quantize MODEL.onnx --precision fp16`"
QUANTIZE_INT8 = "make it with `endoedge quantize MODEL.onnx --precision int8 --calib SRC`"


def parse_batch_range(text: str) -> tuple[int, int, int]:
    """``"1:4:8"`` -> ``(1, 4, 8)``; ``"4"`` -> ``(4, 4, 4)``. Needs ``1 <= min <= opt <= max``.

    Raises:
        InputError: not one or three whole numbers, or out of order.
    """
    parts = [p.strip() for p in str(text).split(":")]
    if len(parts) not in (1, 3) or not all(p.isdigit() for p in parts):
        raise InputError(f"--batch '{text}' must be MIN:OPT:MAX (e.g. 1:4:8) or one batch size")
    values = [int(p) for p in parts] * (3 if len(parts) == 1 else 1)
    lo, opt, hi = values
    if not 1 <= lo <= opt <= hi:
        raise InputError(f"--batch '{text}': need 1 <= MIN <= OPT <= MAX")
    return lo, opt, hi


@dataclass(frozen=True)
class BuildRequest:
    """What the user asked for (``endoedge build`` options; ``None`` = default).

    Attributes:
        precision: ``fp32`` / ``fp16`` / ``int8``; ``None`` = what the ONNX is (Q/DQ -> int8,
            FP16-typed -> fp16, else fp32).
        calib: a calibration data source was given (implicit INT8 calibration).
        calib_batch: images per calibration batch.
        batch: ``(min, opt, max)`` of the batch axis; ``None`` = the ONNX's fixed batch, or
            :data:`DEFAULT_DYNAMIC_BATCH` for a dynamic one.
        workspace_mib: ``MemoryPoolType.WORKSPACE`` limit in MiB (``None`` = TensorRT's default).
        dla_core: build for this DLA core with GPU fallback (Jetson Xavier/Orin).
        version_compatible: ``BuilderFlag.VERSION_COMPATIBLE`` (runs on later TensorRT runtimes).
        hardware_compat: ``none``, ``ampere+`` (``AMPERE_PLUS``) or ``same-cc``
            (``SAME_COMPUTE_CAPABILITY``).
        runtime: ``tensorrt`` (full TensorRT, builds on the GPU it runs on) or ``rtx``
            (TensorRT for RTX, ahead of time).
        compute_capabilities: TensorRT for RTX targets, ``"major.minor"`` (``()`` = its
            Ampere+ default).
        timing_cache: a timing cache file was given.
    """

    precision: str | None = None
    calib: bool = False
    calib_batch: int = 1
    batch: tuple[int, int, int] | None = None
    workspace_mib: int | None = None
    dla_core: int | None = None
    version_compatible: bool = False
    hardware_compat: str = "none"
    runtime: str = "tensorrt"
    compute_capabilities: tuple[str, ...] = ()
    timing_cache: bool = False


@dataclass(frozen=True)
class BuildPlan:
    """The decisions :func:`make_plan` took; :mod:`~endoedge.tensorrt.build` executes them.

    ``profile`` / ``calib_profile`` map the input name to ``{"min", "opt", "max"}`` shapes;
    ``set_profile`` says whether an optimization profile is added (dynamic inputs only).
    """

    trt_version: TrtVersion
    precision: str
    int8_source: str | None
    explicit_batch: bool
    strongly_typed: bool
    fp16_flag: bool
    int8_flag: bool
    use_calibrator: bool
    input_name: str
    profile: dict[str, dict[str, list[int]]]
    set_profile: bool
    calib_profile: dict[str, dict[str, list[int]]] | None
    calib_batch: int
    workspace_bytes: int | None
    dla_core: int | None
    gpu_fallback: bool
    version_compatible: bool
    hardware_compat: str
    compute_capabilities: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    errors: tuple[str, ...] = field(default=())

    @property
    def network_flags(self) -> tuple[str, ...]:
        """``NetworkDefinitionCreationFlag`` members passed to ``create_network``."""
        return tuple(n for n, on in (("EXPLICIT_BATCH", self.explicit_batch),
                                     ("STRONGLY_TYPED", self.strongly_typed)) if on)

    @property
    def builder_flags(self) -> tuple[str, ...]:
        """``BuilderFlag`` members set on the builder config."""
        return tuple(n for n, on in (("FP16", self.fp16_flag), ("INT8", self.int8_flag),
                                     ("GPU_FALLBACK", self.gpu_fallback),
                                     ("VERSION_COMPATIBLE", self.version_compatible)) if on)

    def check(self) -> BuildPlan:
        """Raise :class:`~endoedge.errors.EngineBuildError` with the first error; else return self."""
        if self.errors:
            raise EngineBuildError(self.errors[0])
        return self

    def describe(self) -> str:
        """One line for logs: line, precision, flags, profile."""
        shapes = self.profile.get(self.input_name, {})
        batch = ":".join(str(shapes[k][0]) for k in ("min", "opt", "max")) if shapes else "-"
        return (f"TensorRT {self.trt_version}: {self.precision}"
                f"{' (' + self.int8_source + ')' if self.int8_source else ''}, network flags "
                f"{'|'.join(self.network_flags) or 'none'}, builder flags {'|'.join(self.builder_flags) or 'none'}, "
                f"batch {batch}"
                + (f", targets {targets_text(self.compute_capabilities)}" if self.trt_version.rtx else ""))


def _shapes(name: str, rest: tuple[int, ...], lo: int, opt: int, hi: int) -> dict[str, dict[str, list[int]]]:
    return {name: {"min": [lo, *rest], "opt": [opt, *rest], "max": [hi, *rest]}}


def _input_rest(facts: OnnxFacts, errors: list[str]) -> tuple[int, ...]:
    """The non-batch input dims; symbolic H/W are filled from the model's metadata input size."""
    rest = list(facts.input_shape[1:])
    if any(d < 0 for d in rest):
        size = _metadata_input_size(facts.metadata)
        if len(rest) == 3 and size is not None:
            rest = [3 if rest[0] < 0 else rest[0], size[0], size[1]]
        else:
            errors.append(f"'{facts.path.name}' input {list(facts.input_shape)} has symbolic dimensions other "
                          "than the batch and no metadata input size; re-export it with a fixed --imgsz")
    return tuple(rest)


def _metadata_input_size(meta: dict[str, str]) -> tuple[int, int] | None:
    from endoedge.errors import ModelFormatError
    from endoedge.spec import ModelSpec

    try:
        return ModelSpec.from_metadata(meta).preprocess.input_size
    except ModelFormatError:
        return None


def _precision_choice(req: BuildRequest, ver: TrtVersion, facts: OnnxFacts, errors: list[str],
                      warnings: list[str]) -> dict[str, Any]:
    """Network typing, precision flags and the INT8 source for one TensorRT line."""
    name = facts.path.name
    precision = req.precision or facts.precision
    out: dict[str, Any] = {"precision": precision, "strongly_typed": False, "fp16_flag": False,
                           "int8_flag": False, "use_calibrator": False, "int8_source": None}
    if precision not in PRECISIONS:
        errors.append(f"unknown precision '{precision}'; use one of {', '.join(PRECISIONS)}")
        return out
    if req.calib and precision != "int8":
        errors.append(f"--calib is for --precision int8 (asked for {precision}); drop --calib")
    if facts.has_qdq and precision != "int8":
        errors.append(f"'{name}' is a Q/DQ (INT8) ONNX; build it with --precision int8, or build the "
                      f"unquantized ONNX for {precision}")
    elif facts.has_fp16 and precision == "fp32":
        errors.append(f"'{name}' is an FP16 ONNX; build it with --precision fp16, or build the FP32 ONNX for fp32")
    elif facts.has_fp16 and precision == "int8" and not facts.has_qdq:
        errors.append(f"'{name}' is an FP16 ONNX without Q/DQ nodes; INT8 needs the FP32 ONNX with --calib, "
                      f"or a Q/DQ ONNX ({QUANTIZE_INT8})")
    if facts.has_qdq and req.calib:
        errors.append(f"'{name}' is already quantized (Q/DQ nodes); drop --calib")
    if ver.strongly_typed_only:
        out["strongly_typed"] = True
        if req.calib:
            verb = "has no" if ver.rtx else "removed"
            errors.append(f"TensorRT {ver} {verb} implicit INT8 calibration (IInt8EntropyCalibrator2); precision "
                          f"comes from the ONNX (fp32, fp16 or Q/DQ int8): drop --calib and build a Q/DQ ONNX: "
                          f"{QUANTIZE_INT8}")
        elif precision == "fp16" and not facts.has_fp16:
            errors.append(f"TensorRT {ver} builds are strongly typed, so FP16 needs an FP16 ONNX and '{name}' is "
                          f"FP32; {QUANTIZE_FP16}")
        elif precision == "int8" and not facts.has_qdq:
            errors.append(f"TensorRT {ver} builds are strongly typed, so INT8 needs a Q/DQ ONNX and '{name}' has "
                          f"none; {QUANTIZE_INT8}")
        out["int8_source"] = "qdq" if precision == "int8" else None
        return out
    typed = facts.has_fp16 and ver.has_strongly_typed_flag  # 10.x: an FP16 ONNX keeps its own types
    if precision == "fp16":
        out["strongly_typed"] = typed
        out["fp16_flag"] = not typed
    elif precision == "int8":
        if facts.has_qdq:
            out["int8_source"] = "qdq"
            out["strongly_typed"] = typed
            out["fp16_flag"] = out["int8_flag"] = not typed
        elif req.calib:
            out.update(int8_source="calibrator", use_calibrator=True, fp16_flag=True, int8_flag=True)
            if ver.calibrator_deprecated:
                warnings.append(f"implicit INT8 calibration is deprecated since TensorRT 10.1 and removed in 11; "
                                f"prefer a Q/DQ ONNX ({QUANTIZE_INT8})")
        elif not facts.has_fp16:
            errors.append(f"INT8 needs a Q/DQ ONNX ({QUANTIZE_INT8}) or --calib SRC (implicit calibration, "
                          "TensorRT <= 10)")
    if (out["fp16_flag"] or out["int8_flag"]) and ver.precision_flags_deprecated:
        warnings.append(f"TensorRT {ver} deprecates BuilderFlag.FP16/INT8 (strong typing replaces them in 11); "
                        "an FP16 or Q/DQ ONNX builds the same engine on TensorRT 11")
    return out


def _rtx_checks(req: BuildRequest, ver: TrtVersion, errors: list[str], warnings: list[str]) -> bool:
    """TensorRT for RTX's refusals (or ``--compute-capability`` on full TensorRT); ``True`` = checked, stop."""
    if not ver.rtx:
        if req.compute_capabilities:
            errors.append("--compute-capability names TensorRT for RTX targets (--runtime rtx); full TensorRT builds "
                          "for the GPU it runs on: drop --compute-capability")
        return False
    errors.extend(target_errors(req.compute_capabilities))
    if req.dla_core is not None:
        errors.append("TensorRT for RTX has no DLA (DLA cores exist only on Jetson Xavier/Orin: build there with "
                      "JetPack's TensorRT, --runtime tensorrt); drop --dla")
    if req.version_compatible:
        errors.append("TensorRT for RTX cannot build version-compatible engines (VERSION_COMPATIBLE needs the lean "
                      "runtime it does not ship); drop --version-compatible")
    if req.hardware_compat != "none":
        errors.append(f"--hardware-compat {req.hardware_compat} is full TensorRT's; TensorRT for RTX names its "
                      f"targets with --compute-capability (e.g. 8.6,8.9); drop --hardware-compat")
    if req.timing_cache:
        warnings.append("TensorRT for RTX ignores the timing cache (a deprecated no-op there); --timing-cache "
                        "is not read or written")
    return True


def _compat_checks(req: BuildRequest, ver: TrtVersion, precision: str, jetson: bool | None,
                   gpu_cc: tuple[int, int] | None, errors: list[str], warnings: list[str]) -> None:
    if _rtx_checks(req, ver, errors, warnings):
        return
    if req.dla_core is not None:
        if req.dla_core < 0:
            errors.append(f"--dla {req.dla_core}: the DLA core is 0 or 1")
        elif not ver.has_dla:
            errors.append(f"TensorRT {ver} has no DLA support (DLA needs TensorRT <= 10.7, i.e. JetPack 5/6, or "
                          "11.4+ on AGX Orin with JetPack 7.2.2+); drop --dla")
        elif jetson is False:
            errors.append("--dla: DLA cores exist only on Jetson Xavier and Orin modules; this machine is not a Jetson")
        elif precision == "fp32":
            errors.append("DLA runs FP16 and INT8 only; use --precision fp16 or int8 with --dla")
    hc = req.hardware_compat
    if hc not in HARDWARE_COMPAT:
        errors.append(f"--hardware-compat '{hc}': use one of {', '.join(HARDWARE_COMPAT)}")
    elif hc != "none":
        if not ver.has_hardware_compatibility:
            errors.append(f"--hardware-compat needs TensorRT >= 8.6 (this is {ver})")
        elif hc == "same-cc" and not ver.has_same_compute_capability:
            errors.append(f"--hardware-compat same-cc needs TensorRT >= 10.9 (this is {ver}); use ampere+")
        elif jetson:
            errors.append("--hardware-compat is for discrete Ampere+ GPUs; Jetson engines are built on the target")
        elif req.dla_core is not None:
            errors.append("DLA engines cannot be hardware-compatible; drop --dla or --hardware-compat")
        elif hc == "ampere+" and gpu_cc is not None and gpu_cc < (8, 0):
            errors.append(f"--hardware-compat ampere+ needs an Ampere or newer GPU (compute capability >= 8.0); "
                          f"this one is {gpu_cc[0]}.{gpu_cc[1]}")
    if req.version_compatible and not ver.has_version_compatible:
        errors.append(f"--version-compatible needs TensorRT >= 8.6 (this is {ver})")


def make_plan(req: BuildRequest, ver: TrtVersion, facts: OnnxFacts, *, jetson: bool | None = None,
              gpu_cc: tuple[int, int] | None = None) -> BuildPlan:
    """Decide the build (see the module docstring). Never raises: problems go to ``errors``.

    Args:
        req: the user's request.
        ver: the TensorRT version that will build.
        facts: the ONNX's :class:`~endoedge.data.onnx_facts.OnnxFacts`.
        jetson: whether this is a Jetson (``None`` = unknown; DLA / hardware-compat checks).
        gpu_cc: the building GPU's compute capability, when known.
    """
    errors: list[str] = []
    warnings: list[str] = []
    if not ver.supported:
        errors.append(f"TensorRT {ver} is too old: endoedge needs TensorRT >= 8.5 (JetPack >= 5.1)")
    choice = _precision_choice(req, ver, facts, errors, warnings)
    _compat_checks(req, ver, choice["precision"], jetson, gpu_cc, errors, warnings)
    rest = _input_rest(facts, errors)
    name = facts.input_name
    if facts.dynamic_batch:
        lo, opt, hi = req.batch or DEFAULT_DYNAMIC_BATCH
        set_profile = True
    else:
        fixed = facts.input_shape[0] if facts.input_shape else 1
        lo = opt = hi = fixed
        set_profile = any(d < 0 for d in facts.input_shape[1:])
        if req.batch is not None and req.batch != (fixed, fixed, fixed):
            errors.append(f"'{facts.path.name}' has a fixed batch of {fixed}, so --batch "
                          f"{':'.join(map(str, req.batch))} cannot apply; re-export it with a dynamic batch "
                          "(endoedge export without --static-batch)")
    calib_profile = None
    if choice["use_calibrator"]:
        if req.calib_batch < 1:
            errors.append(f"--calib-batch {req.calib_batch}: use 1 or more")
        elif not facts.dynamic_batch and req.calib_batch != lo:
            errors.append(f"'{facts.path.name}' has a fixed batch of {lo}; use --calib-batch {lo}")
        calib_profile = _shapes(name, rest, req.calib_batch, req.calib_batch, req.calib_batch)
    workspace = None
    if req.workspace_mib is not None:
        if req.workspace_mib < 1:
            errors.append(f"--workspace {req.workspace_mib}: give the limit in MiB, at least 1")
        workspace = req.workspace_mib << 20
    return BuildPlan(
        trt_version=ver,
        precision=choice["precision"],
        int8_source=choice["int8_source"],
        explicit_batch=ver.needs_explicit_batch_flag,
        strongly_typed=choice["strongly_typed"],
        fp16_flag=choice["fp16_flag"],
        int8_flag=choice["int8_flag"],
        use_calibrator=choice["use_calibrator"],
        input_name=name,
        profile=_shapes(name, rest, lo, opt, hi),
        set_profile=set_profile,
        calib_profile=calib_profile,
        calib_batch=req.calib_batch,
        workspace_bytes=workspace,
        dla_core=req.dla_core,
        gpu_fallback=req.dla_core is not None,
        version_compatible=req.version_compatible,
        hardware_compat=req.hardware_compat,
        compute_capabilities=req.compute_capabilities if ver.rtx else (),
        warnings=tuple(warnings),
        errors=tuple(errors),
    )


def request_from_manifest(manifest: EngineManifest) -> BuildRequest:
    """The :class:`BuildRequest` that rebuilds the engine a manifest describes (no calibration data)."""
    batch = None
    inputs = manifest.inputs
    dynamic = bool(inputs) and bool(inputs[0].shape) and inputs[0].shape[0] < 0
    if dynamic and manifest.profiles and manifest.profiles[0]:
        shapes = next(iter(manifest.profiles[0].values()))
        batch = (shapes.min[0], shapes.opt[0], shapes.max[0])
    return BuildRequest(
        precision=manifest.precision or "fp32",
        batch=batch,
        dla_core=manifest.dla_core,
        version_compatible=manifest.version_compatible,
        hardware_compat=manifest.hardware_compatibility or "none",
        runtime=manifest.flavour,
        compute_capabilities=manifest.compute_capabilities,
    )
