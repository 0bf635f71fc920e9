"""Latency statistics, environment description, tables, plots and atomic JSON reports.

Shared by ``endoedge bench`` (inference-only latency) and the capture pipeline's per-stage
report. Every latency here is in **milliseconds** of wall-clock time. Statistics are those of
trtexec plus the tail that matters for live video: mean, median (p50), p90, p95, p99, p99.9
and max (:data:`STAT_KEYS`), percentiles with numpy's default (linear) interpolation.

Nothing heavy is imported at module import time: matplotlib only inside :func:`plot_latency`;
:func:`env_info` reads package versions from their metadata without importing them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from endoedge._tegra import looks_like_jetson
from endoedge.errors import BackendUnavailableError, InputError

logger = logging.getLogger(__name__)

STAT_KEYS = ("mean", "p50", "p90", "p95", "p99", "p999", "max")
_PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


def summarize(samples_ms: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Summarize latency samples in milliseconds.

    Args:
        samples_ms: one latency per frame or call, in ms. NaN marks a missing value (e.g. a
            stage that did not run for that frame) and is ignored.

    Returns:
        ``{key: ms}`` for every key of :data:`STAT_KEYS`, in that order, rounded to 3 decimals
        (1 µs). ``p999`` is the 99.9th percentile. Percentiles use numpy's default linear
        interpolation, so with fewer than 1000 samples p99.9 lies between the two largest.

    Raises:
        ValueError: no sample is left (empty input, or all NaN).
    """
    arr = np.asarray(samples_ms, dtype=np.float64).ravel()
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        raise ValueError("summarize: no latency samples (the input is empty or all NaN)")
    values = [float(arr.mean()), *np.percentile(arr, _PERCENTILES).tolist(), float(arr.max())]
    return {k: round(float(v), 3) for k, v in zip(STAT_KEYS, values, strict=True)}


# -- environment ------------------------------------------------------------------------------
# (label, distribution names to try in order); versions come from installed metadata only.
_DISTRIBUTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("numpy", ("numpy",)),
    ("opencv", ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless",
                "opencv-contrib-python")),
    ("onnxruntime", ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino")),
    ("torch", ("torch",)),
    ("tensorrt", ("tensorrt", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-cu13")),
    ("pygobject", ("PyGObject", "pygobject")),
)
# Module whose already-imported ``__version__`` is used when no distribution metadata exists
# (JetPack's apt-installed TensorRT and OpenCV have none). Never imported here.
_MODULES = {"numpy": "numpy", "opencv": "cv2", "onnxruntime": "onnxruntime", "torch": "torch",
            "tensorrt": "tensorrt", "pygobject": "gi"}


def _dist_version(names: Sequence[str]) -> str | None:
    from importlib import metadata

    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        except Exception:  # noqa: BLE001 - a broken metadata folder must not break a report
            logger.debug("cannot read the version of %s", name, exc_info=True)
    return None


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace").replace("\x00", "").strip()
    except OSError:
        return None


def _run(cmd: Sequence[str], timeout: float = 5.0) -> str | None:
    """stdout of ``cmd`` (stripped) or None when it is missing, fails or hangs."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    out = proc.stdout.strip()
    return out if proc.returncode == 0 and out else None


def _cpu_model() -> str:
    text = _read_text("/proc/cpuinfo") or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        # x86: "model name"; many ARM kernels: "Hardware"/"Model" or nothing useful.
        if key.strip() in ("model name", "Hardware", "Model") and value.strip():
            return value.strip()
    for line in (_run(["lscpu"]) or "").splitlines():  # e.g. Jetson: "Model name: Cortex-A78AE"
        key, _, value = line.partition(":")
        if key.strip() == "Model name" and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def _gpus() -> list[dict[str, str]] | None:
    out = _run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"])
    if not out:
        return None
    gpus = []
    for line in out.splitlines():
        name, _, driver = line.partition(",")
        if name.strip():
            gpus.append({"name": name.strip(), "driver": driver.strip()})
    return gpus or None


def _jetson() -> dict[str, str | None] | None:
    release = _read_text("/etc/nv_tegra_release")
    model = _read_text("/proc/device-tree/model")
    if not looks_like_jetson(release, model):
        return None
    first = release.splitlines()[0].lstrip("# ").strip() if release else None
    power = _run(["nvpmodel", "-q"])
    return {"model": model, "l4t_release": first,
            "power_mode": " / ".join(power.splitlines()) if power else None}


def _gstreamer_version() -> str | None:
    """GStreamer's runtime version, only if the caller's process already imported Gst."""
    gst = sys.modules.get("gi.repository.Gst")
    if gst is None:
        return None
    try:
        return str(gst.version_string())
    except Exception:  # noqa: BLE001
        return None


def env_info() -> dict[str, Any]:
    """Describe the machine and software a measurement ran on (for reports).

    Reads ``/proc``, ``platform``, package metadata and ``nvidia-smi`` (when on PATH); never
    imports torch, CUDA, TensorRT or GStreamer. The GStreamer version is given only when the
    process has already imported ``gi.repository.Gst``.

    Returns:
        ``cpu``, ``logical_cores``, ``os``, ``kernel``, ``machine``, ``cpu_governor``, ``gpu``
        (list of ``{"name", "driver"}`` or None), ``jetson`` (or None), and ``versions``:
        ``python``, ``numpy``, ``opencv``, ``onnxruntime``, ``torch``, ``tensorrt``,
        ``pygobject``, ``gstreamer``, ``endoedge`` (None where not installed).
    """
    from endoedge._version import __version__

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for label, names in _DISTRIBUTIONS:
        version = _dist_version(names)
        module = sys.modules.get(_MODULES[label])
        if version is None and module is not None:
            version = getattr(module, "__version__", None)
        versions[label] = version
    versions["gstreamer"] = _gstreamer_version()
    versions["endoedge"] = __version__
    os_name = platform.system()
    with contextlib.suppress(Exception):
        os_name = platform.freedesktop_os_release().get("PRETTY_NAME", os_name)
    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "os": os_name,
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu_governor": _read_text("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "gpu": _gpus(),
        "jetson": _jetson(),
        "versions": versions,
    }


# -- output -----------------------------------------------------------------------------------
def format_table(stages: Mapping[str, Mapping[str, float]], *, title: str = "") -> str:
    """A fixed-width text table: one row per stage, columns :data:`STAT_KEYS`, values in ms.

    Args:
        stages: row label -> statistics (as returned by :func:`summarize`); a missing or NaN
            value prints as ``-``.
        title: optional first line.
    """
    labels = list(stages)
    width = max([len("stage (ms)"), *(len(s) for s in labels)])
    cells = {s: [_cell(stages[s].get(k)) for k in STAT_KEYS] for s in labels}
    col = max([9, *(len(c) for row in cells.values() for c in row)])
    head = f"{'stage (ms)':<{width}}" + "".join(f"  {k:>{col}}" for k in STAT_KEYS)
    lines = [title] if title else []
    lines += [head, "-" * len(head)]
    lines += [f"{s:<{width}}" + "".join(f"  {c:>{col}}" for c in cells[s]) for s in labels]
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:.1f}"


def plot_latency(per_frame_ms: Mapping[str, np.ndarray], path: str | Path, *, title: str = "") -> None:
    """Save a PNG: latency over frame index (top) and an empirical CDF (bottom) per stage.

    Args:
        per_frame_ms: stage -> per-frame latency in ms (NaN = no value for that frame).
        path: the image file to write (format from the suffix, e.g. ``.png``).
        title: figure title.

    The CDF's x axis is logarithmic when the latencies span more than a factor of 20.

    Raises:
        BackendUnavailableError: matplotlib is not installed (``pip install matplotlib``).
        InputError: the file cannot be written.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except Exception as err:  # noqa: BLE001 - any import failure means unavailable
        raise BackendUnavailableError(
            f"latency plots need matplotlib, which could not be imported ({type(err).__name__}: "
            f"{err}); install it with: pip install matplotlib (or pip install 'endoedge[plot]')"
        ) from err

    # The object API with an explicit Agg canvas: no pyplot global state, no display needed,
    # safe to call from a worker thread and alongside an interactive backend.
    fig = Figure(figsize=(10, 7.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax_t, ax_c = fig.subplots(2, 1)
    lo, hi = math.inf, 0.0
    for stage, values in per_frame_ms.items():
        y = np.asarray(values, dtype=np.float64).ravel()
        ax_t.plot(np.arange(y.size), y, linewidth=0.7, label=stage)
        finite = np.sort(y[np.isfinite(y)])
        if finite.size == 0:
            continue
        cdf = np.arange(1, finite.size + 1) / finite.size
        ax_c.step(finite, cdf, where="post", linewidth=1.0, label=stage)
        positive = finite[finite > 0]
        if positive.size:
            lo, hi = min(lo, float(positive[0])), max(hi, float(positive[-1]))
    ax_t.set(xlabel="frame index", ylabel="latency (ms)", title="latency over frames")
    ax_c.set(xlabel="latency (ms)", ylabel="fraction of frames <= x", title="empirical CDF", ylim=(0, 1.01))
    if math.isfinite(lo) and hi / lo > 20:
        ax_c.set_xscale("log")
    for ax in (ax_t, ax_c):
        ax.grid(True, alpha=0.3)
        if per_frame_ms:
            ax.legend(loc="best", fontsize="small")
    if title:
        fig.suptitle(title)
    try:
        fig.savefig(str(path), dpi=110)
    except OSError as err:
        raise InputError(f"cannot write plot '{path}': {err.strerror or err}") from err


def _jsonable(obj: Any) -> Any:
    """Convert numpy values, paths and tuples for JSON; NaN and infinities become null."""
    if isinstance(obj, float | np.floating):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.integer | np.bool_):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as JSON atomically: a temporary file beside ``path``, fsync, ``os.replace``.

    A run killed mid-write leaves the previous file (or none), never a truncated one. numpy
    arrays and scalars are converted; NaN and infinite floats are written as ``null`` so the file
    is strict JSON. Parent folders are created.

    Returns:
        The path written.

    Raises:
        InputError: the file cannot be written (missing permission, a folder in the way).
    """
    out = Path(path)
    text = json.dumps(_jsonable(obj), indent=1, allow_nan=False) + "\n"
    tmp: str | None = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # os.open with 0o666 honours the umask (mkstemp would leave the report 0600).
        tmp = str(out.parent / f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
        tmp = None
    except OSError as err:
        raise InputError(f"cannot write '{out}': {err.strerror or err}") from err
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return out
