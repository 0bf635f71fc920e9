"""The ``endoedge`` command line: export, detect, demo; one-line errors and exit statuses."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from endoedge.cli import SUBCOMMANDS, main  # noqa: E402
from endoedge.data.imageio import read_image  # noqa: E402
from endoedge.errors import UnknownNameError  # noqa: E402
from endoedge.models import arch_names  # noqa: E402
from endoedge.spec import ModelSpec, read_onnx_metadata  # noqa: E402


def _records(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _one_error_line(err, command):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"endoedge {command}: error:")
    return lines[0]


@pytest.fixture(scope="module")
def bare_state_dict(ssdlite, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli_bare") / "weights.pth"
    torch.save(ssdlite[0].model.state_dict(), path)
    return path


def test_help_via_python_m():
    proc = subprocess.run(
        [sys.executable, "-m", "endoedge.cli", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    for command in SUBCOMMANDS:
        assert command in proc.stdout


def test_version_and_missing_command(capsys):
    from endoedge import __version__

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert __version__ in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2  # argparse usage error


# -- export ---------------------------------------------------------------------------------
def test_export_checkpoint_prints_parity(ssdlite, tmp_path, capsys):
    loaded, ckpt, _ = ssdlite
    out = tmp_path / "exported.onnx"
    rc = main(["export", str(ckpt), "-o", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert out.is_file()
    assert f"exported {out}" in captured.out
    assert "parity ONNX Runtime vs PyTorch" in captured.out
    parity = [ln for ln in captured.out.splitlines() if "max abs err" in ln]
    assert len(parity) == len(loaded.arch.output_names)
    for name, line in zip(loaded.arch.output_names, parity, strict=True):
        assert name in line
        assert "(ok;" in line
    spec = ModelSpec.from_metadata(read_onnx_metadata(out))
    assert spec.class_names == loaded.spec.class_names
    assert spec.source_sha256 == loaded.sha256


def test_export_at_another_size_than_trained_needs_resize_anyway(effssd, tmp_path, capsys):
    """A checkpoint trained at 320 exported at 256 would move its boxes: refused unless asked for."""
    loaded, ckpt, _ = effssd
    assert loaded.trained_input_size == (320, 320)
    out = tmp_path / "resized.onnx"
    rc = main(["export", str(ckpt), "-o", str(out), "--imgsz", "256", "--no-check"])
    line = _one_error_line(capsys.readouterr().err, "export")
    assert rc == 1
    assert "trained at 320x320" in line
    assert "--resize-anyway" in line
    assert not out.exists()
    # the training size itself is fine, and --resize-anyway exports at the new size
    assert main(["export", str(ckpt), "-o", str(tmp_path / "same.onnx"), "--imgsz", "320", "--no-check"]) == 0
    assert main(["export", str(ckpt), "-o", str(out), "--imgsz", "256", "--resize-anyway", "--no-check"]) == 0
    assert ModelSpec.from_metadata(read_onnx_metadata(out)).preprocess.input_size == (256, 256)


def test_export_bare_state_dict_with_arch_and_classes(ssdlite, bare_state_dict, tmp_path, capsys):
    loaded = ssdlite[0]
    out = tmp_path / "from_state_dict.onnx"
    classes = ",".join(loaded.spec.class_names)
    rc = main(["export", str(bare_state_dict), "-o", str(out), "--arch", loaded.arch.name,
               "--classes", classes, "--conf", "0.4"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "(ok;" in captured.out
    spec = ModelSpec.from_metadata(read_onnx_metadata(out))
    assert spec.arch == loaded.arch.name
    assert spec.class_names == loaded.spec.class_names
    assert spec.score_threshold == 0.4


def test_export_bad_arch_is_one_line_error(bare_state_dict, tmp_path, capsys):
    out = tmp_path / "never.onnx"
    rc = main(["export", str(bare_state_dict), "-o", str(out), "--arch", "ssd512_resnet50", "--classes", "polyp"])
    captured = capsys.readouterr()
    assert rc == 1
    line = _one_error_line(captured.err, "export")
    assert "ssd512_resnet50" in line
    for name in arch_names():
        assert name in line
    assert not out.exists()


def test_export_refuses_a_folder_or_the_checkpoint_as_output(bare_state_dict, tmp_path, capsys):
    folder = tmp_path / "models"
    folder.mkdir()
    assert main(["export", str(bare_state_dict), "-o", str(folder)]) == 1
    assert "is a folder; give the ONNX file name" in _one_error_line(capsys.readouterr().err, "export")
    before = bare_state_dict.read_bytes()
    assert main(["export", str(bare_state_dict), "-o", str(bare_state_dict)]) == 1
    assert "is the checkpoint itself" in _one_error_line(capsys.readouterr().err, "export")
    assert bare_state_dict.read_bytes() == before


def test_export_bare_state_dict_without_arch(bare_state_dict, tmp_path, capsys):
    rc = main(["export", str(bare_state_dict), "-o", str(tmp_path / "never.onnx")])
    assert rc == 1
    assert "--arch" in _one_error_line(capsys.readouterr().err, "export")


def test_debug_reraises(bare_state_dict, tmp_path):
    with pytest.raises(UnknownNameError, match="ssd512_resnet50"):
        main(["--debug", "export", str(bare_state_dict), "-o", str(tmp_path / "never.onnx"),
              "--arch", "ssd512_resnet50", "--classes", "polyp"])


# -- detect ---------------------------------------------------------------------------------
@pytest.fixture
def mixed_folder(sample_paths, tmp_path):
    """Two good frames, a corrupt JPEG (half a file) and a zero-byte PNG, in nested folders."""
    src = tmp_path / "frames"
    (src / "nested").mkdir(parents=True)
    good = [shutil.copy(sample_paths[0], src / "a_good.jpg"), shutil.copy(sample_paths[4], src / "nested" / "b_good.jpg")]
    data = sample_paths[1].read_bytes()
    (src / "c_corrupt.jpg").write_bytes(data[: len(data) // 2])
    (src / "d_empty.png").touch()
    (src / "notes.txt").write_text("not an image suffix: ignored\n")
    return src, [str(p) for p in good], [str(src / "c_corrupt.jpg"), str(src / "d_empty.png")]


def test_detect_folder_with_bad_images(ssdlite, mixed_folder, tmp_path, capsys):
    src, good, bad = mixed_folder
    out = tmp_path / "out"
    rc = main(["detect", str(src), "-m", str(ssdlite[2]), "-o", str(out), "--device", "cpu", "--warmup", "1"])
    captured = capsys.readouterr()
    assert rc == 1
    assert "2/4 images processed" in captured.out
    assert "2 image(s) could not be processed" in _one_error_line(captured.err, "detect")

    records = {r["path"]: r for r in _records(out / "detections.jsonl")}
    assert sorted(records) == sorted(good + bad)
    for path in bad:
        assert set(records[path]) == {"path", "error"}
        assert path in records[path]["error"]
    assert "truncated" in records[bad[0]]["error"]
    assert "zero-byte" in records[bad[1]]["error"]
    annotated = sorted(p.name for p in (out / "annotated").iterdir())
    assert annotated == ["a_good.png", "b_good.png"]
    for path in good:
        rec = records[path]
        assert "error" not in rec
        image = read_image(path)
        assert (rec["height"], rec["width"]) == image.shape[:2]
        assert set(rec["latency_ms"]) == {"preprocess", "infer", "postprocess"}
        assert all(v > 0 for v in rec["latency_ms"].values())
        for det in rec["detections"]:
            x1, y1, x2, y2 = det["box"]
            assert 0 <= x1 <= x2 <= rec["width"]
            assert 0 <= y1 <= y2 <= rec["height"]
            assert det["label"] == ssdlite[0].spec.class_names[det["class_id"]]
        png = read_image(out / "annotated" / f"{Path(path).stem}.png")
        assert png.shape == image.shape
        if rec["detections"]:
            assert not np.array_equal(png, image)  # boxes were drawn


def test_detect_glob_with_torch_backend(ssdlite, sample_paths, tmp_path, capsys):
    src = tmp_path / "frames"
    src.mkdir()
    for p in sample_paths[:3]:
        shutil.copy(p, src / p.name)
    shutil.copy(sample_paths[3], src / "skip_me.jpeg")
    out = tmp_path / "out"
    rc = main(["detect", str(src / "*.jpg"), "-m", str(ssdlite[1]), "-o", str(out), "--no-images",
               "--warmup", "0", "--conf", "0.3"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    records = _records(out / "detections.jsonl")
    assert [r["path"] for r in records] == [str(src / p.name) for p in sample_paths[:3]]
    assert all(d["score"] >= 0.3 for r in records for d in r["detections"])
    assert not any((out / "annotated").iterdir())


def test_detect_source_matching_nothing(ssdlite, tmp_path, capsys):
    pattern = str(tmp_path / "no_such_dir" / "*.png")
    rc = main(["detect", pattern, "-m", str(ssdlite[2]), "-o", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert rc == 1
    assert "matches no image file" in _one_error_line(captured.err, "detect")
    assert captured.out == ""


def test_detect_missing_model(sample_paths, tmp_path, capsys):
    rc = main(["detect", str(sample_paths[0]), "-m", str(tmp_path / "absent.onnx"), "-o", str(tmp_path / "out")])
    assert rc == 1
    assert "does not exist" in _one_error_line(capsys.readouterr().err, "detect")


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_detect_bad_device_is_one_line_error(ssdlite, sample_paths, tmp_path, backend, capsys):
    model = ssdlite[2] if backend == "onnxruntime" else ssdlite[1]
    rc = main(["detect", str(sample_paths[0]), "-m", str(model), "--backend", backend, "--device", "gpu",
               "-o", str(tmp_path / "out")])
    assert rc == 1
    line = _one_error_line(capsys.readouterr().err, "detect")
    assert line.endswith("unknown device 'gpu'; use auto, cpu, cuda, cuda:N, tensorrt or tensorrt:N")


# -- demo -----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.gstreamer
def test_demo_end_to_end(tmp_path, capsys):
    """`make demo`: the shipped polyp detector, exported with frame cleaning, through the pipeline."""
    from endoedge.data.hashing import file_sha256
    from endoedge.models.pretrained import POLYP_DETECTOR, shipped_checkpoint

    out = tmp_path / "demo"
    rc = main(["demo", "-o", str(out), "--device", "cpu", "--frames", "20"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    onnx_path = out / f"{POLYP_DETECTOR}.onnx"
    assert onnx_path.is_file()
    assert "(ok;" in captured.out
    assert "Kvasir-SEG" in captured.out
    assert "research and educational use only" in captured.out
    # the four outputs of the pipeline run over the sample clip
    records = _records(out / "detections.jsonl")
    assert [r["frame"] for r in records] == list(range(20))
    report = json.loads((out / "report.json").read_text())
    assert report["frames"] + report["warmup_frames"] == 20
    # the stored frame cleaning is timed as its own stages
    assert report["stages"]["clean"]["p50"] > 0
    assert set(report["stages"]) >= {"clean_fov", "clean_osd", "clean_denoise"}
    assert (out / "annotated.mp4").stat().st_size > 10_000
    assert (out / "latency.png").stat().st_size > 10_000
    assert "e2e" in captured.out
    spec = ModelSpec.from_metadata(read_onnx_metadata(onnx_path))
    assert spec.class_names == ("polyp",)
    assert spec.source_sha256 == file_sha256(shipped_checkpoint())


def test_demo_rejects_zero_frames(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "d"), "--frames", "0"]) == 1
    assert "--frames" in _one_error_line(capsys.readouterr().err, "demo")


def test_detect_output_that_is_a_file(ssdlite, sample_paths, tmp_path, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("a file where the output folder should go\n")
    rc = main(["detect", str(sample_paths[0]), "-m", str(ssdlite[2]), "-o", str(blocker)])
    assert rc == 1
    assert "is not a folder" in _one_error_line(capsys.readouterr().err, "detect")


@pytest.mark.parametrize("size", ["0", "-320", "abc"])
def test_bad_imgsz_is_a_usage_error(ssdlite, sample_paths, tmp_path, size, capsys):
    with pytest.raises(SystemExit) as info:
        main(["detect", str(sample_paths[0]), "-m", str(ssdlite[2]), "-o", str(tmp_path), "--imgsz", size])
    assert info.value.code == 2
    assert "--imgsz" in capsys.readouterr().err


def test_colliding_output_names_stay_unique(tmp_path):
    from endoedge.cli.detect import _unique_names

    paths = [tmp_path / "a" / "x.png", tmp_path / "x_1.png", tmp_path / "b" / "x.png"]
    names = [name for _, name in _unique_names(paths)]
    assert len(set(names)) == 3
