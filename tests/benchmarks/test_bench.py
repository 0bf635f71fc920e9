"""Latency statistics (endoedge.stats) and ``endoedge bench``; CPU only, fast.

Most tests run on a hand-built 1x1-convolution ONNX carrying endoedge metadata (milliseconds per
call, no torch needed); one runs the exported demo SSDLite on every installed backend.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from endoedge import stats
from endoedge.cli import SUBCOMMANDS, main
from endoedge.errors import InputError
from endoedge.stats import STAT_KEYS, format_table, summarize, write_json

RESULT_KEYS = {"model", "backend", "device", "batch", "iterations", "warmup", "stats", "throughput_ips",
               "samples_ms"}


def _tiny_onnx(path: Path, *, batch: int | str = "N", dtype: str = "float32", metadata: bool = True) -> Path:
    """images [batch, 3, 32, 32] -> 1x1 conv -> out [batch, 4, 32, 32]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from endoedge.spec import spec_for_foreign_yolo

    elem = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}[dtype]
    weight = numpy_helper.from_array(np.full((4, 3, 1, 1), 0.1, dtype=dtype), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["out"])],
        "tiny",
        [helper.make_tensor_value_info("images", elem, [batch, 3, 32, 32])],
        [helper.make_tensor_value_info("out", elem, [batch, 4, 32, 32])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata:
        spec = spec_for_foreign_yolo("yolov8", ("polyp",), (32, 32), producer="endoedge")
        helper.set_model_props(model, spec.to_metadata())
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return _tiny_onnx(tmp_path_factory.mktemp("bench") / "tiny.onnx")


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("endoedge bench: error:")
    return lines[0]


# -- summarize ----------------------------------------------------------------------------------
def test_summarize_matches_numpy_and_ignores_nan():
    rng = np.random.default_rng(0)
    clean = rng.lognormal(mean=2.0, sigma=0.5, size=1234)
    with_nan = clean.copy()
    with_nan[rng.choice(clean.size, 100, replace=False)] = np.nan
    kept = with_nan[~np.isnan(with_nan)]
    for data, ref in ((clean, clean), (with_nan, kept), (list(with_nan), kept)):
        got = summarize(data)
        assert tuple(got) == STAT_KEYS
        expected = [ref.mean(), *np.percentile(ref, [50, 90, 95, 99, 99.9]), ref.max()]
        for key, value in zip(STAT_KEYS, expected, strict=True):
            assert got[key] == round(float(value), 3), key
            assert isinstance(got[key], float)


def test_summarize_single_sample():
    assert summarize([4.2]) == dict.fromkeys(STAT_KEYS, 4.2)


@pytest.mark.parametrize("data", [[], np.array([]), [float("nan")] * 3], ids=["list", "array", "all-nan"])
def test_summarize_empty_raises(data):
    with pytest.raises(ValueError, match="no latency samples"):
        summarize(data)


# -- env, table, plot, json ----------------------------------------------------------------------
def test_env_info_keys_and_no_heavy_imports():
    before = set(sys.modules)
    env = stats.env_info()
    assert {"cpu", "logical_cores", "os", "kernel", "gpu", "jetson", "versions"} <= set(env)
    assert {"python", "numpy", "opencv", "onnxruntime", "torch", "tensorrt", "pygobject", "gstreamer",
            "endoedge"} <= set(env["versions"])
    assert env["versions"]["numpy"] == np.__version__
    assert env["logical_cores"] == os.cpu_count()
    json.dumps(env)
    newly = set(sys.modules) - before
    assert not newly & {"torch", "gi", "tensorrt", "matplotlib", "cv2", "onnxruntime"}


def test_env_info_reads_nvidia_smi_and_jetson_files(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 570.86.15'\necho 'NVIDIA A2, 570.86.15'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    files = {"/proc/device-tree/model": "NVIDIA Jetson AGX Orin Developer Kit\x00",
             "/etc/nv_tegra_release": "# R36 (release), REVISION: 4.3, GCID: 1, BOARD: generic\nmore"}
    real = stats._read_text
    monkeypatch.setattr(stats, "_read_text", lambda p: files[p].replace("\x00", "") if p in files else real(p))
    env = stats.env_info()
    assert env["gpu"] == [{"name": "NVIDIA H100 80GB HBM3", "driver": "570.86.15"},
                          {"name": "NVIDIA A2", "driver": "570.86.15"}]
    assert env["jetson"]["model"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert env["jetson"]["l4t_release"].startswith("R36 (release), REVISION: 4.3")


def test_format_table_has_every_key_and_stage():
    rows = {"capture": summarize([1.0, 2.0, 3.0]), "e2e": summarize([10.0, 20.0, 1234.5]),
            "render": {"mean": float("nan")}}
    text = format_table(rows, title="per-stage latency")
    lines = text.splitlines()
    assert lines[0] == "per-stage latency"
    for key in STAT_KEYS:
        assert key in lines[1]
    assert "ms" in lines[1]
    assert [ln.split()[0] for ln in lines[3:]] == ["capture", "e2e", "render"]
    assert "2.000" in lines[3]
    assert "1234.5" in lines[4]
    assert lines[5].split()[1:] == ["-"] * len(STAT_KEYS)
    assert len({len(ln) for ln in lines[1:]}) == 1  # fixed width


def test_plot_latency_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(1)
    infer = rng.normal(6.0, 0.5, 300)
    e2e = infer + rng.exponential(40.0, 300)
    e2e[::17] = np.nan
    out = tmp_path / "latency.png"
    stats.plot_latency({"infer": infer, "e2e": e2e, "empty": np.full(300, np.nan)}, out, title="t")
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG")
    assert len(data) > 10_000


def test_plot_latency_without_matplotlib_is_one_line_error(tmp_path, monkeypatch):
    from endoedge.errors import EndoedgeError

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(EndoedgeError, match="pip install matplotlib") as info:
        stats.plot_latency({"infer": np.ones(3)}, tmp_path / "x.png")
    assert "\n" not in str(info.value)


def test_write_json_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "report.json"
    write_json(path, {"a": np.float32(1.5), "b": np.arange(3), "nan": float("nan"), "p": Path("x")})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [0, 1, 2], "nan": None, "p": "x"}
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())

    # A failure between writing and renaming leaves the old report intact and no temporary file.
    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(stats.os, "replace", boom)
    with pytest.raises(InputError, match="No space left"):
        write_json(path, {"a": 2})
    assert json.loads(path.read_text())["a"] == 1.5
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_write_json_unwritable_is_input_error(tmp_path):
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(InputError, match="cannot write"):
        write_json(tmp_path / "dir.json", {})


# -- endoedge bench -------------------------------------------------------------------------------
def test_bench_is_a_subcommand():
    assert "bench" in SUBCOMMANDS


def test_bench_help_defines_latency(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "host wall time" in out
    assert "host<->device" in out
    assert "pre-processing" in out


def test_bench_table_and_json(tiny, tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["bench", str(tiny), "--batch", "1,2", "--iterations", "5", "--warmup", "1",
               "--block", "3", "--block-warmup", "1", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    for key in (*STAT_KEYS, "images/s", "tiny.onnx  onnxruntime/cpu  b1", "tiny.onnx  onnxruntime/cpu  b2"):
        assert key in text
    report = json.loads(out.read_text())
    assert {"env", "results"} <= set(report)
    assert "host wall time" in report["definition"]
    assert [r["batch"] for r in report["results"]] == [1, 2]
    for r in report["results"]:
        assert set(r) >= RESULT_KEYS
        assert (r["backend"], r["device"], r["warmup"]) == ("onnxruntime", "cpu", 1)
        assert r["iterations"] == len(r["samples_ms"]) == 5
        assert tuple(r["stats"]) == STAT_KEYS
        assert r["stats"] == summarize(r["samples_ms"])
        assert r["throughput_ips"] == pytest.approx(r["batch"] * 1000 / r["stats"]["mean"], rel=1e-3)
        assert r["input"]["shape"] == [r["batch"], 3, 32, 32]


def test_bench_input_is_the_models_preprocessing(tiny):
    from endoedge.benchmarks import bench
    from endoedge.preprocess import Preprocessor
    from endoedge.spec import ModelSpec, read_onnx_metadata

    frames = bench.sample_frames()
    cases, skipped = bench.plan([tiny], batches=[3], frames=frames)
    try:
        assert not skipped
        assert len(cases) == 1
        spec = ModelSpec.from_metadata(read_onnx_metadata(tiny))
        expected, _ = Preprocessor(spec.preprocess)(frames[3:6])
        np.testing.assert_array_equal(cases[0].feeds[1]["images"], expected)
        assert len(cases[0].feeds) == 10  # distinct batches, cycled
    finally:
        bench.close(cases)
    assert not cases[0].backend.is_active


def test_bench_duration_extends_the_run(tiny, capsys):
    from endoedge.benchmarks import bench

    cases, _ = bench.plan([tiny], backend="onnxruntime", device="cpu")
    try:
        measured, skipped, interrupted = bench.measure(cases, warmup=1, iterations=2, duration_s=0.05)
    finally:
        bench.close(cases)
    assert not skipped
    assert not interrupted
    assert len(measured[0].samples_ms) >= 2
    assert sum(measured[0].samples_ms) >= 50.0


def test_bench_ctrl_c_keeps_the_samples_so_far(tiny):
    from endoedge.benchmarks import bench

    cases, _ = bench.plan([tiny], batches=[1, 2])
    real = cases[1].backend.infer
    calls = {"n": 0}

    def infer(feed):
        calls["n"] += 1
        if calls["n"] == 40:
            raise KeyboardInterrupt
        return real(feed)

    try:
        for case in cases:
            case.backend.infer = infer  # type: ignore[method-assign]
        measured, skipped, interrupted = bench.measure(cases, warmup=1, iterations=1000, block=10,
                                                       block_warmup=2)
    finally:
        bench.close(cases)
    assert interrupted
    assert not skipped
    assert [c.batch for c in measured] == [1, 2]
    assert all(0 < len(c.samples_ms) < 1000 for c in measured)


def test_bench_fixed_batch_and_fp16_side_by_side(tmp_path, capsys):
    fixed = _tiny_onnx(tmp_path / "fixed2.onnx", batch=2)
    half = _tiny_onnx(tmp_path / "fp16.onnx", dtype="float16")
    out = tmp_path / "b.json"
    rc = main(["bench", str(fixed), str(half), "--batch", "1,2", "--iterations", "3", "--warmup", "1",
               "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "skipped: " in text
    assert "fixed batch size of 2" in text
    results = json.loads(out.read_text())["results"]
    assert [(Path(r["model"]).name, r["batch"]) for r in results] == [
        ("fixed2.onnx", 2), ("fp16.onnx", 1), ("fp16.onnx", 2)]
    assert results[1]["input"]["dtype"] == "float16"
    # no --batch: a fixed-batch model runs at its own batch size
    assert main(["bench", str(fixed), "--iterations", "2", "--warmup", "1"]) == 0
    assert "fixed2.onnx  onnxruntime/cpu  b2" in capsys.readouterr().out


def test_bench_onnx_without_metadata_uses_its_input_size(tmp_path, capsys):
    bare = _tiny_onnx(tmp_path / "bare.onnx", metadata=False)
    assert main(["bench", str(bare), "--iterations", "2", "--warmup", "1"]) == 0
    assert "bare.onnx  onnxruntime/cpu  b1" in capsys.readouterr().out


def test_bench_all_skips_torch_without_source_checkpoint(tiny, capsys):
    pytest.importorskip("torch")
    rc = main(["bench", str(tiny), "--backend", "all", "--iterations", "2", "--warmup", "1"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "skipped: " in text
    assert "torch" in text
    assert "no source checkpoint" in text
    assert "onnxruntime/cpu" in text


def test_bench_unknown_backend_lists_known_ones(tiny, capsys):
    assert main(["bench", str(tiny), "--backend", "onnxruntime,tflite"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "tflite" in line
    assert "onnxruntime" in line
    assert "torch" in line


def test_bench_missing_model(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "nope.onnx")]) == 1
    assert "nope.onnx" in _one_error_line(capsys.readouterr().err)


def test_bench_nothing_runnable_is_one_line_error(tiny, capsys):
    pytest.importorskip("torch")
    assert main(["bench", str(tiny), "--backend", "torch"]) == 1
    assert "no source checkpoint" in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("bad", ["0", "1,x", ","])
def test_bench_bad_batch_is_usage_error(tiny, bad, capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", str(tiny), "--batch", bad])
    assert info.value.code == 2


def test_bench_ssdlite_every_backend(ssdlite, tmp_path, capsys):
    """The exported demo SSDLite: onnxruntime on the ONNX, torch via its source checkpoint."""
    torch = pytest.importorskip("torch")
    out = tmp_path / "ssd.json"
    threads = torch.get_num_threads()
    try:
        rc = main(["bench", str(ssdlite[2]), "--backend", "all", "--device", "cpu", "--iterations", "2",
                   "--warmup", "1", "--threads", "1", "--json", str(out)])
    finally:
        torch.set_num_threads(threads)  # --threads sets torch's process-wide pool
    assert rc == 0, capsys.readouterr()
    results = json.loads(out.read_text())["results"]
    assert sorted(r["backend"] for r in results) == ["onnxruntime", "torch"]
    assert all(r["input"]["shape"] == [1, 3, 320, 320] and r["threads"] == 1 for r in results)
