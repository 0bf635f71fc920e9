"""Backends that run a model: ``"onnxruntime"``, ``"torch"``, ``"tensorrt"`` (needs the ``trt`` extra) and
``"tensorrt-rtx"`` (TensorRT for RTX engines; the ``trt-rtx`` extra and an NVIDIA GPU).

All share :class:`~endoedge.runtime.base.Backend`'s activate / infer / deactivate interface and
are looked up by name in :mod:`endoedge.runtime.registry`.
"""

from __future__ import annotations

from endoedge.runtime.base import Backend
from endoedge.runtime.registry import (
    auto_backend,
    available_backends,
    backend_names,
    check_available,
    get_backend_class,
    register_backend,
)

__all__ = [
    "Backend",
    "auto_backend",
    "available_backends",
    "backend_names",
    "check_available",
    "get_backend_class",
    "register_backend",
]
