"""Capsule-endoscopy batch reading: ``endoedge batch SRC --model M --out results.jsonl``.

One job per study (an image folder, a list file or a video). Modules, one job each:
:mod:`~endoedge.batch.sources` (what to read), :mod:`~endoedge.batch.decode` (robust decoding,
bad-input policy), :mod:`~endoedge.batch.prepare` (per-image worker step),
:mod:`~endoedge.batch.models` (detectors/classifiers -> records), :mod:`~endoedge.batch.engine`
(local threads/processes) and :mod:`~endoedge.batch.ray_engine` (Ray Data),
:mod:`~endoedge.batch.results` (JSONL writer, resume, settings sidecar),
:mod:`~endoedge.batch.summary` and :mod:`~endoedge.batch.job` (the whole job).
"""

from __future__ import annotations

from endoedge.batch.job import BatchConfig, run_batch

__all__ = ["BatchConfig", "run_batch"]
