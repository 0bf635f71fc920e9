"""Everything that touches TensorRT or CUDA: the version shim, the TensorRT logger, CUDA memory, GPU
facts, the engine manifest (typed: ``engine_manifest``), build plans, the builder, the INT8
calibrator, and ``prepare`` (the build step ``endoedge.load`` and ``endoedge bench`` run before
the TensorRT backend, which runs engines only).

The only package that imports TensorRT's Python API (import-linter enforces it). Nothing here
imports TensorRT, CUDA or cuda-python at module import time.
"""
