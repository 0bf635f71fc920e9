"""Lazy, explained imports of optional heavy dependencies.

``require("torch", extra="torch", purpose="export")`` imports a module on first use and turns an
import failure into :class:`~endoedge.errors.BackendUnavailableError` that carries the original
error and names the pip extra that provides the package. Nothing here imports anything at module
import time, so ``import endoedge`` never needs torch, TensorRT, CUDA or GStreamer.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from endoedge.errors import BackendUnavailableError


def require(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`BackendUnavailableError` naming the extra to install.

    Args:
        module: dotted module name, e.g. ``"onnxruntime"``.
        extra: the endoedge extra that installs it, e.g. ``"torch"``.
        purpose: what it is needed for, shown in the message.

    Any exception during import counts as "unavailable" (an installed GPU library can fail to
    import with an OSError about a missing shared library), and the original error is kept as
    the ``__cause__``.
    """
    try:
        return importlib.import_module(module)
    except Exception as err:  # noqa: BLE001 - any import failure means unavailable
        raise BackendUnavailableError(
            f"{module} is needed for {purpose} but could not be imported "
            f"({type(err).__name__}: {err}); install it with: pip install 'endoedge[{extra}]'"
        ) from err


def is_installed(module: str) -> bool:
    """Return whether ``module`` can be found without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
