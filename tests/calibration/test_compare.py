"""The accuracy gate's verdict, deltas and printed table (calibration/compare.py), against the
dict layout and text `endoedge eval --compare` produced before it returned dataclasses."""

from __future__ import annotations

import json

import pytest

from endoedge.calibration.compare import DEFAULT_MAX_DROP, format_compare, gate_result, headline
from endoedge.calibration.report import CompareResult, GateMetrics, HeadError, RawHeadErrors

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


def _result(gate, raw, split="s/val.txt") -> CompareResult:
    return CompareResult(reference_model="a.onnx", candidate_model="b.onnx", data="d/ann.json", split=split,
                         n_images=10, gate=gate, raw_heads=raw, reference=REF, candidate=CAND)


def test_format_compare_prints_the_same_table():
    raw = RawHeadErrors({"boxes": HeadError(0.5, 0.01234, 0.02, 0.00123, 0.999876)}, n_images=10)
    text = format_compare(_result(gate_result(REF, CAND, 1.0), raw))
    assert text == (
        "accuracy gate: b.onnx vs reference a.onnx\n"
        "data d/ann.json (split val.txt), 10 images\n"
        "  metric                 reference  candidate  delta (points)\n"
        "  COCO mAP@0.5               0.850      0.841           -0.88\n"
        "  COCO mAP@0.5:0.95          0.600      0.590           -1.00\n"
        "  recall @IoU 0.5            1.000      0.900          -10.00\n"
        "  precision @IoU 0.5         0.500        n/a             n/a\n"
        "  frame sensitivity          1.000      0.950           -5.00\n"
        "raw heads on the same pre-processed inputs (10 images):\n"
        "  output             max abs err  mean abs err      nmse    cosine\n"
        "  boxes                      0.5       0.01234   0.00123   0.99988\n"
        "gate: mAP@0.5 drop +0.88 points (limit 1): PASS")
    failed = gate_result(REF, {**CAND, "coco": {"map50": 0.83, "map50_95": 0.5}}, 1.0)
    text = format_compare(_result(failed, RawHeadErrors(skipped="raw-head errors are measured between two ONNX files"),
                                  split=None))
    assert text.splitlines()[1] == "data d/ann.json, 10 images"
    assert text.splitlines()[-2:] == ["raw heads: raw-head errors are measured between two ONNX files",
                                      "gate: mAP@0.5 drop +2.00 points (limit 1): FAIL"]


def test_compare_result_serialises_to_the_old_layout():
    raw = RawHeadErrors({"boxes": HeadError(0.5, 0.1, 0.2, 0.3, 0.9)}, n_images=4)
    res = _result(gate_result(REF, CAND, 1.0), raw)
    d = res.to_dict()
    assert list(d) == ["reference_model", "candidate_model", "data", "split", "n_images", "gate", "raw_heads",
                       "reference", "candidate"]
    assert d["gate"] == _old_gate_result(REF, CAND, 1.0)
    assert d["raw_heads"] == {"n_images": 4, "outputs": {"boxes": {"max_abs_err": 0.5, "mean_abs_err": 0.1,
                                                                    "rmse": 0.2, "nmse": 0.3, "cosine": 0.9}}}
    assert d["reference"] is REF
    assert res.passed
    assert RawHeadErrors(skipped="why").to_dict() == {"skipped": "why"}
