"""The operating point (curve, threshold choice, stored in checkpoints and ONNX) and the video
metrics (runs, toggles, frames to first detection) as pure functions.

Oracles: run counting from ``itertools.groupby``; shares recounted with plain comparisons;
IoUs from torchvision's ``box_iou``."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from endoedge.data.datasets import Sample
from endoedge.evaluation.metrics import Prediction
from endoedge.evaluation.operating import (
    Curve,
    choose_for_sensitivity,
    choose_threshold,
    format_curve,
    hit_scores,
)
from endoedge.evaluation.video import runs, video_metrics
from endoedge.evaluation.video_runner import find_sequences


def _groupby_runs(flags) -> list[tuple[int, int]]:
    out, i = [], 0
    for value, group in itertools.groupby(flags):
        n = len(list(group))
        if value:
            out.append((i, i + n))
        i += n
    return out


def test_runs_match_groupby():
    rng = np.random.default_rng(0)
    for _ in range(50):
        flags = rng.random(int(rng.integers(0, 40))) < rng.uniform(0.1, 0.9)
        assert runs(flags) == _groupby_runs(flags.tolist())


def _boxes(on) -> list[np.ndarray]:
    return [np.array([[10, 10, 50, 50]], np.float32) if x else np.zeros((0, 4), np.float32) for x in on]


def test_video_metrics_on_random_sequences():
    rng = np.random.default_rng(1)
    for _ in range(30):
        n = int(rng.integers(5, 200))
        truth = np.repeat(rng.random(8) < 0.5, n // 8 + 1)[:n]
        on = rng.random(n) < 0.3
        m = video_metrics(_boxes(on), truth.tolist(), fps=10)
        neg, pos = on[~truth], on[truth]
        assert m.n_negative == (~truth).sum()
        assert m.n_positive == truth.sum()
        if m.n_negative:
            assert m.false_alarm_share == pytest.approx(neg.mean())
        neg_runs = [r for a, b in _groupby_runs((~truth).tolist()) for r in _groupby_runs(on[a:b].tolist())]
        assert m.false_activations == len(neg_runs)
        assert m.short_false_activations == sum(1 for a, b in neg_runs if b - a < 6)
        if m.n_negative:
            assert m.false_activations_per_min == pytest.approx(len(neg_runs) / (m.n_negative / 10 / 60))
        pos_runs = _groupby_runs(truth.tolist())
        toggles = sum(int(np.sum(on[a + 1:b] != on[a:b - 1])) for a, b in pos_runs)
        assert m.toggles == toggles
        if m.n_positive:
            assert m.shown_sensitivity == pytest.approx(pos.mean())
            assert m.toggles_per_100 == pytest.approx(100 * toggles / truth.sum())
        assert m.frames_to_first == [int(np.argmax(on[a:b])) if on[a:b].any() else None for a, b in pos_runs]


def test_video_metrics_keep_sequences_apart():
    # two polyp-free sequences whose boxes touch at the seam: two activations, not one
    m = video_metrics([_boxes([0, 0, 1]), _boxes([1, 0, 0])], [[False] * 3, [False] * 3], fps=25)
    assert m.false_activations == 2
    assert m.false_alarm_share == pytest.approx(2 / 6)
    flicker = video_metrics(_boxes([0, 1, 0, 1, 1, 1]), [True] * 6)
    assert (flicker.toggles, flicker.frames_to_first, flicker.false_alarm_share) == (3, [1], None)
    with pytest.raises(ValueError, match="truth"):
        video_metrics(_boxes([1, 0]), [True])


def test_hit_scores_need_overlap_with_the_truth():
    torchvision_ops = pytest.importorskip("torchvision.ops")
    import torch

    gt = np.array([[100, 100, 200, 200]], np.float32)
    dets = np.array([[105, 100, 205, 200], [150, 150, 260, 260], [400, 400, 450, 450]], np.float32)
    scores = np.array([0.4, 0.9, 0.95], np.float32)
    ious = torchvision_ops.box_iou(torch.from_numpy(gt), torch.from_numpy(dets)).numpy()[0]
    expected = scores[ious >= 0.5].max()
    samples = [Sample("a", Path("a.jpg"), gt, np.zeros(1, np.int64)),
               Sample("b", Path("b.jpg"), gt, np.zeros(1, np.int64))]
    preds = [Prediction(dets, scores, np.zeros(3, np.int64)), Prediction.empty()]
    np.testing.assert_allclose(hit_scores(samples, preds), [expected, 0.0])


def test_chosen_threshold_is_the_lowest_that_meets_the_target():
    rng = np.random.default_rng(2)
    for _ in range(40):
        curve = Curve(hit=rng.beta(5, 1, 60), frame=rng.beta(5, 1, 60), negative=rng.beta(1, 4, int(rng.integers(20, 300))))
        target = float(rng.choice([0.0, 0.01, 0.02, 0.05, 0.3]))
        point = choose_threshold(curve, target, floor=0.0)
        fa = float((curve.negative >= point.score_threshold).mean())
        assert fa <= target + 1e-12
        assert point.false_alarm_share == pytest.approx(fa)
        assert point.sensitivity == pytest.approx((curve.hit >= point.score_threshold).mean())
        lower = point.score_threshold - 1e-4
        assert lower < 0 or (curve.negative >= lower).mean() > target or point.score_threshold == 0.0
    table = format_curve(curve, 0.25, point)
    assert "<- model's threshold" in table
    assert "<- chosen" in table


def test_false_alarm_bound_is_clopper_pearson():
    """The upper bound an operating point reports is scipy's Clopper-Pearson bound (the oracle)."""
    beta = pytest.importorskip("scipy.stats").beta
    from endoedge.errors import InputError
    from endoedge.evaluation.operating import binomial_upper, frames_to_show

    for k, n in [(0, 1), (0, 70), (1, 70), (3, 126), (17, 126), (50, 1000), (199, 200), (5, 5)]:
        ref = 1.0 if k >= n else float(beta.ppf(0.95, k + 1, n - k))
        assert binomial_upper(k, n) == pytest.approx(ref, abs=1e-9)
    need = frames_to_show(0.02)
    assert binomial_upper(0, need) <= 0.02 < binomial_upper(0, need - 1)
    with pytest.raises(InputError, match="0 <= k <= n"):
        binomial_upper(3, 2)


def test_operating_point_says_what_its_frames_can_vouch_for():
    rng = np.random.default_rng(4)
    few = Curve(hit=rng.beta(5, 1, 60), frame=rng.beta(5, 1, 60), negative=rng.beta(1, 4, 70))
    point = choose_threshold(few, 0.02)
    assert point.false_alarm_upper_95 is not None
    assert point.false_alarm_upper_95 > 0.02
    assert "70 frames cannot show false alarms <= 2%" in point.evidence()
    assert "149 polyp-free frames" in point.evidence()
    many = Curve(hit=few.hit, frame=few.frame, negative=np.zeros(400))
    ok = choose_threshold(many, 0.02)
    assert ok.false_alarm_upper_95 is not None
    assert ok.false_alarm_upper_95 < 0.02
    assert "cannot" not in ok.evidence()


def test_sensitivity_point_is_the_highest_threshold_that_keeps_the_target():
    from endoedge.errors import InputError

    rng = np.random.default_rng(3)
    for _ in range(40):
        n = int(rng.integers(5, 200))
        hit = rng.beta(5, 1, n) * (rng.random(n) > 0.05)  # some frames never get a box on the polyp
        curve = Curve(hit=hit, frame=hit, negative=rng.beta(1, 4, 50))
        target = float(rng.choice([0.5, 0.8, 0.9]))
        if (hit > 0).mean() < target:
            with pytest.raises(InputError, match="cannot be met"):
                choose_for_sensitivity(curve, target)
            continue
        point = choose_for_sensitivity(curve, target)
        assert (hit >= point.score_threshold).mean() >= target - 1e-12
        assert (hit >= point.score_threshold + 1e-4).mean() < target  # one step higher misses it
        assert point.sensitivity == pytest.approx((hit >= point.score_threshold).mean())
        assert point.false_alarm_share == pytest.approx((curve.negative >= point.score_threshold).mean())
        assert point.target_sensitivity == target
        assert point.target_false_alarm_share is None
    assert "<- chosen: sensitivity >= 90%" in format_curve(curve, 0.25, choose_for_sensitivity(curve, 0.9))
    with pytest.raises(InputError, match="within"):
        choose_for_sensitivity(curve, 0.0)


def test_operating_point_survives_checkpoint_and_onnx(tmp_path):
    torch = pytest.importorskip("torch")
    from endoedge.evaluation.operating import OperatingPoint, save_operating_point
    from endoedge.export import export_onnx
    from endoedge.models.checkpoint import build_model, load_checkpoint, save_checkpoint
    from endoedge.spec import ModelSpec, read_onnx_metadata

    src = save_checkpoint(tmp_path / "m.pt", build_model("ssdlite320_efficientnet_lite0", ("polyp",), (96, 96)),
                          half=True)
    point = OperatingPoint(0.6123, 0.02, 0.014, 0.91, 0.95, 70, 120, "test")
    out = save_operating_point(src, point, tmp_path / "op.pt")
    loaded = load_checkpoint(out)
    assert loaded.spec.score_threshold == pytest.approx(0.6123)
    assert dict(loaded.spec.operating_point) == point.to_dict()
    payload = torch.load(out, weights_only=True)
    assert all(v.dtype == torch.float16 for v in payload["state_dict"].values() if v.is_floating_point())
    spec = ModelSpec.from_metadata(read_onnx_metadata(export_onnx(loaded, tmp_path / "op.onnx").path))
    assert spec.score_threshold == pytest.approx(0.6123)
    assert dict(spec.operating_point) == point.to_dict()


def test_a_threshold_set_by_hand_says_so_and_what_it_measures():
    """benchmarks/ship_polyp.py's points: neither target, the reason in ``chosen_on``."""
    from endoedge.errors import InputError
    from endoedge.evaluation.operating import OperatingPoint, given_threshold

    curve = Curve(hit=np.array([0.9, 0.5, 0.1]), frame=np.array([0.9, 0.5, 0.2]), negative=np.zeros(70))
    point = OperatingPoint(0.3, None, 0.0, 2 / 3, 2 / 3, 70, 3, "kept from the previous file")
    assert point.describe() == "threshold given"
    assert "<- chosen: threshold given" in format_curve(curve, 0.3, point)
    assert "cannot" not in point.evidence()  # no target to fall short of; the bound is still reported
    assert "upper bound 4.2%" in point.evidence()
    given = given_threshold(curve, 0.3, "kept from the previous file.", chosen_on="three frames")
    assert given == OperatingPoint(0.3, None, 0.0, 2 / 3, 2 / 3, 70, 3,
                                   "kept from the previous file. Measured on three frames.")
    for bad, reason in ((0.0, "x"), (1.0, "x"), (0.3, "  ")):
        with pytest.raises(InputError):
            given_threshold(curve, bad, reason)


def test_the_shipped_detector_records_why_its_threshold_is_what_it_is():
    pytest.importorskip("torch")
    from endoedge.models.checkpoint import load_checkpoint
    from endoedge.models.pretrained import shipped_checkpoint

    spec = load_checkpoint(shipped_checkpoint()).spec
    point = dict(spec.operating_point or {})
    assert point["score_threshold"] == pytest.approx(spec.score_threshold)
    assert point["chosen_on"]
    assert point["n_negative"] > 0
    assert point["n_positive"] > 0


def test_find_sequences_orders_frames_naturally(tmp_path):
    for name in ("seq1_img10.jpg", "seq1_img2.jpg", "seq1_img1.jpg"):
        (tmp_path / "a" / "seq1").mkdir(parents=True, exist_ok=True)
        (tmp_path / "a" / "seq1" / name).write_bytes(b"")
    (tmp_path / "a" / "seq2").mkdir()
    (tmp_path / "a" / "seq2" / "f.png").write_bytes(b"")
    (tmp_path / "a" / "empty").mkdir()
    seqs = find_sequences(tmp_path / "a")
    assert [s.name for s in seqs] == ["seq1", "seq2"]
    assert [f.name for f in seqs[0].frames] == ["seq1_img1.jpg", "seq1_img2.jpg", "seq1_img10.jpg"]
