"""Box agreement at the operating point (evaluation/agreement.py): the vectorised greedy matching
against torchvision's box_iou and a plain greedy loop, and the counts the gate reads."""

from __future__ import annotations

import numpy as np
import pytest

from endoedge.evaluation.agreement import Agreement, AgreementCounter, agreement, match_boxes
from endoedge.evaluation.metrics import Prediction


def _oracle(ref_boxes, ref_labels, cand_boxes, cand_labels, thr):
    """Greedy by IoU, one pair at a time: torchvision's IoU, a Python loop over sorted pairs."""
    torch = pytest.importorskip("torch")
    from torchvision.ops import box_iou

    iou = box_iou(torch.as_tensor(ref_boxes, dtype=torch.float64), torch.as_tensor(cand_boxes, dtype=torch.float64))
    iou = iou.numpy()
    pairs = sorted(((iou[i, j], i, j) for i in range(len(ref_boxes)) for j in range(len(cand_boxes))
                    if ref_labels[i] == cand_labels[j] and iou[i, j] >= thr), key=lambda x: (-x[0], x[1], x[2]))
    used_r, used_c, out = set(), set(), set()
    for _, i, j in pairs:
        if i not in used_r and j not in used_c:
            used_r.add(i)
            used_c.add(j)
            out.add((i, j))
    return out


def _random_frame(rng, n, m):
    """``n`` reference boxes and ``m`` candidate boxes, most candidates jittered copies."""
    xy = rng.uniform(0, 500, (n, 2))
    wh = rng.uniform(10, 120, (n, 2))
    ref = np.c_[xy, xy + wh].astype(np.float32)
    ref_labels = rng.integers(0, 2, n)
    src = rng.integers(0, max(n, 1), m)
    jitter = rng.normal(0, 12, (m, 4))
    cand = (ref[src] + jitter if n else rng.uniform(0, 500, (m, 4))).astype(np.float32)
    cand[:, 2:] = np.maximum(cand[:, 2:], cand[:, :2] + 1)
    cand_labels = np.where(rng.random(m) < 0.9, ref_labels[src] if n else 0, 1 - (ref_labels[src] if n else 0))
    return ref, ref_labels, cand, cand_labels


def test_matching_equals_greedy_over_torchvision_iou():
    rng = np.random.default_rng(14)
    total = 0
    for _ in range(300):
        n, m = int(rng.integers(0, 25)), int(rng.integers(0, 25))
        ref, rl, cand, cl = _random_frame(rng, n, m)
        for thr in (0.3, 0.5, 0.7):
            ri, ci = match_boxes(ref, rl, cand, cl, thr)
            got = set(zip(ri.tolist(), ci.tolist(), strict=True))
            assert len(got) == len(ri)  # one pair per index
            assert len(set(ri.tolist())) == len(ri)
            assert len(set(ci.tolist())) == len(ci)
            if n and m:
                assert got == _oracle(ref, rl, cand, cl, thr)
            else:
                assert not got
            total += len(got)
    assert total > 2000  # the random frames do produce matches


def test_matching_ties_and_identical_sets():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    labels = np.array([0, 0, 1])
    ri, ci = match_boxes(boxes, labels, boxes, labels)
    assert sorted(zip(ri.tolist(), ci.tolist(), strict=True)) == [(0, 0), (1, 1), (2, 2)]
    ri, ci = match_boxes(boxes, labels, boxes, 1 - labels)  # other classes never match
    assert len(ri) == len(ci) == 0


def _pred(boxes, scores, labels):
    return Prediction(np.asarray(boxes, np.float32), np.asarray(scores, np.float32), np.asarray(labels, np.int64))


def test_same_detections_agree_fully_and_shifted_scores_lose_boxes():
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(20):
        ref, rl, _, _ = _random_frame(rng, int(rng.integers(0, 8)), 0)
        frames.append(_pred(ref, rng.uniform(0.05, 1.0, len(ref)), rl))
    same = agreement(frames, frames, 0.5)
    assert isinstance(same, Agreement)
    assert same.box_agreement == 1.0
    assert same.extra_share in (0.0, None)
    assert same.frame_agreement == 1.0
    assert same.mean_score_shift == 0.0
    assert same.cost == 0.0
    lower = [_pred(p.boxes, p.scores - 0.2, p.labels) for p in frames]
    shifted = agreement(frames, lower, 0.5)
    n_ref = sum(int((p.scores >= 0.5).sum()) for p in frames)
    n_kept = sum(int((p.scores >= 0.7).sum()) for p in frames)
    assert (shifted.reference_boxes, shifted.kept, shifted.extra) == (n_ref, n_kept, 0)
    assert shifted.box_agreement == pytest.approx(n_kept / n_ref)
    assert shifted.mean_score_shift == pytest.approx(-0.2, abs=1e-6)  # boxes below 0.5 still count
    assert shifted.shift_pairs == n_ref
    assert shifted.cost > same.cost


def test_frame_alarm_counts_and_empty_input():
    ref = [_pred([[0, 0, 10, 10]], [0.9], [0]), _pred(np.zeros((0, 4)), [], []), Prediction.empty(),
           _pred([[0, 0, 10, 10]], [0.9], [0])]
    cand = [_pred([[0, 0, 10, 10]], [0.8], [0]), _pred([[5, 5, 9, 9]], [0.6], [0]), Prediction.empty(),
            _pred([[0, 0, 10, 10]], [0.3], [0])]
    a = agreement(ref, cand, 0.5)
    assert (a.frames_both, a.frames_candidate_only, a.frames_neither, a.frames_reference_only) == (1, 1, 1, 1)
    assert a.frame_agreement == 0.5
    assert (a.reference_boxes, a.candidate_boxes, a.kept, a.extra) == (2, 2, 1, 1)
    assert (a.box_agreement, a.extra_share) == (0.5, 0.5)
    assert a.mean_score_shift == pytest.approx((-0.1 - 0.6) / 2)
    d = a.to_dict()
    assert list(d)[:3] == ["threshold", "iou_threshold", "n_frames"]
    assert d["box_agreement"] == 0.5
    empty = AgreementCounter(0.5).result()
    assert (empty.box_agreement, empty.extra_share, empty.frame_agreement, empty.mean_score_shift) == (None,) * 4
    assert empty.cost == 0.0
