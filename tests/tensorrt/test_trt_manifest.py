"""Engine manifest (write / read / verify), cache key, ONNX facts and GPU-info parsing; no TensorRT."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from endoedge.data.onnx_facts import onnx_facts
from endoedge.errors import InputError, ModelFormatError, StaleEngineError
from endoedge.spec import ModelSpec, spec_for_foreign_yolo
from endoedge.tensorrt.gpu_info import GpuInfo, device_index
from endoedge.tensorrt.manifest import (
    FORMAT,
    EngineManifest,
    MachineInfo,
    ShapeRange,
    TensorIO,
    cache_key,
    cached_engine_path,
    machine_info,
    make_manifest,
    manifest_path,
    read_manifest,
    stale_field,
    verify_manifest,
    write_manifest,
)

ORIN = GpuInfo("Orin", "8.7", 16)
A100 = GpuInfo("NVIDIA A100-SXM4-80GB", "8.0", 108)
HERE = MachineInfo("10.3.0.30", ORIN, jetpack="6.1", l4t="36.4.0")


def tiny_onnx(path, *, batch="N", fp16=False, meta=None):
    """A one-Conv detector-shaped ONNX (real weights from a seeded RNG), optionally FP16-typed."""
    dt = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float16 if fp16 else np.float32)
    x = helper.make_tensor_value_info("images", dt, [batch, 3, 32, 32])
    y = helper.make_tensor_value_info("out", dt, [batch, 4, 30, 30])
    graph = helper.make_graph([helper.make_node("Conv", ["images", "w"], ["out"])], "g", [x], [y],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in (meta or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


def _manifest(**over):
    """A manifest from the writer, with ``over`` replacing keys of its JSON object."""
    spec = spec_for_foreign_yolo("yolov8", ("polyp",), (32, 32)).to_metadata()
    m = make_manifest(
        onnx_path="/models/polyp.onnx", onnx_sha256="a" * 64, machine=HERE, precision="fp16",
        int8_source=None, calibration_hash=None,
        profiles=[{"images": ShapeRange((1, 3, 32, 32), (1, 3, 32, 32), (8, 3, 32, 32))}],
        io=[TensorIO("images", "input", "float32", (-1, 3, 32, 32)),
            TensorIO("out", "output", "float32", (-1, 4, 30, 30))],
        version_compatible=False, hardware_compatibility="none", dla_core=None, spec=spec)
    return EngineManifest.from_dict({**m.to_dict(), **over}) if over else m


# -- manifest -----------------------------------------------------------------------------------
def test_manifest_keys_round_trip(tmp_path):
    engine = tmp_path / "polyp.engine"
    engine.write_bytes(b"plan")
    m = _manifest()
    path = write_manifest(engine, m)
    assert path == tmp_path / "polyp.engine.json" == manifest_path(engine)
    back = read_manifest(engine)
    assert back == m
    assert back.to_dict() == json.loads(json.dumps(m.to_dict())) == json.loads(path.read_text(encoding="utf-8"))
    assert list(back.to_dict()) == [
        "format", "endoedge_version", "created", "onnx_sha256", "onnx_path", "trt_version", "gpu", "jetpack",
        "l4t", "precision", "int8_source", "calibration_hash", "profiles", "io", "version_compatible",
        "hardware_compatibility", "dla_core", "spec"]
    assert back.format == FORMAT
    assert back.to_dict()["gpu"] == {"name": "Orin", "compute_capability": "8.7", "sm_count": 16}
    spec = ModelSpec.from_metadata(back.spec)  # an engine runs with the ONNX's pre/post-processing
    assert spec.class_names == ("polyp",)
    assert spec.preprocess.input_size == (32, 32)


def test_missing_and_broken_manifests(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(ModelFormatError, match=r"has no manifest 'm.engine.json'.*endoedge build MODEL.onnx -o"):
        read_manifest(engine)
    manifest_path(engine).write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelFormatError, match="cannot be read"):
        read_manifest(engine)
    manifest_path(engine).write_text(json.dumps({"format": "other"}), encoding="utf-8")
    with pytest.raises(ModelFormatError, match="is not an endoedge-engine-manifest/1 file"):
        read_manifest(engine)
    manifest_path(engine).write_text(json.dumps({"format": FORMAT, "trt_version": "10.3.0"}), encoding="utf-8")
    with pytest.raises(ModelFormatError, match="lacks onnx_sha256"):
        read_manifest(engine)


def test_fresh_engine_verifies():
    verify_manifest(_manifest(), HERE, engine_path="polyp.engine", onnx_sha256="a" * 64)
    assert stale_field(_manifest(), HERE) is None


@pytest.mark.parametrize(("machine", "field", "built", "here"), [
    (MachineInfo("10.3.0.31", ORIN, "6.1", "36.4.0"), "trt_version", "10.3.0.30", "10.3.0.31"),
    (MachineInfo("10.3.0.30", GpuInfo("Xavier", "7.2", 8), "6.1", "36.4.0"), "gpu.name", "Orin", "Xavier"),
    (MachineInfo("10.3.0.30", GpuInfo("Orin", "8.6", 16), "6.1", "36.4.0"), "gpu.compute_capability", "8.7", "8.6"),
    (MachineInfo("10.3.0.30", GpuInfo("Orin", "8.7", 8), "6.1", "36.4.0"), "gpu.sm_count", 16, 8),
    (MachineInfo("10.3.0.30", ORIN, "6.2", "36.4.3"), "l4t", "36.4.0", "36.4.3"),
    (MachineInfo("10.3.0.30", ORIN, None, None), "l4t", "36.4.0", None),
])
def test_each_mismatch_names_its_field_in_one_line(machine, field, built, here):
    assert stale_field(_manifest(), machine) == (field, built, here)
    with pytest.raises(StaleEngineError) as info:
        verify_manifest(_manifest(), machine, engine_path="models/polyp.engine")
    msg = str(info.value)
    assert "\n" not in msg
    assert f"{field} is {built!r} in the engine but this machine has {here!r}" in msg
    assert "endoedge build /models/polyp.onnx --precision fp16 -o models/polyp.engine --force" in msg
    assert "--rebuild-if-stale" in msg


def test_changed_onnx_is_stale():
    with pytest.raises(StaleEngineError, match="onnx_sha256 is 'aaaaaaaaaaaa' in the engine but the ONNX it was built "
                                               "from changed since 'bbbbbbbbbbbb'"):
        verify_manifest(_manifest(), HERE, engine_path="polyp.engine", onnx_sha256="b" * 64)


def test_version_compatible_rules():
    m = _manifest(version_compatible=True, trt_version="10.3.0.30")
    for ok in ("10.3.0.30", "10.16.1.11", "11.4.0.106"):
        assert stale_field(m, MachineInfo(ok, ORIN, "6.1", "36.4.0")) is None, ok
    for bad in ("10.2.0", "12.0.0"):
        assert stale_field(m, MachineInfo(bad, ORIN, "6.1", "36.4.0"))[0] == "trt_version", bad
    m8 = _manifest(version_compatible=True, trt_version="8.6.1")
    assert stale_field(m8, MachineInfo("10.3.0", ORIN, "6.1", "36.4.0")) is None
    assert stale_field(m8, MachineInfo("11.4.0", ORIN, "6.1", "36.4.0"))[0] == "trt_version"


def test_hardware_compatible_engines_move_between_gpus():
    dgpu = MachineInfo("10.3.0.30", A100)
    m = _manifest(hardware_compatibility="ampere+", jetpack=None, l4t=None)
    assert stale_field(m, MachineInfo("10.3.0.30", GpuInfo("NVIDIA L4", "8.9", 58))) is None
    assert stale_field(m, MachineInfo("10.3.0.30", GpuInfo("Tesla T4", "7.5", 40)))[0] == "gpu.compute_capability"
    same = _manifest(hardware_compatibility="same-cc", jetpack=None, l4t=None, gpu=A100.to_dict())
    assert stale_field(same, MachineInfo("10.3.0.30", GpuInfo("NVIDIA A30", "8.0", 56))) is None
    assert stale_field(same, dgpu) is None
    assert stale_field(same, MachineInfo("10.3.0.30", GpuInfo("NVIDIA L4", "8.9", 58)))[0] == "gpu.compute_capability"


# -- cache key ----------------------------------------------------------------------------------------
def test_cache_key_is_stable_and_ignores_paths_and_times():
    a, b = _manifest(), _manifest(created="2020-01-01T00:00:00+00:00", onnx_path="/elsewhere/polyp.onnx",
                                  endoedge_version="0.0.1", spec={})
    assert cache_key(a) == cache_key(b) == cache_key(EngineManifest.from_dict(json.loads(json.dumps(a.to_dict()))))
    assert cache_key(a) == cache_key(a.identity)
    assert len(cache_key(a)) == 16
    assert int(cache_key(a), 16) >= 0


@pytest.mark.parametrize("change", [
    {"onnx_sha256": "c" * 64}, {"trt_version": "10.3.0.31"}, {"gpu": {**ORIN.to_dict(), "name": "Xavier"}},
    {"gpu": {**ORIN.to_dict(), "compute_capability": "8.6"}}, {"gpu": {**ORIN.to_dict(), "sm_count": 8}},
    {"precision": "int8"}, {"int8_source": "qdq"}, {"dla_core": 0}, {"calibration_hash": "d" * 16},
    {"version_compatible": True}, {"hardware_compatibility": "ampere+"},
    {"profiles": [{"images": {"min": [1, 3, 32, 32], "opt": [4, 3, 32, 32], "max": [8, 3, 32, 32]}}]},
])
def test_cache_key_changes_with_every_identity_field(change):
    assert cache_key(_manifest(**change)) != cache_key(_manifest())


def test_cached_engine_path(tmp_path):
    p = cached_engine_path(tmp_path, "/models/polyp.onnx", "fp16", "0123456789abcdef")
    assert p == tmp_path / "polyp.fp16.0123456789abcdef.engine"


def test_machine_info_reads_jetson_release(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.0, GCID: 1, BOARD: generic\n")
    m = machine_info("10.3.0.30", ORIN, root=tmp_path)
    assert (m.jetpack, m.l4t) == ("6.1", "36.4.0")
    off = machine_info("10.3.0.30", A100, root=tmp_path / "nothing")
    assert (off.jetpack, off.l4t) == (None, None)


# -- ONNX facts ---------------------------------------------------------------------------------------
def test_onnx_facts_fp32_fp16_static(tmp_path):
    meta = spec_for_foreign_yolo("yolov8", ("polyp",), (32, 32)).to_metadata()
    f = onnx_facts(tiny_onnx(tmp_path / "a.onnx", meta=meta))
    assert (f.input_name, f.input_shape, f.output_names) == ("images", (-1, 3, 32, 32), ("out",))
    assert f.dynamic_batch
    assert f.precision == "fp32"
    assert f.metadata == meta
    assert len(f.sha256) == 64
    assert onnx_facts(tiny_onnx(tmp_path / "h.onnx", fp16=True)).precision == "fp16"
    s = onnx_facts(tiny_onnx(tmp_path / "s.onnx", batch=2))
    assert s.input_shape[0] == 2
    assert not s.dynamic_batch


def test_onnx_facts_detects_qdq_from_onnxruntime_quantization(tmp_path, frames):
    """The Q/DQ oracle is ONNX Runtime's own static quantizer (QDQ format), fed real frames."""
    import cv2
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    src = tiny_onnx(tmp_path / "fp32.onnx")
    batches = [{"images": cv2.resize(f, (32, 32)).transpose(2, 0, 1)[None].astype(np.float32) / 255} for f in frames]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(batches)

        def get_next(self):
            return next(self.it, None)

    out = tmp_path / "int8.onnx"
    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    f = onnx_facts(out)
    assert f.has_qdq
    assert f.precision == "int8"
    assert not onnx_facts(src).has_qdq


def test_onnx_facts_errors(tmp_path):
    with pytest.raises(ModelFormatError, match="does not exist"):
        onnx_facts(tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(ModelFormatError, match="not a readable ONNX"):
        onnx_facts(tmp_path / "bad.onnx")


# -- GPU info -----------------------------------------------------------------------------------------
def test_gpu_info_from_cuda_python_style_properties():
    g = GpuInfo.from_properties(b"NVIDIA GeForce RTX 4090\x00\x00\x00garbage", 8, 9, 128, index=1)
    assert (g.name, g.compute_capability, g.sm_count, g.index, g.cc_tuple) == ("NVIDIA GeForce RTX 4090", "8.9", 128, 1, (8, 9))
    assert GpuInfo.from_properties("Orin", 8, 7, 16).to_dict() == {"name": "Orin", "compute_capability": "8.7", "sm_count": 16}
    assert str(GpuInfo.from_properties(" Orin ", 8, 7, 16)) == "Orin (cc 8.7, 16 SMs)"
    with pytest.raises(ValueError, match="empty name"):
        GpuInfo.from_properties(b"\x00", 8, 7, 16)
    with pytest.raises(ValueError, match="implausible"):
        GpuInfo.from_properties("x", 0, 0, 0)


@pytest.mark.parametrize(("device", "index"), [("auto", 0), ("cuda", 0), ("cuda:1", 1), ("CUDA:2", 2)])
def test_device_index(device, index):
    assert device_index(device) == index


@pytest.mark.parametrize(("device", "message"), [("cpu", "NVIDIA GPU"), ("cuda:x", "unknown device"),
                                                 ("npu:0", "unknown device"), ("gpu", "unknown device")])
def test_device_index_rejects(device, message):
    with pytest.raises(InputError, match=message):
        device_index(device)
