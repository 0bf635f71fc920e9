"""Backends by name. Registration stores a dotted path, so nothing heavy is imported until used.

>>> from endoedge.runtime import get_backend_class
>>> get_backend_class("onnxruntime").name
'onnxruntime'
"""

from __future__ import annotations

import importlib
from pathlib import Path

from endoedge._optional import is_installed
from endoedge.data.media import CHECKPOINT_SUFFIXES, ENGINE_SUFFIXES
from endoedge.errors import BackendUnavailableError, UnknownNameError
from endoedge.runtime.base import Backend

_REGISTRY: dict[str, str] = {}


def register_backend(name: str, target: str) -> None:
    """Register ``"package.module:ClassName"`` under ``name``; a duplicate name raises."""
    if name in _REGISTRY:
        raise ValueError(f"backend '{name}' is already registered ({_REGISTRY[name]})")
    _REGISTRY[name] = target


def backend_names() -> list[str]:
    """Names of all registered backends, sorted."""
    return sorted(_REGISTRY)


def get_backend_class(name: str) -> type[Backend]:
    """Return the backend class registered as ``name``.

    Raises:
        UnknownNameError: no backend has that name (the message lists the known ones).
    """
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown backend '{name}'; known backends: {', '.join(backend_names())}"
        ) from None
    module, _, cls_name = target.partition(":")
    cls: type[Backend] = getattr(importlib.import_module(module), cls_name)
    return cls


def check_available(name: str) -> type[Backend]:
    """Return the backend class, or raise why it cannot run here and which extra installs it."""
    cls = get_backend_class(name)
    for module in cls.requires:
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 - a GPU library may fail with OSError etc.
            raise BackendUnavailableError(
                f"backend '{name}' is unavailable: importing {module} failed "
                f"({type(err).__name__}: {err}); install it with: pip install 'endoedge[{cls.extra}]'"
            ) from err
    return cls


def available_backends() -> list[str]:
    """Names of backends whose packages are installed (found, not imported)."""
    return [n for n in backend_names() if all(is_installed(m) for m in get_backend_class(n).requires)]


def _manifest_flavour(engine: Path) -> str:
    """``flavour`` of an engine's ``<engine>.json`` manifest (``tensorrt`` when absent or unreadable)."""
    import json

    try:
        data = json.loads(engine.with_name(engine.name + ".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "tensorrt"
    return str(data.get("flavour", "tensorrt")) if isinstance(data, dict) else "tensorrt"


def auto_backend(model_path: str | Path) -> str:
    """The backend ``backend="auto"`` picks for a model file, by its suffix (an engine whose
    manifest says TensorRT for RTX: ``tensorrt-rtx``)."""
    suffix = Path(model_path).suffix.lower()
    if suffix in ENGINE_SUFFIXES:
        return "tensorrt-rtx" if _manifest_flavour(Path(model_path)) == "rtx" else "tensorrt"
    if suffix in CHECKPOINT_SUFFIXES:
        return "torch"
    return "onnxruntime"


register_backend("onnxruntime", "endoedge.runtime.ort:OnnxRuntimeBackend")
register_backend("torch", "endoedge.runtime.pytorch:TorchBackend")
register_backend("tensorrt", "endoedge.runtime.tensorrt:TensorRTBackend")
register_backend("tensorrt-rtx", "endoedge.runtime.tensorrt_rtx:TensorRTRtxBackend")
