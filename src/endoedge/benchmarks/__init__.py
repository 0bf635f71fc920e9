"""Latency measurement helpers (planned with the pipeline issue: per-stage statistics, reports).

Empty for now; today's per-call stage times are :class:`endoedge.detector.StageTimes`, and the
repository's top-level ``benchmarks/`` folder holds the benchmark scripts and RESULTS.md.
"""
