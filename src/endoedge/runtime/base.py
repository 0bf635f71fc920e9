"""The backend interface: a small runner with activate / infer / deactivate (Polygraphy's shape).

Constructing a backend is cheap and touches no GPU; the session, engine or model is created in
:meth:`Backend.activate` and released in :meth:`Backend.deactivate`. A backend is a context
manager::

    with OnnxRuntimeBackend("model.onnx") as backend:
        outputs = backend.infer({backend.input_name: batch})
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import ClassVar

import numpy as np

from endoedge.errors import EndoedgeError, InputError
from endoedge.spec.device import parse_device

logger = logging.getLogger(__name__)


class Backend(abc.ABC):
    """One way of running a model: ONNX Runtime, PyTorch eager, TensorRT.

    Subclasses set :attr:`name` and :attr:`extra` and implement ``_activate``, ``_infer`` and
    ``_deactivate``. After activation, :attr:`input_name`, :attr:`output_names` and
    :attr:`max_batch` describe the model.

    Args:
        model_path: the model file the backend runs.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (backends may accept more);
            any string :func:`~endoedge.spec.device.parse_device` refuses raises
            :class:`~endoedge.errors.DeviceError` here, before anything is loaded.
    """

    name: ClassVar[str] = "base"
    extra: ClassVar[str] = ""  # pip extra that installs what this backend needs
    requires: ClassVar[tuple[str, ...]] = ()  # importable modules it needs

    def __init__(self, model_path: str | Path, *, device: str = "auto") -> None:
        parse_device(device)  # one error, with one wording, for a malformed device in every backend
        self.model_path = Path(model_path)
        self.device = device
        self.is_active = False
        self.input_name = ""
        self.output_names: tuple[str, ...] = ()
        self.max_batch: int | None = None  # None: any batch size (dynamic batch axis)

    # -- lifecycle ------------------------------------------------------------------------
    def activate(self) -> None:
        """Load the model (session, engine, module). Calling it twice only warns."""
        if self.is_active:
            logger.warning("%s | activate() called on an active backend; ignored", self.name)
            return
        self._activate()
        self.is_active = True

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on ``feed`` (input name -> array) and return output name -> array.

        The returned arrays may be reused by the next call; copy them to keep them.

        Raises:
            EndoedgeError: the backend is not active.
            InputError: the feed does not name the model's input.
        """
        if not self.is_active:
            raise EndoedgeError(f"{self.name} backend is not active; call activate() or use `with`")
        if self.input_name not in feed:
            raise InputError(
                f"{self.name} backend: feed has {sorted(feed)}, model input is '{self.input_name}'"
            )
        return self._infer(feed)

    def deactivate(self) -> None:
        """Release the model and its memory. Safe to call on an inactive backend."""
        if self.is_active:
            self._deactivate()
            self.is_active = False

    def __enter__(self) -> Backend:
        self.activate()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.deactivate()

    def describe(self) -> str:
        """One line saying what runs where (for logs and reports)."""
        return f"{self.name} on {self.device}"

    # -- implementation hooks -------------------------------------------------------------
    @abc.abstractmethod
    def _activate(self) -> None: ...

    @abc.abstractmethod
    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    @abc.abstractmethod
    def _deactivate(self) -> None: ...
