"""Near-duplicate grouping of frames, for splits whose validation part is honest.

Capsule and endoscopy datasets hold runs of almost identical frames (the capsule rests, the
video is sampled densely, an image is exported twice). A random split puts one copy in train and
its twin in validation and the validation score measures memory. :func:`group_frames` joins
frames into groups that must stay on one side: (1) frames whose colour thumbnails differ by at
most ``max_mad`` grey levels on average, and (2) optional sequence blocks (``block`` consecutive
frame numbers of one sequence, from a caller's key); :func:`grouped_split` then draws whole
groups for validation, per stratum.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from endoedge.errors import InputError

THUMB = 24


def thumbnails(paths: Sequence[str | Path], size: int = THUMB) -> np.ndarray:
    """``N x (size*size*3)`` float32 BGR thumbnails (INTER_AREA of a 1/8-scale decode), 0..255."""
    import cv2

    out = np.empty((len(paths), size * size * 3), np.float32)
    for i, p in enumerate(paths):
        img = cv2.imread(str(p), cv2.IMREAD_REDUCED_COLOR_8)
        if img is None:
            raise InputError(f"cannot read image {p}")
        out[i] = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA).reshape(-1)
    return out


def mad_matrix(thumbs: np.ndarray) -> np.ndarray:
    """``N x N`` mean absolute difference (grey levels) between every pair of thumbnails."""
    n = len(thumbs)
    out = np.empty((n, n), np.float32)
    for i in range(n):
        out[i] = np.abs(thumbs - thumbs[i]).mean(1)
    return out


class _Union:
    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)

    def find(self, a: int) -> int:
        p = self.parent
        while p[a] != a:
            p[a] = p[p[a]]
            a = int(p[a])
        return a

    def join(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


def group_frames(
    thumbs: np.ndarray,
    *,
    max_mad: float = 10.0,
    sequence: Sequence[tuple[Hashable, int]] | None = None,
    block: int = 0,
) -> np.ndarray:
    """Group ids (``N`` int, 0-based, numbered by first appearance).

    Args:
        thumbs: from :func:`thumbnails`.
        max_mad: frames whose thumbnails differ by at most this many grey levels (mean absolute
            difference, 0..255) are one group, transitively.
        sequence: per frame ``(sequence id, frame number)``; with ``block > 0`` the frames of a
            sequence with the same ``(number - 1) // block`` are one group.
    """
    n = len(thumbs)
    uf = _Union(n)
    ii, jj = np.nonzero(np.triu(mad_matrix(thumbs) <= max_mad, 1))
    for a, b in zip(ii.tolist(), jj.tolist(), strict=True):
        uf.join(a, b)
    if sequence is not None and block > 0:
        if len(sequence) != n:
            raise InputError(f"{len(sequence)} sequence keys for {n} frames")
        first: dict[tuple[Hashable, int], int] = {}
        for i, (seq, num) in enumerate(sequence):
            key = (seq, (int(num) - 1) // block)
            if key in first:
                uf.join(i, first[key])
            else:
                first[key] = i
    roots = [uf.find(i) for i in range(n)]
    ids: dict[int, int] = {}
    return np.array([ids.setdefault(r, len(ids)) for r in roots], np.int64)


@dataclass(frozen=True)
class GroupedSplit:
    """Indices of train and val frames and the group count of each side."""

    train: list[int]
    val: list[int]
    train_groups: int
    val_groups: int


def grouped_split(
    groups: np.ndarray,
    val_fraction: float,
    seed: int,
    *,
    strata: Sequence[Hashable] | None = None,
    max_group_fraction: float = 0.05,
    stratum_of_group: Callable[[list[int]], Hashable] | None = None,
) -> GroupedSplit:
    """Draw whole groups (seeded order) into val until each stratum holds ``val_fraction`` of its
    frames; a group larger than ``max_group_fraction`` of all frames always trains. A group's
    stratum is its first frame's (``strata``), or ``stratum_of_group(indices)``."""
    if not 0 < val_fraction < 1:
        raise InputError(f"val fraction must be in (0, 1), got {val_fraction}")
    n = len(groups)
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups.tolist()):
        members.setdefault(g, []).append(i)
    labels = list(strata) if strata is not None else [0] * n

    def stratum(idx: list[int]) -> Hashable:
        return stratum_of_group(idx) if stratum_of_group else labels[idx[0]]

    totals: dict[Hashable, int] = {}
    for g_idx in members.values():
        totals[stratum(g_idx)] = totals.get(stratum(g_idx), 0) + len(g_idx)
    taken = dict.fromkeys(totals, 0)
    rng = np.random.default_rng(seed)
    val_groups: set[int] = set()
    for g in rng.permutation(sorted(members)).tolist():
        idx = members[g]
        s = stratum(idx)
        if len(idx) > max_group_fraction * n or taken[s] >= val_fraction * totals[s]:
            continue
        val_groups.add(g)
        taken[s] += len(idx)
    val = sorted(i for g in val_groups for i in members[g])
    train = sorted(set(range(n)) - set(val))
    return GroupedSplit(train, val, len(members) - len(val_groups), len(val_groups))
