"""Everything that touches TensorRT or CUDA: the version shim, CUDA memory, GPU facts, the engine
manifest, build plans, the builder and the INT8 calibrator.

The only package that imports TensorRT's Python API (import-linter enforces it). Nothing here
imports TensorRT, CUDA or cuda-python at module import time.
"""
