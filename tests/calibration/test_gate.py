"""The quantize workflow and its gates: a black-frame calibration must fail them, CLI errors, the
held-out agreement gate, the shipped polyp detector's INT8 on Kvasir-SEG, and the typed report
(:func:`~endoedge.calibration.gate.quantize_gated`) whose JSON keeps the older keys (new ones
appended)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from endoedge.calibration.qdq_check import check_qdq
from endoedge.cli import main

pytest.importorskip("pycocotools")

REPO = Path(__file__).resolve().parents[2]
KVASIR = REPO.parent / "shared" / "data" / "kvasir-seg"

# The JSON layout `endoedge quantize --json` and `endoedge eval --compare --json` write (keys in
# file order; lists by their first item): the layout from before the workflow moved into
# endoedge.calibration, plus the keys issue 14 added.
METRICS = {"map50": None, "map50_95": None, "recall50": None, "precision50": None, "sensitivity": None}
GATE = {"reference": METRICS, "candidate": METRICS, "delta_points": METRICS, "metric": None,
        "max_drop_points": None, "drop_points": None, "passed": None}
HEAD = {"max_abs_err": None, "mean_abs_err": None, "rmse": None, "nmse": None, "cosine": None}
RAW = {"n_images": None, "outputs": {"bbox_regression": HEAD, "cls_logits": HEAD}}
CALIBRATION = {"source": None, "num_images": None, "num_skipped": None, "batch_shape": [None],
               "input_name": None, "sha256": None}
METADATA = {"endoedge.precision": None, "endoedge.quant_method": None, "endoedge.quant_format": None,
            "endoedge.quant_float_nodes": None, "endoedge.quant_float_outputs": None,
            "endoedge.calibration_sha256": None,
            "endoedge.calibration_images": None, "endoedge.quant_int32_bias": None}
# What the operating-point gate appended (after the older keys, which keep their order).
CRITERIA = {"criteria": [{"name": None, "value": None, "limit": None, "passed": None}], "reason": None}
GATE_NOW = {**GATE, **CRITERIA}
AGREEMENT = {k: None for k in ("threshold", "iou_threshold", "n_frames", "reference_boxes", "candidate_boxes", "kept",
                               "box_agreement", "extra_share", "frames_both", "frames_neither",
                               "frames_reference_only", "frames_candidate_only", "frame_agreement", "shift_pairs",
                               "mean_score_shift")}
OP_METRICS = {"sensitivity": None, "precision": None, "recall": None, "false_alarm": None}
OPERATING_POINT = {"threshold": None, "n_images": None, "n_negative_images": None, "reference": OP_METRICS,
                   "candidate": OP_METRICS, "delta_points": OP_METRICS, "agreement": AGREEMENT}
AGREE_GATE = {"reference_model": None, "candidate_model": None, "source": None, "held_out": None, "n_frames": None,
              "frames": [None], "skipped": [], "agreement": AGREEMENT, "min_agreement": None,
              "added_boxes": {"name": None, "value": None, "limit": None, "passed": None},
              "score_shift": {"name": None, "value": None, "limit": None, "passed": None}, "passed": None,
              "reason": None}
INT8 = {"model": None, "output": None, "precision": None, "calibration": CALIBRATION, "method": None,
        "qdq": None, "qdq_violations": [], "metadata": METADATA}
INT8_GATED = {**INT8, "gate": GATE_NOW, "raw_heads": RAW, "wall_s": None, "operating_point": OPERATING_POINT,
              "passed": None}
INT8_FALLBACK = {**INT8, "gate": GATE_NOW, "raw_heads": RAW,
                 "sensitivity": {"proxy": None, "n_images": None, "full_int8_error": None, "layers": [
                     {"node": None, "op_type": None, "error_if_float": None, "gain": None}]},
                 "fallback": {"steps": [{"float_nodes": [None], "drop_points": None, "passed": None,
                                         "box_agreement": None, "kept": None, "shortfall": None}],
                              "float_nodes": [None]},
                 "wall_s": None, "operating_point": OPERATING_POINT, "passed": None}
COMPARE_TOP = ["reference_model", "candidate_model", "data", "split", "n_images", "gate", "raw_heads",
               "reference", "candidate"]


def _layout(obj):
    """Keys in order, nested; a list by its first item; other values as None."""
    if isinstance(obj, dict):
        return {k: _layout(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_layout(obj[0])] if obj else []
    return None


def _same_layout(got, want) -> bool:
    return json.dumps(_layout(got)) == json.dumps(want)  # dict == ignores order; the dump does not


def test_gate_catches_black_frame_calibration(ssdlite, int8, sets, tmp_path, capsys):
    data = str(sets / "data" / "ann.json")
    same_json = tmp_path / "same.json"
    assert main(["eval", "--compare", str(ssdlite[2]), str(ssdlite[2]), data, "--json", str(same_json)]) == 0
    assert capsys.readouterr().out.splitlines()[-2].startswith("gate: PASS: box agreement 1.000 (min 0.95), ")
    same = json.loads(same_json.read_text())["operating_point"]
    assert same["agreement"]["box_agreement"] == 1.0
    assert same["agreement"]["mean_score_shift"] == 0.0
    assert same["threshold"] == 0.5  # the model's own
    good_json = tmp_path / "good.json"
    rc = main(["eval", "--compare", str(ssdlite[2]), str(int8.path), data, "--max-drop", "100",
               "--min-agreement", "0", "--max-sensitivity-drop", "100", "--json", str(good_json)])
    assert rc == 0
    good = json.loads(good_json.read_text())
    bad_path = tmp_path / "black.int8.onnx"
    rc = main(["quantize", str(ssdlite[2]), "-o", str(bad_path), "--no-bias-correction", "--calib", str(sets / "black"),
               "--eval", data, "--max-fallback", "0", "--json", str(tmp_path / "bad.json")])
    captured = capsys.readouterr()
    assert rc == 1
    assert "gate FAILED" in captured.err
    assert bad_path.is_file()
    bad = json.loads((tmp_path / "bad.json").read_text())
    assert bad["gate"]["passed"] is False
    assert bad["gate"]["drop_points"] > good["gate"]["drop_points"] + 20
    assert bad["gate"]["candidate"]["map50"] < 0.2 < good["gate"]["candidate"]["map50"]
    assert set(good["raw_heads"]["outputs"]) == {"bbox_regression", "cls_logits"}
    assert list(good) == [*COMPARE_TOP, "operating_point", "passed"]  # the older keys first, in order
    assert _same_layout(good["gate"], GATE_NOW)
    assert _same_layout(good["raw_heads"], RAW)
    assert _same_layout(good["operating_point"], OPERATING_POINT)
    assert _same_layout(bad, INT8_GATED)
    assert bad["operating_point"]["agreement"]["box_agreement"] < 0.2  # black-frame ranges lose the boxes
    rc = main(["eval", "--compare", str(ssdlite[2]), str(bad_path), data])
    assert rc == 1
    assert "gate FAILED" in capsys.readouterr().err


def test_quantize_cli_errors(ssdlite, sets, tmp_path, capsys):
    out = str(tmp_path / "o.onnx")
    assert main(["quantize", str(ssdlite[2]), "-o", out]) == 1
    assert "--calib" in capsys.readouterr().err
    rc = main(["quantize", str(ssdlite[2]), "-o", out, "--no-bias-correction", "--calib", str(sets / "data"),
               "--eval", str(sets / "data" / "ann.json")])
    assert rc == 1
    assert "also evaluation images" in capsys.readouterr().err
    assert main(["quantize", str(ssdlite[2]), "-o", out, "--calib", str(tmp_path / "nowhere")]) == 1
    assert "likely causes" in capsys.readouterr().err
    assert main(["eval", str(ssdlite[2]), str(ssdlite[2]), str(sets / "data" / "ann.json")]) == 1
    assert "--compare" in capsys.readouterr().err


def test_quantize_gated_holds_out_calibration_frames_without_eval_or_agree(ssdlite, sets, tmp_path):
    from endoedge.calibration import load_calibration_data
    from endoedge.calibration.agreement import hold_out
    from endoedge.calibration.gate import QuantOptions, quantize_gated
    from endoedge.calibration.sources import discover

    lines: list[str] = []
    out = tmp_path / "q.onnx"
    report = quantize_gated(ssdlite[2], out, QuantOptions(calib=sets / "calib", bias_correction=False, num_images=4, batch=2,
                                                          min_agreement=0.0, max_fallback=0), echo=lines.append)
    lines = "\n".join(lines).splitlines()
    held = hold_out(discover(sets / "calib"), 0)
    assert len(held) == 5  # 10 images: at most half is held out (16 is the minimum for larger sources)
    assert lines[0].startswith("no --eval/--agree given: 5 of the 10 calibration images are held out of "
                               f"calibration for the agreement gate ({held[0].describe()}, ")
    assert lines[1].startswith("calibration: 4 images from ")
    assert lines[3].startswith("kept 12 output layer(s) in float")
    assert lines[4] == f"agreement gate: {out} vs FP32 reference {ssdlite[2]}"
    assert lines[5].startswith("5 frames of ")
    assert "(held out of calibration)" in lines[5]
    a = report.agreement.agreement
    shift = "" if report.agreement.shift is None else f", mean score shift {a.mean_score_shift:+.3f} (max 0.01)"
    assert lines[-1] == (f"agreement gate: PASS: box agreement {a.box_agreement:.3f} (min 0), "
                         f"boxes the copy adds {a.added_share:.3f} (max 1){shift}")
    assert report.passed is True
    assert report.agreement.held_out
    assert report.agreement.frames == [it.describe() for it in held]
    # excluded from calibration: the calibration hash is that of the images without the held-out ones
    rest = load_calibration_data(sets / "calib", ssdlite[0].spec, num_images=4, batch_size=2, exclude=held)
    assert report.calibration_sha256 == rest.content_hash
    assert not set(rest.items) & set(held)
    assert report.calibration_sha256 == report.metadata["endoedge.calibration_sha256"]
    assert _same_layout(report.to_dict(), {**INT8, "wall_s": None, "agreement": AGREE_GATE, "passed": None})
    assert check_qdq(out).ok


def test_quantize_gated_without_any_gate_reports_unchecked_accuracy(ssdlite, sets, tmp_path):
    from endoedge.calibration.gate import QuantOptions, quantize_gated

    lines: list[str] = []
    out = tmp_path / "q.onnx"
    report = quantize_gated(ssdlite[2], out, QuantOptions(calib=sets / "calib", bias_correction=False, num_images=4, batch=2, holdout=False,
                                                                       method="minmax"),
                            echo=lines.append)
    assert report.passed is None
    assert report.gate is None
    assert report.agreement is None
    assert report.float_nodes == []
    assert report.calibration_images == 4
    assert (report.output, report.precision, report.method) == (str(out), "int8", "minmax")
    assert report.wall_s > 0
    assert lines[0].startswith("calibration: 4 images from ")
    assert lines[1].startswith(f"wrote {out} (INT8 Q/DQ, minmax calibration); Q/DQ rules passes")
    assert lines[2].startswith("kept 12 output layer(s) in float (they feed the scores/boxes directly")
    assert lines[3].startswith("--no-gate: accuracy NOT checked")
    assert _same_layout(report.to_dict(), {**INT8, "wall_s": None})


def test_quantize_gated_errors(ssdlite, sets, tmp_path):
    from endoedge.calibration.gate import QuantOptions, quantize_gated
    from endoedge.errors import InputError

    with pytest.raises(InputError, match="calibration images"):
        quantize_gated(ssdlite[2], tmp_path / "q.onnx")
    with pytest.raises(InputError, match="precision"):
        quantize_gated(ssdlite[2], tmp_path / "q.onnx", QuantOptions(precision="int4"))
    with pytest.raises(InputError, match="also evaluation images"):
        quantize_gated(ssdlite[2], tmp_path / "q.onnx", QuantOptions(calib=sets / "data", num_images=4,
                                                                     eval_data=sets / "data" / "ann.json"))
    assert not (tmp_path / "q.onnx").exists()


def test_fp16_gate_report_keeps_the_json_layout(ssdlite, sets, tmp_path, capsys):
    pytest.importorskip("onnxconverter_common")
    out, report = tmp_path / "m.fp16.onnx", tmp_path / "m.json"
    assert main(["quantize", str(ssdlite[2]), "-o", str(out), "--precision", "fp16",
                 "--eval", str(sets / "data" / "ann.json"), "--json", str(report)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"wrote {out} (FP16 weights and activations, float32 inputs/outputs; runs in ONNX Runtime)"
    assert printed[1] == f"accuracy gate: {out} vs reference {ssdlite[2]}"
    assert printed[-2].startswith("gate: PASS: box agreement ")
    assert printed[-1].startswith(f"report written to {report} (")
    rep = json.loads(report.read_text())
    assert _same_layout(rep, {"model": None, "output": None, "precision": None, "gate": GATE_NOW, "raw_heads": RAW,
                              "wall_s": None, "operating_point": OPERATING_POINT, "passed": None})
    assert rep["gate"]["passed"] is True
    assert rep["operating_point"]["agreement"]["box_agreement"] >= 0.95


def test_fallback_report_keeps_the_json_layout(ssdlite, sets, tmp_path, capsys, cut_ranking):
    """A black-frame INT8 fails the gate, so the fallback runs; the ranking is cut to 4 layers
    (all counted as gaining) to keep it fast: the report's layout is under test, not the ranking."""
    cut_ranking(4)
    out, report = tmp_path / "black.int8.onnx", tmp_path / "black.json"
    rc = main(["quantize", str(ssdlite[2]), "-o", str(out), "--no-bias-correction", "--calib", str(sets / "black"), "--num-images", "4",
               "--batch", "2", "--eval", str(sets / "data" / "ann.json"), "--max-fallback", "1",
               "--sensitivity-images", "2", "--json", str(report)])
    captured = capsys.readouterr()
    assert rc == 1
    assert "INT8 fails the gate: ranking layers by sensitivity on 2 calibration images ..." in captured.out
    assert captured.err.startswith("endoedge quantize: gate FAILED: box agreement ")
    assert len(captured.err.strip().splitlines()) == 1
    assert "mAP@0.5 drop" in captured.err
    rep = json.loads(report.read_text())
    fb = rep["fallback"]
    assert _same_layout({**rep, "fallback": {**fb, "float_nodes": ["n"]}}, INT8_FALLBACK)
    assert len(rep["sensitivity"]["layers"]) == 4
    assert 1 <= len(fb["steps"]) <= 2  # --max-fallback 1: two layers tried at most
    # The file and the report are the closest copy measured: the last step kept (else the first copy).
    kept = [step for step in fb["steps"] if step["kept"]]
    assert fb["float_nodes"] == (kept[-1]["float_nodes"] if kept else [])
    assert f"kept in float ({len(fb['float_nodes'])}): " in captured.out
    if kept:
        assert rep["gate"]["drop_points"] == kept[-1]["drop_points"]
    assert rep["qdq"] == check_qdq(out).summary()


def _scripted_gate(monkeypatch, shortfalls):
    """Replace the workflow's gate with one that reports ``shortfalls`` (points short) in turn;
    returns the list of (Q/DQ summary of the file checked, shortfall) it saw."""
    from endoedge.calibration import gate as gate_mod

    script, seen = iter(shortfalls), []

    def scripted_check(self, candidate, *, show):
        short = next(script)
        seen.append((check_qdq(candidate).summary(), short))
        self.last_text = f"scripted gate: {short:g} points short"
        if show:
            self.say(self.last_text)
        return gate_mod.Verdict(passed=short == 0.0, drop_points=None, box_agreement=None, shortfall=short)

    monkeypatch.setattr(gate_mod._Workflow, "check", scripted_check)
    return seen


def _quantize_with_fallback(ssdlite, sets, tmp_path, *extra):
    out, report = tmp_path / "q.int8.onnx", tmp_path / "q.json"
    main(["quantize", str(ssdlite[2]), "-o", str(out), "--no-bias-correction", "--calib", str(sets / "black"),
          "--num-images", "4", "--batch", "2", "--eval", str(sets / "data" / "ann.json"),
          "--sensitivity-images", "2", "--json", str(report), *extra])
    return out, json.loads(report.read_text())["fallback"]


def test_fallback_writes_the_closest_copy_again_when_the_last_try_was_worse(ssdlite, sets, tmp_path, capsys,
                                                                             cut_ranking, monkeypatch):
    """The workflow around :func:`greedy_fallback` with real quantization and a scripted gate
    (points short per check: first copy 5, +layer a 3, +layer b 4): layer b goes back to INT8,
    the file is re-quantized with a alone and measured again, and the report is that state."""
    cut_ranking(4)
    seen = _scripted_gate(monkeypatch, [5.0, 3.0, 4.0, 3.0])
    out, fb = _quantize_with_fallback(ssdlite, sets, tmp_path, "--max-fallback", "2", "--fallback-tries", "2")
    printed = capsys.readouterr().out
    assert "tried 2 layer(s) in float, 1 brought the copy closer to passing; writing the closest copy again" in printed
    assert [step["kept"] for step in fb["steps"]] == [True, False]
    assert [step["shortfall"] for step in fb["steps"]] == [3.0, 4.0]
    assert fb["float_nodes"] == fb["steps"][0]["float_nodes"]
    assert f"kept in float (1): {fb['float_nodes'][0]};" in printed
    # the fourth check measured the file written again, which is the one-layer copy, not the last try
    assert len(seen) == 4
    assert seen[3] == (seen[1][0], 3.0)
    assert seen[3][0] != seen[2][0]
    assert check_qdq(out).summary() == seen[1][0]
    assert "this pass is optimistic" not in printed  # only a pass is flagged


def test_a_pass_after_the_fallback_is_flagged_optimistic(ssdlite, sets, tmp_path, capsys, cut_ranking, monkeypatch):
    cut_ranking(4)
    seen = _scripted_gate(monkeypatch, [5.0, 0.0])
    _, fb = _quantize_with_fallback(ssdlite, sets, tmp_path, "--max-fallback", "3")
    printed = capsys.readouterr().out
    assert len(seen) == 2  # no re-check: the passing step is the file on disk
    assert [step["passed"] for step in fb["steps"]] == [True]
    # a labelled gate only: nothing to confirm on, so the pass is flagged with the check to run
    assert ("note: the fallback chose these layers on the gate's own frames (1 tried), so this pass is optimistic "
            "and no unseen frames are left to confirm it; check on other frames: endoedge eval --compare ") in printed


@pytest.fixture
def forty_frames(sample_paths, tmp_path):
    """40 distinct real frames (10 sample frames x 4 crops/flips), 480 x 270."""
    import cv2

    from endoedge.data.imageio import read_image

    d = tmp_path / "calib40"
    d.mkdir()
    for i, p in enumerate(sample_paths):
        img = read_image(p)
        h, w = img.shape[:2]
        views = [img, img[:, ::-1], img[h // 8:, w // 8:], img[: h - h // 8, : w - w // 8, :][:, ::-1]]
        for j, v in enumerate(views):
            small = cv2.resize(np.ascontiguousarray(v), (480, 270), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(d / f"f{i:02d}_{j}.png"), small)
    return d


def test_a_fallback_pass_is_confirmed_on_frames_it_did_not_see(ssdlite, forty_frames, tmp_path, capsys, cut_ranking,
                                                               monkeypatch):
    """Held-out mode: the fallback passes on the gate's 16 frames (scripted), then the real
    agreement gate judges the file on 16 other frames of the source that neither calibration (4)
    nor the gate used; its verdict is the command's (a 4-image INT8 copy of the tiny model loses
    most of FP32's boxes there: FAIL, exit 1, the file kept)."""
    cut_ranking(4)
    seen = _scripted_gate(monkeypatch, [5.0, 0.0])
    out, report = tmp_path / "q.int8.onnx", tmp_path / "q.json"
    rc = main(["quantize", str(ssdlite[2]), "-o", str(out), "--calib", str(forty_frames), "--num-images", "4",
               "--batch", "2", "--sensitivity-images", "2", "--max-fallback", "1", "--method", "minmax",
               "--no-bias-correction", "--json", str(report)])
    captured = capsys.readouterr()
    assert len(seen) == 2  # the first copy and the one fallback step: the scripted gate
    rep = json.loads(report.read_text())
    from endoedge.calibration.agreement import hold_out
    from endoedge.calibration.sources import discover

    gate_frames, confirm = {it.describe() for it in hold_out(discover(forty_frames))}, rep["confirmation"]
    assert len(gate_frames) == 16
    assert ("the fallback chose its layers on the gate's frames (1 tried): confirming on 16 other frames of "
            f"{forty_frames} that neither calibration nor the fallback saw ...") in captured.out
    assert confirm["n_frames"] == 16
    assert not set(confirm["frames"]) & gate_frames
    assert confirm["passed"] is False
    assert rep["passed"] is False
    assert rc == 1
    assert captured.err.startswith("endoedge quantize: gate FAILED: on frames the fallback did not see: ")
    assert len(captured.err.strip().splitlines()) == 1
    assert "the fallback's pass does not hold on frames it did not see" in captured.out
    assert out.is_file()


def test_an_agree_video_pass_is_confirmed_on_its_other_frames_and_says_they_are_not_independent(
        ssdlite, forty_frames, tmp_path, capsys, cut_ranking, monkeypatch):
    """--agree mode with a video: the fallback passes on the gate's 16 frames of the clip
    (scripted), the confirmation takes 16 of the clip's other 24 frames (none the gate used) and says
    they come from the same video, so they are not independent of the gate's."""
    import cv2

    video = tmp_path / "cart.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, (480, 270))
    for f in sorted(forty_frames.glob("*.png")):
        writer.write(cv2.imread(str(f)))
    writer.release()
    cut_ranking(4)
    seen = _scripted_gate(monkeypatch, [5.0, 0.0])
    out, report = tmp_path / "q.int8.onnx", tmp_path / "q.json"
    rc = main(["quantize", str(ssdlite[2]), "-o", str(out), "--calib", str(forty_frames), "--num-images", "4",
               "--batch", "2", "--sensitivity-images", "2", "--max-fallback", "1", "--method", "minmax",
               "--no-bias-correction", "--agree", str(video), "--agree-images", "16", "--json", str(report)])
    captured = capsys.readouterr()
    assert len(seen) == 2
    rep = json.loads(report.read_text())
    confirm = rep["confirmation"]
    assert (f"confirming on 16 other frames of {video} that neither calibration nor the fallback saw (frames of the "
            "same video(s) as the gate's: not independent of them) ...") in captured.out
    assert confirm["n_frames"] == 16
    assert all(f.startswith(f"{video}#") for f in confirm["frames"])
    from endoedge.calibration.agreement import spread_frames
    from endoedge.calibration.sources import discover

    gate_frames = {it.describe() for it in spread_frames(discover(video), num_images=16)}
    assert len(gate_frames) == 16
    assert not set(confirm["frames"]) & gate_frames
    assert rep["passed"] is confirm["passed"]
    assert rc == (0 if confirm["passed"] else 1)


@pytest.mark.shared_data
@pytest.mark.slow
def test_shipped_polyp_detector_int8_passes_gate_on_kvasir_val(tmp_path):
    """Calibrated on the train split only; gate on the 120-image val split (target: <= 1 point)."""
    from endoedge.models.pretrained import shipped_checkpoint

    fp32 = tmp_path / "polyp.onnx"
    assert main(["export", str(shipped_checkpoint()), "-o", str(fp32), "--no-check"]) == 0
    out, report = tmp_path / "polyp.int8.onnx", tmp_path / "polyp.json"
    # 16 calibration images (not the default 500; bias correction measures 16 in any case): the entropy
    # histograms are the slowest part otherwise (100 images: 140 s, 32: 77 s, 16: 65 s; all pass the
    # same way); the default recipe is what runs.
    rc = main(["quantize", str(fp32), "-o", str(out), "--calib", str(KVASIR), "--num-images", "16",
               "--calib-split", str(REPO / "data/splits/kvasir_seg_train.txt"), "--eval", str(KVASIR),
               "--split", str(REPO / "data/splits/kvasir_seg_val.txt"), "--json", str(report)])
    rep = json.loads(report.read_text())
    assert rc == 0, rep["gate"]
    assert rep["gate"]["passed"]
    assert rep["gate"]["drop_points"] <= 1.0
    assert rep["gate"]["reference"]["map50"] > 0.9
    assert check_qdq(out).ok
    # the default recipe corrects the biases (benchmarks/RESULTS.md, "INT8/FP16 across centres")
    assert json.loads(rep["metadata"]["endoedge.quant_bias_correction"])["layers"] > 0
