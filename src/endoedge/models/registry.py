"""Detector architectures by name.

An :class:`Architecture` knows how to build its PyTorch model, the raw-head module that is
exported and run (no NMS inside), and the :class:`~endoedge.spec.ModelSpec` that describes its
pre-processing and decoder. New architectures register here with :func:`register_arch`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from endoedge.errors import UnknownNameError

if TYPE_CHECKING:
    import torch

    from endoedge.spec import ModelSpec


@dataclass(frozen=True)
class Architecture:
    """A registered detector architecture.

    Attributes:
        name: registry name.
        description: one line for ``--help`` and error messages.
        default_input_size: training-time network input ``(height, width)``.
        resizable: whether another square input size may be used (``--imgsz``).
        build: ``build(num_classes_with_background, input_size) -> torch.nn.Module`` (the full
            training/eval model, randomly initialised, no downloads).
        raw_heads: ``raw_heads(model) -> torch.nn.Module`` mapping a normalized ``N x 3 x H x W``
            batch to the raw outputs that are exported.
        output_names: names of the raw outputs, in order.
        make_spec: ``make_spec(model, arch_name, class_names) -> ModelSpec``.
        build_pretrained: optional ``build_pretrained(num_classes_with_background, input_size)``
            with ImageNet backbone weights from a locally installed package (for training).
        freeze_early: optional ``freeze_early(model, n) -> number of tensors frozen``: freeze the
            stem and the first ``n`` backbone blocks (training on a small CPU budget).
    """

    name: str
    description: str
    default_input_size: tuple[int, int]
    resizable: bool
    build: Callable[[int, tuple[int, int]], torch.nn.Module]
    raw_heads: Callable[[torch.nn.Module], torch.nn.Module]
    output_names: tuple[str, ...]
    make_spec: Callable[[Any, str, tuple[str, ...]], ModelSpec]
    build_pretrained: Callable[[int, tuple[int, int]], torch.nn.Module] | None = None
    freeze_early: Callable[[Any, int], int] | None = None


_ARCHS: dict[str, Architecture] = {}


def register_arch(arch: Architecture) -> None:
    """Add an architecture; registering a name twice raises ``ValueError``."""
    if arch.name in _ARCHS:
        raise ValueError(f"architecture '{arch.name}' is already registered")
    _ARCHS[arch.name] = arch


def arch_names() -> list[str]:
    """Registered architecture names, sorted."""
    return sorted(_ARCHS)


def get_arch(name: str) -> Architecture:
    """Look up an architecture.

    Raises:
        UnknownNameError: the name is not registered (the message lists the known ones).
    """
    try:
        return _ARCHS[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown architecture '{name}'; known architectures: {', '.join(arch_names())}"
        ) from None
