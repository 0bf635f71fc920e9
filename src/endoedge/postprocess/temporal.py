"""Temporal stabilization of per-frame detections: track by detection, onset, hold, smoothing.

A small IoU tracker written for a CADe overlay (a handful of boxes per frame, one camera):

1. **Match** each live track to at most one detection of the same class: IoU matrix
   (vectorized), then greedy assignment by highest IoU above ``iou`` (the rule Norfair uses;
   with 0-3 boxes per frame it equals the optimal Hungarian assignment except on exact ties).
2. **Update** matched tracks: box corners and score become an exponential moving average
   (``smooth`` = weight of the new detection); hit streak +1, misses reset.
3. **Onset**: a track is shown once it has been detected in ``onset`` consecutive frames; a
   track that misses a frame before that is dropped (its blip is never shown).
4. **Hold**: a shown track that misses keeps its last box on screen for up to ``hold`` frames,
   then is dropped; a detection that matches it again within the hold continues it (same id).
5. Unmatched detections start new tracks with fresh ids (increasing integers from 1).

All per-frame work is numpy over the track and detection arrays; the only Python loop is the
greedy assignment, one iteration per matched pair. Why not a library tracker: supervision 0.31
no longer ships ByteTrack, Roboflow's ``trackers`` requires ``opencv-python`` (clashes with the
headless OpenCV endoedge uses) and Norfair requires ``numpy<2``; none has onset+hold semantics
for what is *shown*, which is the point here.

Coordinates: boxes ``N x 4`` xyxy in source pixels (whatever the caller passes, unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from endoedge.spec.stabilize import StabilizeConfig

__all__ = ["BoxStabilizer", "Shown", "box_iou", "greedy_match"]


@dataclass(frozen=True)
class Shown:
    """What the overlay shows on one frame.

    Attributes:
        boxes: ``N x 4`` float32 xyxy, in the caller's pixel coordinates (smoothed).
        scores: ``N`` float32 (smoothed), in 0..1.
        class_ids: ``N`` int64.
        track_ids: ``N`` int64, stable over the frames a track lives (from 1 upwards).
        held: ``N`` bool, True where the box is held through a miss (no detection this frame).

    Rows are in descending score order.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    track_ids: np.ndarray
    held: np.ndarray

    def __len__(self) -> int:
        return int(self.track_ids.shape[0])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (``N x 4`` xyxy) with every box in ``b`` (``M x 4``): ``N x M``.

    Degenerate boxes (zero area) have IoU 0 with everything.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0.0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0.0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0.0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def greedy_match(affinity: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(rows, cols)`` picked greedily by highest affinity, each row/col at most once.

    Only pairs with ``affinity >= threshold`` are taken. Returns two int64 arrays of equal length.
    """
    work = np.where(affinity >= threshold, affinity, -np.inf)
    rows: list[int] = []
    cols: list[int] = []
    while work.size and np.isfinite(work).any():
        r, c = np.unravel_index(int(np.argmax(work)), work.shape)
        rows.append(int(r))
        cols.append(int(c))
        work[r, :] = -np.inf
        work[:, c] = -np.inf
    return np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)


class BoxStabilizer:
    """Stateful per-stream stabilizer: feed every frame's detections in order to :meth:`update`.

    Not thread-safe: one stream, one thread. Call :meth:`reset` when the stream restarts (a
    reconnected source, the next sequence): tracks never carry across a cut.

    Args:
        config: onset/hold/smoothing/IoU (:class:`~endoedge.spec.stabilize.StabilizeConfig`).
    """

    def __init__(self, config: StabilizeConfig | None = None) -> None:
        self.config = config or StabilizeConfig()
        self._next_id = 1
        self.reset()

    def reset(self) -> None:
        """Forget every track (ids keep increasing, so a new track never reuses an old id)."""
        self._boxes = np.empty((0, 4), np.float64)
        self._scores = np.empty(0, np.float64)
        self._classes = np.empty(0, np.int64)
        self._ids = np.empty(0, np.int64)
        self._hits = np.empty(0, np.int64)  # consecutive frames with a detection
        self._misses = np.empty(0, np.int64)  # consecutive frames without one
        self._shown = np.empty(0, bool)  # passed onset

    @property
    def tracks(self) -> int:
        """Live tracks (shown, held or still in onset)."""
        return int(self._ids.shape[0])

    def update(self, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray) -> Shown:
        """Advance one frame with its detections; return what to show on it.

        Args:
            boxes: ``N x 4`` xyxy (source pixels), the detector's output for this frame.
            scores: ``N`` scores in 0..1.
            class_ids: ``N`` integer class ids.
        """
        cfg = self.config
        det_boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        det_scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        det_classes = np.asarray(class_ids, dtype=np.int64).reshape(-1)
        n_tracks, n_dets = self._ids.shape[0], det_boxes.shape[0]

        if n_tracks and n_dets:
            iou = box_iou(self._boxes, det_boxes)
            iou[self._classes[:, None] != det_classes[None, :]] = 0.0
            rows, cols = greedy_match(iou, cfg.iou)
        else:
            rows = cols = np.empty(0, np.int64)

        matched = np.zeros(n_tracks, bool)
        matched[rows] = True
        a = cfg.smooth
        self._boxes[rows] = a * det_boxes[cols] + (1.0 - a) * self._boxes[rows]
        self._scores[rows] = a * det_scores[cols] + (1.0 - a) * self._scores[rows]
        self._hits = np.where(matched, self._hits + 1, 0)
        self._misses = np.where(matched, 0, self._misses + 1)
        self._shown |= self._hits >= cfg.onset
        # unmatched tracks in onset die at once; shown ones survive ``hold`` misses
        keep = matched | (self._shown & (self._misses <= cfg.hold))

        fresh = np.ones(n_dets, bool)
        fresh[cols] = False
        n_new = int(fresh.sum())
        new_ids = np.arange(self._next_id, self._next_id + n_new, dtype=np.int64)
        self._next_id += n_new
        self._boxes = np.concatenate([self._boxes[keep], det_boxes[fresh]])
        self._scores = np.concatenate([self._scores[keep], det_scores[fresh]])
        self._classes = np.concatenate([self._classes[keep], det_classes[fresh]])
        self._ids = np.concatenate([self._ids[keep], new_ids])
        self._hits = np.concatenate([self._hits[keep], np.ones(n_new, np.int64)])
        self._misses = np.concatenate([self._misses[keep], np.zeros(n_new, np.int64)])
        self._shown = np.concatenate([self._shown[keep], np.full(n_new, cfg.onset <= 1)])

        show = np.flatnonzero(self._shown)
        show = show[np.argsort(-self._scores[show], kind="stable")]  # scores descending
        return Shown(
            boxes=self._boxes[show].astype(np.float32),
            scores=self._scores[show].astype(np.float32),
            class_ids=self._classes[show],
            track_ids=self._ids[show],
            held=self._misses[show] > 0,
        )
