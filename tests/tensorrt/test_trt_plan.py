"""TensorRT build decisions per line (8.6 / 10.3 / 10.16 / 11.4), without TensorRT.

The plan is pure logic over a TensorRT version string and facts about the ONNX; these tests pin
which network flags, builder flags and INT8 source each line gets, and the one-line refusals.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from endoedge.data.onnx_facts import OnnxFacts
from endoedge.errors import EngineBuildError, InputError
from endoedge.tensorrt.build import precheck
from endoedge.tensorrt.compat import TrtVersion
from endoedge.tensorrt.engine_manifest import EngineManifest
from endoedge.tensorrt.plan import (
    DEFAULT_DYNAMIC_BATCH,
    BuildRequest,
    make_plan,
    parse_batch_range,
    request_from_manifest,
)

V86, V103, V1016, V114 = (TrtVersion.parse(v) for v in ("8.6.1.6", "10.3.0.26", "10.16.1.11", "11.4.0.106"))
LINES = (V86, V103, V1016, V114)


def facts(kind: str = "fp32", batch: int = -1) -> OnnxFacts:
    return OnnxFacts(path=Path(f"/models/m_{kind}.onnx"), sha256="ab" * 32, input_name="images",
                     input_shape=(batch, 3, 320, 320), output_names=("bbox", "cls"),
                     has_qdq=kind == "qdq", has_fp16=kind == "fp16")


def plan(req: BuildRequest, ver: TrtVersion, kind: str = "fp32", **kw):
    return make_plan(req, ver, facts(kind), **kw)


# -- network and builder flags per line ---------------------------------------------------------
@pytest.mark.parametrize(("ver", "explicit"), [(V86, True), (V103, False), (V1016, False), (V114, False)])
def test_explicit_batch_only_on_8x(ver, explicit):
    p = plan(BuildRequest(precision="fp32"), ver).check()
    assert p.explicit_batch is explicit
    assert ("EXPLICIT_BATCH" in p.network_flags) is explicit
    assert p.builder_flags == ()


@pytest.mark.parametrize("ver", [V86, V103, V1016])
def test_fp16_from_fp32_onnx_uses_builder_flag_up_to_10(ver):
    p = plan(BuildRequest(precision="fp16"), ver).check()
    assert p.builder_flags == ("FP16",)
    assert not p.strongly_typed


def test_fp16_from_fp32_onnx_on_11_is_refused_with_the_quantize_command():
    p = plan(BuildRequest(precision="fp16"), V114)
    assert len(p.errors) == 1
    assert "strongly typed" in p.errors[0]
    assert "endoedge quantize MODEL.onnx --precision fp16" in p.errors[0]
    with pytest.raises(EngineBuildError, match="FP16 needs an FP16 ONNX"):
        p.check()


def test_fp16_onnx_is_strongly_typed_on_10_and_11_and_flagged_on_86():
    assert plan(BuildRequest(precision="fp16"), V86, "fp16").check().builder_flags == ("FP16",)
    for ver in (V103, V1016):
        p = plan(BuildRequest(precision="fp16"), ver, "fp16").check()
        assert p.network_flags == ("STRONGLY_TYPED",)
        assert p.builder_flags == ()
    p = plan(BuildRequest(precision="fp16"), V114, "fp16").check()
    assert p.strongly_typed
    assert p.network_flags == ("STRONGLY_TYPED",)
    assert p.builder_flags == ()


@pytest.mark.parametrize("ver", [V86, V103, V1016])
def test_qdq_int8_builds_weakly_typed_with_fp16_and_int8_up_to_10(ver):
    p = plan(BuildRequest(precision="int8"), ver, "qdq").check()
    assert p.int8_source == "qdq"
    assert p.builder_flags == ("FP16", "INT8")
    assert not p.use_calibrator
    assert not p.strongly_typed


def test_qdq_int8_on_11_has_no_flags():
    p = plan(BuildRequest(precision="int8"), V114, "qdq").check()
    assert p.int8_source == "qdq"
    assert p.builder_flags == ()
    assert p.strongly_typed


@pytest.mark.parametrize("ver", [V86, V103, V1016])
def test_calibrator_path_up_to_10(ver):
    p = plan(BuildRequest(precision="int8", calib=True, calib_batch=4), ver).check()
    assert p.use_calibrator
    assert p.int8_source == "calibrator"
    assert p.builder_flags == ("FP16", "INT8")
    assert p.calib_profile == {"images": {"min": [4, 3, 320, 320], "opt": [4, 3, 320, 320], "max": [4, 3, 320, 320]}}
    assert any("deprecated since TensorRT 10.1" in w for w in p.warnings) is (ver >= TrtVersion(10, 1))


def test_calib_on_11_is_refused():
    p = plan(BuildRequest(precision="int8", calib=True), V114)
    assert "removed implicit INT8 calibration" in p.errors[0]
    assert "endoedge quantize MODEL.onnx --precision int8" in p.errors[0]


def test_precision_flags_deprecation_warning_from_10_12():
    assert not plan(BuildRequest(precision="fp16"), V103).warnings
    assert any("deprecates BuilderFlag.FP16" in w for w in plan(BuildRequest(precision="fp16"), V1016).warnings)


@pytest.mark.parametrize("ver", LINES)
def test_int8_without_qdq_or_calib_is_refused(ver):
    errors = plan(BuildRequest(precision="int8"), ver).errors
    assert errors
    assert "Q/DQ" in errors[0]


@pytest.mark.parametrize("ver", LINES)
def test_precision_defaults_to_what_the_onnx_is(ver):
    assert plan(BuildRequest(), ver, "qdq").check().precision == "int8"
    assert plan(BuildRequest(), ver, "fp16").check().precision == "fp16"
    assert plan(BuildRequest(), ver, "fp32").check().precision == "fp32"


@pytest.mark.parametrize(("kind", "precision", "needle"), [
    ("qdq", "fp16", "is a Q/DQ (INT8) ONNX"),
    ("qdq", "fp32", "is a Q/DQ (INT8) ONNX"),
    ("fp16", "fp32", "is an FP16 ONNX"),
    ("fp16", "int8", "FP16 ONNX without Q/DQ"),
])
@pytest.mark.parametrize("ver", LINES)
def test_onnx_and_precision_mismatch(ver, kind, precision, needle):
    errors = plan(BuildRequest(precision=precision), ver, kind).errors
    assert any(needle in e for e in errors), errors


def test_calib_with_a_qdq_onnx_or_a_float_precision():
    assert any("already quantized" in e for e in plan(BuildRequest(precision="int8", calib=True), V103, "qdq").errors)
    assert plan(BuildRequest(precision="fp16", calib=True), V103).errors[0].startswith("--calib is for --precision int8")


# -- batch profile ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [("1:4:8", (1, 4, 8)), ("4", (4, 4, 4)), (" 2 : 2 : 16 ", (2, 2, 16))])
def test_parse_batch_range(text, expected):
    assert parse_batch_range(text) == expected


@pytest.mark.parametrize("text", ["0:1:2", "4:2:8", "1:8:4", "1:2", "a:b:c", "", "1:2:3:4", "-1:1:1"])
def test_parse_batch_range_rejects(text):
    with pytest.raises(InputError, match="--batch"):
        parse_batch_range(text)


def test_dynamic_batch_profile_and_default():
    p = plan(BuildRequest(batch=(1, 4, 16)), V103).check()
    assert p.set_profile
    assert p.profile == {"images": {"min": [1, 3, 320, 320], "opt": [4, 3, 320, 320], "max": [16, 3, 320, 320]}}
    d = plan(BuildRequest(), V103).check().profile["images"]
    assert (d["min"][0], d["opt"][0], d["max"][0]) == DEFAULT_DYNAMIC_BATCH


def test_static_batch_onnx_refuses_a_range_but_accepts_its_own_batch():
    static = facts(batch=1)
    p = make_plan(BuildRequest(batch=(1, 4, 8)), V103, static)
    assert "fixed batch of 1" in p.errors[0]
    assert "--static-batch" in p.errors[0]
    ok = make_plan(BuildRequest(batch=(1, 1, 1)), V103, static).check()
    assert not ok.set_profile
    assert make_plan(BuildRequest(precision="int8", calib=True, calib_batch=2), V103, static).errors[0].endswith(
        "use --calib-batch 1")


def test_symbolic_spatial_dims_need_metadata():
    f = OnnxFacts(Path("/m.onnx"), "0" * 64, "images", (-1, 3, -1, -1), ("out",))
    assert "symbolic dimensions" in make_plan(BuildRequest(), V103, f).errors[0]


# -- DLA, version / hardware compatibility, workspace -------------------------------------------------
def test_dla_per_line():
    ok = plan(BuildRequest(precision="fp16", dla_core=0), V103, jetson=True).check()
    assert ok.builder_flags == ("FP16", "GPU_FALLBACK")
    assert ok.dla_core == 0
    assert "no DLA support" in plan(BuildRequest(precision="fp16", dla_core=0), V1016, jetson=True).errors[0]
    assert plan(BuildRequest(precision="int8", dla_core=1), V114, "qdq", jetson=True).check().gpu_fallback
    assert "not a Jetson" in plan(BuildRequest(precision="fp16", dla_core=0), V103, jetson=False).errors[0]
    assert "FP16 and INT8 only" in plan(BuildRequest(precision="fp32", dla_core=0), V86, jetson=True).errors[0]


def test_version_and_hardware_compatibility():
    assert plan(BuildRequest(version_compatible=True), V86).check().builder_flags == ("VERSION_COMPATIBLE",)
    assert "needs TensorRT >= 8.6" in plan(BuildRequest(version_compatible=True), TrtVersion(8, 5, 2)).errors[0]
    assert plan(BuildRequest(hardware_compat="ampere+"), V86, gpu_cc=(8, 6)).check().hardware_compat == "ampere+"
    assert "compute capability >= 8.0" in plan(BuildRequest(hardware_compat="ampere+"), V103, gpu_cc=(7, 5)).errors[0]
    assert "needs TensorRT >= 10.9" in plan(BuildRequest(hardware_compat="same-cc"), V103).errors[0]
    assert plan(BuildRequest(hardware_compat="same-cc"), V1016).check()
    assert "discrete" in plan(BuildRequest(hardware_compat="ampere+"), V103, jetson=True).errors[0]
    assert "use one of" in plan(BuildRequest(hardware_compat="turing"), V103).errors[0]


def test_workspace_in_mib():
    assert plan(BuildRequest(workspace_mib=512), V103).check().workspace_bytes == 512 << 20
    assert "at least 1" in plan(BuildRequest(workspace_mib=0), V103).errors[0]


def test_too_old_line():
    assert "too old" in plan(BuildRequest(), TrtVersion(8, 4, 1)).errors[0]


def test_describe_is_one_line():
    text = plan(BuildRequest(precision="int8", batch=(1, 2, 4)), V86, "qdq").check().describe()
    assert "\n" not in text
    assert "EXPLICIT_BATCH" in text
    assert "FP16|INT8" in text
    assert "batch 1:2:4" in text


# -- precheck: what every line refuses is raised before TensorRT is imported ----------------------------
def test_precheck_raises_line_independent_errors_only():
    with pytest.raises(EngineBuildError, match="fixed batch of 1"):
        precheck(BuildRequest(batch=(1, 2, 4)), facts(batch=1))
    with pytest.raises(EngineBuildError, match="Q/DQ"):
        precheck(BuildRequest(precision="int8"), facts())  # refused by all lines, worded per line
    precheck(BuildRequest(precision="fp16"), facts())  # fine on 8.6/10.x: left to the installed line
    precheck(BuildRequest(precision="int8", calib=True), facts())  # fine on <= 10
    precheck(BuildRequest(hardware_compat="same-cc"), facts())  # fine on 10.9+


def test_request_from_manifest_round_trip():
    p = plan(BuildRequest(precision="fp16", batch=(1, 2, 8), version_compatible=True, hardware_compat="ampere+"), V103)
    manifest = {"precision": p.precision, "profiles": [p.profile], "dla_core": None, "version_compatible": True,
                "hardware_compatibility": "ampere+",
                "io": [{"name": "images", "mode": "input", "dtype": "float32", "shape": [-1, 3, 320, 320]}]}
    req = request_from_manifest(EngineManifest.from_dict(manifest, partial=True))
    assert req == BuildRequest(precision="fp16", batch=(1, 2, 8), version_compatible=True, hardware_compat="ampere+")
    manifest["io"][0]["shape"] = [1, 3, 320, 320]
    assert request_from_manifest(EngineManifest.from_dict(manifest, partial=True)).batch is None


# -- the version shim ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "props"), [
    # explicit_batch, precision_flags, calibrator, strongly_typed_flag, strongly_only, dla, vc, same_cc
    ("8.5.2.2", (True, True, True, False, False, True, False, False)),
    ("8.6.1.6", (True, True, True, False, False, True, True, False)),
    ("10.3.0.26", (False, True, True, True, False, True, True, False)),
    ("10.16.1.11", (False, True, True, True, False, False, True, True)),
    ("11.0.0", (False, False, False, True, True, False, True, True)),
    ("11.4.0.106", (False, False, False, True, True, True, True, True)),
])
def test_trt_version_properties(text, props):
    v = TrtVersion.parse(text)
    assert (v.needs_explicit_batch_flag, v.has_precision_flags, v.has_implicit_calibration, v.has_strongly_typed_flag,
            v.strongly_typed_only, v.has_dla, v.has_version_compatible, v.has_same_compute_capability) == props
    assert v.supported
    assert v.has_hardware_compatibility is v.has_version_compatible
    assert v.calibrator_deprecated is (v >= TrtVersion(10, 1))
    assert v.precision_flags_deprecated is (v >= TrtVersion(10, 12))


def test_trt_version_parse_and_order():
    assert TrtVersion.parse("10.3") == TrtVersion(10, 3, 0)
    assert str(TrtVersion.parse(" 8.6.1.6 ")) == "8.6.1"
    assert TrtVersion(8, 6, 1) < TrtVersion(10, 0) < TrtVersion(11, 4)
    assert not TrtVersion.parse("8.4.1").supported
    with pytest.raises(ValueError, match="not a TensorRT version"):
        TrtVersion.parse("ten")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is importable here")
def test_import_tensorrt_explains_and_names_the_extra():
    from endoedge.errors import BackendUnavailableError
    from endoedge.tensorrt.compat import import_tensorrt

    with pytest.raises(BackendUnavailableError, match=r"TensorRT could not be imported \(ModuleNotFoundError.*endoedge\[trt\]"):
        import_tensorrt()
