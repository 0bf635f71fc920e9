"""Capture pipelines: GStreamer sources -> Detector -> annotated video / JSONL, with latency.

Nothing here imports GStreamer (``gi``) until a pipeline is built.
"""

from __future__ import annotations

from endoedge.pipeline.sources import SourceSpec, build_pipeline, parse_source

__all__ = ["SourceSpec", "build_pipeline", "parse_source"]
