"""TensorRT import and version shim shared by the engine builder and the TensorRT backend.

Nothing here imports TensorRT at module import time. :func:`import_tensorrt` imports it on first
use (the full ``tensorrt`` package, or JetPack's ``python3-libnvinfer``) and turns a failure into
:class:`~endoedge.errors.BackendUnavailableError` carrying the original error and the extra to
install. :class:`TrtVersion` answers the per-line questions (8.6 / 10.x / 11.x) from a version
string alone, so that logic is unit-tested without TensorRT.

Supported lines: TensorRT >= 8.5 (name-based I/O: ``set_tensor_address``/``execute_async_v3``).
Older releases (JetPack 4.6 / 5.0, TensorRT 8.0-8.4) are out of scope and refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import ModuleType

from endoedge.errors import BackendUnavailableError

MIN_SUPPORTED = (8, 5)


@dataclass(frozen=True, order=True)
class TrtVersion:
    """A TensorRT version, e.g. ``TrtVersion(10, 3, 0)``; compares as a tuple."""

    major: int
    minor: int
    patch: int = 0

    @classmethod
    def parse(cls, text: str) -> TrtVersion:
        """Parse ``"10.3.0.26"``, ``"8.6.1"``, ``"11.4"``; raises ``ValueError`` otherwise."""
        m = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?", str(text))
        if m is None:
            raise ValueError(f"not a TensorRT version string: {text!r}")
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def supported(self) -> bool:
        """Whether endoedge supports this line (>= 8.5: name-based I/O tensors)."""
        return (self.major, self.minor) >= MIN_SUPPORTED

    @property
    def needs_explicit_batch_flag(self) -> bool:
        """8.x: ``create_network`` needs ``EXPLICIT_BATCH`` for ONNX (deprecated in 10, gone in 11)."""
        return self.major < 10

    @property
    def strongly_typed_only(self) -> bool:
        """11.x: networks are always strongly typed; ``BuilderFlag.FP16/INT8`` no longer exist."""
        return self.major >= 11

    @property
    def has_precision_flags(self) -> bool:
        """``BuilderFlag.FP16`` / ``INT8`` exist (8.x, 10.x; removed in 11.0)."""
        return self.major < 11

    @property
    def has_implicit_calibration(self) -> bool:
        """``IInt8EntropyCalibrator2`` / ``config.int8_calibrator`` exist (<= 10.x; removed in 11.0)."""
        return self.major <= 10

    @property
    def has_strongly_typed_flag(self) -> bool:
        """``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` exists (10.0+; a no-op in 11.x)."""
        return self.major >= 10

    @property
    def has_dla(self) -> bool:
        """DLA is available in this line where the hardware has it (<= 10.7, and 11.4+ on AGX Orin)."""
        return (self.major, self.minor) <= (10, 7) or (self.major, self.minor) >= (11, 4)


    @property
    def has_version_compatible(self) -> bool:
        """``BuilderFlag.VERSION_COMPATIBLE`` and ``runtime.engine_host_code_allowed`` exist (8.6+)."""
        return (self.major, self.minor) >= (8, 6)

    @property
    def has_hardware_compatibility(self) -> bool:
        """``config.hardware_compatibility_level`` / ``HardwareCompatibilityLevel.AMPERE_PLUS`` (8.6+)."""
        return (self.major, self.minor) >= (8, 6)

    @property
    def has_same_compute_capability(self) -> bool:
        """``HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY`` exists (10.9+)."""
        return (self.major, self.minor) >= (10, 9)

    @property
    def calibrator_deprecated(self) -> bool:
        """The implicit INT8 calibrators are deprecated (10.1+; removed in 11.0)."""
        return (self.major, self.minor) >= (10, 1)

    @property
    def precision_flags_deprecated(self) -> bool:
        """``BuilderFlag.FP16`` / ``INT8`` are deprecated in favour of strong typing (10.12+)."""
        return (self.major, self.minor) >= (10, 12)


def trt_version(trt: ModuleType) -> TrtVersion:
    """The version of an imported ``tensorrt`` module."""
    return TrtVersion.parse(getattr(trt, "__version__", "0.0"))


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
