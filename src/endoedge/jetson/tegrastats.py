"""``tegrastats``: parse its lines and record it beside a benchmark or a pipeline run.

One line per interval; the fields differ by board and JetPack (formats from the project's
reference notes, section 6.1, and third-party captures):

* timestamp ``MM-DD-YYYY HH:MM:SS`` at the start (JetPack 5+);
* ``RAM used/totalMB (lfb NxSIZE)``, ``SWAP used/totalMB (cached NMB)``;
* ``CPU [load%@MHz,...,off]`` per core (older: ``CPU [load%,...]@MHz``);
* ``EMC_FREQ load%@MHz`` (or ``load%``); ``GR3D_FREQ load%@MHz`` / ``load%@[MHz,MHz]`` (per GPC,
  Orin) / ``@[MHz,...]`` (Thor: clock only, no load) / ``load%`` (Nano);
* engines ``NVENC``/``NVENC0``, ``NVDEC``, ``NVJPG``, ``VIC``, ``OFA``, ``NVDLA0``, ``APE`` ...
  (``off``, ``load%@MHz`` or ``MHz``);
* temperatures ``name@52.5C`` (upper-case on some BSPs, ``name@cur C/max C`` on JetPack 7;
  ``-256C`` = sensor off, dropped);
* power rails ``NAME cur/avg`` in mW: ``VDD_IN 5251mW/8535mW`` (JetPack 5/6),
  ``VDD_GPU 5139mW/5139mW/5139mW`` (JetPack 7: cur/avg/max), bare numbers on the Nano
  (``POM_5V_IN 2545/2547``).

:class:`TegrastatsRecorder` runs ``tegrastats --interval MS`` in a subprocess while the work runs,
parses every line in a reader thread, and summarizes: CPU/GPU/EMC load (mean, max), clocks,
temperatures (max per sensor), power per rail (mean and max of the instantaneous value, mW),
RAM. Standard library only.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from endoedge.errors import BackendUnavailableError

logger = logging.getLogger(__name__)

_TS = re.compile(r"^(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})\s")
_MEM = re.compile(r"\b(RAM|SWAP) (\d+)/(\d+)([kMG]B)")
_CPU = re.compile(r"\bCPU \[([^\]]*)\](?:@(\d+))?")
_CORE = re.compile(r"^(\d+)%(?:@(\d+))?$")
_EMC = re.compile(r"\bEMC_FREQ (\d+)%(?:@(\d+))?")
_GR3D = re.compile(r"\bGR3D_FREQ (?:(\d+)%)?(?:@\[?([\d,]+)\]?)?")
_ENGINE = re.compile(r"\b(NVENC\d?|NVDEC\d?|NVJPG\d?|VIC|OFA|NVDLA\d|PVA\d_FREQ|VIC_FREQ|APE)\s+(off|\d+%@\[?[\d,]+\]?|\d+)(?!\w)")
_TEMP = re.compile(r"\b([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C(?:/-?\d+(?:\.\d+)?C)?")
_POWER = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?(?![\w/])")
_TO_MB = {"kB": 1 / 1024, "MB": 1.0, "GB": 1024.0}


@dataclass
class TegraSample:
    """One parsed tegrastats line. Loads in %, clocks in MHz, temperatures in °C, power in mW;
    ``None`` (or empty) where the board does not report the field."""

    time: str | None = None
    ram_used_mb: float | None = None
    ram_total_mb: float | None = None
    swap_used_mb: float | None = None
    cpu_load: list[float | None] = field(default_factory=list)  # per core; None = core off
    cpu_mhz: list[int | None] = field(default_factory=list)
    emc_load: float | None = None
    emc_mhz: int | None = None
    gpu_load: float | None = None  # GR3D; None on Thor (clock only)
    gpu_mhz: list[int] = field(default_factory=list)  # one per GPC on Orin/Thor
    engines: dict[str, str] = field(default_factory=dict)  # raw: "off", "79%@166", "200"
    temps_c: dict[str, float] = field(default_factory=dict)
    power_mw: dict[str, tuple[int, int]] = field(default_factory=dict)  # rail -> (current, average)

    @property
    def cpu_load_mean(self) -> float | None:
        """Mean load of the cores that are online (%)."""
        loads = [v for v in self.cpu_load if v is not None]
        return sum(loads) / len(loads) if loads else None


def parse_line(line: str) -> TegraSample | None:
    """Parse one tegrastats line; ``None`` when it holds no RAM/CPU/GR3D field (not a stats line)."""
    text = line.strip()
    s = TegraSample()
    m = _TS.match(text)
    if m:
        s.time = m.group(1)
    for name, used, total, unit in _MEM.findall(text):
        scale = _TO_MB[unit]
        if name == "RAM":
            s.ram_used_mb, s.ram_total_mb = int(used) * scale, int(total) * scale
        else:
            s.swap_used_mb = int(used) * scale
    m = _CPU.search(text)
    if m:
        common = int(m.group(2)) if m.group(2) else None
        for item in m.group(1).split(","):
            core = _CORE.match(item.strip())
            if core is None:  # "off"
                s.cpu_load.append(None)
                s.cpu_mhz.append(None)
            else:
                s.cpu_load.append(float(core.group(1)))
                s.cpu_mhz.append(int(core.group(2)) if core.group(2) else common)
    m = _EMC.search(text)
    if m:
        s.emc_load = float(m.group(1))
        s.emc_mhz = int(m.group(2)) if m.group(2) else None
    m = _GR3D.search(text)
    if m and (m.group(1) or m.group(2)):
        s.gpu_load = float(m.group(1)) if m.group(1) else None
        s.gpu_mhz = [int(v) for v in m.group(2).split(",") if v] if m.group(2) else []
    s.engines = dict(_ENGINE.findall(text))
    for name, value in _TEMP.findall(text):
        temp = float(value)
        if temp > -200:  # -256C: sensor off
            s.temps_c[name] = temp
    for name, cur, avg, _max in _POWER.findall(text):
        if name not in ("RAM", "SWAP"):
            s.power_mw[name] = (int(cur), int(avg))
    if s.ram_used_mb is None and not s.cpu_load and s.gpu_load is None and not s.gpu_mhz:
        return None
    return s


def _stats(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"mean": round(sum(values) / len(values), 2), "max": round(max(values), 2)}


def summarize_samples(samples: Sequence[TegraSample]) -> dict[str, Any]:
    """Loads (% mean/max), clocks (MHz max), temperatures (°C max), power per rail (mW mean/max of
    the instantaneous value) and RAM (MB max) over the samples."""
    cpu = [v for s in samples if (v := s.cpu_load_mean) is not None]
    gpu = [s.gpu_load for s in samples if s.gpu_load is not None]
    emc = [s.emc_load for s in samples if s.emc_load is not None]
    temps: dict[str, float] = {}
    power: dict[str, list[float]] = {}
    for s in samples:
        for name, t in s.temps_c.items():
            temps[name] = max(t, temps.get(name, t))
        for name, (cur, _avg) in s.power_mw.items():
            power.setdefault(name, []).append(float(cur))
    gpu_mhz = [max(s.gpu_mhz) for s in samples if s.gpu_mhz]
    cpu_mhz = [m for s in samples for m in s.cpu_mhz if m is not None]
    ram = [s.ram_used_mb for s in samples if s.ram_used_mb is not None]
    return {
        "samples": len(samples),
        "cpu_load_pct": _stats(cpu),
        "gpu_load_pct": _stats(gpu),
        "emc_load_pct": _stats(emc),
        "cpu_mhz_max": max(cpu_mhz) if cpu_mhz else None,
        "gpu_mhz_max": max(gpu_mhz) if gpu_mhz else None,
        "emc_mhz_max": max((s.emc_mhz for s in samples if s.emc_mhz is not None), default=None),
        "temps_c_max": temps,
        "power_mw": {name: _stats(v) for name, v in power.items()},
        "ram_used_mb_max": max(ram) if ram else None,
        "ram_total_mb": next((s.ram_total_mb for s in samples if s.ram_total_mb is not None), None),
    }


def available() -> bool:
    """Whether a ``tegrastats`` executable is on the PATH."""
    return shutil.which("tegrastats") is not None


class TegrastatsRecorder:
    """Record ``tegrastats`` while something runs (context manager or :meth:`start`/:meth:`stop`).

    Args:
        interval_ms: sampling interval passed to ``tegrastats --interval``.
        command: the command to run instead (tests use a fake; its stdout must be tegrastats lines).
        keep_lines: keep the raw lines in :meth:`summary` (``lines``).

    Raises:
        BackendUnavailableError: (on :meth:`start`) the command cannot be started.
    """

    def __init__(self, interval_ms: int = 500, *, command: Sequence[str] | None = None, keep_lines: bool = True) -> None:
        self.interval_ms = interval_ms
        self.command = list(command) if command else ["tegrastats", "--interval", str(interval_ms)]
        self.keep_lines = keep_lines
        self.samples: list[TegraSample] = []
        self.lines: list[str] = []
        self.unparsed = 0
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._t0 = 0.0
        self._t1 = 0.0

    def start(self) -> TegrastatsRecorder:
        """Start the subprocess and the reader thread."""
        try:
            self._proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                          text=True, bufsize=1)
        except OSError as err:
            raise BackendUnavailableError(f"cannot run {self.command[0]}: {err.strerror or err}") from err
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._read, name="endoedge-tegrastats", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        proc = self._proc
        if proc is None or proc.stdout is None:
            return
        for line in proc.stdout:
            sample = parse_line(line)
            with self._lock:
                if sample is None:
                    self.unparsed += 1
                    continue
                self.samples.append(sample)
                if self.keep_lines:
                    self.lines.append(line.rstrip("\n"))

    def stop(self) -> dict[str, Any]:
        """Stop the subprocess (terminate, then kill after 3 s) and return :meth:`summary`."""
        if self._proc is not None:
            self._t1 = time.monotonic()
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            if self._thread is not None:
                self._thread.join(timeout=3)
            self._proc = None
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """The report block: command, interval, seconds recorded, :func:`summarize_samples`, raw lines."""
        with self._lock:
            out: dict[str, Any] = {"command": " ".join(self.command), "interval_ms": self.interval_ms,
                                   "seconds": round(max(0.0, self._t1 - self._t0), 3),
                                   "unparsed_lines": self.unparsed, **summarize_samples(self.samples)}
            if self.keep_lines:
                out["lines"] = list(self.lines)
        return out

    def __enter__(self) -> TegrastatsRecorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
