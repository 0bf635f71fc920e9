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
from endoedge.errors import BackendUnavailableError, DeviceError, ModelFormatError
from endoedge.runtime.base import Backend
from endoedge.spec.device import parse_device


def resolve_torch_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when torch sees a GPU, else ``"cpu"``; checks explicit CUDA.

    Raises:
        DeviceError: not a device string, or ``tensorrt[:N]`` (an ONNX Runtime provider).
        BackendUnavailableError: CUDA asked for but torch sees no GPU.
    """
    dev = parse_device(device)
    if dev.kind == "tensorrt":
        raise DeviceError(f"the torch backend cannot run on device '{device}'; use auto, cpu or cuda[:N]")
    torch = require("torch", extra="torch", purpose="the torch backend")
    if dev.kind == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if dev.kind == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(
            f"torch backend: device '{device}' asked for but torch sees no CUDA GPU; use --device cpu"
        )
    return str(dev)


class TorchBackend(Backend):
    """Runs the raw heads of a PyTorch detector (same outputs as its exported ONNX).

    Args:
        model_path: the file ``loaded`` came from (an endoedge checkpoint, or an ONNX exported
            by endoedge whose source checkpoint is still at the recorded path).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        loaded: the loaded model (:func:`endoedge.models.checkpoint.load_for_torch`); the
            runtime layer never reads checkpoints itself.
        precision: ``"fp32"`` or ``"fp16"`` (weights and input in float16, outputs returned as
            float32; CUDA only: float16 convolutions on a CPU are slow or missing).
    """

    name = "torch"
    extra = "torch"
    requires = ("torch", "torchvision")

    def __init__(self, model_path: str | Path, *, device: str = "auto", loaded: Any = None,
                 precision: str = "fp32") -> None:
        super().__init__(model_path, device=device)
        if precision not in ("fp32", "fp16"):
            raise DeviceError(f"torch backend: precision '{precision}' is not fp32 or fp16")
        self.precision = precision
        self._loaded = loaded
        self._module: Any = None
        self._torch: Any = None

    def _activate(self) -> None:
        self._torch = require("torch", extra="torch", purpose="the torch backend")
        loaded = self._loaded
        if loaded is None:
            raise ModelFormatError(
                f"the torch backend runs a loaded model, not the file '{self.model_path}': use "
                "endoedge.load(path, backend='torch'), or pass "
                "loaded=endoedge.models.checkpoint.load_for_torch(path)"
            )
        self.device = resolve_torch_device(self.device)
        if self.precision == "fp16" and not self.device.startswith("cuda"):
            raise DeviceError(f"torch backend: precision fp16 runs on CUDA only (device is '{self.device}'); "
                              "use fp32 on the CPU")
        self._module = loaded.raw_heads().to(self.device).eval()
        if self.precision == "fp16":
            self._module = self._module.half()
        self.input_name = "images"
        self.output_names = loaded.arch.output_names
        self.max_batch = None

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(feed[self.input_name])).to(self.device)
            if self.precision == "fp16":
                x = x.half()
            outs = self._module(x)
        return {n: o.float().cpu().numpy() for n, o in zip(self.output_names, outs, strict=True)}

    def _deactivate(self) -> None:
        self._module = None

