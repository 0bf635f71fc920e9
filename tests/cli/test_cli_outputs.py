"""Entry points refuse outputs that would destroy inputs or results, before doing any work."""

from __future__ import annotations

import json
import shutil

import cv2
import pytest

from endoedge.cli import main


@pytest.fixture
def folder(sample_paths, tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for p in sample_paths[:2]:
        shutil.copy(p, d / p.name)
    return d


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_quantize_refuses_to_overwrite_inputs_and_outputs(ssdlite, folder, tmp_path, capsys):
    model = tmp_path / "m.onnx"
    shutil.copy(ssdlite[2], model)
    before = model.read_bytes()
    assert main(["quantize", str(model), "-o", str(tmp_path / "q.onnx"), "--calib", str(folder),
                 "--json", str(model)]) == 1
    assert "--json" in _err(capsys)
    assert model.read_bytes() == before
    assert main(["quantize", str(model), "-o", str(folder), "--calib", str(folder)]) == 1
    assert "is a folder" in _err(capsys)
    assert main(["quantize", str(model), "-o", str(tmp_path / "q.onnx"), "--calib", str(folder),
                 "--max-drop", "nan"]) == 1
    assert "--max-drop" in _err(capsys)
    fp16 = tmp_path / "m16.onnx"
    assert main(["quantize", str(model), "-o", str(fp16), "--precision", "fp16"]) == 0
    capsys.readouterr()
    first = fp16.read_bytes()
    assert main(["quantize", str(model), "-o", str(fp16), "--precision", "fp16"]) == 1
    assert "--force" in _err(capsys)
    assert fp16.read_bytes() == first
    assert main(["quantize", str(fp16), "-o", str(tmp_path / "again.onnx"), "--precision", "fp16"]) == 1
    assert "already FP16" in _err(capsys)


def test_eval_compare_json_cannot_be_a_model(ssdlite, tmp_path, capsys):
    assert main(["eval", "--compare", str(ssdlite[2]), str(ssdlite[2]), str(tmp_path),
                 "--json", str(ssdlite[2])]) == 1
    assert "is also an input" in _err(capsys)


def test_batch_out_and_report_cannot_be_inputs(ssdlite, folder, tmp_path, capsys):
    model = tmp_path / "m.onnx"
    shutil.copy(ssdlite[2], model)
    before = model.read_bytes()
    assert main(["batch", str(folder), "-m", str(model), "-o", str(model), "--overwrite", "--quiet"]) == 1
    assert "is also an input" in _err(capsys)
    assert model.read_bytes() == before
    image = next(folder.iterdir())
    assert main(["batch", str(folder), "-m", str(model), "-o", str(image), "--overwrite", "--quiet"]) == 1
    assert "looks like" in _err(capsys)
    assert main(["batch", str(folder), "-m", str(model), "-o", str(tmp_path / "r.jsonl"),
                 "--report", str(folder), "--quiet"]) == 1
    assert "is a folder" in _err(capsys)
    assert not (tmp_path / "r.jsonl").exists()


def test_batch_resume_refuses_another_source(ssdlite, folder, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    out = tmp_path / "r.jsonl"
    assert main(["batch", str(folder), "-m", str(ssdlite[2]), "-o", str(out), "--quiet"]) == 0
    capsys.readouterr()
    before = out.read_bytes()
    assert main(["batch", str(other), "-m", str(ssdlite[2]), "-o", str(out), "--resume", "--quiet"]) == 1
    assert "was made from" in _err(capsys)
    assert out.read_bytes() == before


def test_video_keys_do_not_depend_on_how_the_path_is_spelled(ssdlite, sample_paths, tmp_path, monkeypatch, capsys):
    video = tmp_path / "v.avi"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 2, (320, 240))
    for p in sample_paths[:3]:
        vw.write(cv2.resize(cv2.imread(str(p)), (320, 240)))
    vw.release()
    out = tmp_path / "v.jsonl"
    monkeypatch.chdir(tmp_path)
    assert main(["batch", "v.avi", "-m", str(ssdlite[2]), "-o", str(out), "--quiet"]) == 0
    lines = out.read_text().splitlines()
    out.write_text(lines[0] + "\n")
    assert main(["batch", str(video), "-m", str(ssdlite[2]), "-o", str(out), "--resume", "--quiet"]) == 0
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted((r["path"], r["frame"]) for r in records) == [("v.avi", i) for i in range(3)]


def test_list_file_spellings_of_one_image_are_one_input(ssdlite, folder, tmp_path, capsys):
    name = next(folder.iterdir()).name
    lst = tmp_path / "l.txt"
    lst.write_text(f"imgs/{name}\n./imgs/{name}\nimgs//{name}\n")
    out = tmp_path / "l.jsonl"
    assert main(["batch", str(lst), "-m", str(ssdlite[2]), "-o", str(out), "--quiet"]) == 0
    assert len(out.read_text().splitlines()) == 1


def test_build_checks_paths_before_tensorrt(ssdlite, tmp_path, capsys):
    onnx = str(ssdlite[2])
    engine = str(tmp_path / "e.engine")
    assert main(["build", onnx, "-o", engine, "--precision", "int8", "--calib", str(tmp_path / "nope")]) == 1
    assert "does not exist" in _err(capsys)
    assert main(["build", onnx, "-o", engine, "--timing-cache", onnx]) == 1
    assert "is also an input" in _err(capsys)


def test_csv_list_reads_the_first_column_after_a_header(ssdlite, folder, tmp_path):
    names = sorted(p.name for p in folder.iterdir())
    lst = tmp_path / "l.csv"
    lst.write_text("path,label\n" + "".join(f"imgs/{n},polyp\n" for n in names))
    out = tmp_path / "c.jsonl"
    assert main(["batch", str(lst), "-m", str(ssdlite[2]), "-o", str(out), "--quiet"]) == 0
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["path"] for r in records) == [f"imgs/{n}" for n in names]
    assert all("error" not in r for r in records)


def test_options_that_would_be_ignored_or_invalid_are_refused(ssdlite, folder, tmp_path, capsys):
    m = str(ssdlite[2])
    assert main(["eval", "--compare", m, m, str(tmp_path), "--plot", str(tmp_path / "p.png")]) == 1
    assert "--plot" in _err(capsys)
    assert main(["batch", str(folder), "-m", m, "-o", str(tmp_path / "t.jsonl"), "--threads", "-1"]) == 1
    assert "--threads" in _err(capsys)


def test_quantize_output_layers_flag_is_int8_only(ssdlite, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    assert main(["quantize", str(ssdlite[2]), "-o", str(out), "--precision", "fp16",
                 "--quantize-output-layers"]) == 1
    assert "--quantize-output-layers is an INT8 option" in _err(capsys)
    assert main(["quantize", str(ssdlite[2]), "-o", str(out), "--precision", "fp16", "--weight-rounding"]) == 1
    assert "--weight-rounding is an INT8 option" in _err(capsys)
    assert main(["quantize", str(ssdlite[2]), "-o", str(out), "--precision", "fp16", "--smooth"]) == 1
    assert "--smooth is an INT8 option" in _err(capsys)
    assert not out.exists()


def test_smooth_strength_is_checked_before_any_work(ssdlite, folder, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    assert main(["quantize", str(ssdlite[2]), "-o", str(out), "--calib", str(folder), "--smooth", "1.5"]) == 1
    assert "--smooth takes a strength within 0-1" in _err(capsys)
    assert main(["quantize", str(ssdlite[2]), "-o", str(out), "--calib", str(folder), "--smooth",
                 "--weight-rounding"]) == 1
    assert "--smooth and --weight-rounding do not combine" in _err(capsys)
    assert not out.exists()


def test_float_output_depth_and_fallback_tries_are_checked_before_any_work(ssdlite, folder, tmp_path, capsys):
    m, out = str(ssdlite[2]), tmp_path / "q.onnx"
    base = ["quantize", m, "-o", str(out), "--calib", str(folder)]
    assert main([*base, "--float-output-depth", "0"]) == 1
    assert "--float-output-depth must be at least 1, got 0" in _err(capsys)
    assert main([*base, "--float-output-depth", "2", "--quantize-output-layers"]) == 1
    assert "contradict each other" in _err(capsys)
    assert main(["quantize", m, "-o", str(out), "--precision", "fp16", "--float-output-depth", "2"]) == 1
    assert "--float-output-depth is an INT8 option" in _err(capsys)
    assert main([*base, "--fallback-tries", "0"]) == 1
    assert "--fallback-tries must be at least 1, got 0" in _err(capsys)
    assert not out.exists()
