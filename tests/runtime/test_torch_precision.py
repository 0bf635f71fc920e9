"""The torch backend's ``precision`` option: FP16 is CUDA-only (one line on a CPU); on a GPU its
raw heads stay close to the CPU's FP32 ones (GPU-marked)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from endoedge.errors import DeviceError

pytest.importorskip("torch")

WEIGHTS = Path(__file__).resolve().parents[2] / "src/endoedge/models/weights/polyp_ssdlite320_effl0_kvasir.pt"


def test_unknown_precision_is_refused():
    from endoedge.runtime.pytorch import TorchBackend

    with pytest.raises(DeviceError, match="precision 'int8' is not fp32 or fp16"):
        TorchBackend(WEIGHTS, precision="int8")


def test_fp16_on_the_cpu_is_one_line():
    import endoedge

    with pytest.raises(DeviceError, match="fp16 runs on CUDA only"):
        endoedge.load(WEIGHTS, backend="torch", device="cpu", precision="fp16")


@pytest.mark.gpu
def test_fp16_on_cuda_is_close_to_fp32_on_the_cpu():
    from endoedge.models.checkpoint import load_for_torch
    from endoedge.preprocess import real_looking_batch
    from endoedge.runtime.pytorch import TorchBackend

    loaded = load_for_torch(WEIGHTS)
    x = real_looking_batch(loaded.spec, 2)
    with TorchBackend(WEIGHTS, device="cpu", loaded=loaded) as cpu, \
            TorchBackend(WEIGHTS, device="cuda", loaded=loaded, precision="fp16") as gpu:
        ref, got = cpu.infer({"images": x}), gpu.infer({"images": x})
    for k in ref:
        assert got[k].dtype == np.float32
        np.testing.assert_allclose(got[k], ref[k], atol=0.05 * float(np.abs(ref[k]).max()))
