"""Calibration data for INT8 quantization (planned; see the project's INT8 issue).

Empty for now: the package exists so the layout shows where calibration sources (image folders,
videos, labelled sets -> an iterable of ``{input_name: array}``) will live.
"""
