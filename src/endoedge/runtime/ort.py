"""ONNX Runtime backend: CPU by default, CUDA / TensorRT execution providers when installed."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from endoedge._optional import require
from endoedge.errors import BackendUnavailableError, InputError, ModelFormatError
from endoedge.runtime.base import Backend
from endoedge.spec import load_onnx_proto
from endoedge.spec.device import parse_device

logger = logging.getLogger(__name__)


def providers_for(device: str, available: list[str]) -> list[Any]:
    """Choose ONNX Runtime execution providers for ``device``.

    ``"auto"``: CUDA when ONNX Runtime has it, else CPU. ``"cpu"``: CPU. ``"cuda"`` /
    ``"cuda:N"``: CUDA on GPU N (CPU as fallback for unsupported nodes). ``"tensorrt"`` /
    ``"tensorrt:N"``: ONNX Runtime's TensorRT provider, then CUDA, then CPU.

    Raises:
        DeviceError: ``device`` is not a device string (:func:`~endoedge.spec.device.parse_device`).
        BackendUnavailableError: the provider asked for is not in ``available``.
    """
    dev = parse_device(device)
    if dev.kind == "cpu":
        return ["CPUExecutionProvider"]
    if dev.kind == "auto":
        if "CUDAExecutionProvider" in available:
            return [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]
    kind, device_id = dev.kind, dev.ordinal
    wanted = {"cuda": ["CUDAExecutionProvider"], "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider"]}
    missing = [p for p in wanted[kind] if p not in available]
    if missing:
        raise BackendUnavailableError(
            f"onnxruntime backend: device '{device}' needs {', '.join(missing)}, but this ONNX "
            f"Runtime has only {', '.join(available)}; install 'endoedge[gpu]' (onnxruntime-gpu) "
            "on a machine with an NVIDIA GPU, or use --device cpu"
        )
    return [(p, {"device_id": device_id}) for p in wanted[kind]] + ["CPUExecutionProvider"]


class OnnxRuntimeBackend(Backend):
    """Runs an ONNX file with ONNX Runtime.

    Args:
        model_path: the ``.onnx`` file.
        device: see :func:`providers_for`.
        intra_op_threads: ONNX Runtime intra-op threads (0 = its default, one per core).
        spin: let the intra-op threads spin-wait for work after a run (ONNX Runtime's default).
            Spinning shaves latency off back-to-back calls but burns the cores that decoding and
            encoding threads need (see the pipeline section of ``benchmarks/RESULTS.md``).
    """

    name = "onnxruntime"
    extra = "gpu"  # the CPU package is a core dependency; the extra adds GPU providers
    requires = ("onnxruntime",)

    def __init__(self, model_path: str | Path, *, device: str = "auto", intra_op_threads: int = 0,
                 spin: bool = True) -> None:
        super().__init__(model_path, device=device)
        self.intra_op_threads = intra_op_threads
        self.spin = spin
        self._session: Any = None
        self.providers: list[str] = []

    def _activate(self) -> None:
        ort = require("onnxruntime", extra="gpu", purpose="the onnxruntime backend")
        if not self.model_path.is_file():
            raise ModelFormatError(f"model '{self.model_path}' does not exist")
        load_onnx_proto(self.model_path)  # refuses external data outside the model's folder
        providers = providers_for(self.device, ort.get_available_providers())
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.intra_op_threads:
            options.intra_op_num_threads = self.intra_op_threads
        if not self.spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(self.model_path), options, providers=providers)
        except Exception as err:  # noqa: BLE001 - ORT raises its own Fail/InvalidGraph types
            raise ModelFormatError(
                f"ONNX Runtime cannot load '{self.model_path}': {str(err).splitlines()[0]}"
            ) from err
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ModelFormatError(
                f"'{self.model_path}' has {len(inputs)} inputs; endoedge runs single-image-input detectors"
            )
        self.input_name = inputs[0].name
        batch = inputs[0].shape[0]
        self.max_batch = batch if isinstance(batch, int) and batch > 0 else None
        self.output_names = tuple(o.name for o in self._session.get_outputs())
        self.providers = list(self._session.get_providers())
        logger.debug("%s | session on %s", self.name, self.providers)

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outputs = self._session.run(None, dict(feed))
        except Exception as err:  # noqa: BLE001 - ORT raises its own InvalidArgument/Fail types
            shapes = ", ".join(f"{k} {tuple(v.shape)} {v.dtype}" for k, v in feed.items())
            raise InputError(
                f"ONNX Runtime could not run '{self.model_path.name}' on {shapes}: "
                f"{str(err).splitlines()[0]} (is --imgsz the size the model was exported with?)"
            ) from err
        return dict(zip(self.output_names, outputs, strict=True))

    def _deactivate(self) -> None:
        self._session = None

    def describe(self) -> str:
        """Backend name and the execution providers in use."""
        return f"{self.name} ({', '.join(self.providers) or self.device})"

    def metadata(self) -> dict[str, str]:
        """The ONNX file's ``metadata_props`` (needs an active session)."""
        return dict(self._session.get_modelmeta().custom_metadata_map)
