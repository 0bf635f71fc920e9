"""``tensorrt-rtx`` backend: runs engines built by TensorRT for RTX (``endoedge build --runtime rtx``).

The execution is the TensorRT backend's (:class:`~endoedge.runtime.tensorrt.TensorRTBackend`:
name-based I/O, ``execute_async_v3``, pinned buffers, CUDA events); TensorRT for RTX has the
same runtime API. What differs:

* the module is ``tensorrt_rtx_bindings`` (:func:`endoedge.tensorrt.compat.import_tensorrt_rtx`);
* before anything CUDA, the engine's manifest must be a TensorRT for RTX one (``flavour: rtx``);
  a full TensorRT engine is refused with the backend that runs it (CPU-testable);
* the manifest's ``compute_capabilities`` (the ahead-of-time targets) must contain this GPU's
  compute capability, and the TensorRT for RTX version must be the engine's
  (:func:`endoedge.tensorrt.manifest.stale_field`); GPU name and SM count do not matter.

TensorRT for RTX needs an NVIDIA GPU (and driver) to deserialize an engine: without one,
activation ends in one line from the CUDA layer ("CUDA is not usable here ...") before TensorRT
is touched. The GPU path has not been executed on the development machines (no GPU was lent).
"""

from __future__ import annotations

from dataclasses import replace
from types import ModuleType
from typing import TYPE_CHECKING

from endoedge.runtime.tensorrt import TensorRTBackend

if TYPE_CHECKING:
    from endoedge.tensorrt.cuda_mem import CudaApi
    from endoedge.tensorrt.manifest import MachineInfo


class TensorRTRtxBackend(TensorRTBackend):
    """Runs a TensorRT for RTX engine on an RTX-class NVIDIA GPU (see the module docstring).

    Args: as :class:`~endoedge.runtime.tensorrt.TensorRTBackend`.
    """

    name = "tensorrt-rtx"
    extra = "trt-rtx"
    requires = ("tensorrt_rtx_bindings",)
    flavour = "rtx"

    def _check_model(self) -> None:
        """The engine file and, before CUDA, that its manifest is a TensorRT for RTX one."""
        from endoedge.tensorrt.manifest import read_manifest

        super()._check_model()
        self._check_flavour(read_manifest(self.model_path))

    def _import_trt(self) -> ModuleType:
        from endoedge.tensorrt.compat import import_tensorrt_rtx

        return import_tensorrt_rtx()

    def _machine(self, cuda: CudaApi, index: int) -> MachineInfo:
        return replace(super()._machine(cuda, index), flavour="rtx")
