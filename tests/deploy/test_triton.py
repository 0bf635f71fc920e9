"""``endoedge export-triton``: config.pbtxt checked by parsing it back with Triton's own protobuf
schema (``model_config_pb2`` from tritonclient) and the I/O names against ONNX Runtime."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from endoedge.cli import SUBCOMMANDS, main
from endoedge.deploy.triton import export_triton
from endoedge.spec import ModelSpec, read_onnx_metadata, spec_for_foreign_yolo
from tests.benchmarks.test_bench import _tiny_onnx


def _model_config_pb2():
    """Triton's ``model_config_pb2`` without importing tritonclient.grpc (which needs grpcio)."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("tritonclient not installed (the Makefile installs it --no-deps for its model_config_pb2)")
    path = Path(next(iter(spec.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    mod_spec = importlib.util.spec_from_file_location("_triton_model_config_pb2", path)
    assert mod_spec is not None
    assert mod_spec.loader is not None
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def pb2():
    return _model_config_pb2()


def parse(pb2, path: Path):
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(encoding="utf-8"), pb2.ModelConfig())


def params(cfg) -> dict[str, str]:
    return {k: v.string_value for k, v in cfg.parameters.items()}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("triton_models")
    return {
        "dynamic": _tiny_onnx(d / "dyn.onnx"),
        "fixed": _tiny_onnx(d / "fixed.onnx", batch=1),
        "fp16": _tiny_onnx(d / "half.onnx", dtype="float16"),
        "bare": _tiny_onnx(d / "bare.onnx", metadata=False),
    }


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("endoedge export-triton: error:")
    return lines[0]


def test_dynamic_onnx(pb2, models, tmp_path, capsys):
    import onnxruntime as ort

    rc = main(["export-triton", str(models["dynamic"]), "-o", str(tmp_path / "repo"), "--name", "polyp",
               "--instances", "2", "--preferred-batch", "4,2", "--max-queue-delay-us", "250"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "max_batch_size 8" in out
    mdir = tmp_path / "repo" / "polyp"
    cfg = parse(pb2, mdir / "config.pbtxt")
    assert cfg.name == "polyp"
    assert cfg.platform == "onnxruntime_onnx"
    assert cfg.max_batch_size == 8
    sess = ort.InferenceSession(str(models["dynamic"]), providers=["CPUExecutionProvider"])
    for got, want in [(cfg.input, sess.get_inputs()), (cfg.output, sess.get_outputs())]:
        assert [t.name for t in got] == [t.name for t in want]
        assert [list(t.dims) for t in got] == [list(t.shape[1:]) for t in want]
        assert {pb2.DataType.Name(t.data_type) for t in got} == {"TYPE_FP32"}
    assert list(cfg.dynamic_batching.preferred_batch_size) == [2, 4]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 250
    assert [(g.count, pb2.ModelInstanceGroup.Kind.Name(g.kind)) for g in cfg.instance_group] == [(2, "KIND_GPU")]
    # the spec: same key/values as the ONNX metadata, in the config and in the JSON file
    meta = read_onnx_metadata(models["dynamic"])
    assert params(cfg) == ModelSpec.from_metadata(meta).to_metadata()
    assert ModelSpec.from_metadata(params(cfg)) == ModelSpec.from_metadata(meta)
    assert json.loads((mdir / "endoedge_spec.json").read_text()) == params(cfg)
    assert (mdir / "1" / "model.onnx").read_bytes() == models["dynamic"].read_bytes()


def test_fixed_batch_onnx(pb2, models, tmp_path, capsys):
    r = export_triton(models["fixed"], tmp_path, kind="cpu", version=3)
    assert r.model_path == tmp_path / "fixed" / "3" / "model.onnx"
    cfg = parse(pb2, r.config_path)
    assert cfg.max_batch_size == 0
    assert list(cfg.input[0].dims) == [1, 3, 32, 32]  # batch axis kept when max_batch_size is 0
    assert not cfg.HasField("dynamic_batching")
    assert pb2.ModelInstanceGroup.Kind.Name(cfg.instance_group[0].kind) == "KIND_CPU"
    for extra in (["--max-batch", "4"], ["--preferred-batch", "1"], ["--max-queue-delay-us", "10"]):
        assert main(["export-triton", str(models["fixed"]), "-o", str(tmp_path / "r2"), *extra]) == 1
        assert "fixed" in _one_error_line(capsys.readouterr().err)


def test_fp16_and_metadata_less_onnx(pb2, models, tmp_path):
    cfg = parse(pb2, export_triton(models["fp16"], tmp_path).config_path)
    assert {pb2.DataType.Name(t.data_type) for t in [*cfg.input, *cfg.output]} == {"TYPE_FP16"}
    r = export_triton(models["bare"], tmp_path)
    assert r.spec_path is None
    assert params(parse(pb2, r.config_path)) == {}


def test_exported_detector_io_matches_onnxruntime(pb2, ssdlite, tmp_path):
    import onnxruntime as ort

    onnx_path = ssdlite[2]
    cfg = parse(pb2, export_triton(onnx_path, tmp_path, max_batch=16).config_path)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [t.name for t in cfg.input] == [t.name for t in sess.get_inputs()]
    assert [t.name for t in cfg.output] == [t.name for t in sess.get_outputs()]
    assert cfg.max_batch_size == 16
    # every non-batch axis of the SSD heads is static and matches what ORT returns on a real frame
    spec = ModelSpec.from_metadata(params(cfg))
    h, w = spec.preprocess.input_size
    x = np.random.default_rng(0).random((2, 3, h, w), dtype=np.float32)
    outs = sess.run(None, {sess.get_inputs()[0].name: x})
    assert [list(t.dims) for t in cfg.output] == [list(o.shape[1:]) for o in outs]


def _engine(tmp: Path, *, batch=(1, 4, 8), manifest: dict | None = None, name="det.engine") -> Path:
    engine = tmp / name
    engine.write_bytes(b"not a real plan: the exporter copies it, never opens it")
    spec = spec_for_foreign_yolo("yolov8", ('polyp "sessile"', "adenoma\\x"), (320, 320), producer="endoedge")
    data = manifest if manifest is not None else {
        "io": [
            {"name": "images", "mode": "input", "dtype": "float16", "shape": [-1, 3, 320, 320]},
            {"name": "output0", "mode": "output", "dtype": "float32", "shape": [-1, 6, 2100]},
        ],
        "profiles": [{"images": {"min": [batch[0], 3, 320, 320], "opt": [batch[1], 3, 320, 320],
                                 "max": [batch[2], 3, 320, 320]}}],
        "spec": spec.to_metadata(),
        "precision": "fp16",
        "trt_version": "10.3.0",
        "gpu": {"name": "Orin", "compute_capability": "8.7"},
    }
    (tmp / (name + ".json")).write_text(json.dumps(data))
    return engine


def test_engine_with_manifest(pb2, tmp_path, capsys):
    engine = _engine(tmp_path)
    rc = main(["export-triton", str(engine), "-o", str(tmp_path / "repo"), "--preferred-batch", "4"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "TensorRT 10.3.0" in out
    assert "Orin" in out
    mdir = tmp_path / "repo" / "det"
    cfg = parse(pb2, mdir / "config.pbtxt")
    assert cfg.platform == "tensorrt_plan"
    assert cfg.max_batch_size == 8  # the profile max
    assert [(t.name, pb2.DataType.Name(t.data_type), list(t.dims)) for t in cfg.input] == [
        ("images", "TYPE_FP16", [3, 320, 320])
    ]
    assert [(t.name, list(t.dims)) for t in cfg.output] == [("output0", [6, 2100])]
    spec = ModelSpec.from_metadata(params(cfg))
    assert spec.class_names == ('polyp "sessile"', "adenoma\\x")  # quotes/backslashes survive the text format
    assert (mdir / "1" / "model.plan").read_bytes() == engine.read_bytes()


def test_static_batch_engine(pb2, tmp_path):
    manifest = {
        "io": [{"name": "images", "mode": "input", "dtype": "float32", "shape": [1, 3, 64, 64]},
               {"name": "boxes", "mode": "output", "dtype": "float32", "shape": [1, 100, 4]},
               {"name": "labels", "mode": "output", "dtype": "int32", "shape": [1, 100]}],
        "profiles": [None], "spec": {}, "precision": "fp32", "trt_version": "11.4.0", "gpu": {},
    }
    cfg = parse(pb2, export_triton(_engine(tmp_path, manifest=manifest), tmp_path / "repo").config_path)
    assert cfg.max_batch_size == 0
    assert [(t.name, pb2.DataType.Name(t.data_type), list(t.dims)) for t in cfg.output] == [
        ("boxes", "TYPE_FP32", [1, 100, 4]), ("labels", "TYPE_INT32", [1, 100])]
    assert not cfg.HasField("dynamic_batching")


def test_engine_errors(tmp_path, capsys):
    engine = _engine(tmp_path)
    cases = [
        (["--max-batch", "16"], "profile"),
        (["--kind", "cpu"], "GPU only"),
        (["--preferred-batch", "9"], "outside 1..8"),
        (["--instances", "0"], "--instances"),
        (["--version", "0"], "--version"),
        (["--name", "a/b"], "model name"),
    ]
    for extra, needle in cases:
        assert main(["export-triton", str(engine), "-o", str(tmp_path / "r"), *extra]) == 1
        assert needle in _one_error_line(capsys.readouterr().err)
    lone = tmp_path / "lone.plan"
    lone.write_bytes(b"x")
    assert main(["export-triton", str(lone), "-o", str(tmp_path / "r")]) == 1
    assert "no manifest" in _one_error_line(capsys.readouterr().err)
    for i, bad in enumerate([{"io": [{"name": "images"}]}, {"io": "x"}, {"io": [], "profiles": []},
                             {"io": [{"name": "a", "mode": "input", "dtype": "fp8", "shape": [-1, 3]},
                                     {"name": "b", "mode": "output", "dtype": "float32", "shape": [-1, 2]}],
                              "profiles": [{"a": {"min": [1, 3], "opt": [1, 3], "max": [2, 3]}}]}]):
        broken = _engine(tmp_path, manifest=bad, name=f"broken{i}.engine")
        assert main(["export-triton", str(broken), "-o", str(tmp_path / "r")]) == 1
        line = _one_error_line(capsys.readouterr().err)
        assert "manifest" in line or "fp8" in line
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_file_errors(models, tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    unknown = tmp_path / "model.pt"
    unknown.write_bytes(b"x")
    cases = [
        ([str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "r")], "does not exist"),
        ([str(unknown), "-o", str(tmp_path / "r")], "unknown model type"),
        ([str(blocker), "-o", str(tmp_path / "r")], "unknown model type"),
        ([str(models["dynamic"]), "-o", str(blocker)], "not a folder"),
        ([str(models["dynamic"]), "-o", str(blocker / "sub")], "cannot write"),
    ]
    for argv, needle in cases:
        assert main(["export-triton", *argv]) == 1
        assert needle in _one_error_line(capsys.readouterr().err)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01not onnx")
    assert main(["export-triton", str(garbage), "-o", str(tmp_path / "r")]) == 1
    assert "not a readable ONNX" in _one_error_line(capsys.readouterr().err)


def test_existing_model_dir_needs_force(pb2, models, tmp_path, capsys):
    repo = tmp_path / "repo"
    assert main(["export-triton", str(models["dynamic"]), "-o", str(repo), "--name", "m"]) == 0
    stale = repo / "m" / "7"
    stale.mkdir()
    assert main(["export-triton", str(models["fp16"]), "-o", str(repo), "--name", "m"]) == 1
    assert "--force" in _one_error_line(capsys.readouterr().err)
    assert parse(pb2, repo / "m" / "config.pbtxt").input[0].data_type == pb2.DataType.Value("TYPE_FP32")  # kept
    assert main(["export-triton", str(models["fp16"]), "-o", str(repo), "--name", "m", "--force"]) == 0
    assert parse(pb2, repo / "m" / "config.pbtxt").input[0].data_type == pb2.DataType.Value("TYPE_FP16")
    assert not stale.exists()
    assert sorted(p.name for p in repo.iterdir()) == ["m"]  # no staging leftovers


def test_subcommand_registered(capsys):
    assert "export-triton" in SUBCOMMANDS
    with pytest.raises(SystemExit):
        main(["export-triton", "--help"])
    assert "raw heads" in " ".join(capsys.readouterr().out.split())


def test_manifest_written_by_endoedge_build(pb2, models, tmp_path):
    """The manifest format `endoedge build` writes (its own writer; no TensorRT needed) is read right."""
    trt_manifest = pytest.importorskip("endoedge.tensorrt.manifest", reason="needs the engine manifest module")
    gpu_info = pytest.importorskip("endoedge.tensorrt.gpu_info", reason="needs the GPU info module")
    engine = tmp_path / "polyp.engine"
    engine.write_bytes(b"plan bytes")
    meta = read_onnx_metadata(models["dynamic"])
    machine = trt_manifest.MachineInfo("10.3.0", gpu_info.GpuInfo(name="Orin", compute_capability="8.7", sm_count=16))
    manifest = trt_manifest.make_manifest(
        onnx_path=models["dynamic"], onnx_sha256="0" * 64, machine=machine, precision="fp16", int8_source=None,
        calibration_hash=None, profiles=[{"images": trt_manifest.ShapeRange((1, 3, 32, 32), (2, 3, 32, 32),
                                                                            (4, 3, 32, 32))}],
        io=[trt_manifest.TensorIO("images", "input", "float16", (-1, 3, 32, 32)),
            trt_manifest.TensorIO("out", "output", "float16", (-1, 4, 32, 32))],
        version_compatible=False, hardware_compatibility="none", dla_core=None, spec=meta,
    )
    trt_manifest.write_manifest(engine, manifest)
    r = export_triton(engine, tmp_path / "repo")
    cfg = parse(pb2, r.config_path)
    assert (cfg.platform, cfg.max_batch_size) == ("tensorrt_plan", 4)
    assert [(t.name, pb2.DataType.Name(t.data_type), list(t.dims)) for t in [*cfg.input, *cfg.output]] == [
        ("images", "TYPE_FP16", [3, 32, 32]), ("out", "TYPE_FP16", [4, 32, 32])]
    assert ModelSpec.from_metadata(params(cfg)) == ModelSpec.from_metadata(meta)
    assert "TensorRT 10.3.0" in r.notes[0]


def test_engine_suffixes_and_manifest_names_come_from_the_shared_modules(pb2, tmp_path):
    """Every engine suffix endoedge knows (.trt too) and a ``<stem>.json`` manifest (endoedge.tensorrt.manifest)."""
    src = _engine(tmp_path)
    engine = tmp_path / "det.trt"
    engine.write_bytes(src.read_bytes())
    (tmp_path / "det.json").write_text((tmp_path / "det.engine.json").read_text())
    cfg = parse(pb2, export_triton(engine, tmp_path / "repo").config_path)
    assert (cfg.platform, cfg.max_batch_size, [t.name for t in cfg.input]) == ("tensorrt_plan", 8, ["images"])


def test_tensorrt_for_rtx_engine_is_refused(tmp_path, capsys):
    """Triton's TensorRT backend is full TensorRT: an engine whose manifest says TensorRT for RTX is refused."""
    base = json.loads((_engine(tmp_path, name="full.engine").parent / "full.engine.json").read_text())
    rtx = _engine(tmp_path, manifest={**base, "flavour": "rtx", "compute_capabilities": ["8.6", "8.9"]},
                  name="rtx.engine")
    assert main(["export-triton", str(rtx), "-o", str(tmp_path / "r")]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "built by TensorRT for RTX" in line
    assert "export the ONNX instead" in line
