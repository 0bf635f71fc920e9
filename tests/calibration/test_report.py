"""QuantReport (calibration/report.py): steps that did not run are left out of the JSON, keys keep
the order `endoedge quantize --json` wrote, and the ranking is cut to its first 50 layers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from endoedge.calibration.compare import gate_result
from endoedge.calibration.report import QuantReport, RawHeadErrors
from endoedge.calibration.sensitivity import FallbackResult, FallbackStep, LayerCost, LayerRanking
from tests.calibration.test_compare import CAND, REF

CALIB = {"source": "frames", "num_images": 8, "num_skipped": 0, "batch_shape": [2, 3, 320, 320],
         "input_name": "images", "sha256": "ab" * 32}


def test_fp16_without_gate():
    rep = QuantReport("m.onnx", "m.fp16.onnx", "fp16", wall_s=1.5)
    assert json.dumps(rep.to_dict()) == json.dumps({"model": "m.onnx", "output": "m.fp16.onnx", "precision": "fp16",
                                                    "wall_s": 1.5})
    assert rep.passed is None
    assert rep.float_nodes == []
    assert (rep.calibration_sha256, rep.calibration_images) == (None, None)


def test_int8_with_fallback_in_the_report_order():
    gate = gate_result(REF, CAND, 1.0)
    ranking = LayerRanking("proxy", 2, 0.5, [LayerCost(f"n{i}", "Conv", 0.4, 0.1) for i in range(60)])
    fallback = FallbackResult(True, ["n0"], [FallbackStep(["n0"], 0.88, True)], Path("q.onnx"), gate)
    rep = QuantReport("m.onnx", "q.onnx", "int8", calibration=CALIB, method="minmax", qdq="ok",
                      qdq_violations=[], metadata={"endoedge.precision": "int8"}, gate=gate,
                      raw_heads=RawHeadErrors(skipped="why"), sensitivity=ranking, fallback=fallback, wall_s=3.0)
    d = rep.to_dict()
    assert list(d) == ["model", "output", "precision", "calibration", "method", "qdq", "qdq_violations",
                       "metadata", "gate", "raw_heads", "sensitivity", "fallback", "wall_s", "passed"]
    assert d["gate"] == gate.to_dict()
    assert d["raw_heads"] == {"skipped": "why"}
    assert len(d["sensitivity"]["layers"]) == 50
    assert d["sensitivity"]["layers"][0] == {"node": "n0", "op_type": "Conv", "error_if_float": 0.4, "gain": 0.1}
    assert d["fallback"] == {"steps": [{"float_nodes": ["n0"], "drop_points": 0.88, "passed": True,
                                        "box_agreement": None, "kept": True, "shortfall": None}],
                             "float_nodes": ["n0"]}
    assert d["qdq_violations"] == []
    json.dumps(d)  # JSON-ready without default=str
    assert rep.passed is True
    assert rep.float_nodes == ["n0"]
    assert (rep.calibration_sha256, rep.calibration_images) == ("ab" * 32, 8)


def test_agreement_gate_in_the_report():
    from endoedge.calibration.report import AgreementResult, Criterion
    from endoedge.evaluation.agreement import AgreementCounter

    agree = AgreementCounter(0.5).result()
    result = AgreementResult("m.onnx", "q.onnx", "frames", True, ["frames/a.png"], [], agree,
                             Criterion.judge("box_agreement", 0.9, 0.95))
    rep = QuantReport("m.onnx", "q.onnx", "int8", agreement=result, wall_s=1.0)
    d = rep.to_dict()
    assert list(d) == ["model", "output", "precision", "wall_s", "agreement", "passed"]
    assert list(d["agreement"]) == ["reference_model", "candidate_model", "source", "held_out", "n_frames", "frames",
                                    "skipped", "agreement", "min_agreement", "passed", "reason"]
    assert (d["passed"], d["agreement"]["reason"]) == (False, "FAIL: box agreement 0.900 (min 0.95)")
    assert rep.failures == ["box agreement 0.900 (min 0.95)"]
    json.dumps(d)


def test_added_boxes_fail_a_copy_that_keeps_every_box():
    """Box agreement read the other way: new borderline boxes (false alarms on a cart's polyp-free
    frames) fail the gate even when every FP32 box is kept."""
    import numpy as np

    from endoedge.calibration.report import AgreementResult, Criterion, added_boxes_criterion
    from endoedge.evaluation.agreement import AgreementCounter
    from endoedge.evaluation.metrics import Prediction

    box = np.array([[10.0, 10.0, 50.0, 50.0]])
    new = np.array([[100.0, 100.0, 140.0, 140.0]])
    counter = AgreementCounter(0.5)
    for i in range(20):  # every frame: FP32's box kept; every 4th frame: one new box
        ref = Prediction(box, np.array([0.9]), np.array([0]))
        extra = i % 4 == 0
        cand = Prediction(np.concatenate([box, new]) if extra else box, np.array([0.9, 0.6][:1 + extra]),
                          np.zeros(1 + extra, np.int64))
        counter.add(ref, cand)
    agree = counter.result()
    assert agree.box_agreement == 1.0
    assert agree.added_share == 5 / 25
    crit = added_boxes_criterion(agree, 0.95)
    assert (crit.name, crit.value, crit.limit, crit.passed) == ("added_boxes", 0.2, 0.05, False)
    result = AgreementResult("m.onnx", "q.onnx", "frames", False, ["f"] * 20, [], agree,
                             Criterion.judge("box_agreement", agree.box_agreement, 0.95), added=crit)
    assert not result.passed
    assert result.reason == "FAIL: boxes the copy adds 0.200 (max 0.05)"
    assert result.to_dict()["added_boxes"] == {"name": "added_boxes", "value": 0.2, "limit": 0.05, "passed": False}
    silent = AgreementCounter(0.5).result()  # no box either side: nothing added
    assert added_boxes_criterion(silent, 0.95).passed


def test_shortfall_measures_how_far_a_failing_gate_is_in_points():
    from endoedge.calibration.report import Criterion, shortfall

    assert Criterion.judge("box_agreement", 0.97, 0.95).shortfall == 0.0
    assert Criterion.judge("box_agreement", 0.93, 0.95).shortfall == pytest.approx(2.0)  # a share: 100 points
    assert Criterion.judge("added_boxes", 0.08, 0.05).shortfall == pytest.approx(3.0)
    assert Criterion.judge("false_alarm_rise", 1.7, 0.5).shortfall == pytest.approx(1.2)  # already points
    assert Criterion.judge("map50_drop", None, 0.5).shortfall == float("inf")
    crit = [Criterion.judge("box_agreement", 0.93, 0.95), Criterion.judge("sensitivity_drop", 0.0, 1.0),
            Criterion.judge("false_alarm_rise", 1.7, 0.5)]
    assert shortfall(crit) == pytest.approx(3.2)


def test_score_shift_fails_a_copy_whose_scores_move_up():
    """Label-free: FP32's boxes all kept and nothing added, but every score 0.03 higher; on polyp-free
    video such a copy lifts candidates under the threshold into false alarms (benchmarks/RESULTS.md:
    every copy measured above +0.01 raised another centre's false alarms by >= 3.6 points)."""
    import numpy as np

    from endoedge.calibration.report import (
        MIN_SHIFT_PAIRS,
        AgreementResult,
        Criterion,
        score_shift_criterion,
    )
    from endoedge.evaluation.agreement import AgreementCounter
    from endoedge.evaluation.metrics import Prediction

    box = np.array([[10.0, 10.0, 50.0, 50.0]])

    def shifted(delta: float, frames: int) -> object:
        counter = AgreementCounter(0.5)
        for i in range(frames):
            s = 0.6 + 0.01 * (i % 10)
            counter.add(Prediction(box, np.array([s]), np.array([0])),
                        Prediction(box, np.array([s + delta]), np.array([0])))
        return counter.result()

    up = shifted(0.03, 30)
    assert (up.box_agreement, up.added_share, up.shift_pairs) == (1.0, 0.0, 30)
    crit = score_shift_criterion(up, 0.01)
    assert crit is not None
    assert (crit.name, crit.value, crit.limit, crit.passed) == ("score_shift", 0.03, 0.01, False)
    assert crit.describe() == "mean score shift +0.030 (max 0.01)"
    assert crit.shortfall == pytest.approx(2.0)  # a score difference counts 100 points, like a share
    result = AgreementResult("m.onnx", "q.onnx", "frames", False, ["f"] * 30, [], up,
                             Criterion.judge("box_agreement", 1.0, 0.95), shift=crit)
    assert result.reason == "FAIL: mean score shift +0.030 (max 0.01)"
    assert result.to_dict()["score_shift"] == {"name": "score_shift", "value": 0.03, "limit": 0.01, "passed": False}
    down = score_shift_criterion(shifted(-0.03, 30), 0.01)  # a downward shift is the box agreement's to judge
    assert down is not None
    assert down.passed
    assert score_shift_criterion(shifted(0.03, MIN_SHIFT_PAIRS - 1), 0.01) is None  # too few boxes: not judged
    assert score_shift_criterion(AgreementCounter(0.5).result(), 0.01) is None
