"""The latency report of a pipeline run (``--report report.json``) and its printed table.

Keys, exactly: ``frames``, ``warmup_frames``, ``dropped``, ``fps``, ``backend``, ``model``,
``source``, ``env``, ``stages``; ``stages`` maps ``capture``, ``preprocess``, ``infer``,
``postprocess``, ``render``, ``e2e`` to ``mean``, ``p50``, ``p90``, ``p95``, ``p99``, ``p999``,
``max`` in milliseconds (null when the stage had no samples); a model with endoscopy frame
cleaning adds ``clean``, ``clean_fov``, ``clean_osd`` and ``clean_denoise``
(:data:`~endoedge.pipeline.runner.CLEAN_STAGES`); a stabilized run adds ``stabilize``
(:data:`~endoedge.pipeline.runner.STABILIZE_STAGE`). ``source`` is an object: the description,
kind, mode, reconnect gaps and frames skipped.

``e2e_split`` separates queueing from processing: ``queue`` (arrival in Python -> the detector takes
the frame) and ``process`` (the detector's call), with the same statistics, plus ``mode`` and a
``note`` saying what ``e2e`` means in that mode. Offline, decoding runs ahead and every frame
waits its turn, so ``e2e`` is mostly ``queue`` (a throughput effect) and not a latency a viewer
would see; live, the one-frame mailbox keeps ``queue`` under one inference time.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from endoedge.pipeline.runner import (
    CLEAN_STAGES,
    SPLIT_STAGES,
    STABILIZE_STAGE,
    STAGES,
    RunStats,
    per_frame_arrays,
)
from endoedge.stats import STAT_KEYS, env_info, summarize

REPORT_KEYS = ("frames", "warmup_frames", "dropped", "fps", "backend", "model", "source", "env", "stages",
               "e2e_split")
_NOTES = {
    "offline": "offline: every frame is kept and waits in the decode-ahead queue, so e2e = queue + process "
               "is mostly queueing (throughput-bound), not what a viewer of a live feed would see; "
               "'process' is the per-frame processing latency",
    "live": "live: the newest frame is taken and older ones dropped, so queue stays under one "
            "processing time; e2e is the in-process latency from arrival to result",
}


def stage_summaries(stats: RunStats) -> dict[str, dict[str, float | None]]:
    """Statistics per stage (ms); a stage without samples gets nulls."""
    arrays = per_frame_arrays(stats)
    out: dict[str, dict[str, float | None]] = {}
    extra = tuple(s for s in (*CLEAN_STAGES, STABILIZE_STAGE) if s in stats.stages)
    for stage in STAGES + extra:
        a = arrays.get(stage)
        if a is None or not np.isfinite(a).any():
            out[stage] = dict.fromkeys(STAT_KEYS)
        else:
            out[stage] = dict(summarize(a))
    return out


def e2e_split(stats: RunStats, mode: str) -> dict[str, Any]:
    """``queue`` and ``process`` statistics (ms) with a note on what ``e2e`` means in ``mode``."""
    arrays = per_frame_arrays(stats)
    out: dict[str, Any] = {"mode": mode, "note": _NOTES.get(mode, "")}
    for stage in SPLIT_STAGES:
        a = arrays.get(stage)
        out[stage] = dict(summarize(a)) if a is not None and np.isfinite(a).any() else dict.fromkeys(STAT_KEYS)
    return out


def plot_arrays(stats: RunStats, mode: str) -> dict[str, np.ndarray]:
    """Per-frame arrays for :func:`~endoedge.stats.plot_latency`, ``e2e`` labelled for what it is
    offline (queueing included) and drawn beside ``queue`` and ``process``."""
    arrays = per_frame_arrays(stats)
    if mode == "offline" and "e2e" in arrays:
        arrays = {("e2e (offline: queue + process)" if k == "e2e" else k): v for k, v in arrays.items()}
    return arrays


def build_report(stats: RunStats, *, dropped: int, backend: str, model: str, source: dict[str, Any],
                 env: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report dictionary with exactly :data:`REPORT_KEYS`."""
    fps = stats.fps()
    return {
        "frames": stats.frames,
        "warmup_frames": stats.warmup_frames,
        "dropped": int(dropped),
        "fps": None if math.isnan(fps) else round(fps, 3),
        "backend": backend,
        "model": model,
        "source": source,
        "env": env if env is not None else env_info(),
        "stages": stage_summaries(stats),
        "e2e_split": e2e_split(stats, str(source.get("mode", ""))),
    }
