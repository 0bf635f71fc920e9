"""The TensorRT ``ILogger`` endoedge hands to builders and runtimes: TensorRT's log in Python logging.

Severities map to levels (INTERNAL_ERROR/ERROR -> error, WARNING -> warning, INFO/VERBOSE ->
debug) and the errors are kept, so a failed build or deserialization can name its reason in a
one-line message.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Protocol, SupportsInt

logger = logging.getLogger(__name__)


class TrtLogger(Protocol):
    """What endoedge reads back from its ``ILogger``: the error messages, oldest first."""

    errors: list[str]


def make_trt_logger(trt: ModuleType) -> TrtLogger:
    """An ``ILogger`` that forwards to Python logging and keeps the errors (``.errors``) for the one-line message."""

    class _Logger(trt.ILogger):  # type: ignore[name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: SupportsInt, msg: str) -> None:
            level = int(severity)  # INTERNAL_ERROR 0, ERROR 1, WARNING 2, INFO 3, VERBOSE 4
            if level <= 1:
                self.errors.append(str(msg))
                logger.error("TensorRT: %s", msg)
            elif level == 2:
                logger.warning("TensorRT: %s", msg)
            else:
                logger.debug("TensorRT: %s", msg)

    return _Logger()
