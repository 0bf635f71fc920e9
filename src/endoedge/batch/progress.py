"""Progress of a batch job on stderr: a tqdm bar (images/s, ETA), or log lines with ``quiet``."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from endoedge._optional import is_installed

logger = logging.getLogger(__name__)


class Progress:
    """Counts processed inputs; shows a bar (``bar=True``) or logs every ``log_every_s`` seconds.

    Args:
        total: inputs this run will process (``None`` when unknown, e.g. some videos).
        bar: draw a tqdm bar on stderr; else INFO log lines (``--quiet``).
    """

    def __init__(self, total: int | None, *, bar: bool = True, log_every_s: float = 10.0, desc: str = "batch") -> None:
        self.total = total
        self.done = 0
        self.errors = 0
        self.flagged = 0
        self._t0 = time.perf_counter()
        self._last_log = self._t0
        self._log_every = log_every_s
        self._bar: Any = None
        if bar and not is_installed("tqdm"):
            logger.warning("tqdm is not installed (pip install tqdm); progress goes to the log")
            bar = False
        if bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="img", desc=desc, file=sys.stderr, dynamic_ncols=True,
                             smoothing=0.1, mininterval=0.5)

    def update(self, n: int, *, errors: int = 0, flagged: int = 0) -> None:
        """Add ``n`` processed inputs (``errors`` and ``flagged`` among them)."""
        self.done += n
        self.errors += errors
        self.flagged += flagged
        if self._bar is not None:
            self._bar.update(n)
            self._bar.set_postfix(flagged=self.flagged, errors=self.errors, refresh=False)
            return
        now = time.perf_counter()
        if now - self._last_log >= self._log_every:
            self._last_log = now
            logger.info("%s", self.line())

    def line(self) -> str:
        """``done/total images, rate, ETA, flagged, errors``."""
        elapsed = time.perf_counter() - self._t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        total = f"/{self.total}" if self.total else ""
        eta = ""
        if self.total and rate > 0:
            eta = f", ETA {max(0.0, (self.total - self.done) / rate):.0f} s"
        return f"{self.done}{total} images, {rate:.1f} img/s{eta}, {self.flagged} flagged, {self.errors} errors"

    def close(self) -> None:
        """Close the bar (or log the final line)."""
        if self._bar is not None:
            self._bar.close()
        else:
            logger.info("%s", self.line())
