"""Per-layer INT8 sensitivity (bypassing Q/DQ pairs, ranking by the operating-point cost) and the greedy
float fallback."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.calibration.test_quantize import _run

pytest.importorskip("pycocotools")


def test_bypassing_every_quantized_node_gives_fp32_back(ssdlite, int8, calib):
    import onnx

    from endoedge.calibration.sensitivity import bypass_nodes, quantized_nodes

    q = onnx.load(str(int8.path))
    nodes = quantized_nodes(q)
    assert len(nodes) > 50
    back = bypass_nodes(q, {n for n, _ in nodes})
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in back.graph.node)
    feed = next(iter(calib))
    for r, g in zip(_run(ssdlite[2], feed), _run(back, feed), strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)


def test_rank_layers_and_greedy_fallback(ssdlite, int8, calib):
    import onnx

    from endoedge.calibration.sensitivity import (
        LayerCost,
        LayerRanking,
        greedy_fallback,
        quantized_nodes,
        rank_layers,
    )

    names = [n for n, _ in quantized_nodes(onnx.load(str(int8.path)))][:4]
    ranking = rank_layers(ssdlite[2], int8.path, calib, n_batches=2, nodes=names)
    assert {x.node for x in ranking.layers} == set(names)
    gains = [x.gain for x in ranking.layers]
    assert gains == sorted(gains, reverse=True)
    assert ranking.full_int8_error > 0
    # The ranking measures what the gate measures: the operating-point cost at the model's threshold.
    assert ranking.proxy.startswith("operating-point cost vs FP32 at score >= 0.5 ")
    assert ranking.n_images == 4
    for x in ranking.layers:
        assert x.error_if_float + x.gain == pytest.approx(ranking.full_int8_error)
    # Logic of the greedy loop with a labelled fake gate (passes once 2 layers are float).
    fake = LayerRanking("proxy", 0, 1.0, [LayerCost(n, "Conv", 0.0, 1.0 / (i + 1)) for i, n in enumerate("abcd")])
    seen = []

    def quantize(nodes):
        seen.append(list(nodes))
        return Path("x.onnx")

    result = greedy_fallback(fake, quantize, lambda p: SimpleNamespace(passed=len(seen[-1]) >= 2,
                                                                       drop_points=3.0 - len(seen[-1]),
                                                                       box_agreement=None,
                                                                       shortfall=max(0.0, 2.0 - len(seen[-1]))),
                             max_layers=3)
    assert result.passed
    assert result.float_nodes == ["a", "b"]
    assert len(result.steps) == 2
    assert not result.rewritten


def test_greedy_fallback_tries_only_layers_that_gain_and_reports_the_last_step():
    from endoedge.calibration.sensitivity import LayerCost, LayerRanking, greedy_fallback

    ranking = LayerRanking("proxy", 2, 1.0, [LayerCost("a", "Conv", 0.5, 0.5), LayerCost("b", "Add", 1.0, 0.0),
                                              LayerCost("c", "Conv", 1.2, -0.2)])
    result = greedy_fallback(ranking, lambda nodes: Path("m.onnx"),
                             lambda p: SimpleNamespace(passed=False, drop_points=4.0, box_agreement=0.9,
                                                       shortfall=8.0),
                             max_layers=5)
    assert not result.passed
    assert result.float_nodes == ["a"]
    assert result.path == Path("m.onnx")
    assert result.to_dict() == {"steps": [{"float_nodes": ["a"], "drop_points": 4.0, "passed": False,
                                           "box_agreement": 0.9, "kept": True, "shortfall": 8.0}],
                                "float_nodes": ["a"]}
    nothing = greedy_fallback(LayerRanking("proxy", 2, 1.0, []), lambda nodes: Path("m.onnx"),
                              lambda p: SimpleNamespace(passed=True, drop_points=0.0, box_agreement=None,
                                                        shortfall=0.0))
    assert (nothing.passed, nothing.steps, nothing.path, nothing.gate) == (False, [], None, None)
    assert nothing.to_dict() == {"steps": [], "float_nodes": []}


def _verdict(shortfall):
    return SimpleNamespace(passed=shortfall == 0.0, drop_points=None, box_agreement=1.0 - shortfall / 100,
                           shortfall=shortfall)


def test_greedy_fallback_keeps_only_layers_that_bring_the_copy_closer():
    """Re-quantized without it, a highly ranked layer can make the copy worse (new ranges and bias
    corrections downstream): it goes back to INT8 and the next is tried on top of what helped."""
    from endoedge.calibration.sensitivity import LayerCost, LayerRanking, greedy_fallback

    ranking = LayerRanking("proxy", 2, 1.0, [LayerCost(n, "Conv", 0.5, 0.5 - i / 10) for i, n in enumerate("abcde")])
    # shortfall (points) of each float set the gate sees; the first copy is 5 points short
    measured = {("a",): 3.0, ("a", "b"): 4.0, ("a", "c"): 1.0, ("a", "c", "d"): 0.0}
    written = []

    def quantize(nodes):
        written.append(tuple(nodes))
        return Path("q.onnx")

    result = greedy_fallback(ranking, quantize, lambda p: _verdict(measured[written[-1]]), max_layers=4,
                             first=_verdict(5.0))
    assert result.passed
    assert result.float_nodes == ["a", "c", "d"]
    assert [s.float_nodes for s in result.steps] == [["a"], ["a", "b"], ["a", "c"], ["a", "c", "d"]]
    assert [s.kept for s in result.steps] == [True, False, True, True]
    assert written == [("a",), ("a", "b"), ("a", "c"), ("a", "c", "d")]
    assert not result.rewritten


def test_greedy_fallback_leaves_the_closest_copy_when_none_passes():
    from endoedge.calibration.sensitivity import LayerCost, LayerRanking, greedy_fallback

    ranking = LayerRanking("proxy", 2, 1.0, [LayerCost(n, "Conv", 0.5, 0.1) for n in "abcd"])
    measured = {("a",): 2.0, ("a", "b"): 3.0, ("a", "c"): 2.5, ("a", "d"): 9.0}
    written = []

    def quantize(nodes):
        written.append(tuple(nodes))
        return Path("q.onnx")

    first = _verdict(4.0)
    result = greedy_fallback(ranking, quantize, lambda p: _verdict(measured[written[-1]]), max_layers=3,
                             first=first)
    assert not result.passed
    assert result.float_nodes == ["a"]
    assert result.gate.shortfall == 2.0
    assert result.rewritten
    assert written[-1] == ("a",)
    # no layer helps: the first copy is written again and is the result
    written.clear()
    none = greedy_fallback(ranking, quantize, lambda p: _verdict(6.0), max_layers=3, first=first)
    assert none.float_nodes == []
    assert none.gate is first
    assert none.rewritten
    assert written[-1] == ()
    assert len(none.steps) == 4
    assert not any(s.kept for s in none.steps)
    # tries are bounded separately from the layers kept
    written.clear()
    bounded = greedy_fallback(ranking, quantize, lambda p: _verdict(6.0), max_layers=3, max_tries=2, first=first)
    assert len(bounded.steps) == 2
    assert written == [("a",), ("b",), ()]


def test_ranking_json_keeps_the_report_layout():
    from endoedge.calibration.sensitivity import LayerCost, LayerRanking

    ranking = LayerRanking("p", 4, 0.25, [LayerCost(f"n{i}", "Conv", 0.2, 0.05) for i in range(3)])
    assert ranking.to_dict(top=2) == {"proxy": "p", "n_images": 4, "full_int8_error": 0.25, "layers": [
        {"node": "n0", "op_type": "Conv", "error_if_float": 0.2, "gain": 0.05},
        {"node": "n1", "op_type": "Conv", "error_if_float": 0.2, "gain": 0.05}]}
    assert len(ranking.to_dict()["layers"]) == 3
