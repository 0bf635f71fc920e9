"""The latency report of a pipeline run (``--report report.json``) and its printed table.

Keys, exactly: ``frames``, ``warmup_frames``, ``dropped``, ``fps``, ``backend``, ``model``,
``source``, ``env``, ``stages``; ``stages`` maps ``capture``, ``preprocess``, ``infer``,
``postprocess``, ``render``, ``e2e`` to ``mean``, ``p50``, ``p90``, ``p95``, ``p99``, ``p999``,
``max`` in milliseconds (null when the stage had no samples); a model with endoscopy frame
cleaning adds ``clean``, ``clean_fov``, ``clean_osd`` and ``clean_denoise``
(:data:`~endoedge.pipeline.runner.CLEAN_STAGES`); a stabilized run adds ``stabilize``
(:data:`~endoedge.pipeline.runner.STABILIZE_STAGE`). ``source`` is an object: the description,
kind, mode, reconnect gaps and frames skipped.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from endoedge.pipeline.runner import (
    CLEAN_STAGES,
    STABILIZE_STAGE,
    STAGES,
    RunStats,
    per_frame_arrays,
)
from endoedge.stats import STAT_KEYS, env_info, summarize

REPORT_KEYS = ("frames", "warmup_frames", "dropped", "fps", "backend", "model", "source", "env", "stages")


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
    }
