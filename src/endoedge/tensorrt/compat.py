"""TensorRT import and version shim shared by the engine builder and the TensorRT backend.

Nothing here imports TensorRT at module import time. :func:`import_tensorrt` imports it on first
use (the full ``tensorrt`` package, or JetPack's ``python3-libnvinfer``) and turns a failure into
:class:`~endoedge.errors.BackendUnavailableError` carrying the original error and the extra to
install. :class:`TrtVersion` answers the per-line questions (8.6 / 10.x / 11.x / RTX) from a
version string (and the flavour) alone, so that logic is unit-tested without TensorRT.

Supported lines: TensorRT >= 8.5 (name-based I/O: ``set_tensor_address``/``execute_async_v3``).
Older releases (JetPack 4.6 / 5.0, TensorRT 8.0-8.4) are out of scope and refused.

**TensorRT for RTX** (``tensorrt-rtx-cu12-*`` wheels, module ``tensorrt_rtx_bindings``; version
1.x) is a second flavour: the TensorRT 10/11 API, always strongly typed, no calibrators, no DLA,
no version/hardware compatibility, and builds ahead of time for named compute capabilities
without a GPU (``shared/reference/tensorrt-rtx.md``). :func:`import_tensorrt_rtx` imports it and
:func:`resolve_runtime` picks the flavour of ``endoedge build --runtime auto``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import ModuleType

from endoedge.errors import BackendUnavailableError

MIN_SUPPORTED = (8, 5)
RUNTIMES = ("auto", "tensorrt", "rtx")
# Module names of TensorRT for RTX: the sdist front end (as Polygraphy imports it), then the wheel's bindings.
RTX_MODULES = ("tensorrt_rtx", "tensorrt_rtx_bindings")


@dataclass(frozen=True, order=True)
class TrtVersion:
    """A TensorRT version, e.g. ``TrtVersion(10, 3, 0)``; compares as a tuple.

    ``rtx=True`` is TensorRT for RTX (its own 1.x numbering); ``str()`` then reads
    ``"for RTX 1.7.1"`` so that messages written ``f"TensorRT {ver}"`` name the flavour.
    """

    major: int
    minor: int
    patch: int = 0
    rtx: bool = False

    @classmethod
    def parse(cls, text: str, *, rtx: bool = False) -> TrtVersion:
        """Parse ``"10.3.0.26"``, ``"8.6.1"``, ``"11.4"`` (``rtx``: ``"1.7.1.116"``); raises ``ValueError`` otherwise."""
        m = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?", str(text))
        if m is None:
            raise ValueError(f"not a TensorRT version string: {text!r}")
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0), rtx)

    def __str__(self) -> str:
        return f"{'for RTX ' if self.rtx else ''}{self.major}.{self.minor}.{self.patch}"

    @property
    def flavour(self) -> str:
        """``"rtx"`` (TensorRT for RTX) or ``"tensorrt"``; what the engine manifest records."""
        return "rtx" if self.rtx else "tensorrt"

    @property
    def supported(self) -> bool:
        """Whether endoedge supports this line (>= 8.5: name-based I/O tensors; any TensorRT for RTX)."""
        return self.rtx or (self.major, self.minor) >= MIN_SUPPORTED

    @property
    def needs_explicit_batch_flag(self) -> bool:
        """8.x: ``create_network`` needs ``EXPLICIT_BATCH`` for ONNX (deprecated in 10, gone in 11)."""
        return not self.rtx and self.major < 10

    @property
    def strongly_typed_only(self) -> bool:
        """11.x and RTX: networks are always strongly typed; ``BuilderFlag.FP16/INT8`` do not exist."""
        return self.rtx or self.major >= 11

    @property
    def has_precision_flags(self) -> bool:
        """``BuilderFlag.FP16`` / ``INT8`` exist (8.x, 10.x; removed in 11.0; never in RTX)."""
        return not self.rtx and self.major < 11

    @property
    def has_implicit_calibration(self) -> bool:
        """``IInt8EntropyCalibrator2`` / ``config.int8_calibrator`` exist (<= 10.x; removed in 11.0; never in RTX)."""
        return not self.rtx and self.major <= 10

    @property
    def has_strongly_typed_flag(self) -> bool:
        """``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` exists (10.0+ and RTX; a no-op in 11.x and RTX)."""
        return self.rtx or self.major >= 10

    @property
    def has_dla(self) -> bool:
        """DLA is available in this line where the hardware has it (<= 10.7, and 11.4+ on AGX Orin; not RTX)."""
        return not self.rtx and ((self.major, self.minor) <= (10, 7) or (self.major, self.minor) >= (11, 4))

    @property
    def has_version_compatible(self) -> bool:
        """``BuilderFlag.VERSION_COMPATIBLE`` works (8.6+; RTX has the flag but not the lean runtime it needs)."""
        return not self.rtx and (self.major, self.minor) >= (8, 6)

    @property
    def has_hardware_compatibility(self) -> bool:
        """``config.hardware_compatibility_level`` / ``AMPERE_PLUS`` work (8.6+; unsupported in RTX)."""
        return not self.rtx and (self.major, self.minor) >= (8, 6)

    @property
    def has_same_compute_capability(self) -> bool:
        """``HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY`` exists (10.9+; not RTX)."""
        return not self.rtx and (self.major, self.minor) >= (10, 9)

    @property
    def has_compute_capabilities(self) -> bool:
        """``ComputeCapability`` and ``config.set_compute_capability``: ahead-of-time targets (RTX only)."""
        return self.rtx

    @property
    def has_timing_cache(self) -> bool:
        """The builder's timing cache does something (a deprecated no-op in RTX)."""
        return not self.rtx

    @property
    def calibrator_deprecated(self) -> bool:
        """The implicit INT8 calibrators are deprecated (10.1+; removed in 11.0)."""
        return not self.rtx and (self.major, self.minor) >= (10, 1)

    @property
    def precision_flags_deprecated(self) -> bool:
        """``BuilderFlag.FP16`` / ``INT8`` are deprecated in favour of strong typing (10.12+)."""
        return not self.rtx and (self.major, self.minor) >= (10, 12)


def is_rtx_module(trt: ModuleType) -> bool:
    """Whether an imported TensorRT module is TensorRT for RTX (``tensorrt_rtx*``)."""
    return str(getattr(trt, "__name__", "")).startswith("tensorrt_rtx")


def trt_version(trt: ModuleType) -> TrtVersion:
    """The version of an imported ``tensorrt`` (or TensorRT for RTX) module."""
    return TrtVersion.parse(getattr(trt, "__version__", "0.0"), rtx=is_rtx_module(trt))


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def rtx_installed() -> bool:
    """Whether a TensorRT for RTX module is installed (found, not imported)."""
    return any(_installed(m) for m in RTX_MODULES)


def resolve_runtime(requested: str = "auto", *, compute_capabilities: bool = False) -> str:
    """``tensorrt`` or ``rtx`` for ``endoedge build --runtime``.

    ``auto``: TensorRT for RTX when compute capabilities are named, or when it is the only
    TensorRT installed; else full TensorRT (whose import then says what is missing).

    Raises:
        InputError: not one of :data:`RUNTIMES`.
    """
    from endoedge.errors import InputError

    if requested not in RUNTIMES:
        raise InputError(f"--runtime '{requested}': use one of {', '.join(RUNTIMES)}")
    if requested != "auto":
        return requested
    if rtx_installed() and (compute_capabilities or not _installed("tensorrt")):
        return "rtx"
    return "tensorrt"


def import_tensorrt_rtx() -> ModuleType:
    """Import TensorRT for RTX (``tensorrt_rtx``, else the wheel's ``tensorrt_rtx_bindings``) or explain.

    Raises:
        BackendUnavailableError: neither module imports (the error names the wheels to install).
    """
    import importlib

    errors = []
    for name in RTX_MODULES:
        try:
            return importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - a missing libtensorrt_rtx.so is an OSError, etc.
            errors.append(f"{name}: {type(err).__name__}: {err}")
    raise BackendUnavailableError(
        f"TensorRT for RTX could not be imported ({'; '.join(errors)}); install it with "
        "pip install 'endoedge[trt-rtx]' (x86_64/Windows wheels tensorrt-rtx-cu12-libs and "
        "tensorrt-rtx-cu12-bindings), or build with full TensorRT (--runtime tensorrt)"
    )


def import_tensorrt() -> ModuleType:
    """Import the full ``tensorrt`` package (builder + runtime) or explain why it is unavailable.

    Raises:
        BackendUnavailableError: not installed, failed to load its libraries, or older than 8.5.
    """
    import importlib

    try:
        trt = importlib.import_module("tensorrt")
    except Exception as err:  # noqa: BLE001 - a missing libnvinfer.so is an OSError, etc.
        raise BackendUnavailableError(
            f"TensorRT could not be imported ({type(err).__name__}: {err}); install it with "
            "pip install 'endoedge[trt]' on an NVIDIA GPU machine, or use JetPack's "
            "python3-libnvinfer on a Jetson"
        ) from err
    version = trt_version(trt)
    if not version.supported:
        raise BackendUnavailableError(
            f"TensorRT {version} is too old: endoedge needs TensorRT >= 8.5 (name-based I/O "
            "tensors); upgrade TensorRT (JetPack >= 5.1)"
        )
    return trt
