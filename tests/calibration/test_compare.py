"""The gate's verdict, deltas and printed table (calibration/compare.py, operating_point.py): the
mAP part against the dict layout `endoedge eval --compare` produced before, the operating-point
criteria, their limits and the printed table."""

from __future__ import annotations

import json

import pytest

from endoedge.calibration.compare import DEFAULT_MAX_DROP, format_compare, gate_result, headline
from endoedge.calibration.operating_point import GateLimits, judge
from endoedge.calibration.report import (
    CompareResult,
    Criterion,
    GateMetrics,
    HeadError,
    OperatingMetrics,
    OperatingPoint,
    RawHeadErrors,
)
from endoedge.evaluation.agreement import Agreement

REF = {"coco": {"map50": 0.85, "map50_95": 0.6}, "prf": {"0.50": {"all": {"recall": 1.0, "precision": 0.5}}},
       "frame": {"sensitivity": 1.0}, "n_images": 10}
CAND = {"coco": {"map50": 0.8412, "map50_95": 0.59}, "prf": {"0.50": {"all": {"recall": 0.9}}},
        "frame": {"sensitivity": 0.95}, "n_images": 10}


def _old_gate_result(ref, cand, max_drop):
    """The dict the gate returned before (evaluation/compare.py), kept to pin the JSON values."""
    def head(report):
        prf = report["prf"].get("0.50", {}).get("all", {})
        return {"map50": report["coco"]["map50"], "map50_95": report["coco"]["map50_95"],
                "recall50": prf.get("recall"), "precision50": prf.get("precision"),
                "sensitivity": report["frame"]["sensitivity"]}

    r, c = head(ref), head(cand)
    delta = {k: None if r[k] is None or c[k] is None else round(100 * (c[k] - r[k]), 3) for k in r}
    drop = -(delta["map50"] or 0.0)
    return {"reference": r, "candidate": c, "delta_points": delta, "metric": "map50",
            "max_drop_points": max_drop, "drop_points": round(drop, 3), "passed": bool(drop <= max_drop + 1e-9)}


@pytest.mark.parametrize(("cand_map", "max_drop"), [(0.8412, 1.0), (0.83, 1.0), (0.84, 1.0), (0.9, 0.0),
                                                     (0.85, 0.0), (0.1, 100.0)])
def test_gate_result_serialises_to_the_old_dict(cand_map, max_drop):
    cand = {**CAND, "coco": {"map50": cand_map, "map50_95": 0.5}}
    got = gate_result(REF, cand, max_drop)
    want = _old_gate_result(REF, cand, max_drop)
    assert json.dumps(got.to_dict()) == json.dumps(want)  # same keys, order and values
    assert got.passed is want["passed"]


def test_gate_boundary_and_missing_metrics():
    g = gate_result(REF, {**CAND, "coco": {"map50": 0.84, "map50_95": 0.6}}, 1.0)
    assert (g.drop_points, g.passed) == (1.0, True)  # exactly the limit passes
    assert g.candidate.precision50 is None
    assert g.delta_points.precision50 is None
    assert g.delta_points.recall50 == -10.0
    assert headline(REF) == GateMetrics(0.85, 0.6, 1.0, 0.5, 1.0)
    assert DEFAULT_MAX_DROP == 1.0


def _result(gate, raw, split="s/val.txt", op=None) -> CompareResult:
    return CompareResult(reference_model="a.onnx", candidate_model="b.onnx", data="d/ann.json", split=split,
                         n_images=10, gate=gate, raw_heads=raw, reference=REF, candidate=CAND, operating_point=op)


def _op(n_negative=0, false_alarm=(None, None)) -> OperatingPoint:
    agree = Agreement(threshold=0.5, iou_threshold=0.5, n_frames=10, reference_boxes=120, candidate_boxes=123,
                      kept=117, box_agreement=117 / 120, extra_share=6 / 123, frames_both=9, frames_neither=0,
                      frames_reference_only=1, frames_candidate_only=0, frame_agreement=0.9, shift_pairs=119,
                      mean_score_shift=-0.0123)
    rf, cf = false_alarm
    df = None if rf is None or cf is None else round(100 * (cf - rf), 3)
    return OperatingPoint(0.5, 10, n_negative, OperatingMetrics(1.0, 0.5, 1.0, rf), OperatingMetrics(0.95, None, 0.9, cf),
                          OperatingMetrics(-5.0, None, -10.0, df), agree)


def test_format_compare_prints_the_operating_point_first():
    raw = RawHeadErrors({"boxes": HeadError(0.5, 0.01234, 0.02, 0.00123, 0.999876)}, n_images=10)
    op = _op()
    gate = judge(op, gate_result(REF, CAND, 1.0), GateLimits())
    text = format_compare(_result(gate, raw, op=op))
    assert text == (
        "accuracy gate: b.onnx vs reference a.onnx\n"
        "data d/ann.json (split val.txt), 10 images\n"
        "at the operating point (score >= 0.5; the reference's threshold):\n"
        "  metric                 reference  candidate  delta (points)\n"
        "  frame sensitivity          1.000      0.950           -5.00\n"
        "  precision @IoU 0.5         0.500        n/a             n/a\n"
        "  recall @IoU 0.5            1.000      0.900          -10.00\n"
        "  false-alarm share            n/a        n/a             n/a\n"
        "  (false-alarm share: no polyp-free frames; pass --negatives DIR)\n"
        "  box agreement 0.975: 117 of 120 reference boxes kept (same class, IoU >= 0.5); "
        "candidate extra boxes 4.9% (6 of 123)\n"
        "  frame agreement 0.900: alarm in both 9, neither 0, reference only 1, candidate only 0 (10 frames)\n"
        "  mean score shift of matched boxes -0.0123 (119 boxes)\n"
        "secondary (all thresholds): COCO mAP@0.5 0.850 -> 0.841 (-0.88 points), "
        "mAP@0.5:0.95 0.600 -> 0.590 (-1.00 points)\n"
        "raw heads on the same pre-processed inputs (10 images):\n"
        "  output             max abs err  mean abs err      nmse    cosine\n"
        "  boxes                      0.5       0.01234   0.00123   0.99988\n"
        "gate: FAIL: frame sensitivity drop +5.00 points (max 1)")
    loose = judge(op, gate_result(REF, CAND, 1.0), GateLimits(max_sensitivity_drop=5.0))
    assert format_compare(_result(loose, raw, op=op)).splitlines()[-1] == (
        "gate: PASS: box agreement 0.975 (min 0.95), boxes the copy adds 0.049 (max 0.05), "
        "mean score shift -0.012 (max 0.01), frame sensitivity drop +5.00 points (max 5), mAP@0.5 drop +0.88 points (max 1)")
    failed = gate_result(REF, {**CAND, "coco": {"map50": 0.83, "map50_95": 0.5}}, 1.0)
    text = format_compare(_result(failed, RawHeadErrors(skipped="raw-head errors are measured between two ONNX files"),
                                  split=None))
    assert text.splitlines()[1] == "data d/ann.json, 10 images"
    assert text.splitlines()[-2:] == ["raw heads: raw-head errors are measured between two ONNX files",
                                      "gate: FAIL: mAP@0.5 drop +2.00 points (max 1)"]


def test_every_criterion_and_the_false_alarm_rise():
    op = _op(n_negative=40, false_alarm=(0.10, 0.12))
    gate = judge(op, gate_result(REF, CAND, 1.0), GateLimits(min_agreement=0.98, max_sensitivity_drop=5.0))
    assert [c.name for c in gate.criteria] == ["box_agreement", "added_boxes", "score_shift", "sensitivity_drop",
                                               "false_alarm_rise", "map50_drop"]
    assert [c.passed for c in gate.criteria] == [False, False, True, True, False, True]
    assert not gate.passed
    assert gate.failures == ["box agreement 0.975 (min 0.98)", "boxes the copy adds 0.049 (max 0.02)",
                             "false-alarm rise +2.00 points (max 0.5)"]
    assert gate.reason == ("FAIL: box agreement 0.975 (min 0.98); boxes the copy adds 0.049 (max 0.02); "
                           "false-alarm rise +2.00 points (max 0.5)")
    assert gate.box_agreement == 0.975
    d = gate.to_dict()
    assert list(d) == ["reference", "candidate", "delta_points", "metric", "max_drop_points", "drop_points",
                       "passed", "criteria", "reason"]
    assert d["criteria"][4] == {"name": "false_alarm_rise", "value": 2.0, "limit": 0.5, "passed": False}
    text = format_compare(_result(gate, RawHeadErrors(skipped="x"), op=op))
    assert "  false-alarm share          0.100      0.120           +2.00" in text.splitlines()
    assert "  (false-alarm share on 40 polyp-free frames)" in text.splitlines()
    assert text.splitlines()[1] == "data d/ann.json (split val.txt), 10 images (+40 polyp-free frames)"
    nothing = Criterion.judge("box_agreement", None, 0.95)  # not measurable: fails
    assert not nothing.passed
    assert nothing.describe() == "box agreement n/a (min 0.95)"


@pytest.mark.parametrize(("limits", "flag"), [
    (GateLimits(min_agreement=1.5), "--min-agreement"), (GateLimits(min_agreement=float("nan")), "--min-agreement"),
    (GateLimits(max_sensitivity_drop=-1), "--max-sensitivity-drop"),
    (GateLimits(max_false_alarm_rise=float("nan")), "--max-false-alarm-rise"), (GateLimits(max_drop=-0.1), "--max-drop"),
    (GateLimits(max_score_shift=-0.01), "--max-score-shift"), (GateLimits(max_score_shift=float("nan")), "--max-score-shift")])
def test_limits_out_of_range_name_their_flag(limits, flag):
    from endoedge.errors import InputError

    with pytest.raises(InputError, match=flag):
        limits.check()
    GateLimits().check()


def test_compare_result_serialises_to_the_old_layout_plus_new_keys():
    raw = RawHeadErrors({"boxes": HeadError(0.5, 0.1, 0.2, 0.3, 0.9)}, n_images=4)
    res = _result(gate_result(REF, CAND, 1.0), raw)
    d = res.to_dict()
    assert list(d) == ["reference_model", "candidate_model", "data", "split", "n_images", "gate", "raw_heads",
                       "reference", "candidate", "passed"]
    assert d["gate"] == _old_gate_result(REF, CAND, 1.0)
    assert d["raw_heads"] == {"n_images": 4, "outputs": {"boxes": {"max_abs_err": 0.5, "mean_abs_err": 0.1,
                                                                    "rmse": 0.2, "nmse": 0.3, "cosine": 0.9}}}
    assert d["reference"] is REF
    assert res.passed
    assert RawHeadErrors(skipped="why").to_dict() == {"skipped": "why"}
    op = _op()
    full = _result(judge(op, gate_result(REF, CAND, 1.0), GateLimits(max_sensitivity_drop=5)), raw, op=op).to_dict()
    assert list(full)[-2:] == ["operating_point", "passed"]
    assert {k: v for k, v in full["gate"].items() if k not in ("criteria", "reason")} == _old_gate_result(REF, CAND, 1.0)
    assert list(full["operating_point"]) == ["threshold", "n_images", "n_negative_images", "reference", "candidate",
                                             "delta_points", "agreement"]
    assert full["operating_point"]["agreement"]["box_agreement"] == 0.975
    json.dumps(full)
