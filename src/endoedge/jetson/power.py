"""Jetson power mode and clocks: ``nvpmodel``, ``jetson_clocks``, and the benchmark protocol.

Commands (reference notes section 6.2; NVIDIA's L4T power-management guide):

* ``nvpmodel -q`` prints ``NV Power Mode: <NAME>`` and the mode id on the next line;
  ``nvpmodel -m <id>`` sets a mode (ids differ per board and JetPack: always log the query);
* ``jetson_clocks --show`` prints the clocks; ``--store FILE`` saves the current settings,
  ``jetson_clocks`` (no option) locks CPU/GPU/EMC at the mode's maximum, ``--restore FILE`` undoes.

:class:`BenchProtocol` does mode → store → lock → (caller warms up and measures) → restore, records
every step (command, exit status, output) for the report, and always restores, also on errors.
Commands run through a :data:`Runner` (retried with ``sudo -n`` when they fail and we are not root)
so tests can pass a fake.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from endoedge.errors import EndoedgeError
from endoedge.jetson.platform import jetson_info

logger = logging.getLogger(__name__)


@dataclass
class CommandResult:
    """What a command did: ``returncode`` (127 = not found) and its output (stdout + stderr)."""

    command: list[str]
    returncode: int
    output: str


Runner = Callable[[Sequence[str]], CommandResult]


def run_command(cmd: Sequence[str], *, timeout_s: float = 30.0) -> CommandResult:
    """Run a tool; when it fails and we are not root, try again through ``sudo -n`` (never prompts).
    Never raises for a failing or missing command (127 = not found)."""
    argv = list(cmd)
    if shutil.which(argv[0]) is None:
        return CommandResult(argv, 127, f"{argv[0]}: not found")
    res = _run(argv, timeout_s)
    if res.returncode != 0 and hasattr(os, "geteuid") and os.geteuid() != 0 and shutil.which("sudo"):
        retry = _run(["sudo", "-n", *argv], timeout_s)
        if retry.returncode == 0:
            return retry
    return res


def _run(argv: list[str], timeout_s: float) -> CommandResult:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return CommandResult(argv, 126, str(err))
    return CommandResult(argv, done.returncode, (done.stdout + done.stderr).strip())


_MODE = re.compile(r"NV Power Mode:\s*(.+?)\s*$", re.MULTILINE)
_CLOCK = re.compile(r"^(\w[\w ]*?):?\s+(?:Online=\d\s+)?(?:Governor=\S+\s+)?MinFreq=(\d+)\s+MaxFreq=(\d+)\s+CurrentFreq=(\d+)",
                    re.MULTILINE)


def parse_nvpmodel(text: str) -> dict[str, Any] | None:
    """``{"name": "MAXN", "id": 0}`` from ``nvpmodel -q`` output (id None when not printed)."""
    m = _MODE.search(text)
    if m is None:
        return None
    rest = text[m.end():].split()
    mode_id = int(rest[0]) if rest and rest[0].isdigit() else None
    return {"name": m.group(1), "id": mode_id}


def parse_jetson_clocks(text: str) -> dict[str, dict[str, int]]:
    """``{unit: {"min": Hz, "max": Hz, "current": Hz}}`` for each ``MinFreq=.. MaxFreq=.. CurrentFreq=..``
    line of ``jetson_clocks --show`` (``cpu0``, ``GPU``, ``EMC``, ...); the raw text stays in reports."""
    return {m.group(1).strip(): {"min": int(m.group(2)), "max": int(m.group(3)), "current": int(m.group(4))}
            for m in _CLOCK.finditer(text)}


def _dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def installed_cuda(root: str | Path = "/") -> str | None:
    """The CUDA toolkit version from ``/usr/local/cuda/version.json`` or ``version.txt``."""
    base = Path(root) / "usr/local/cuda"
    for name in ("version.json", "version.txt"):
        try:
            text = (base / name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        m = re.search(r'"cuda"\s*:\s*\{[^}]*"version"\s*:\s*"([\d.]+)"', text) or re.search(r"CUDA Version\s+([\d.]+)", text)
        if m:
            return m.group(1)
    return None


def installed_tensorrt() -> str | None:
    """The installed TensorRT Python bindings' version (pip metadata, else JetPack's apt package)."""
    version = _dist_version("tensorrt", "tensorrt-cu12", "tensorrt-cu13")
    if version or shutil.which("dpkg-query") is None:
        return version
    try:
        done = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "python3-libnvinfer"], capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def device_state(*, root: str | Path | None = None, runner: Runner = run_command) -> dict[str, Any]:
    """Everything ``endoedge jetson info`` prints: board, L4T/JetPack (from the release table), the
    installed TensorRT and CUDA, the power mode and the clocks (``None`` where a tool is missing or
    refuses, e.g. without sudo rights)."""
    info = jetson_info(root)
    out: dict[str, Any] = {"jetson": info is not None, **(info or {})}
    out["tensorrt_installed"] = installed_tensorrt()
    out["cuda_installed"] = installed_cuda(root or "/")
    q = runner(["nvpmodel", "-q"])
    out["power_mode"] = parse_nvpmodel(q.output) if q.returncode == 0 else None
    show = runner(["jetson_clocks", "--show"])
    out["clocks"] = parse_jetson_clocks(show.output) if show.returncode == 0 else None
    out["clocks_raw"] = show.output if show.returncode == 0 else None
    if info is not None and (q.returncode or show.returncode):
        out["note"] = "nvpmodel/jetson_clocks need root: run with sudo for power mode and clocks"
    return out


@dataclass
class BenchProtocol:
    """Power mode → ``jetson_clocks --store`` → lock clocks → work → ``--restore`` (always).

    Args:
        mode: nvpmodel mode id to set first (None: keep the current mode).
        lock_clocks: run ``jetson_clocks`` (max clocks of the mode) during the work.
        warmup: warm-up iterations/frames the caller runs before measuring (recorded only).
        runner: runs one command (default :func:`run_command`).
        store_file: where ``--store`` saves the settings (default: a temporary file).

    Raises:
        EndoedgeError: (on enter) a step fails; the steps done so far are undone first.
    """

    mode: int | None = None
    lock_clocks: bool = True
    warmup: int = 0
    runner: Runner = run_command
    store_file: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    before: dict[str, Any] | None = None
    during: dict[str, Any] | None = None
    restored: bool | None = None
    _stored: bool = False
    _mode_changed_from: int | None = None

    def _step(self, cmd: list[str], *, must: bool = True) -> CommandResult:
        res = self.runner(cmd)
        self.steps.append({"command": " ".join(cmd), "returncode": res.returncode, "output": res.output[-400:]})
        if must and res.returncode != 0:
            raise EndoedgeError(f"benchmark protocol: '{' '.join(cmd)}' failed ({res.returncode}): "
                                f"{res.output.strip()[-200:] or 'no output'} (run with sudo, or drop the protocol options)")
        return res

    def __enter__(self) -> BenchProtocol:
        try:
            q = self._step(["nvpmodel", "-q"])
            self.before = parse_nvpmodel(q.output)
            if self.mode is not None and (self.before is None or self.before.get("id") != self.mode):
                self._step(["nvpmodel", "-m", str(self.mode)])
                self._mode_changed_from = self.before.get("id") if self.before else None
            if self.lock_clocks:
                if self.store_file is None:
                    fd, self.store_file = tempfile.mkstemp(prefix="endoedge-l4t_dfs-", suffix=".conf")
                    os.close(fd)
                self._step(["jetson_clocks", "--store", self.store_file])
                self._stored = True
                self._step(["jetson_clocks"])
            show = self._step(["jetson_clocks", "--show"], must=False)
            q = self._step(["nvpmodel", "-q"], must=False)
            self.during = {"power_mode": parse_nvpmodel(q.output),
                           "clocks": parse_jetson_clocks(show.output) if show.returncode == 0 else None}
        except BaseException:
            self._undo()
            raise
        return self

    def _undo(self) -> None:
        ok = True
        if self._stored and self.store_file is not None:
            ok = self._step(["jetson_clocks", "--restore", self.store_file], must=False).returncode == 0
            self._stored = False
        if self._mode_changed_from is not None:
            ok = self._step(["nvpmodel", "-m", str(self._mode_changed_from)], must=False).returncode == 0 and ok
            self._mode_changed_from = None
        self.restored = ok
        if not ok:
            logger.warning("benchmark protocol: restoring clocks/power mode failed; see the report's steps")

    def __exit__(self, *exc: object) -> None:
        self._undo()

    def record(self) -> dict[str, Any]:
        """The report block: settings, power mode and clocks before/during, the steps, restored."""
        return {"nvpmodel_mode": self.mode, "lock_clocks": self.lock_clocks, "warmup": self.warmup,
                "store_file": self.store_file, "before": self.before, "during": self.during,
                "restored": self.restored, "steps": list(self.steps)}
