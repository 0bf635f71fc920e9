"""TensorRT for RTX targets: which compute capabilities an ahead-of-time build may name, and the GPUs they cover.

TensorRT for RTX builds without a GPU when the builder config names its targets
(``config.num_compute_capabilities = n``; ``config.set_compute_capability(trt.ComputeCapability.SM86, i)``).
Its 1.7 wheel accepts SM75, SM80, SM86, SM89, SM120 and SM121; Jetson Orin (8.7), Thor (11.0)
and Hopper (9.0) are refused ("Compute capability is invalid or not supported"), as are
``NONE`` and ``CURRENT`` on a machine without a GPU (measured; ``shared/reference/tensorrt-rtx.md``).
With no target named, the builder makes its portable Ampere-and-later default.

Compute capabilities are kept as ``"major.minor"`` strings, sorted by value.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from endoedge.errors import InputError
from endoedge.tensorrt.gpu_info import GpuInfo

# Compute capability -> trt.ComputeCapability member, and the GPUs each target covers.
TARGETS: dict[str, tuple[str, str]] = {
    "7.5": ("SM75", "Turing: RTX 20xx, Quadro RTX, T4"),
    "8.0": ("SM80", "A100, A30"),
    "8.6": ("SM86", "Ampere: RTX 30xx, RTX A2000-A6000, A10, A40 (IGX with RTX A6000)"),
    "8.9": ("SM89", "Ada: RTX 40xx, RTX 2000-6000 Ada, L4, L40(S) (IGX with RTX 6000 Ada)"),
    "12.0": ("SM120", "Blackwell: RTX 50xx, RTX PRO Blackwell"),
    "12.1": ("SM121", "GB10 (DGX Spark)"),
}
# Capabilities TensorRT for RTX has no target for, and what they are.
JETSON = {"5.3": "Jetson Nano", "6.2": "Jetson TX2", "7.2": "Jetson Xavier", "8.7": "Jetson Orin",
          "11.0": "Jetson Thor"}
OTHER = {"9.0": "Hopper (H100/H200)", "10.0": "Blackwell data-centre (B200)", "10.3": "Blackwell (B300)"}
# What the manifest's gpu record holds for an ahead-of-time build (no GPU is involved).
AOT_GPU = GpuInfo("none (ahead-of-time build)", "", 0)
DEFAULT_TARGET = "ampere+"  # what a build that names no target runs on


def supported_text() -> str:
    """``"7.5, 8.0, 8.6, 8.9, 12.0, 12.1"``."""
    return ", ".join(TARGETS)


def _canonical(part: str) -> str:
    """``"8.6"``, ``"86"``, ``"sm86"``, ``"SM_86"`` -> ``"8.6"``; ``"120"`` -> ``"12.0"``."""
    text = part.strip().lower().removeprefix("sm").lstrip("_")
    if "." in text:
        major, _, minor = text.partition(".")
    elif text.isdigit() and len(text) >= 2:
        major, minor = text[:-1], text[-1]
    else:
        major, minor = "", ""
    if not (major.isdigit() and minor.isdigit()):
        raise InputError(f"--compute-capability '{part}' is not a compute capability like 8.6; "
                         f"TensorRT for RTX targets: {supported_text()}")
    return f"{int(major)}.{int(minor)}"


def parse_compute_capabilities(text: str) -> tuple[str, ...]:
    """``"8.6,8.9"`` -> ``("8.6", "8.9")`` (deduplicated, sorted by value; not yet checked against :data:`TARGETS`).

    Raises:
        InputError: a part is not a compute capability.
    """
    parts = [p for p in str(text).replace(" ", ",").split(",") if p.strip()]
    if not parts:
        raise InputError(f"--compute-capability needs one or more of {supported_text()}")
    found = {_canonical(p) for p in parts}
    return tuple(sorted(found, key=lambda c: tuple(int(x) for x in c.split("."))))


def target_errors(ccs: tuple[str, ...]) -> list[str]:
    """One line per capability TensorRT for RTX cannot target, naming the supported ones."""
    errors = []
    for cc in ccs:
        if cc in TARGETS:
            continue
        if cc in JETSON:
            errors.append(f"--compute-capability {cc} is {JETSON[cc]}: TensorRT for RTX has no Jetson target; build "
                          f"the engine on the Jetson with its own TensorRT (JetPack): `endoedge build MODEL.onnx -o "
                          f"MODEL.engine --runtime tensorrt` (TensorRT for RTX targets: {supported_text()})")
        else:
            what = f" ({OTHER[cc]})" if cc in OTHER else ""
            errors.append(f"--compute-capability {cc}{what} is not a TensorRT for RTX target; use {supported_text()}, "
                          "or full TensorRT on that GPU (--runtime tensorrt)")
    return errors


def gpu_fits(ccs: tuple[str, ...], gpu: GpuInfo) -> bool:
    """Whether an engine built for ``ccs`` (``()`` = the Ampere+ default) runs on ``gpu``."""
    if not ccs:
        return gpu.cc_tuple >= (8, 0) and gpu.compute_capability in TARGETS
    return gpu.compute_capability in ccs


def targets_text(ccs: tuple[str, ...]) -> str:
    """``"8.6,8.9"``, or ``"ampere+"`` for the default."""
    return ",".join(ccs) if ccs else DEFAULT_TARGET


def set_targets(trt: ModuleType, config: Any, ccs: tuple[str, ...]) -> None:
    """Name the build's targets on a TensorRT for RTX builder config (none: the Ampere+ default).

    TensorRT lines: rtx
    """
    if not ccs:
        return
    config.num_compute_capabilities = len(ccs)
    for i, cc in enumerate(ccs):
        config.set_compute_capability(getattr(trt.ComputeCapability, TARGETS[cc][0]), i)
