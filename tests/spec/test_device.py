"""The one ``--device`` parser: accepted forms, normalisation, one error wording."""

from __future__ import annotations

import pytest

from endoedge.errors import BackendUnavailableError, DeviceError, EndoedgeError, InputError
from endoedge.spec.device import DEVICE_FORMS, Device, parse_device


@pytest.mark.parametrize(
    ("text", "device"),
    [
        ("auto", Device("auto")),
        ("cpu", Device("cpu")),
        ("cuda", Device("cuda")),
        ("cuda:0", Device("cuda", 0)),
        ("cuda:12", Device("cuda", 12)),
        ("tensorrt", Device("tensorrt")),
        ("tensorrt:1", Device("tensorrt", 1)),
        (" CUDA:2 ", Device("cuda", 2)),
    ],
)
def test_parse_device_forms(text, device):
    assert parse_device(text) == device


def test_device_str_and_ordinal():
    assert str(Device("cuda", 3)) == "cuda:3"
    assert str(Device("cpu")) == "cpu"
    assert Device("cuda").ordinal == 0
    assert Device("tensorrt", 2).ordinal == 2


@pytest.mark.parametrize("text", ["", "gpu", "cuda:x", "cuda:", "cuda:-1", "cuda:²", "npu:0", "cuda:0:1", "mps"])
def test_parse_device_rejects_with_one_line(text):
    with pytest.raises(DeviceError) as info:
        parse_device(text)
    message = str(info.value)
    assert message == f"unknown device '{text}'; use {DEVICE_FORMS}"
    assert "\n" not in message


def test_device_error_is_an_input_and_a_backend_error():
    # Callers that caught the older per-backend types keep working.
    assert issubclass(DeviceError, InputError)
    assert issubclass(DeviceError, BackendUnavailableError)
    assert issubclass(DeviceError, EndoedgeError)
