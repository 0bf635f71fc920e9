"""``endoedge build`` error paths, the tensorrt registry entry and engine loading, on a machine without TensorRT.

Bad options fail with one line before TensorRT is needed; everything else ends in the one-line
"TensorRT could not be imported ..." here. (Where TensorRT is importable, the tests that expect
that message are skipped.)
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

import endoedge
from endoedge.cli import SUBCOMMANDS, main
from endoedge.errors import BackendUnavailableError, ModelFormatError, UnknownNameError
from endoedge.runtime import auto_backend, backend_names, check_available, get_backend_class
from endoedge.spec import spec_for_foreign_yolo
from endoedge.tensorrt.manifest import write_manifest
from tests.tensorrt.test_trt_manifest import _manifest, tiny_onnx

NO_TRT = importlib.util.find_spec("tensorrt") is None
FRAMES = str(endoedge.__path__[0] + "/assets/holohub")  # real calibration images
needs_no_trt = pytest.mark.skipif(not NO_TRT, reason="TensorRT is importable here; this checks the message without it")


def _one_error_line(err, command):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"endoedge {command}: error:")
    return lines[0]


@pytest.fixture
def onnx_file(tmp_path):
    return tiny_onnx(tmp_path / "tiny.onnx", meta=spec_for_foreign_yolo("yolov8", ("polyp",), (32, 32)).to_metadata())


def test_build_is_a_subcommand():
    assert "build" in SUBCOMMANDS


@needs_no_trt
@pytest.mark.parametrize("extra", [[], ["--precision", "fp16"], ["--precision", "int8", "--calib", FRAMES],
                                   ["--batch", "1:4:16", "--workspace", "256", "--version-compatible"],
                                   ["--dla", "0", "--precision", "fp16"]])
def test_build_without_tensorrt_is_one_line(onnx_file, tmp_path, capsys, extra):
    # --runtime tensorrt: where TensorRT for RTX is installed, auto would pick it and build.
    rc = main(["build", str(onnx_file), "-o", str(tmp_path / "tiny.engine"), "--runtime", "tensorrt", *extra])
    assert rc == 1
    line = _one_error_line(capsys.readouterr().err, "build")
    assert "TensorRT could not be imported" in line
    assert "endoedge[trt]" in line
    assert not (tmp_path / "tiny.engine").exists()


@pytest.mark.parametrize(("extra", "needle"), [
    (["--precision", "fp16", "--calib", FRAMES], "--calib is for --precision int8"),
    (["--calib-images", "10"], "--calib-images only apply with --calib SRC"),
    (["--hardware-compat", "ampere+", "--dla", "0", "--precision", "fp16"], "DLA engines cannot be hardware-compatible"),
    pytest.param(["--hardware-compat", "same-cc"], None, marks=needs_no_trt),
])
def test_build_bad_options_before_tensorrt(onnx_file, tmp_path, capsys, extra, needle):
    rc = main(["build", str(onnx_file), "-o", str(tmp_path / "e.engine"), "--runtime", "tensorrt", *extra])
    assert rc == 1
    line = _one_error_line(capsys.readouterr().err, "build")
    if needle:
        assert needle in line
    else:  # line-dependent combination: left to the installed TensorRT (absent here)
        assert "TensorRT" in line


def test_build_static_batch_range_and_precision_mismatch(tmp_path, capsys):
    static = tiny_onnx(tmp_path / "static.onnx", batch=1)
    assert main(["build", str(static), "-o", str(tmp_path / "s.engine"), "--batch", "1:2:4"]) == 1
    assert "fixed batch of 1" in _one_error_line(capsys.readouterr().err, "build")
    half = tiny_onnx(tmp_path / "half.onnx", fp16=True)
    assert main(["build", str(half), "-o", str(tmp_path / "h.engine"), "--precision", "fp32"]) == 1
    assert "is an FP16 ONNX" in _one_error_line(capsys.readouterr().err, "build")
    assert main(["build", str(static), "-o", str(tmp_path / "s.engine"), "--precision", "int8"]) == 1
    assert "Q/DQ" in _one_error_line(capsys.readouterr().err, "build")


@pytest.mark.parametrize(("args", "needle"), [
    (["{missing}", "-o", "{tmp}/x.engine"], "does not exist"),
    (["{onnx}"], "give the engine path with -o"),
    (["{onnx}", "-o", "{tmp}"], "is a folder"),
    (["{onnx}", "-o", "{tmp}/x.onnx"], "would overwrite an ONNX"),
    (["{onnx}", "-o", "{tmp}/x.engine", "--device", "cpu"], "runs on an NVIDIA GPU"),
])
def test_build_path_errors(onnx_file, tmp_path, capsys, args, needle):
    subst = {"missing": str(tmp_path / "nope.onnx"), "tmp": str(tmp_path), "onnx": str(onnx_file)}
    assert main(["build", *(a.format(**subst) for a in args)]) == 1
    assert needle in _one_error_line(capsys.readouterr().err, "build")


@pytest.mark.parametrize("bad", ["--batch=0:1:2", "--batch=4:2:1", "--batch=x", "--workspace=0", "--dla=x",
                                 "--precision=int4", "--hardware-compat=turing"])
def test_build_argument_syntax_errors_exit_2(onnx_file, bad, capsys):
    with pytest.raises(SystemExit) as info:
        main(["build", str(onnx_file), "-o", "x.engine", bad])
    assert info.value.code == 2
    assert "error: argument" in capsys.readouterr().err


# -- registry and loading ---------------------------------------------------------------------------------
def test_tensorrt_backend_is_registered():
    assert "tensorrt" in backend_names()
    cls = get_backend_class("tensorrt")
    assert (cls.name, cls.extra, cls.requires) == ("tensorrt", "trt", ("tensorrt",))
    for suffix in (".engine", ".plan", ".trt"):
        assert auto_backend(f"m{suffix}") == "tensorrt"
    with pytest.raises(UnknownNameError, match="known backends: .*tensorrt"):
        get_backend_class("tensor-rt")


@needs_no_trt
def test_tensorrt_unavailable_names_the_extra():
    with pytest.raises(BackendUnavailableError, match=r"backend 'tensorrt' is unavailable: importing tensorrt failed.*endoedge\[trt\]"):
        check_available("tensorrt")


def test_construct_touches_nothing(tmp_path):
    be = get_backend_class("tensorrt")(tmp_path / "x.engine", device="cuda:0")
    assert not be.is_active
    assert be.last_gpu_timings() is None
    be.deactivate()  # inactive: nothing to free


def test_engine_without_manifest_says_how_to_make_one(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(ModelFormatError, match=r"no manifest 'm.engine.json'.*endoedge build MODEL.onnx -o"):
        endoedge.load(engine)


@needs_no_trt
def test_engine_with_manifest_needs_tensorrt_not_the_old_refusal(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    write_manifest(engine, _manifest())
    with pytest.raises(BackendUnavailableError) as info:
        endoedge.load(engine)
    assert "not supported by this endoedge version" not in str(info.value)
    assert "endoedge[trt]" in str(info.value)


@needs_no_trt
def test_detect_and_bench_on_an_engine_are_one_line(tmp_path, capsys, sample_paths):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    write_manifest(engine, _manifest())
    assert main(["detect", str(sample_paths[0]), "--model", str(engine), "-o", str(tmp_path / "out")]) == 1
    assert "endoedge[trt]" in _one_error_line(capsys.readouterr().err, "detect")
    assert main(["bench", str(engine), "--rebuild-if-stale"]) == 1
    assert "endoedge[trt]" in _one_error_line(capsys.readouterr().err, "bench")


def test_rebuild_if_stale_is_for_tensorrt_only(onnx_file, tmp_path, capsys, sample_paths):
    assert main(["detect", str(sample_paths[0]), "--model", str(onnx_file), "-o", str(tmp_path / "o"),
                 "--rebuild-if-stale"]) == 1
    assert "apply to TensorRT engines only" in _one_error_line(capsys.readouterr().err, "detect")


def test_bench_gpu_table_only_with_gpu_parts():
    from endoedge.benchmarks.bench import gpu_table

    assert gpu_table([{"model": "a.onnx", "backend": "onnxruntime", "device": "cpu", "batch": 1}]) is None
    stats = {"p50": 0.5, "p99": 0.75}
    text = gpu_table([{"model": "a.engine", "backend": "tensorrt", "device": "cuda:0", "batch": 2,
                       "gpu": {"h2d": stats, "compute": stats, "d2h": stats}}])
    assert "h2d 0.500 / 0.750" in text
    assert "compute" in text
    assert "tensorrt/cuda:0  b2" in text


def test_bench_records_gpu_parts_from_the_optional_hook(tmp_path):
    """The hook is optional: an ORT case has none; a backend with ``last_gpu_timings`` gets ``gpu`` stats."""
    from endoedge.benchmarks.bench import Case

    class Timed:  # a stand-in backend exposing the optional hook
        name, input_name = "tensorrt", "images"

        def last_gpu_timings(self):
            return {"h2d": 0.1, "compute": 1.0, "d2h": 0.05}

        def describe(self):
            return "stand-in"

    feed = {"images": np.ones((1, 3, 4, 4), np.float32)}
    case = Case(tmp_path / "m.engine", "m.engine", Timed(), 1, [feed], "cuda:0")
    case.record_gpu()
    case.samples_ms.append(1.2)
    result = case.result(warmup=1)
    assert result["gpu"]["compute"]["p50"] == 1.0
    assert result["gpu_samples_ms"]["h2d"] == [0.1]
    json.dumps(result)


def test_tensorrt_backend_refuses_other_files_before_tensorrt(tmp_path):
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"not a model")
    with pytest.raises(ModelFormatError, match="runs .onnx or .engine/.plan/.trt files, not 'm.pt'"):
        get_backend_class("tensorrt")(ckpt).activate()
