"""Every backend refuses a malformed ``device`` with the same DeviceError and the same wording."""

from __future__ import annotations

import pytest

from endoedge.errors import DeviceError
from endoedge.runtime import backend_names, get_backend_class
from endoedge.runtime.ort import providers_for
from endoedge.runtime.pytorch import resolve_torch_device
from endoedge.spec.device import DEVICE_FORMS
from endoedge.tensorrt.gpu_info import device_index

BAD = ["cuda:x", "gpu", ""]


def _message(text: str) -> str:
    return f"unknown device '{text}'; use {DEVICE_FORMS}"


@pytest.mark.parametrize("name", ["onnxruntime", "torch", "tensorrt"])
@pytest.mark.parametrize("device", BAD)
def test_every_backend_refuses_a_bad_device_at_construction(name, device, tmp_path):
    assert name in backend_names()
    with pytest.raises(DeviceError) as info:
        get_backend_class(name)(tmp_path / "model.onnx", device=device)
    assert str(info.value) == _message(device)


@pytest.mark.parametrize("device", BAD)
def test_device_helpers_share_the_wording(device):
    for call in (lambda: providers_for(device, ["CPUExecutionProvider"]),
                 lambda: resolve_torch_device(device),
                 lambda: device_index(device)):
        with pytest.raises(DeviceError) as info:
            call()
        assert str(info.value) == _message(device)


def test_valid_but_unsupported_kinds_are_device_errors():
    with pytest.raises(DeviceError, match="torch backend cannot run on device 'tensorrt'"):
        resolve_torch_device("tensorrt")
    with pytest.raises(DeviceError, match="NVIDIA GPU"):
        device_index("cpu")


def test_good_devices_construct(tmp_path):
    for device in ("auto", "cpu", "cuda", "cuda:1", "tensorrt:0", "CUDA:2"):
        backend = get_backend_class("onnxruntime")(tmp_path / "m.onnx", device=device)
        assert backend.device == device  # kept as given; describe() shows it


def test_load_refuses_a_bad_device(ssdlite):
    import endoedge

    with pytest.raises(DeviceError, match="unknown device 'gpu'"):
        endoedge.load(ssdlite[2], device="gpu")
