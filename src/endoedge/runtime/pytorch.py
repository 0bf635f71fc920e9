"""PyTorch eager backend: runs an endoedge checkpoint's raw heads on the CPU or a CUDA GPU.

Given an ONNX file exported by endoedge it runs the source checkpoint that the file's metadata
names, after checking that the checkpoint's sha256 still matches; this is how ONNX and PyTorch
results are compared on the same inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from endoedge._optional import require
from endoedge.errors import BackendUnavailableError, ModelFormatError
from endoedge.runtime.base import Backend


def resolve_torch_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when torch sees a GPU, else ``"cpu"``; checks explicit CUDA."""
    torch = require("torch", extra="torch", purpose="the torch backend")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind = device.partition(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(
            f"torch backend: device '{device}' asked for but torch sees no CUDA GPU; use --device cpu"
        )
    if kind not in ("cpu", "cuda"):
        raise BackendUnavailableError(f"torch backend: unknown device '{device}'; use auto, cpu or cuda[:N]")
    return device


class TorchBackend(Backend):
    """Runs the raw heads of a PyTorch detector (same outputs as its exported ONNX).

    Args:
        model_path: an endoedge checkpoint, or an ONNX exported by endoedge whose source
            checkpoint is still at the recorded path.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        loaded: an already loaded model (skips reading ``model_path`` again).
    """

    name = "torch"
    extra = "torch"
    requires = ("torch", "torchvision")

    def __init__(self, model_path: str | Path, *, device: str = "auto", loaded: Any = None) -> None:
        super().__init__(model_path, device=device)
        self._loaded = loaded
        self._module: Any = None
        self._torch: Any = None

    def _activate(self) -> None:
        self._torch = require("torch", extra="torch", purpose="the torch backend")
        loaded = self._loaded or load_for_torch(self.model_path)
        self.device = resolve_torch_device(self.device)
        self._module = loaded.raw_heads().to(self.device).eval()
        self.input_name = "images"
        self.output_names = loaded.arch.output_names
        self.max_batch = None

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(feed[self.input_name])).to(self.device)
            outs = self._module(x)
        return {n: o.float().cpu().numpy() for n, o in zip(self.output_names, outs, strict=True)}

    def _deactivate(self) -> None:
        self._module = None


def load_for_torch(model_path: Path) -> Any:
    """Load the checkpoint behind ``model_path`` (a checkpoint, or an endoedge ONNX)."""
    from endoedge.models.checkpoint import file_sha256, load_checkpoint

    if model_path.suffix.lower() != ".onnx":
        return load_checkpoint(model_path)
    from endoedge.spec import ModelSpec, read_onnx_metadata

    spec = ModelSpec.from_metadata(read_onnx_metadata(model_path), where=str(model_path))
    src = spec.source_checkpoint
    if not src:
        raise ModelFormatError(
            f"'{model_path}' records no source checkpoint; the torch backend needs the PyTorch "
            "weights: pass the checkpoint itself, or use --backend onnxruntime"
        )
    if not Path(src).is_file():
        raise ModelFormatError(
            f"'{model_path}' was exported from '{src}', which no longer exists; pass the "
            "checkpoint itself to the torch backend, or use --backend onnxruntime"
        )
    if spec.source_sha256 and file_sha256(src) != spec.source_sha256:
        raise ModelFormatError(
            f"'{src}' changed since '{model_path}' was exported from it (sha256 differs); "
            "re-export, or pass the checkpoint itself"
        )
    return load_checkpoint(
        src, arch=spec.arch, class_names=spec.class_names, input_size=spec.preprocess.input_size
    )
