"""BoxStabilizer on synthetic detection sequences: onset, hold, smoothing, ids, flicker."""

from __future__ import annotations

import numpy as np
import pytest

from endoedge.errors import InputError
from endoedge.postprocess.temporal import BoxStabilizer, box_iou, greedy_match
from endoedge.spec.stabilize import StabilizeConfig

EMPTY = (np.empty((0, 4)), np.empty(0), np.empty(0, np.int64))


def _one(box, score=0.8, cls=0):
    return np.asarray([box], float), np.asarray([score]), np.asarray([cls])


def _feed(stab, present, box=(100, 100, 180, 170)):
    """Shown box count per frame for a single object detected where ``present`` is true."""
    return [len(stab.update(*(_one(box) if p else EMPTY))) for p in present]


def _toggles(shown):
    """Changes of 'a box is on screen' between consecutive frames."""
    on = np.asarray(shown) > 0
    return int(np.count_nonzero(on[1:] != on[:-1]))


def test_onset_withholds_short_blips_and_shows_after_k_hits():
    stab = BoxStabilizer(StabilizeConfig(onset=3, hold=0))
    assert _feed(stab, [1, 0, 1, 1, 0, 1, 1, 1, 1]) == [0, 0, 0, 0, 0, 0, 0, 1, 1]


def test_onset_one_shows_at_once():
    stab = BoxStabilizer(StabilizeConfig(onset=1, hold=0))
    assert _feed(stab, [1, 0, 1]) == [1, 0, 1]


def test_hold_keeps_a_shown_box_through_m_misses_then_drops_it():
    stab = BoxStabilizer(StabilizeConfig(onset=2, hold=3))
    shown = _feed(stab, [1, 1, 0, 0, 0, 0, 0])
    assert shown == [0, 1, 1, 1, 1, 0, 0]
    stab.reset()
    out = [stab.update(*_one((0, 0, 10, 10))) for _ in range(2)] + [stab.update(*EMPTY)]
    assert out[1].held.tolist() == [False]
    assert out[2].held.tolist() == [True]
    np.testing.assert_array_equal(out[2].boxes, out[1].boxes)  # held at its last position


def test_a_held_track_that_is_detected_again_keeps_its_id():
    stab = BoxStabilizer(StabilizeConfig(onset=2, hold=2))
    outs = [stab.update(*(_one((10, 10, 50, 50)) if p else EMPTY)) for p in [1, 1, 0, 0, 1, 1]]
    ids = [o.track_ids.tolist() for o in outs]
    assert ids == [[], [1], [1], [1], [1], [1]]
    assert [o.held.tolist() for o in outs[2:]] == [[True], [True], [False], [False]]


def test_smoothing_is_an_exponential_moving_average_of_the_corners_and_score():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    n, alpha = 20, 0.4
    boxes = np.array([100, 80, 200, 170], float) + np.cumsum(rng.normal(0, 2, (n, 4)), axis=0)
    scores = rng.uniform(0.3, 0.9, n)
    stab = BoxStabilizer(StabilizeConfig(onset=1, hold=0, smooth=alpha, iou=0.1))
    got = np.array([stab.update(boxes[i:i + 1], scores[i:i + 1], [0]).boxes[0] for i in range(n)])
    expect = pd.DataFrame(boxes).ewm(alpha=alpha, adjust=False).mean().to_numpy()
    np.testing.assert_allclose(got, expect, rtol=1e-5)
    stab.reset()
    got_s = [stab.update(boxes[i:i + 1], scores[i:i + 1], [0]).scores[0] for i in range(n)]
    np.testing.assert_allclose(got_s, pd.Series(scores).ewm(alpha=alpha, adjust=False).mean(), rtol=1e-5)


def test_smooth_one_passes_boxes_through():
    stab = BoxStabilizer(StabilizeConfig(onset=1, smooth=1.0))
    for box in ([10, 10, 50, 50], [14, 12, 55, 52], [20, 15, 60, 55]):
        np.testing.assert_array_equal(stab.update(*_one(box)).boxes[0], np.float32(box))


def test_two_moving_objects_keep_distinct_stable_ids():
    rng = np.random.default_rng(1)
    stab = BoxStabilizer(StabilizeConfig(onset=2, hold=2))
    seen: list[dict[int, int]] = []
    for t in range(60):
        a = np.array([50 + 2 * t, 60, 150 + 2 * t, 160], float) + rng.normal(0, 2, 4)
        b = np.array([400 - t, 300, 480 - t, 380], float) + rng.normal(0, 2, 4)
        dets = np.stack([a, b])[:: 1 if t % 2 else -1]  # detector order changes every frame
        shown = stab.update(dets, np.array([0.7, 0.6]), np.array([0, 0]))
        # which object each shown box is: left one (centre x < 300) is "a"
        seen.append({int(tid): int((box[0] + box[2]) / 2 > 300)
                     for tid, box in zip(shown.track_ids, shown.boxes, strict=True)})
    ids = {tid: obj for frame in seen[1:] for tid, obj in frame.items()}
    assert len(ids) == 2  # one id per object over the whole sequence
    assert sorted(ids.values()) == [0, 1]
    assert all(len(frame) == 2 for frame in seen[1:])


def test_classes_never_match_each_other():
    stab = BoxStabilizer(StabilizeConfig(onset=2, hold=0))
    box = (10, 10, 50, 50)
    stab.update(*_one(box, cls=0))
    out = stab.update(*_one(box, cls=1))  # same place, other class: a new track in onset
    assert len(out) == 0
    assert stab.tracks == 1


def test_reset_forgets_tracks_and_never_reuses_ids():
    stab = BoxStabilizer(StabilizeConfig(onset=2, hold=5))
    for _ in range(3):
        last = stab.update(*_one((10, 10, 50, 50)))
    assert last.track_ids.tolist() == [1]
    stab.reset()
    assert stab.tracks == 0
    assert len(stab.update(*EMPTY)) == 0  # the held box is gone after a cut
    outs = [stab.update(*_one((10, 10, 50, 50))) for _ in range(2)]
    assert len(outs[0]) == 0  # onset again
    assert outs[1].track_ids.tolist() == [2]


def test_flicker_and_false_alarms_go_down_and_polyp_presence_does_not():
    """A polyp seen with 15% random drop-outs, then polyp-free frames with 1-2 frame blips."""
    rng = np.random.default_rng(7)
    polyp = rng.random(400) > 0.15
    negative = np.zeros(600, bool)
    for start in 15 * rng.choice(40, 30, replace=False):  # blips apart from each other
        negative[start:start + rng.integers(1, 3)] = True
    present = np.concatenate([polyp, np.zeros(20, bool), negative])
    raw = present.astype(int)
    stab = BoxStabilizer(StabilizeConfig())  # the defaults
    shown = np.array(_feed(stab, present))
    raw_toggles, shown_toggles = _toggles(raw) / 10.2, _toggles(shown) / 10.2  # per 100 frames
    assert shown_toggles < raw_toggles / 5
    assert (shown[:400] > 0).mean() >= (raw[:400] > 0).mean()  # presence on the polyp
    assert (shown[420:] > 0).mean() == 0.0  # every blip is shorter than the onset


def test_box_iou_matches_torchvision():
    torch = pytest.importorskip("torch")
    from torchvision.ops import box_iou as tv_box_iou

    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 100, (7, 2))
    a = np.concatenate([xy, xy + rng.uniform(1, 50, (7, 2))], axis=1)
    xy = rng.uniform(0, 100, (5, 2))
    b = np.concatenate([xy, xy + rng.uniform(1, 50, (5, 2))], axis=1)
    np.testing.assert_allclose(box_iou(a, b), tv_box_iou(torch.tensor(a), torch.tensor(b)).numpy(), rtol=1e-9)
    assert box_iou(a, np.empty((0, 4))).shape == (7, 0)


def test_greedy_match_takes_the_best_pairs_above_threshold():
    aff = np.array([[0.9, 0.8, 0.0], [0.85, 0.1, 0.0], [0.0, 0.0, 0.2]])
    rows, cols = greedy_match(aff, 0.3)
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 0), (1, 1)] or \
        sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 0)]
    assert (0, 0) in zip(rows.tolist(), cols.tolist(), strict=True)
    assert 2 not in rows.tolist()  # 0.2 < threshold
    assert greedy_match(np.empty((0, 3)), 0.3)[0].size == 0


@pytest.mark.parametrize(("values", "message"), [
    ({"onset": 0}, "onset"), ({"hold": -1}, "hold"), ({"smooth": 0}, "smooth"), ({"iou": 1.5}, "iou"),
    ({"onset": 2.5}, "whole number"), ({"bogus": 1}, "unknown"),
])
def test_config_rejects_bad_values(values, message):
    with pytest.raises(InputError, match=message):
        StabilizeConfig.from_dict(values)


def test_config_parse_and_round_trip():
    cfg = StabilizeConfig.parse("onset=4, hold=8,smooth=0.6")
    assert (cfg.onset, cfg.hold, cfg.smooth, cfg.iou) == (4, 8, 0.6, 0.3)
    assert StabilizeConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.replace(hold=None, onset=2).onset == 2
    with pytest.raises(InputError, match="is not name=value"):
        StabilizeConfig.parse("onset")
