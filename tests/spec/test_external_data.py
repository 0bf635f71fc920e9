"""Untrusted ONNX files: external data outside the model's folder is refused with one line;
external data inside it (a sub-folder too) loads and computes what numpy computes."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from endoedge.errors import ModelFormatError  # noqa: E402
from endoedge.runtime.ort import OnnxRuntimeBackend  # noqa: E402
from endoedge.spec import load_onnx_proto, read_onnx_metadata  # noqa: E402

W = np.arange(12, dtype=np.float32).reshape(3, 4)


def _add_model(path, location: str):
    """y = x + W with W stored externally at ``location`` (relative to the model's folder)."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "W"], ["y"])], "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
        [numpy_helper.from_array(W, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    data = path.parent / location
    data.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0)
    return path


def _relocate(path, location: str) -> None:
    """Point the external tensor of ``path`` at ``location`` (what a crafted file does)."""
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    path.write_bytes(model.SerializeToString())


def test_external_data_inside_the_folder_loads(tmp_path):
    path = _add_model(tmp_path / "m" / "add.onnx", "weights/add.data")
    load_onnx_proto(path)
    x = np.ones((3, 4), np.float32)
    with OnnxRuntimeBackend(path, device="cpu") as backend:
        np.testing.assert_array_equal(backend.infer({"x": x})["y"], x + W)


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "nested-dotdot"])
def test_external_data_outside_the_folder_is_refused(tmp_path, kind):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(W.tobytes())  # the right size: a reader would happily load it
    path = _add_model(tmp_path / "m" / "add.onnx", "add.data")
    location = {
        "dotdot": "../secret.bin",
        "absolute": str(secret),
        "symlink": "link.data",
        "nested-dotdot": "weights/../../secret.bin",
    }[kind]
    if kind == "symlink":
        os.symlink(secret, tmp_path / "m" / "link.data")
    _relocate(path, location)
    for read in (load_onnx_proto, read_onnx_metadata):
        with pytest.raises(ModelFormatError, match="outside|absolute|climbs out") as info:
            read(path)
        assert "\n" not in str(info.value)
    with pytest.raises(ModelFormatError, match="refusing"), OnnxRuntimeBackend(path, device="cpu"):
        pass


def test_cli_refuses_a_detector_with_traversing_external_data(ssdlite, tmp_path, sample_paths, capsys):
    from endoedge.cli import main

    (tmp_path / "secret.bin").write_bytes(b"x" * 64)
    model = onnx.load(str(ssdlite[2]))
    path = tmp_path / "m" / "det.onnx"
    path.parent.mkdir()
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="det.data", size_threshold=1024)
    _relocate(path, "../secret.bin")
    shutil.copy(sample_paths[0], tmp_path / "a.jpg")
    rc = main(["detect", str(tmp_path / "a.jpg"), "-m", str(path), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 1
    assert "refusing it" in err[0]
    assert "climbs out" in err[0]
