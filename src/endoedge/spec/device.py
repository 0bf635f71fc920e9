"""The ``--device`` string every backend, CLI command and API call accepts, parsed in one place.

Forms: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``tensorrt``, ``tensorrt:N`` (``N`` a GPU ordinal,
0-based; case and surrounding spaces are ignored). ``tensorrt`` selects ONNX Runtime's TensorRT
execution provider; the TensorRT backend takes it as a synonym of ``cuda``. Which kinds a backend
can use is its own business; whether a string is a device at all is decided here, with one
:class:`~endoedge.errors.DeviceError` message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from endoedge.errors import DeviceError

DeviceKind = Literal["auto", "cpu", "cuda", "tensorrt"]
DEVICE_KINDS: tuple[DeviceKind, ...] = ("auto", "cpu", "cuda", "tensorrt")
#: The accepted forms, as every error message lists them.
DEVICE_FORMS = "auto, cpu, cuda, cuda:N, tensorrt or tensorrt:N"


@dataclass(frozen=True)
class Device:
    """A parsed device string.

    Attributes:
        kind: ``auto`` (the backend picks), ``cpu``, ``cuda`` or ``tensorrt``.
        index: the GPU ordinal after ``:``, or None when the string gave none.
    """

    kind: DeviceKind
    index: int | None = None

    @property
    def ordinal(self) -> int:
        """The GPU ordinal to open: ``index``, or 0 when none was given."""
        return 0 if self.index is None else self.index

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


def parse_device(text: str) -> Device:
    """Parse ``text`` (``auto``, ``cpu``, ``cuda[:N]``, ``tensorrt[:N]``) into a :class:`Device`.

    Raises:
        DeviceError: anything else (one line listing the valid forms).
    """
    kind, colon, index = str(text).strip().lower().partition(":")
    if kind not in DEVICE_KINDS or (colon and not (index.isascii() and index.isdigit())):
        raise DeviceError(f"unknown device '{text}'; use {DEVICE_FORMS}")
    return Device(kind, int(index) if colon else None)
