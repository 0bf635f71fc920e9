"""The GPU an engine is built for or runs on: name, compute capability, SM count (no TensorRT here).

A TensorRT engine is tied to the GPU it was built on (HoloHub keys its engine cache by GPU name,
compute capability and SM count; the same fields go into endoedge's engine manifest). The values
come from the CUDA runtime (``cudaGetDeviceProperties``: ``name``, ``major``, ``minor``,
``multiProcessorCount``) or pycuda (``Device.name()``, ``compute_capability()``,
``MULTIPROCESSOR_COUNT``) through :mod:`endoedge.tensorrt.cuda_mem`; parsing them is pure and
unit-tested. Nothing here touches CUDA at import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from endoedge.errors import BackendUnavailableError, DeviceError
from endoedge.spec.device import parse_device

if TYPE_CHECKING:
    from endoedge.tensorrt.cuda_mem import CudaApi


@dataclass(frozen=True)
class GpuInfo:
    """One CUDA device.

    Attributes:
        name: the device name, e.g. ``"NVIDIA GeForce RTX 4090"`` or ``"Orin"`` (Jetson).
        compute_capability: ``"major.minor"``, e.g. ``"8.7"``.
        sm_count: streaming multiprocessors.
        index: CUDA device ordinal.
    """

    name: str
    compute_capability: str
    sm_count: int
    index: int = 0

    @classmethod
    def from_properties(cls, name: str | bytes, major: int, minor: int, sm_count: int, index: int = 0) -> GpuInfo:
        """Normalise raw device properties (cuda-python gives the name as NUL-padded bytes)."""
        if isinstance(name, bytes | bytearray):
            name = bytes(name).split(b"\x00", 1)[0].decode("utf-8", errors="replace")
        text = str(name).split("\x00", 1)[0].strip()
        if not text:
            raise ValueError("the CUDA device reported an empty name")
        if int(major) < 1 or int(minor) < 0 or int(sm_count) < 1:
            raise ValueError(f"implausible device properties: cc {major}.{minor}, {sm_count} SMs")
        return cls(text, f"{int(major)}.{int(minor)}", int(sm_count), int(index))

    @property
    def cc_tuple(self) -> tuple[int, int]:
        """Compute capability as ``(major, minor)``."""
        major, _, minor = self.compute_capability.partition(".")
        return int(major), int(minor or 0)

    def to_dict(self) -> dict[str, str | int]:
        """The manifest's ``gpu`` record: ``name``, ``compute_capability``, ``sm_count``."""
        return {"name": self.name, "compute_capability": self.compute_capability, "sm_count": self.sm_count}

    def __str__(self) -> str:
        return f"{self.name} (cc {self.compute_capability}, {self.sm_count} SMs)"


def device_index(device: str) -> int:
    """The CUDA ordinal of a ``--device`` value for GPU backends: ``auto``/``cuda`` -> 0, ``cuda:N`` -> N.

    ``tensorrt[:N]`` is taken as ``cuda[:N]``.

    Raises:
        DeviceError: not a device string, or ``cpu`` (TensorRT runs on an NVIDIA GPU only).
    """
    dev = parse_device(device)
    if dev.kind == "cpu":
        raise DeviceError(
            f"the tensorrt backend runs on an NVIDIA GPU; device '{device}' is not one (use auto, cuda or cuda:N)"
        )
    return dev.ordinal


def query_gpu(cuda: CudaApi, index: int = 0) -> GpuInfo:
    """Ask the CUDA runtime (through ``cuda``) about device ``index``.

    Raises:
        BackendUnavailableError: no such device, or the driver refuses.
    """
    count = cuda.device_count()
    if index >= count:
        raise BackendUnavailableError(
            f"CUDA device {index} does not exist ({count} device(s) found); use --device cuda:0"
        )
    name, major, minor, sms = cuda.device_properties(index)
    return GpuInfo.from_properties(name, major, minor, sms, index)
