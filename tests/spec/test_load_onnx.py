"""One ONNX reader (spec.load_onnx_proto): every caller fails with the same one-line ModelFormatError."""

from __future__ import annotations

import pytest

from endoedge.errors import ModelFormatError
from endoedge.spec import load_onnx_proto


def _callers():
    from endoedge.benchmarks.bench import _onnx_input
    from endoedge.cli._common import _onnx_input_size
    from endoedge.data.onnx_facts import onnx_facts

    return [load_onnx_proto, onnx_facts, _onnx_input, lambda p: _onnx_input_size(str(p))]


def test_missing_and_garbage_files(tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xffnot protobuf at all" * 8)
    for call in _callers():
        with pytest.raises(ModelFormatError) as info:
            call(tmp_path / "absent.onnx")
        assert str(info.value) == f"model '{tmp_path / 'absent.onnx'}' does not exist or is not a file"
        with pytest.raises(ModelFormatError, match=r"is not a readable ONNX file \(\w+\)$") as info:
            call(garbage)
        assert "\n" not in str(info.value)


def test_reads_graph_and_metadata(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 64, 64])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["images"], ["out"])], "g", [x], [y]))
    helper.set_model_props(model, {"endoedge.schema": "1"})
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    proto = load_onnx_proto(path)
    assert proto.graph.input[0].name == "images"
    assert {p.key: p.value for p in proto.metadata_props} == {"endoedge.schema": "1"}

    from endoedge.cli._common import _onnx_input_size

    assert _onnx_input_size(str(path)) == 64


def test_an_empty_file_is_reported_as_empty_not_as_missing_metadata(tmp_path):
    # protobuf parses 0 bytes as an empty ModelProto; every reader must say so, not "no metadata"
    pytest.importorskip("onnx")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    for call in _callers():
        with pytest.raises(ModelFormatError, match=r"holds no ONNX graph \(0 bytes;") as info:
            call(empty)
        assert "\n" not in str(info.value)


def test_quantize_reports_an_empty_file(tmp_path):
    pytest.importorskip("onnx")
    from endoedge.calibration.quantize import quantize_int8

    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelFormatError, match="holds no ONNX graph"):
        quantize_int8(empty, tmp_path / "out.onnx", None)
