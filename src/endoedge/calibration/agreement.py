"""The label-free agreement gate: a quantized copy against FP32 on frames without labels.

Users with their cart's video but no labels pass ``--agree FRAMES`` (an image folder, searched
recursively, a glob, a video or a folder of videos: the calibration sources'
:func:`~endoedge.calibration.sources.discover`, spread with
:func:`~endoedge.calibration.sources.select`, so a video gives every k-th frame). Each frame is
decoded once and run through both models at the detection pass threshold; the candidate's
boxes are then compared with FP32's at FP32's operating threshold
(:class:`~endoedge.evaluation.agreement.Agreement`), and the gate passes when the box
agreement reaches ``min_agreement`` and at most ``1 - min_agreement`` of the copy's boxes are
new (``added_boxes``: extra false alarms) and the mean score of FP32's boxes moves up by at most
``max_score_shift`` (``score_shift``: scores moved up lift candidates under the threshold into
false alarms on polyp-free frames, which polyp frames cannot show). Without ``--eval`` or ``--agree``, ``endoedge quantize``
holds out part of the calibration frames (:func:`hold_out`) and gates on them.

Example::

    from endoedge.calibration.agreement import AgreementGate, agreement_frames

    gate = AgreementGate("polyp.onnx", agreement_frames("cart.mp4"), source="cart.mp4")
    result = gate.check("polyp.int8.onnx")     # FP32's detections are kept for later checks
    print(result.passed, result.agreement.box_agreement, result.reason)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from endoedge.calibration.report import (
    AgreementResult,
    Criterion,
    added_boxes_criterion,
    score_shift_criterion,
)
from endoedge.calibration.sources import Item, discover, select
from endoedge.errors import InputError

if TYPE_CHECKING:
    from endoedge.detector import Detector
    from endoedge.evaluation.metrics import Prediction
    from endoedge.spec import ModelSpec
    from endoedge.spec.endoscopy import EndoscopyConfig

logger = logging.getLogger(__name__)

DEFAULT_AGREE_IMAGES = 200  # frames of --agree, spread over the source
HOLDOUT_FRACTION, HOLDOUT_MIN, HOLDOUT_MAX = 0.10, 16, 100  # calibration frames held out


def agreement_frames(source: str | Path, *, num_images: int = DEFAULT_AGREE_IMAGES, seed: int = 0) -> list[Item]:
    """Up to ``num_images`` frames of ``source`` spread over it (every k-th frame of a video).

    Raises:
        CalibrationError: the source is missing or holds no usable image or video.
        InputError: ``num_images`` < 1.
    """
    return spread_frames(discover(source, role="--agree source"), num_images=num_images, seed=seed)


def spread_frames(items: Sequence[Item], *, num_images: int = DEFAULT_AGREE_IMAGES, seed: int = 0) -> list[Item]:
    """Up to ``num_images`` of the already discovered ``items``, spread over them (as
    :func:`agreement_frames`).

    Raises:
        InputError: ``num_images`` < 1.
    """
    if num_images < 1:
        raise InputError(f"--agree-images must be at least 1, got {num_images}")
    return select(items, num_images, seed)


def hold_out(items: Sequence[Item], seed: int = 0) -> list[Item]:
    """The items held out of calibration for the agreement gate: 10% of ``items``, at least 16
    and at most 100, never more than half; spread like the calibration choice (same seed, same
    items); empty with fewer than 2 items."""
    n = len(items)
    k = min(max(round(HOLDOUT_FRACTION * n), HOLDOUT_MIN), HOLDOUT_MAX, n // 2)
    return select(items, k, seed) if k > 0 else []


MIN_MASK_DICE, MIN_FRAME_AGREEMENT = 0.90, 0.95  # multi-task criteria against the FP32 reference
MASK_SIDE = 320  # masks are compared on a copy whose longer side is at most this (memory)


@dataclass(frozen=True)
class FrameOutputs:
    """A multi-task model's frame outputs, kept for the comparison: ``mask`` (bool, longer side
    at most :data:`MASK_SIDE`, ``None`` without a mask output) and ``label`` (``None`` without)."""

    mask: np.ndarray | None
    label: str | None

    @classmethod
    def of(cls, mask: np.ndarray | None, label: str | None) -> FrameOutputs:
        """Shrink ``mask`` (float 0..1, source pixels) and threshold it at 0.5."""
        if mask is None:
            return cls(None, label)
        import cv2

        h, w = mask.shape
        f = min(1.0, MASK_SIDE / max(h, w))
        small = cv2.resize(mask, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        return cls(small > 0.5, label)


def multitask_criteria(reference: Sequence[FrameOutputs], candidate: Sequence[FrameOutputs]) -> list[Criterion]:
    """``mask_dice`` and ``frame_label_agreement`` of a candidate against its reference (one
    :class:`FrameOutputs` per frame, same order); empty when the reference has neither output."""
    from endoedge.evaluation.multitask import dice_iou, mask_overlap

    out: list[Criterion] = []
    pairs = [(r.mask, c.mask) for r, c in zip(reference, candidate, strict=True) if r.mask is not None]
    if pairs:
        dices = [dice_iou(*mask_overlap(c, r))[0] if c is not None and c.shape == r.shape else 0.0
                 for r, c in pairs]
        out.append(Criterion.judge("mask_dice", float(np.mean(dices)), MIN_MASK_DICE))
    labels = [(r.label, c.label) for r, c in zip(reference, candidate, strict=True) if r.label is not None]
    if labels:
        share = float(np.mean([r == c for r, c in labels]))
        out.append(Criterion.judge("frame_label_agreement", share, MIN_FRAME_AGREEMENT))
    return out


@dataclass
class _Reference:
    """The reference's side of an :class:`AgreementGate`, fixed by its first check."""

    threshold: float
    classes: tuple[str, ...]
    predictions: list[Prediction] = field(default_factory=list)  # per readable frame
    frame_outputs: list[FrameOutputs] = field(default_factory=list)  # multi-task: per readable frame
    read: list[Item] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class AgreementGate:
    """FP32 (the reference) on a fixed frame set, run once; :meth:`check` compares a candidate.

    Args:
        reference: the FP32 model (any file :func:`endoedge.load` opens).
        items: the frames (:func:`agreement_frames` or :func:`hold_out`).
        source: how the frames were named (for the report).
        held_out: the frames were held out of the calibration images.
        conf: operating score threshold (``None`` = the reference's).
        min_agreement: the smallest box agreement that passes.
        max_score_shift: the largest mean upward score shift of the reference's boxes that passes.
        backend, device: how both models run (:func:`endoedge.load`; ``"cpu"`` for quantize).
        spec, endoscopy: :func:`endoedge.load` overrides (a foreign ONNX, frame cleaning).
    """

    def __init__(self, reference: str | Path, items: Sequence[Item], *, source: str | Path, held_out: bool = False,
                 conf: float | None = None, min_agreement: float = 0.95, max_score_shift: float = 0.01,
                 backend: str = "auto",
                 device: str = "cpu", spec: ModelSpec | None = None,
                 endoscopy: EndoscopyConfig | None = None) -> None:
        self.reference, self.items, self.source = Path(reference), list(items), str(source)
        self.held_out, self.conf, self.min_agreement = held_out, conf, min_agreement
        self.max_score_shift = max_score_shift
        self.load_options: dict[str, Any] = {"backend": backend, "device": device, "spec": spec,
                                             "endoscopy": endoscopy}
        self._ref: _Reference | None = None

    def check(self, candidate: str | Path) -> AgreementResult:
        """Run ``candidate`` (and, the first time, the reference) on the frames; the verdict.

        Raises:
            InputError: no frame can be read, or the two models name other classes.
        """
        from endoedge.evaluation.agreement import agreement

        stack, dets, ref = self._open(candidate)
        with stack:
            preds, frame_outputs = self._detect(dets, ref)
        self._ref = ref
        agree = agreement(ref.predictions, preds, ref.threshold)
        return AgreementResult(
            reference_model=str(self.reference), candidate_model=str(candidate), source=self.source,
            held_out=self.held_out, frames=[it.describe() for it in ref.read], skipped=list(ref.skipped),
            agreement=agree, criterion=Criterion.judge("box_agreement", agree.box_agreement, self.min_agreement),
            extra=multitask_criteria(ref.frame_outputs, frame_outputs),
            added=added_boxes_criterion(agree, self.min_agreement),
            shift=score_shift_criterion(agree, self.max_score_shift))

    def _open(self, candidate: str | Path) -> tuple[ExitStack, list[Detector], _Reference]:
        """The detectors to run, at the detection pass threshold (``[reference, candidate]`` the
        first time, ``[candidate]`` after; closing the stack closes them) and the reference side."""
        import endoedge
        from endoedge.evaluation import MAP_CONF

        stack = ExitStack()
        paths = [candidate] if self._ref is not None else [self.reference, candidate]
        try:
            dets = [stack.enter_context(endoedge.load(p, **self.load_options)) for p in paths]
        except BaseException:
            stack.close()
            raise
        ref = self._ref or _Reference(dets[0].spec.score_threshold if self.conf is None else self.conf,
                                      dets[0].class_names)
        if dets[-1].class_names != ref.classes:
            stack.close()
            raise InputError(f"'{candidate}' names the classes {list(dets[-1].class_names)}, the reference "
                             f"'{self.reference}' {list(ref.classes)}; compare copies of one model")
        views = [d.with_thresholds(score_threshold=MAP_CONF, max_detections=max(100, d.spec.max_detections))
                 for d in dets]
        return stack, views, ref

    def _detect(self, dets: list[Detector], ref: _Reference) -> tuple[list[Prediction], list[FrameOutputs]]:
        """Decode each frame once and run every detector on it; the last detector's predictions
        and frame outputs. With two detectors (the first check) the reference's go into ``ref``."""
        from endoedge.calibration.data import read_frames
        from endoedge.evaluation.metrics import Prediction

        first = len(dets) == 2
        items = self.items if first else ref.read
        skipped: list[tuple[Item, str]] = []
        out: list[list[Prediction]] = [[] for _ in dets]
        frame_out: list[list[FrameOutputs]] = [[] for _ in dets]
        read: list[Item] = []
        for item, frame in read_frames(items, skipped):
            for det, preds, outs in zip(dets, out, frame_out, strict=True):
                if det.cleaner is not None:
                    det.cleaner.reset()  # independent frames: find each one's field of view
                d = det.detect(frame)
                preds.append(Prediction(d.boxes, d.scores, d.class_ids))
                outs.append(FrameOutputs.of(d.mask, d.frame_label))
            read.append(item)
        if first:
            if not read:
                why = skipped[0][1] if skipped else "no frames"
                raise InputError(f"none of the {len(items)} agreement frames of '{self.source}' could be read ({why})")
            ref.predictions, ref.read, ref.frame_outputs = out[0], read, frame_out[0]
            ref.skipped = [f"{it.describe()}: {why}" for it, why in skipped]
            if skipped:
                logger.warning("agreement: %d of %d frames could not be read (first: %s)", len(skipped),
                               len(items), skipped[0][1])
        elif read != ref.read:
            raise InputError(f"the agreement frames of '{self.source}' changed between checks; "
                             "keep them in place until quantize ends")
        return out[-1], frame_out[-1]


def format_agreement_result(result: AgreementResult) -> str:
    """The agreement gate as printed text: what was compared, the agreement, the verdict."""
    from endoedge.calibration.operating_point import format_agreement

    a = result.agreement
    where = " (held out of calibration)" if result.held_out else ""
    skipped = f", {len(result.skipped)} unreadable skipped" if result.skipped else ""
    lines = [f"agreement gate: {result.candidate_model} vs FP32 reference {result.reference_model}",
             f"{len(result.frames)} frames of {result.source}{where}{skipped}; at score >= {a.threshold:g} "
             "(the reference's threshold):"]
    return "\n".join([*lines, *format_agreement(a), f"agreement gate: {result.reason}"])
