"""The label-free agreement gate on multi-task models: mask Dice and frame-label agreement."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from endoedge.calibration.agreement import (
    MIN_FRAME_AGREEMENT,
    MIN_MASK_DICE,
    FrameOutputs,
    multitask_criteria,
)


def _disc(shift: int) -> np.ndarray:
    m = np.zeros((540, 960), np.float32)
    cv2.circle(m, (480 + shift, 270), 120, 1.0, -1)
    return m


def test_multitask_criteria():
    ref = [FrameOutputs.of(_disc(0), "polyp"), FrameOutputs.of(np.zeros((540, 960), np.float32), "normal")]
    assert ref[0].mask is not None
    assert max(ref[0].mask.shape) == 320  # compared on a small copy
    same = multitask_criteria(ref, ref)
    assert [(c.name, c.value, c.passed) for c in same] == [("mask_dice", 1.0, True), ("frame_label_agreement", 1.0, True)]
    moved = [FrameOutputs.of(_disc(90), "polyp"), FrameOutputs.of(np.zeros((540, 960), np.float32), "unclear")]
    dice, labels = multitask_criteria(ref, moved)
    a, b = ref[0].mask, moved[0].mask
    expected = (2 * (a & b).sum() / (a.sum() + b.sum()) + 1.0) / 2  # the empty pair counts as 1
    assert dice.value == pytest.approx(expected, abs=1e-6)
    assert dice.passed == (expected >= MIN_MASK_DICE)
    assert labels.value == 0.5
    assert not labels.passed
    assert MIN_FRAME_AGREEMENT > 0.5
    box_only = [FrameOutputs.of(None, None)] * 2
    assert multitask_criteria(box_only, box_only) == []


def test_fp16_multitask_passes_the_agreement_gate(multitask, frames, tmp_path, capsys):
    pytest.importorskip("onnxconverter_common")
    from endoedge.cli import main

    _, _, onnx_path = multitask
    agree = tmp_path / "frames"
    agree.mkdir()
    for i, f in enumerate(frames[1:4]):
        cv2.imwrite(str(agree / f"f{i}.png"), f)
    out = tmp_path / "m.fp16.onnx"
    rc = main(["quantize", str(onnx_path), "-o", str(out), "--precision", "fp16", "--agree", str(agree),
               "--agree-images", "3", "--min-agreement", "0.5"])  # untrained boxes: scores near 1
    gate = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("agreement gate: ")][-1]
    rep = json.loads(out.with_suffix(".quant.json").read_text())
    names = {c["name"]: c for c in rep["agreement"]["multitask"]}
    # an untrained mask sits near 0.5 everywhere, so FP16 rounding flips some pixels: Dice ~0.9 here
    assert names["mask_dice"]["value"] > 0.8
    assert names["frame_label_agreement"]["value"] == 1.0
    assert rc == (0 if rep["passed"] else 1)
    assert rep["passed"] == (names["mask_dice"]["passed"] and rep["agreement"]["agreement"]["box_agreement"] >= 0.5)
    if rep["passed"]:
        assert "mask Dice vs the reference" in gate
        assert "frame-label agreement" in gate


def test_labelled_gate_compares_mask_dice_and_triage(multitask, frames, tmp_path):
    """``eval --compare`` / ``quantize --eval`` on a labelled set with masks: a multi-task copy is
    also judged by its mean mask Dice and triage accuracy against the labels."""
    from endoedge.calibration.compare import (
        compare_models,
        format_compare,
        labelled_multitask_criteria,
    )
    from endoedge.calibration.operating_point import GateLimits
    from endoedge.evaluation import EvalSet
    from tests.evaluation.test_multitask_eval import _seg_set

    _, _, onnx_path = multitask
    data = _seg_set(tmp_path / "kvasir", frames)
    result = compare_models(onnx_path, onnx_path, EvalSet(data), device="cpu")
    crit = {c.name: c for c in result.gate.criteria}
    assert crit["mask_dice_drop"].value == 0.0
    assert crit["mask_dice_drop"].passed
    assert crit["triage_accuracy_drop"].value == 0.0
    assert crit["triage_accuracy_drop"].passed
    text = format_compare(result)
    assert "mean mask Dice (vs labels)" in text
    assert "frame-triage accuracy" in text
    # a copy whose Dice falls 3 points fails; triage within the bound passes; box-only: unchanged
    ref = {"mask": {"dice": 0.86}, "triage": {"accuracy": 0.92}}
    cand = {"mask": {"dice": 0.83}, "triage": {"accuracy": 0.915}}
    judged = labelled_multitask_criteria(result.gate, ref, cand, GateLimits(max_drop=1.0))
    by = {c.name: c for c in judged.criteria}
    assert not by["mask_dice_drop"].passed
    assert by["mask_dice_drop"].value == pytest.approx(3.0)
    assert by["triage_accuracy_drop"].passed
    assert not judged.passed
    assert "mask Dice drop +3.00 points" in judged.reason
    assert labelled_multitask_criteria(result.gate, {}, {}, GateLimits()) is result.gate
