"""File suffixes by kind, in one place (lower case, with the dot)."""

from __future__ import annotations

import re
from pathlib import PurePath

# Still images OpenCV decodes (imread); datasets, batch folders and calibration folders use the same list.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Video containers read frame by frame (OpenCV/FFmpeg or GStreamer); MPEG-TS included.
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".ts")
# ONNX models.
ONNX_SUFFIXES = (".onnx",)
# Serialized TensorRT engines (each beside its ``.json`` manifest).
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
# endoedge / PyTorch checkpoints.
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


def natural_key(path: str | PurePath) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders numbered frames by number: ``img2.jpg`` before ``img10.jpg``.

    The path's text is split into digit runs (compared as integers) and other text (compared
    case-folded); an ordered frame folder played or evaluated as video needs this order.
    """
    parts = re.split(r"(\d+)", str(path))
    return tuple((0, int(p)) if p.isdigit() else (1, p.casefold()) for p in parts if p)
