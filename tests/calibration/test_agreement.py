"""The gate at the operating point end to end: a copy whose class scores are scaled down keeps
mAP but loses boxes at the threshold and fails; the label-free --agree gate on a folder (with a
symlink) and a video; quantize --agree (INT8 through the fallback, FP16); one-line errors for bad
input before any work."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from endoedge.cli import main

pytest.importorskip("pycocotools")


def _scaled_scores(src, dst, factor):
    """A copy of an SSD ONNX whose class logits are multiplied by ``factor`` (< 1: lower scores)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == "cls_logits":
                node.output[i] = "cls_logits_unscaled"
    graph.initializer.append(numpy_helper.from_array(np.array(factor, np.float32), "cls_scale"))
    graph.node.append(helper.make_node("Mul", ["cls_logits_unscaled", "cls_scale"], ["cls_logits"], name="scale_cls"))
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


@pytest.fixture(scope="module")
def scaled(ssdlite, tmp_path_factory):
    return _scaled_scores(ssdlite[2], tmp_path_factory.mktemp("scaled") / "scaled.onnx", 0.5)


@pytest.fixture(scope="module")
def frames_dir(sets, tmp_path_factory):
    """Unlabelled frames: the data images in nested folders, one reached through a symlink."""
    root = tmp_path_factory.mktemp("agree")
    images = sorted((sets / "data").glob("*.png"))
    (root / "a").mkdir()
    (root / "b").mkdir()
    for i, p in enumerate(images[:-1]):
        (root / ("a" if i % 2 else "b") / p.name).write_bytes(p.read_bytes())
    os.symlink(images[-1], root / "b" / "linked.png")
    return root


@pytest.fixture(scope="module")
def video(sets, tmp_path_factory):
    """A 12-frame MJPG video of the data images."""
    path = tmp_path_factory.mktemp("video") / "cart.avi"
    images = [cv2.imread(str(p)) for p in sorted((sets / "data").glob("*.png"))]
    h, w = images[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (w, h))
    for k in range(12):
        writer.write(images[k % len(images)])
    writer.release()
    return path


def _one_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"endoedge {command}: ")
    return lines[0]


def test_scaled_scores_keep_map_but_fail_at_the_operating_point(ssdlite, scaled, sets, tmp_path, capsys):
    report = tmp_path / "r.json"
    rc = main(["eval", "--compare", str(ssdlite[2]), str(scaled), str(sets / "data" / "ann.json"),
               "--json", str(report)])
    captured = capsys.readouterr()
    assert rc == 1
    line = _one_line(captured.err, "eval")
    assert line.startswith("endoedge eval: gate FAILED: box agreement 0.")
    out = captured.out.splitlines()
    assert out[2] == "at the operating point (score >= 0.5; the reference's threshold):"
    assert out[-2].startswith("gate: FAIL: box agreement ")
    rep = json.loads(report.read_text())
    agree = rep["operating_point"]["agreement"]
    assert agree["box_agreement"] < 0.95
    assert agree["mean_score_shift"] < -0.05  # systematically lower scores
    assert agree["candidate_boxes"] == agree["kept"]  # no extra boxes: they only fell under the threshold
    crit = {c["name"]: c for c in rep["gate"]["criteria"]}
    assert not crit["box_agreement"]["passed"]
    assert crit["map50_drop"]["value"] < crit["box_agreement"]["limit"] * 100  # mAP hardly notices
    assert rep["passed"] is False
    assert rep["gate"]["passed"] is False


def test_agree_on_a_folder_with_a_symlink_and_on_a_video(ssdlite, scaled, frames_dir, video, tmp_path, capsys):
    report = tmp_path / "same.json"
    assert main(["eval", "--compare", str(ssdlite[2]), str(ssdlite[2]), "--agree", str(frames_dir),
                 "--json", str(report)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith(f"10 frames of {frames_dir}; at score >= 0.5")
    assert out[-2] == ("agreement gate: PASS: box agreement 1.000 (min 0.95), boxes the copy adds 0.000 (max 0.05), "
                       "mean score shift +0.000 (max 0.01)")
    rep = json.loads(report.read_text())
    assert rep["n_frames"] == 10
    assert str(frames_dir / "b" / "linked.png") in rep["frames"]
    assert rep["agreement"]["box_agreement"] == 1.0
    assert rep["agreement"]["frame_agreement"] == 1.0
    assert rep["passed"] is True
    report = tmp_path / "video.json"
    rc = main(["eval", "--compare", str(ssdlite[2]), str(scaled), "--agree", str(video), "--agree-images", "4",
               "--json", str(report)])
    captured = capsys.readouterr()
    assert rc == 1
    assert _one_line(captured.err, "eval").startswith("endoedge eval: gate FAILED: box agreement 0.")
    rep = json.loads(report.read_text())
    idx = [int(f.rsplit("#", 1)[1]) for f in rep["frames"]]
    assert len(idx) == 4
    assert all(f.startswith(str(video)) for f in rep["frames"])
    assert np.diff(idx).tolist() == [3, 3, 3]  # every 3rd of the 12 frames
    assert rep["agreement"]["box_agreement"] < 0.95


def test_quantize_agree_fails_int8_through_the_fallback(ssdlite, sets, frames_dir, tmp_path, capsys, cut_ranking):
    """The fixture's INT8 keeps too few boxes: the agreement failure starts the float fallback
    (ranking cut to 2 layers to stay fast) and quantize exits 1 with a one-line reason."""
    cut_ranking(2)
    out, report = tmp_path / "q.onnx", tmp_path / "q.json"
    rc = main(["quantize", str(ssdlite[2]), "-o", str(out), "--no-bias-correction", "--calib", str(sets / "calib"), "--num-images", "4",
               "--batch", "2", "--agree", str(frames_dir), "--agree-images", "4", "--max-fallback", "1",
               "--sensitivity-images", "2", "--json", str(report)])
    captured = capsys.readouterr()
    assert rc == 1
    line = _one_line(captured.err, "quantize")
    assert line.startswith("endoedge quantize: gate FAILED: box agreement ")
    assert "(min 0.95); boxes the copy adds " in line
    assert line.endswith(f"(max 0.05); {out} is kept for inspection")
    text = captured.out
    assert f"agreement gate: {out} vs FP32 reference {ssdlite[2]}\n4 frames of {frames_dir}; at score >= 0.5" in text
    assert "INT8 fails the gate: ranking layers by sensitivity on 2 --agree frames ..." in text
    rep = json.loads(report.read_text())
    assert "gate" not in rep  # no labelled set
    assert rep["agreement"]["held_out"] is False
    step = rep["fallback"]["steps"][0]
    assert step["drop_points"] is None
    assert step["box_agreement"] == rep["agreement"]["agreement"]["box_agreement"]
    assert rep["passed"] is False
    assert out.is_file()


def test_fp16_through_the_agreement_gates(ssdlite, sets, frames_dir, tmp_path, capsys):
    pytest.importorskip("onnxconverter_common")
    out = tmp_path / "m.fp16.onnx"
    assert main(["quantize", str(ssdlite[2]), "-o", str(out), "--precision", "fp16", "--agree", str(frames_dir),
                 "--agree-images", "4"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-2].startswith("agreement gate: PASS: box agreement ")
    rep = json.loads(out.with_suffix(".quant.json").read_text())
    assert rep["agreement"]["agreement"]["box_agreement"] >= 0.95
    assert rep["passed"] is True
    held = tmp_path / "h.fp16.onnx"
    assert main(["quantize", str(ssdlite[2]), "-o", str(held), "--precision", "fp16", "--calib",
                 str(sets / "calib")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("no --eval/--agree given: gating on 5 of the 10 --calib frames (")
    assert printed[-2].startswith("agreement gate: PASS: ")
    assert json.loads(held.with_suffix(".quant.json").read_text())["agreement"]["n_frames"] == 5


@pytest.mark.parametrize(("args", "message"), [
    (["--agree", "{empty}"], "--agree source '{empty}' holds no usable image or video"),
    (["--agree", "{tmp}/nowhere"], "--agree source '{tmp}/nowhere' does not exist"),
    (["--min-agreement", "1.5"], "--min-agreement must be a share in [0, 1], got 1.5"),
    (["--min-agreement", "nan"], "--min-agreement must be a share in [0, 1]"),
    (["--conf", "0"], "--conf must be a score threshold in [0, 1]"),
    (["--conf", "1.5"], "--conf must be a score threshold in [0, 1]"),
    (["--max-sensitivity-drop", "-1"], "--max-sensitivity-drop must be a number of points >= 0"),
    (["--agree-images", "0"], "--agree-images must be at least 1"),
    (["--no-gate", "--agree", "{empty}"], "--no-gate skips the held-out agreement gate"),
    (["--negatives", "{empty}"], "--negatives counts false alarms in the --eval gate"),
])
def test_bad_gate_input_is_one_line_error_before_any_work(ssdlite, sets, tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    fmt = {"empty": tmp_path / "empty", "tmp": tmp_path}
    out = tmp_path / "q.onnx"
    argv = [a.format(**fmt) for a in args]
    assert main(["quantize", str(ssdlite[2]), "-o", str(out), "--calib", str(sets / "calib"), *argv]) == 1
    assert message.format(**fmt) in _one_line(capsys.readouterr().err, "quantize")
    assert not out.exists()
    assert not out.with_suffix(".quant.json").exists()
    if "--no-gate" in args or "--negatives" in args:
        return
    assert main(["eval", "--compare", str(ssdlite[2]), str(ssdlite[2]), "--agree", str(sets / "data"),
                 *argv]) == 1
    assert message.format(**fmt) in _one_line(capsys.readouterr().err, "eval")


def test_eval_compare_needs_data_or_agree(ssdlite, capsys):
    assert main(["eval", "--compare", str(ssdlite[2]), str(ssdlite[2])]) == 1
    assert "(or REF CANDIDATE with --agree FRAMES)" in _one_line(capsys.readouterr().err, "eval")
