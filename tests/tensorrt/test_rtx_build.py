"""Real TensorRT for RTX engines, built on this CPU by ``endoedge build --runtime rtx``.

Nothing is faked: the real ``tensorrt_rtx_bindings`` (1.7.1) parses and builds every ONNX here
(tiny hand-made graphs and the shipped SSDLite-EfficientNet-Lite0 export in FP32, FP16 and Q/DQ
INT8). Oracles: the real parser's network (I/O names, dtypes, shapes), ``onnx``'s graph and
``hashlib`` (the manifest's sha256). A failing parse or build fails the test. Engines cannot be
deserialized without a GPU, so what runs them is in the GPU-marked tests and ``benchmarks/gpu_check.sh``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from endoedge.cli import main
from endoedge.spec import spec_for_foreign_yolo
from endoedge.tensorrt.manifest import cache_key, read_manifest
from tests.tensorrt.test_trt_manifest import tiny_onnx

pytestmark = pytest.mark.trt_rtx

META = spec_for_foreign_yolo("yolov8", ("polyp",), (32, 32)).to_metadata()


def _rtx():
    import tensorrt_rtx_bindings as trt

    return trt


def parsed_io(path):
    """``[(name, mode, numpy dtype name, shape)]`` of the real TensorRT for RTX parser's network."""
    trt = _rtx()
    log = trt.Logger(trt.Logger.ERROR)
    net = trt.Builder(log).create_network(0)
    parser = trt.OnnxParser(net, log)
    assert parser.parse_from_file(str(path)), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    out = []
    for mode, n, get in (("input", net.num_inputs, net.get_input), ("output", net.num_outputs, net.get_output)):
        for i in range(n):
            t = get(i)
            out.append((t.name, mode, np.dtype(trt.nptype(t.dtype)).name, tuple(t.shape)))
    return out


def onnx_io(path):
    """The same from the ONNX graph (symbolic dims as -1)."""
    model = onnx.load(str(path), load_external_data=False)
    out = []
    for mode, values in (("input", model.graph.input), ("output", model.graph.output)):
        for v in values:
            t = v.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
            out.append((v.name, mode, helper.tensor_dtype_to_np_dtype(t.elem_type).name, dims))
    return out


def build(args, capsys):
    rc = main(["build", *map(str, args)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def one_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("endoedge build: error:")
    return lines[0]


# -- tiny graphs ----------------------------------------------------------------------------
@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_tiny_onnx_builds_a_real_engine_with_its_manifest(tmp_path, capsys, fp16):
    src = tiny_onnx(tmp_path / "tiny.onnx", fp16=fp16, meta=META)
    engine = tmp_path / "tiny.engine"
    rc, out, err = build([src, "-o", engine, "--runtime", "rtx", "--compute-capability", "8.9,86",
                          "--batch", "1:2:4"], capsys)
    assert rc == 0, err
    assert "built:" in out
    assert "TensorRT for RTX" in out
    assert "targets 8.6,8.9" in out
    assert engine.stat().st_size > 10_000
    m = read_manifest(engine)
    assert m.flavour == "rtx"
    assert m.trt_version == _rtx().__version__
    assert m.compute_capabilities == ("8.6", "8.9")
    assert m.onnx_sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert m.precision == ("fp16" if fp16 else "fp32")
    assert m.int8_source is None
    shapes = m.profiles[0]["images"]
    assert (shapes.min, shapes.opt, shapes.max) == ((1, 3, 32, 32), (2, 3, 32, 32), (4, 3, 32, 32))
    assert dict(m.spec) == META
    io = [(t.name, t.mode, t.dtype, t.shape) for t in m.io]
    assert io == parsed_io(src) == onnx_io(src)
    on_disk = json.loads((tmp_path / "tiny.engine.json").read_text())
    assert on_disk["flavour"] == "rtx"
    assert on_disk["compute_capabilities"] == ["8.6", "8.9"]


def test_default_targets_and_auto_runtime(tmp_path, capsys, monkeypatch):
    from endoedge.tensorrt.compat import resolve_runtime

    src = tiny_onnx(tmp_path / "tiny.onnx", batch=1, meta=META)
    if importlib.util.find_spec("tensorrt") is None:  # TensorRT for RTX is the only TensorRT here
        assert resolve_runtime("auto") == "rtx"
        rc, out, err = build([src, "-o", tmp_path / "a.engine"], capsys)
        assert rc == 0, err
        assert "targets ampere+" in out
        assert read_manifest(tmp_path / "a.engine").compute_capabilities == ()
    assert resolve_runtime("auto", compute_capabilities=True) == "rtx"
    assert resolve_runtime("tensorrt") == "tensorrt"


def test_engine_cache_is_keyed_on_targets_onnx_and_profile(tmp_path, capsys):
    src = tiny_onnx(tmp_path / "tiny.onnx", meta=META)
    cache = tmp_path / "cache"
    common = [src, "--runtime", "rtx", "--cache-dir", cache]
    assert build([*common, "--compute-capability", "8.6"], capsys)[0] == 0
    rc, out, _ = build([*common, "--compute-capability", "8.6"], capsys)
    assert rc == 0
    assert out.startswith("up to date (not rebuilt)")
    assert build([*common, "--compute-capability", "8.6,8.9"], capsys)[0] == 0
    assert build([*common, "--compute-capability", "8.6", "--batch", "1:1:2"], capsys)[0] == 0
    tiny_onnx(src, meta={**META, "note": "re-exported"})  # same graph, new bytes
    assert build([*common, "--compute-capability", "8.6"], capsys)[0] == 0
    engines = sorted(cache.glob("*.engine"))
    assert len(engines) == 4
    keys = {cache_key(read_manifest(e)) for e in engines}
    assert len(keys) == 4
    assert {e.name.split(".")[2] for e in engines} == keys


# -- one-line refusals ------------------------------------------------------------------------
FRAMES = str(__import__("endoedge").__path__[0] + "/assets/holohub")


@pytest.mark.parametrize(("extra", "needles"), [
    (["--compute-capability", "8.7"], ["8.7 is Jetson Orin", "no Jetson target", "on the Jetson",
                                       "7.5, 8.0, 8.6, 8.9, 12.0, 12.1"]),
    (["--compute-capability", "8.6,11.0"], ["Jetson Thor", "build the engine on the Jetson"]),
    (["--compute-capability", "9.0"], ["9.0 (Hopper", "not a TensorRT for RTX target", "8.6, 8.9"]),
    (["--precision", "fp16"], ["strongly typed", "FP16 needs an FP16 ONNX", "endoedge quantize"]),
    (["--precision", "int8"], ["strongly typed", "INT8 needs a Q/DQ ONNX"]),
    (["--precision", "int8", "--calib", FRAMES], ["no implicit INT8 calibration", "fp32, fp16 or Q/DQ int8"]),
    (["--dla", "0"], ["TensorRT for RTX has no DLA", "drop --dla"]),
    (["--version-compatible"], ["cannot build version-compatible", "drop --version-compatible"]),
    (["--hardware-compat", "ampere+"], ["--compute-capability", "drop --hardware-compat"]),
])
def test_refusals_are_one_line_and_build_nothing(tmp_path, capsys, extra, needles):
    src = tiny_onnx(tmp_path / "tiny.onnx", meta=META)
    rc, _, err = build([src, "-o", tmp_path / "x.engine", "--runtime", "rtx", *extra], capsys)
    assert rc == 1
    line = one_line(err)
    for needle in needles:
        assert needle in line, line
    assert not (tmp_path / "x.engine").exists()


def test_bad_compute_capability_syntax_exits_2(tmp_path, capsys):
    src = tiny_onnx(tmp_path / "tiny.onnx", meta=META)
    with pytest.raises(SystemExit) as info:
        main(["build", str(src), "-o", str(tmp_path / "x.engine"), "--compute-capability", "ampere"])
    assert info.value.code == 2
    assert "'ampere' is not a compute capability" in capsys.readouterr().err


def test_full_tensorrt_refuses_compute_capability(tmp_path):
    from endoedge.data.onnx_facts import onnx_facts
    from endoedge.tensorrt.compat import TrtVersion
    from endoedge.tensorrt.plan import BuildRequest, make_plan

    facts = onnx_facts(tiny_onnx(tmp_path / "tiny.onnx", meta=META))
    plan = make_plan(BuildRequest(compute_capabilities=("8.6",)), TrtVersion(10, 3, 0), facts)
    assert plan.errors
    assert "--compute-capability names TensorRT for RTX targets" in plan.errors[0]


def _unparseable(path):
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3, 8, 8])
    nodes = [helper.make_node("Relu", ["images"], ["r"], name="relu0"),
             helper.make_node("FancyPolypOp", ["r"], ["out"], name="fancy", domain="com.example")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_parse_failure_names_the_parsers_node_and_message(tmp_path, capsys):
    src = _unparseable(tmp_path / "bad.onnx")
    rc, _, err = build([src, "-o", tmp_path / "bad.engine", "--runtime", "rtx"], capsys)
    assert rc == 1
    line = one_line(err)
    assert "ONNX parser rejected 'bad.onnx'" in line
    assert "node 1 (FancyPolypOp 'fancy')" in line, line
    assert not (tmp_path / "bad.engine").exists()


def test_nms_inside_the_graph_fails_the_build_in_one_line(tmp_path, capsys):
    """NonMaxSuppression parses but TensorRT for RTX has no runner for it: one line, no engine."""
    boxes = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 16, 4])
    out = helper.make_tensor_value_info("keep", TensorProto.INT64, [-1, 3])
    scores = numpy_helper.from_array(np.random.default_rng(0).random((1, 1, 16), dtype=np.float32), "scores")
    nodes = [helper.make_node("NonMaxSuppression", ["images", "scores", "k"], ["keep"], name="nms")]
    k = numpy_helper.from_array(np.array([5], dtype=np.int64), "k")
    model = helper.make_model(helper.make_graph(nodes, "g", [boxes], [out], [scores, k]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "nms.onnx"))
    rc, _, err = build([tmp_path / "nms.onnx", "-o", tmp_path / "nms.engine", "--runtime", "rtx"], capsys)
    assert rc == 1
    line = one_line(err)
    assert "TensorRT for RTX" in line
    assert "nms.onnx" in line
    assert not (tmp_path / "nms.engine").exists()


# -- the shipped detector --------------------------------------------------------------------
@pytest.fixture(scope="module")
def polyp_variants(polyp_onnx, tmp_path_factory):
    """The shipped SSDLite-EfficientNet-Lite0 export, its FP16 copy and a Q/DQ INT8 copy (what
    ``endoedge quantize`` writes; INT8 calibrated on 2 bundled frames: a build test, not accuracy)."""
    from endoedge.calibration import load_calibration_data
    from endoedge.calibration.quantize import convert_fp16, quantize_int8
    from endoedge.spec import ModelSpec

    d = tmp_path_factory.mktemp("polyp_rtx")
    spec = ModelSpec.from_metadata({p.key: p.value for p in onnx.load(str(polyp_onnx),
                                                                       load_external_data=False).metadata_props})
    data = load_calibration_data(FRAMES, spec, num_images=2, batch_size=1)
    return {"fp32": polyp_onnx,
            "fp16": convert_fp16(polyp_onnx, d / "polyp.fp16.onnx").path,
            "int8": quantize_int8(polyp_onnx, d / "polyp.int8.onnx", data, method="minmax").path}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_shipped_detector_builds_for_86_and_89(polyp_variants, tmp_path, capsys, precision):
    src = polyp_variants[precision]
    engine = tmp_path / f"polyp.{precision}.engine"
    rc, out, err = build([src, "-o", engine, "--compute-capability", "8.6,8.9", "--runtime", "rtx"], capsys)
    assert rc == 0, err
    m = read_manifest(engine)
    assert m.precision == precision
    assert m.int8_source == ("qdq" if precision == "int8" else None)
    assert m.compute_capabilities == ("8.6", "8.9")
    assert [(t.name, t.mode, t.dtype, t.shape) for t in m.io] == parsed_io(src)
    assert m.spec["endoedge.arch"] == "ssdlite320_efficientnet_lite0"
    assert engine.stat().st_size > 5_000_000  # weights are in the plan (FP16 ~9 MB, FP32 ~17 MB)


def _gemm(path, fp16=False):
    """images [N,3,8,8] -> Flatten -> Gemm -> [N,4]: a classifier head, the op Turing lacks in FP32."""
    dt, npdt = (TensorProto.FLOAT16, np.float16) if fp16 else (TensorProto.FLOAT, np.float32)
    x = helper.make_tensor_value_info("images", dt, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("logits", dt, ["N", 4])
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 192)).astype(npdt), "w")
    nodes = [helper.make_node("Flatten", ["images"], ["f"]),
             helper.make_node("Gemm", ["f", "w"], ["logits"], transB=1, name="head")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_turing_fp32_gemm_fails_with_the_fp16_hint_and_fp16_builds(tmp_path, capsys):
    """Measured: TensorRT for RTX 1.7.1 cannot compile an FP32 GEMM for SM75 (YOLO11/YOLO26 attention,
    classifier heads); the same graph in FP16 builds."""
    rc, _, err = build([_gemm(tmp_path / "g32.onnx"), "-o", tmp_path / "g32.engine", "--compute-capability", "7.5"],
                       capsys)
    assert rc == 1
    line = one_line(err)
    assert "Turing (SM75)" in line
    assert "build the FP16 ONNX" in line
    rc, _, err = build([_gemm(tmp_path / "g16.onnx", fp16=True), "-o", tmp_path / "g16.engine",
                        "--compute-capability", "7.5"], capsys)
    assert rc == 0, err
    assert read_manifest(tmp_path / "g16.engine").precision == "fp16"
