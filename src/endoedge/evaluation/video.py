"""Video metrics: what a viewer sees over time, from per-frame box lists.

The input is what a display would show on each frame of one ordered sequence: a list of ``n x 4``
box arrays (xyxy source pixels; only whether a frame has a box matters here), either the
detector's raw output or a stabilized one, so both are scored by the same function. The truth is
one flag per frame (a polyp is in view or not).

On polyp-free frames (truth ``False``):

- **false-alarm frame share**: the share of frames that show a box;
- **false activations**: runs of consecutive frames showing a box (one run = one alarm a viewer
  notices), counted per minute of video at ``fps`` and by length.

On polyp frames (truth ``True``):

- **shown sensitivity**: the share of frames that show a box;
- **toggles per 100 frames**: box appears or disappears between consecutive polyp frames
  (flicker), per 100 polyp frames;
- **frames to first detection**: per run of polyp frames (a polyp coming into view), frames from
  its first frame until a box is first shown (0 = at once; ``None`` if never).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


def runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` (stop exclusive) of every run of ``True`` in a 1-D bool array."""
    f = np.concatenate([[False], np.asarray(flags, bool), [False]])
    edges = np.flatnonzero(f[1:] != f[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


@dataclass(frozen=True)
class VideoMetrics:
    """Video metrics of one or more sequences (see the module docstring).

    Attributes:
        n_frames: frames scored; ``n_negative`` / ``n_positive`` of them without / with a polyp.
        fps: frame rate the per-minute numbers assume.
        false_alarm_share: polyp-free frames showing a box (``None`` without such frames).
        false_activations: runs of box frames within polyp-free stretches.
        false_activations_per_min: ``false_activations`` per minute of polyp-free video.
        short_false_activations: those shorter than 6 frames (the GI Genius study's cut-off).
        shown_sensitivity: polyp frames showing a box (``None`` without polyp frames).
        toggles: box on/off changes between consecutive polyp frames; ``toggles_per_100`` per
            100 polyp frames.
        frames_to_first: per polyp run, frames until the first box (``None``: never shown).
    """

    n_frames: int
    n_negative: int
    n_positive: int
    fps: float
    false_alarm_share: float | None
    false_activations: int
    false_activations_per_min: float | None
    short_false_activations: int
    shown_sensitivity: float | None
    toggles: int
    toggles_per_100: float | None
    frames_to_first: list[int | None] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def shown(boxes_per_frame: Sequence[np.ndarray | Sequence[Any]]) -> np.ndarray:
    """Per frame, whether it shows at least one box."""
    return np.array([len(b) > 0 for b in boxes_per_frame], bool)


def video_metrics(
    boxes_per_frame: Sequence[np.ndarray | Sequence[Any]] | Sequence[Sequence[np.ndarray | Sequence[Any]]],
    truth: Sequence[bool] | Sequence[Sequence[bool]],
    fps: float = 25.0,
    *,
    short: int = 6,
) -> VideoMetrics:
    """Score one sequence, or several (a list of sequences and a list of truth lists): counts add
    up, runs never span two sequences.

    Args:
        boxes_per_frame: per frame, the boxes shown (``n x 4`` or a list; only ``n`` matters).
        truth: per frame, whether a polyp is in view.
        fps: frames per second of the video (per-minute rates).
        short: activations shorter than this many frames are also counted apart.

    Raises:
        ValueError: the box lists and the truth differ in length, or ``fps <= 0``.
    """
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    seqs, truths = _as_sequences(boxes_per_frame, truth)
    n_neg = n_pos = activations = short_acts = toggles = 0
    neg_shown = pos_shown = 0
    first: list[int | None] = []
    for boxes, t in zip(seqs, truths, strict=True):
        on = shown(boxes)
        if len(on) != len(t):
            raise ValueError(f"{len(on)} frames of boxes but {len(t)} truth flags")
        for a, b in runs(~t):  # polyp-free stretches
            seg = on[a:b]
            n_neg += b - a
            neg_shown += int(seg.sum())
            lengths = [y - x for x, y in runs(seg)]
            activations += len(lengths)
            short_acts += sum(1 for n in lengths if n < short)
        for a, b in runs(t):  # polyp runs
            seg = on[a:b]
            n_pos += b - a
            pos_shown += int(seg.sum())
            toggles += int((seg[1:] != seg[:-1]).sum())
            hit = np.flatnonzero(seg)
            first.append(int(hit[0]) if hit.size else None)
    minutes = n_neg / fps / 60.0
    return VideoMetrics(
        n_frames=n_neg + n_pos, n_negative=n_neg, n_positive=n_pos, fps=fps,
        false_alarm_share=neg_shown / n_neg if n_neg else None,
        false_activations=activations,
        false_activations_per_min=activations / minutes if n_neg else None,
        short_false_activations=short_acts,
        shown_sensitivity=pos_shown / n_pos if n_pos else None,
        toggles=toggles, toggles_per_100=100.0 * toggles / n_pos if n_pos else None,
        frames_to_first=first,
    )


def _as_sequences(boxes: Sequence[Any], truth: Sequence[Any]) -> tuple[list[Sequence[Any]], list[np.ndarray]]:
    """One sequence (truth is a flat list of bools) or several (a list of lists)."""
    nested = len(truth) > 0 and not isinstance(truth[0], (bool, np.bool_, int, np.integer))
    if not nested:
        return [boxes], [np.asarray(truth, bool)]
    if len(boxes) != len(truth):
        raise ValueError(f"{len(boxes)} sequences of boxes but {len(truth)} of truth flags")
    return list(boxes), [np.asarray(t, bool) for t in truth]


def format_video(name: str, m: VideoMetrics) -> str:
    """One line per side (polyp-free / polyp) of a metrics set, prefixed with ``name``."""
    lines = []
    if m.n_negative:
        lines.append(f"  {name:<12} polyp-free {m.n_negative} frames: box on {100 * (m.false_alarm_share or 0):.1f}% "
                     f"of frames, {m.false_activations} false activations ({m.short_false_activations} shorter "
                     f"than 6 frames) = {m.false_activations_per_min:.1f}/min at {m.fps:g} fps")
    if m.n_positive:
        found = [f for f in m.frames_to_first if f is not None]
        ttf = f"median {float(np.median(found)):.0f}" if found else "never"
        lines.append(f"  {name:<12} polyp {m.n_positive} frames: shown sensitivity "
                     f"{100 * (m.shown_sensitivity or 0):.1f}%, {m.toggles_per_100:.1f} toggles per 100 frames, "
                     f"frames to first detection {ttf} ({len(found)}/{len(m.frames_to_first)} polyps shown)")
    return "\n".join(lines)
