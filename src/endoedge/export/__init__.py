"""PyTorch -> ONNX export and the ONNX Runtime vs PyTorch parity check."""

from __future__ import annotations

from endoedge.export.classifier import export_classifier
from endoedge.export.onnx_export import ExportResult, export_onnx
from endoedge.export.parity import ParityReport, check_parity

__all__ = ["ExportResult", "ParityReport", "check_parity", "export_classifier", "export_onnx"]
