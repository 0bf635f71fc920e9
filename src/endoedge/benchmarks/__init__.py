"""Latency measurement: statistics and reports (:mod:`~endoedge.stats`) and the
inference-only benchmark behind ``endoedge bench`` (:mod:`~endoedge.benchmarks.bench`).

Per-call stage times of a detector are :class:`endoedge.detector.StageTimes`; the repository's
top-level ``benchmarks/`` folder holds the benchmark scripts and RESULTS.md.
"""
