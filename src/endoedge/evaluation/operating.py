"""The operating point: sensitivity against false-alarm frames as the score threshold moves.

A detector on a cart shows a box whenever its best detection reaches the score threshold. On
polyp-free frames every such frame is a false alarm; on polyp frames a box on the polyp is a hit.
Both are functions of one number per frame, so the whole curve comes from one detection pass at
a low threshold:

- **false-alarm frame share** ``fa(t)``: the share of polyp-free frames whose highest detection
  score is ``>= t`` (any box is an alarm);
- **sensitivity** ``sens(t)``: the share of polyp frames with a detection ``>= t`` that overlaps
  a ground-truth box at IoU >= 0.5 (a box somewhere else does not count), and the looser
  **frame sensitivity**: the share of polyp frames with any detection ``>= t``.

:func:`choose_threshold` picks the lowest threshold whose false-alarm share on the given
negatives stays within a target: the most sensitive setting that meets it. The choice depends on
the negatives only; pick it on validation sequences and report it on others.
:func:`choose_for_sensitivity` picks the other way round, as CADe systems are usually tuned: the
highest threshold that keeps a target sensitivity on labelled polyp frames (the quietest setting
that meets it); its false-alarm share is then measured, not chosen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from endoedge.data.datasets import Sample
from endoedge.errors import InputError
from endoedge.evaluation.metrics import Prediction, box_iou

#: Thresholds printed in the curve table (the model's and the chosen one are added).
CURVE_THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def hit_scores(samples: Sequence[Sample], preds: Sequence[Prediction], iou: float = 0.5) -> np.ndarray:
    """Per frame with ground truth: the highest score of a detection overlapping one of its boxes
    (same class) at IoU >= ``iou``, 0 if none. Frames without boxes are left out."""
    out = []
    for s, p in zip(samples, preds, strict=True):
        if not len(s.boxes):
            continue
        if not len(p.boxes):
            out.append(0.0)
            continue
        ious = box_iou(s.boxes.astype(np.float64), p.boxes.astype(np.float64))
        ious[s.labels[:, None] != p.labels[None, :]] = 0.0
        hit = (ious >= iou).any(axis=0)
        out.append(float(p.scores[hit].max(initial=0.0)))
    return np.asarray(out, np.float64)


@dataclass(frozen=True)
class Curve:
    """Frame scores behind the curve (each in 0..1).

    Attributes:
        hit: per polyp frame, its best detection score on a ground-truth box (see :func:`hit_scores`).
        frame: per polyp frame, its highest detection score anywhere.
        negative: per polyp-free frame, its highest detection score.
    """

    hit: np.ndarray
    frame: np.ndarray
    negative: np.ndarray

    def at(self, threshold: float) -> dict[str, float | None]:
        """Sensitivity, frame sensitivity and false-alarm frame share at ``threshold``."""
        def share(x: np.ndarray) -> float | None:
            return float((x >= threshold).mean()) if x.size else None

        return {"threshold": threshold, "sensitivity": share(self.hit), "frame_sensitivity": share(self.frame),
                "false_alarm_share": share(self.negative)}

    def table(self, extra: Sequence[float] = ()) -> list[dict[str, float | None]]:
        """:meth:`at` for :data:`CURVE_THRESHOLDS` and ``extra``, ascending."""
        ts = sorted({round(float(t), 6) for t in (*CURVE_THRESHOLDS, *extra)})
        return [self.at(t) for t in ts]


@dataclass(frozen=True)
class OperatingPoint:
    """A score threshold chosen to meet a false-alarm target (or a sensitivity target), and what
    it costs.

    Attributes:
        score_threshold: the chosen threshold (a box is shown when its score is >= it).
        target_false_alarm_share: the target on polyp-free frames (0..1); ``None`` when the
            point was chosen for ``target_sensitivity``.
        false_alarm_share: the share measured at the threshold on the negatives it was chosen on.
        sensitivity: polyp frames with a box on the polyp (IoU >= 0.5) at the threshold, or
            ``None`` without labelled polyp frames.
        frame_sensitivity: polyp frames with any box at the threshold.
        n_negative, n_positive: frames behind the shares.
        chosen_on: what the negatives and positives were (free text).
        target_sensitivity: the sensitivity target (box on the polyp, 0..1) the point was
            chosen for by :func:`choose_for_sensitivity`; ``None`` for a false-alarm target.
        false_alarm_upper_95: one-sided 95% upper confidence bound (Clopper-Pearson) of the
            false-alarm share, from the alarms among the ``n_negative`` frames: what those frames
            can vouch for (``None`` without negatives).
    """

    score_threshold: float
    target_false_alarm_share: float | None
    false_alarm_share: float
    sensitivity: float | None
    frame_sensitivity: float | None
    n_negative: int
    n_positive: int
    chosen_on: str = ""
    target_sensitivity: float | None = None
    false_alarm_upper_95: float | None = None

    def __post_init__(self) -> None:
        if self.false_alarm_upper_95 is None and self.n_negative:
            alarms = int(round(self.false_alarm_share * self.n_negative))
            object.__setattr__(self, "false_alarm_upper_95", round(binomial_upper(alarms, self.n_negative), 6))

    def evidence(self) -> str:
        """One line on what the negatives can vouch for, e.g. ``1.4% of 70 frames (95% upper
        bound 7.6%): 70 frames cannot show <= 2%; ...`` (empty without negatives)."""
        if not self.n_negative or self.false_alarm_upper_95 is None:
            return ""
        text = (f"{100 * self.false_alarm_share:.1f}% of {self.n_negative} polyp-free frames (one-sided 95% upper "
                f"bound {100 * self.false_alarm_upper_95:.1f}%)")
        target = self.target_false_alarm_share
        if target and self.false_alarm_upper_95 > target:
            need = frames_to_show(target)
            text += (f": {self.n_negative} frames cannot show false alarms <= {100 * target:g}%; even with none "
                     f"boxed that takes >= {need} polyp-free frames from sequences not used in training")
        return text

    def describe(self) -> str:
        """``false alarms <= 2%`` or ``sensitivity >= 90%``: the rule it was chosen by; ``threshold
        given`` for a point set by hand (neither target; ``chosen_on`` says why)."""
        if self.target_sensitivity is not None:
            return f"sensitivity >= {100 * self.target_sensitivity:g}%"
        if self.target_false_alarm_share is None:
            return "threshold given"
        return f"false alarms <= {100 * self.target_false_alarm_share:g}%"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (what checkpoints and ONNX metadata store)."""
        return asdict(self)


def binomial_upper(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound of a rate seen ``k`` times in ``n`` trials: the
    ``p`` at which ``P(X <= k) = 1 - confidence`` for ``X ~ Binomial(n, p)`` (1.0 when ``k >= n``).

    Raises:
        InputError: ``n < 1`` or ``k`` outside ``0..n``.
    """
    if n < 1 or not 0 <= k <= n:
        raise InputError(f"a binomial bound needs 0 <= k <= n and n >= 1, got k={k}, n={n}")
    if k >= n:
        return 1.0
    alpha = 1.0 - confidence
    if k == 0:
        return float(1.0 - alpha ** (1.0 / n))
    logc = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(k + 1)]

    def cdf(p: float) -> float:
        lp, lq = math.log(p), math.log1p(-p)
        return sum(math.exp(c + i * lp + (n - i) * lq) for i, c in enumerate(logc))

    lo, hi = k / n, 1.0
    for _ in range(80):  # cdf falls as p rises: bisect for cdf(p) = alpha
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cdf(mid) > alpha else (lo, mid)
    return float(hi)


def frames_to_show(target: float, confidence: float = 0.95) -> int:
    """Polyp-free frames needed, none of them boxed, before the upper bound reaches ``target``."""
    return int(math.ceil(math.log(1.0 - confidence) / math.log1p(-target)))


def choose_threshold(curve: Curve, target: float, *, floor: float = 0.05, chosen_on: str = "") -> OperatingPoint:
    """The lowest threshold (rounded up to 1e-4, at least ``floor``) whose false-alarm share on
    ``curve.negative`` is ``<= target``.

    Raises:
        InputError: no negative frames, or ``target`` outside 0..1.
    """
    if not 0.0 <= target <= 1.0:
        raise InputError(f"the false-alarm target must be within 0..1, got {target}")
    neg = np.sort(curve.negative)[::-1]
    if not neg.size:
        raise InputError("choosing an operating point needs polyp-free frames (--negatives)")
    allowed = int(math.floor(target * neg.size + 1e-9))  # frames that may still alarm
    threshold = floor
    if allowed < neg.size:
        s = float(neg[allowed])  # the highest score that must fall below the threshold
        threshold = max(floor, math.ceil(s * 1e4) / 1e4 + (1e-4 if math.ceil(s * 1e4) / 1e4 <= s else 0.0))
    threshold = min(1.0, round(threshold, 4))
    at = curve.at(threshold)
    return OperatingPoint(threshold, target, float(at["false_alarm_share"] or 0.0), at["sensitivity"],
                          at["frame_sensitivity"], int(neg.size), int(curve.hit.size), chosen_on)


def choose_for_sensitivity(curve: Curve, target: float, *, chosen_on: str = "") -> OperatingPoint:
    """The highest threshold (rounded down to 1e-4) at which at least ``target`` of the polyp
    frames have a box on the polyp (IoU >= 0.5): the quietest setting that keeps the sensitivity.
    Its false-alarm share is measured on ``curve.negative`` when there are negatives (0 otherwise).

    Raises:
        InputError: no labelled polyp frames, ``target`` outside (0, 1], or the model never
            reaches ``target`` at any threshold.
    """
    if not 0.0 < target <= 1.0:
        raise InputError(f"the sensitivity target must be within (0, 1], got {target}")
    hits = np.sort(curve.hit)[::-1]
    if not hits.size:
        raise InputError("choosing a threshold for a sensitivity target needs labelled polyp frames (MODEL DATA)")
    need = int(math.ceil(target * hits.size - 1e-9))  # frames that must keep a box on the polyp
    s = float(hits[need - 1])
    if s <= 0.0:
        reached = float((curve.hit > 0).mean())
        raise InputError(f"the model puts a box on the polyp in only {100 * reached:.1f}% of the frames at any "
                         f"threshold: a {100 * target:g}% sensitivity target cannot be met")
    threshold = max(1e-4, math.floor(s * 1e4) / 1e4)
    at = curve.at(threshold)
    return OperatingPoint(threshold, None, float(at["false_alarm_share"] or 0.0), at["sensitivity"],
                          at["frame_sensitivity"], int(curve.negative.size), int(hits.size), chosen_on,
                          target_sensitivity=target)


def given_threshold(curve: Curve, threshold: float, reason: str, *, chosen_on: str = "") -> OperatingPoint:
    """A threshold set by hand (e.g. kept from an earlier model when the frames cannot place a
    target), with what it measures on ``curve``: neither target; ``chosen_on`` = ``reason`` then
    ``chosen_on`` (what the frames were).

    Raises:
        InputError: ``threshold`` outside (0, 1) or an empty ``reason``.
    """
    if not 0.0 < threshold < 1.0:
        raise InputError(f"a given score threshold must be within (0, 1), got {threshold}")
    if not reason.strip():
        raise InputError("a threshold given by hand needs its reason (--reason TEXT)")
    threshold = round(float(threshold), 4)
    at = curve.at(threshold)
    text = reason.strip() + (f" Measured on {chosen_on}." if chosen_on else "")
    return OperatingPoint(threshold, None, float(at["false_alarm_share"] or 0.0), at["sensitivity"],
                          at["frame_sensitivity"], int(curve.negative.size), int(curve.hit.size), text)


def format_curve(curve: Curve, model_threshold: float, chosen: OperatingPoint | None = None) -> str:
    """The curve as a table, the model's own threshold and the chosen point marked."""
    extra = [model_threshold] + ([chosen.score_threshold] if chosen else [])
    lines = [f"Operating curve ({curve.hit.size} polyp frames, {curve.negative.size} polyp-free frames): "
             "sensitivity = polyp frames with a box on the polyp (IoU >= 0.5); frame sens. = with any box; "
             "false alarms = polyp-free frames with any box",
             f"  {'threshold':>9} {'sensitivity':>11} {'frame sens.':>11} {'false alarms':>12}"]

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    for row in curve.table(extra):
        t = float(row["threshold"] or 0.0)
        marks = []
        if abs(t - model_threshold) < 1e-9:
            marks.append("<- model's threshold")
        if chosen and abs(t - chosen.score_threshold) < 1e-9:
            marks.append(f"<- chosen: {chosen.describe()}")
        lines.append(f"  {t:>9.4g} {pct(row['sensitivity']):>11} {pct(row['frame_sensitivity']):>11} "
                     f"{pct(row['false_alarm_share']):>12}  {' '.join(marks)}".rstrip())
    return "\n".join(lines)


def curve_from_run(run: Any) -> Curve:
    """The :class:`Curve` of an :class:`~endoedge.evaluation.runner.EvalRun`: its boxed images
    are the polyp frames; its images without boxes and its ``--negatives`` the polyp-free ones."""
    boxed = [(s, p) for s, p in zip(run.samples, run.predictions, strict=True) if len(s.boxes)]
    empty = [p.frame_score for s, p in zip(run.samples, run.predictions, strict=True) if not len(s.boxes)]
    return Curve(
        hit=hit_scores([s for s, _ in boxed], [p for _, p in boxed]),
        frame=np.array([p.frame_score for _, p in boxed], np.float64),
        negative=np.array(empty + [p.frame_score for p in run.negative_predictions], np.float64),
    )


def save_operating_point(model: str | Path, point: OperatingPoint, out: str | Path, *,
                         half: bool | None = None, notes: str | None = None) -> Path:
    """Copy the checkpoint ``model`` to ``out`` with ``point.score_threshold`` as its default
    score threshold and ``point`` recorded (``operating_point``; ONNX exports carry both).
    Float16 storage if ``half``, or (``None``) if the source uses it; ``notes`` replaces the
    stored notes when given.

    Raises:
        InputError: ``model`` is not an endoedge checkpoint (e.g. an ONNX file).
    """
    from dataclasses import replace

    from endoedge.data.media import CHECKPOINT_SUFFIXES
    from endoedge.models.checkpoint import load_checkpoint, save_checkpoint

    src = Path(model)
    if src.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise InputError(f"--save-operating-point needs the model as an endoedge checkpoint ({src} is not one); "
                         "export the saved checkpoint to ONNX afterwards")
    loaded = load_checkpoint(src)
    if half is None:
        half = any(str(v.dtype) == "torch.float16" for v in _state_dict(src).values())
    spec = replace(loaded.spec, score_threshold=point.score_threshold, operating_point=point.to_dict())
    return save_checkpoint(out, replace(loaded, spec=spec, notes=loaded.notes if notes is None else notes), half=half)


def _state_dict(path: Path) -> dict[str, Any]:
    import torch

    obj = torch.load(path, map_location="cpu", weights_only=True)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else {}
    return state if isinstance(state, dict) else {}
