"""The results file: append-only JSONL, one record per input, safe against ``kill -9``.

* Each batch of records goes to the file in one ``write`` on an ``O_APPEND`` descriptor (so a
  killed process leaves whole lines, except on power loss / a full disk), and the file is
  ``fsync``-ed every ``fsync_every`` records and at the end.
* The job's settings (model files' sha256, thresholds, decode limits) are stored beside it in
  ``<out>.meta.json`` before the first record; ``--resume`` refuses a file made with other settings.
* :func:`scan_results` reads an existing file for ``--resume``: a torn last line (no newline, or
  not valid JSON) is cut off -- the file is truncated after its last complete record -- and
  the keys already done are returned. A damaged line elsewhere is refused, never guessed at.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from endoedge.errors import InputError

logger = logging.getLogger(__name__)

META_SUFFIX = ".meta.json"


def meta_path(out: Path) -> Path:
    """The settings sidecar of results file ``out``."""
    return out.with_name(out.name + META_SUFFIX)


def record_key(rec: Mapping[str, Any]) -> str:
    """The input key of a record (see :attr:`endoedge.batch.sources.Item.key`).

    Raises:
        TypeError: ``rec`` is not a JSON object; KeyError: it has no ``path``.
    """
    if not isinstance(rec, Mapping):
        raise TypeError(f"a result record is a JSON object, not {type(rec).__name__}")
    frame = rec.get("frame")
    return str(rec["path"]) if frame is None else f"{rec['path']}#{frame}"


@dataclass
class ScanResult:
    """What an existing results file holds: ``records`` (parsed, in file order), ``keys`` done,
    and ``repaired_bytes`` cut off a torn last line (0 if none)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    repaired_bytes: int = 0


def scan_results(path: Path, *, repair: bool = True) -> ScanResult:
    """Read ``path`` for resuming; truncate a torn last line when ``repair``.

    Raises:
        InputError: a line other than the last is not a JSON record (the file is left as is).
    """
    data = path.read_bytes()
    end = len(data)
    if data and not data.endswith(b"\n"):
        end = data.rfind(b"\n") + 1
    scan = ScanResult()
    lines = data[:end].split(b"\n")[:-1] if end else []
    for n, line in enumerate(lines, 1):
        try:
            rec = json.loads(line)
            key = record_key(rec)
        except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: deeply nested JSON
            if n == len(lines):  # the last line is torn even though it ended in a newline
                end -= len(line) + 1
                break
            raise InputError(
                f"'{path}' line {n} is not a result record; repair or remove that line, or use --overwrite"
            ) from None
        if key in scan.keys:
            continue  # a duplicate record (not written by endoedge): keep the first
        scan.keys.add(key)
        scan.records.append(rec)
    scan.repaired_bytes = len(data) - end
    if scan.repaired_bytes and repair:
        logger.warning("%s: cut a torn last line (%d bytes) left by an interrupted run", path, scan.repaired_bytes)
        with open(path, "r+b") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
    return scan


def check_settings(out: Path, settings: Mapping[str, Any]) -> None:
    """Refuse to resume ``out`` when its sidecar's settings differ from ``settings``.

    Raises:
        InputError: the sidecar is missing (and ``out`` is not empty) or differs; the message
            names the first difference.
    """
    side = meta_path(out)
    if not side.is_file():
        if out.stat().st_size == 0:
            return
        raise InputError(
            f"'{out}' has no settings file '{side.name}', so resuming it cannot be checked; "
            "use a new --out, or --overwrite to start again"
        )
    try:
        stored = json.loads(side.read_text(encoding="utf-8")).get("settings")
    except (OSError, ValueError, AttributeError, RecursionError) as err:
        raise InputError(f"cannot read '{side}' ({type(err).__name__}); use --overwrite to start again") from err
    want = json.loads(json.dumps(settings))
    diff = _first_difference(stored, want)
    if diff is not None:
        raise InputError(
            f"'{out}' was made with other settings ({diff}); resume with the same models and "
            "thresholds, use a new --out, or --overwrite"
        )


def _first_difference(a: Any, b: Any, where: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            d = _first_difference(a.get(k), b.get(k), f"{where}.{k}" if where else k)
            if d is not None:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            d = _first_difference(x, y, f"{where}[{i}]")
            if d is not None:
                return d
        return None
    return None if a == b else f"{where or 'settings'}: {a!r} then, {b!r} now"


def prepare_output(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Check that ``out`` may be written: it must not exist unless ``resume`` or ``overwrite``.

    Raises:
        InputError: ``out`` exists without either flag (results are never clobbered), is a
            folder, or its folder cannot be created.
    """
    if out.is_dir():
        raise InputError(f"--out '{out}' is a folder; give a .jsonl file name")
    if out.exists() and not (resume or overwrite):
        raise InputError(f"'{out}' already exists; pass --resume to finish it or --overwrite to replace it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create the folder of '{out}': {err.strerror}") from err


class ResultWriter:
    """Appends JSONL records to ``path``; flushed per batch, fsync-ed every ``fsync_every`` records.

    Args:
        path: the results file (created if missing; appended to otherwise, or emptied when
            ``truncate``).
        fsync_every: records between ``fsync`` calls (>= 1).
    """

    def __init__(self, path: Path, *, fsync_every: int = 100, truncate: bool = False) -> None:
        if fsync_every < 1:
            raise InputError(f"--fsync-every must be >= 1, got {fsync_every}")
        self.path = path
        self.fsync_every = fsync_every
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if truncate else 0)
        try:
            self._fd: int | None = os.open(path, flags, 0o666)
        except OSError as err:
            raise InputError(f"cannot write '{path}': {err.strerror}") from err
        self.written = 0
        self._since_sync = 0

    def write(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Append records (one write call); returns how many."""
        lines = [json.dumps(r, separators=(",", ":"), allow_nan=False) for r in records]
        if not lines or self._fd is None:
            return 0
        data = ("\n".join(lines) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:  # a regular file takes it all at once; loop only for short writes
            view = view[os.write(self._fd, view):]
        self.written += len(lines)
        self._since_sync += len(lines)
        if self._since_sync >= self.fsync_every:
            os.fsync(self._fd)
            self._since_sync = 0
        return len(lines)

    def close(self) -> None:
        """fsync and close (idempotent)."""
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
