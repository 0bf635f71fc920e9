"""Near-duplicate grouping and grouped splits (endoedge.data.neardup).

Oracles: frames built as exact/near copies of real colonoscopy frames (the bundled HoloHub
samples) must share a group; independent frames must not; every group lands on one side.
"""

from __future__ import annotations

import cv2
import numpy as np

from endoedge.data.neardup import group_frames, grouped_split, thumbnails


def test_copies_group_and_distinct_frames_do_not(sample_paths, tmp_path):
    """Each region: itself, a noisy re-encoded copy, and the region turned by 180 degrees."""
    paths = []
    rng = np.random.default_rng(0)
    full = cv2.imread(str(sample_paths[0]))  # four different regions of one frame (the samples are
    for i, (y, x) in enumerate(((60, 420), (60, 1100), (560, 420), (560, 1100))):  # consecutive: alike)
        img = cv2.resize(full[y:y + 460, x:x + 460], (320, 320), interpolation=cv2.INTER_AREA)
        noisy = np.clip(img.astype(np.int16) + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)
        for j, frame in enumerate((img, noisy, cv2.rotate(img, cv2.ROTATE_180))):
            paths.append(tmp_path / f"f{i}_{j}.jpg")
            cv2.imwrite(str(paths[-1]), frame, [cv2.IMWRITE_JPEG_QUALITY, 80 + 5 * j])
    groups = group_frames(thumbnails(paths), max_mad=10.0)
    for i in range(4):
        assert groups[3 * i] == groups[3 * i + 1], "a re-encoded, noisy copy must join its original"
    originals = {int(groups[3 * i]) for i in range(4)}
    assert len(originals) == 4, "different frames must stay apart"
    # sequence blocks join frames that look different
    seq = [("a", 1)] * 3 + [("a", 2)] * 3 + [("b", 1)] * 3 + [("b", 30)] * 3
    blocks = group_frames(thumbnails(paths), max_mad=0.0, sequence=seq, block=10)
    assert len(set(blocks[:6].tolist())) == 1
    assert blocks[6] != blocks[9]


def test_grouped_split_keeps_groups_whole_and_stratifies():
    groups = np.repeat(np.arange(40), 5)  # 40 groups of 5 frames
    strata = [g % 2 == 0 for g in groups.tolist()]
    split = grouped_split(groups, 0.25, seed=3, strata=strata)
    val = set(split.val)
    for g in range(40):
        members = set(np.nonzero(groups == g)[0].tolist())
        assert members <= val or not members & val
    for s in (True, False):
        n = sum(1 for i in split.val if strata[i] == s)
        assert 25 <= n <= 30  # 25 % of 100 frames, whole groups of 5
    assert sorted(split.train + split.val) == list(range(200))
