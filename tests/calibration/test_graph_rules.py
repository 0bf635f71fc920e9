"""The output-layer rule of the INT8 recipe on real exported graphs (SSDLite, Ultralytics YOLO)."""

from __future__ import annotations

import pytest

from endoedge.calibration.graph_rules import output_layers
from endoedge.calibration.quantize import DEFAULT_OP_TYPES

onnx = pytest.importorskip("onnx")


def test_ssd_keeps_exactly_the_last_head_convs(ssdlite):
    graph = onnx.load(str(ssdlite[2])).graph
    found = output_layers(graph, DEFAULT_OP_TYPES)
    # Oracle: torchvision's SSDLite head has one last conv per feature map in each of its two heads;
    # those are the Convs whose outputs are only reshaped/concatenated into the graph outputs.
    convs = [n for n in graph.node if n.op_type == "Conv"]
    heads = [n.name for n in convs if "/head/" in n.name and n.name.endswith(".1/Conv")]
    assert found == heads
    assert len(found) == 12  # 6 feature maps x (classification, regression)
    assert all(n.op_type == "Conv" for n in graph.node if n.name in found)
    # depth 2 adds the conv before each of those: torchvision's SSDLite head block is a depthwise
    # conv (".0.0/Conv") feeding that last 1x1 conv
    two = output_layers(graph, DEFAULT_OP_TYPES, depth=2)
    assert set(two) - set(found) == {n.name for n in convs if "/head/" in n.name and n.name.endswith(".0.0/Conv")}


def test_rule_ignores_shape_paths_and_stops_at_weighted_layers():
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    z = helper.make_tensor_value_info("z", TensorProto.INT64, None)
    w = helper.make_tensor("w", TensorProto.FLOAT, [3, 3, 1, 1], [0.0] * 9)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"], name="body"),  # feeds another conv, and a Shape
        helper.make_node("Shape", ["a"], ["z"], name="shape"),
        helper.make_node("Conv", ["a", "w"], ["b"], name="last"),  # feeds the output through Add
        helper.make_node("Add", ["b", "b"], ["y"], name="decode"),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y, z], initializer=[w])
    assert output_layers(graph, DEFAULT_OP_TYPES) == ["last", "decode"]
    # depth: the weighted layers within N of an output (a value crossing "last" is one layer away)
    assert output_layers(graph, DEFAULT_OP_TYPES, depth=2) == ["body", "last", "decode"]
    assert output_layers(graph, DEFAULT_OP_TYPES, depth=0) == []


@pytest.mark.ultralytics
def test_yolov8_keeps_class_convs_dfl_and_decode_float(tmp_path, frames):
    pytest.importorskip("ultralytics")
    from tests.postprocess.test_ultralytics import build_ultralytics_onnx

    path = build_ultralytics_onnx("v8/yolov8.yaml", "yolov8n.yaml", tmp_path, frames, dynamic=True)
    graph = onnx.load(str(path)).graph
    found = set(output_layers(graph, DEFAULT_OP_TYPES))
    ops = {n.name: n.op_type for n in graph.node}
    convs = {n for n in found if ops[n] == "Conv"}
    # Ultralytics' Detect head: cv3.{i}.2 = the last class conv per scale, dfl.conv = the DFL expectation.
    assert convs == {n for n in ops if n.endswith(("cv3.0.2/Conv", "cv3.1.2/Conv", "cv3.2.2/Conv", "dfl/conv/Conv"))}
    assert all("/model.22/" in n for n in found)  # nothing of the backbone or neck


def test_quantize_output_layers_restores_the_all_int8_recipe(ssdlite, calib, tmp_path):
    from endoedge.calibration.qdq_check import check_qdq
    from endoedge.calibration.quantize import quantize_int8

    res = quantize_int8(ssdlite[2], tmp_path / "all.onnx", calib, method="minmax", float_output_layers=False)
    rep = check_qdq(res.path)
    assert rep.ok
    assert res.output_layers == []
    assert rep.float_convs == []
