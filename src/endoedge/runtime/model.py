"""What every model API object shares: a spec run by one backend, its read-only facts and lifetime.

:class:`~endoedge.detector.Detector` and :class:`~endoedge.classifier.Classifier` derive from
:class:`ModelRunner`; callers (batch jobs, evaluation, reports) read these facts instead of
reaching into the backend.
"""

from __future__ import annotations

from types import TracebackType
from typing import TypeVar

from endoedge.runtime.base import Backend
from endoedge.spec import ModelSpec, PreprocessSpec

_R = TypeVar("_R", bound="ModelRunner")


class ModelRunner:
    """A :class:`~endoedge.spec.ModelSpec` run by one :class:`~endoedge.runtime.Backend`.

    Subclasses set :attr:`spec` and :attr:`backend` in their ``__init__``. A context manager:
    leaving the ``with`` block calls :meth:`close`.
    """

    spec: ModelSpec
    backend: Backend

    @property
    def preprocess_spec(self) -> PreprocessSpec:
        """How images become the network input (size, resize mode, normalization)."""
        return self.spec.preprocess

    @property
    def input_size(self) -> tuple[int, int]:
        """The network input's ``(height, width)`` in pixels."""
        return self.spec.preprocess.input_size

    @property
    def max_batch(self) -> int | None:
        """The model's fixed batch size, or ``None`` when any batch size runs (dynamic axis)."""
        return self.backend.max_batch

    def describe(self) -> str:
        """One line saying which backend runs the model where (for logs and reports)."""
        return self.backend.describe()

    def close(self) -> None:
        """Release the backend (session, engine, GPU memory). Safe to call twice."""
        self.backend.deactivate()

    def __enter__(self: _R) -> _R:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
