"""File suffixes by kind, in one place (lower case, with the dot)."""

from __future__ import annotations

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
