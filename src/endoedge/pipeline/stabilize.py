"""Temporal stabilization in ``endoedge run``: which config applies, and detections in, shown boxes out.

:class:`DetectionStabilizer` wraps :class:`~endoedge.postprocess.temporal.BoxStabilizer` for
:class:`~endoedge.detector.Detections`; :func:`resolve_stabilize` decides whether it runs and with
which onset/hold/smoothing: ``--stabilize auto`` (the default) turns it on for video sources
(files, devices, streams, test patterns, pipeline strings) and off for image folders and single
images; the model's stored ``endoedge.stabilize`` config is the base, command-line values
override it field by field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from endoedge.detector import Detections
from endoedge.postprocess.temporal import BoxStabilizer
from endoedge.spec.stabilize import StabilizeConfig

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

StabilizeMode = Literal["auto", "on", "off"]
#: Source kinds that are not video (a folder of images, one image): ``auto`` leaves them raw.
STILL_KINDS = frozenset({"folder"})


@dataclass(frozen=True)
class Stabilized:
    """One frame's stabilized output.

    Attributes:
        shown: what the overlay draws (smoothed boxes in source pixels, xyxy; smoothed scores).
        track_ids: ``N`` int64 track id per shown box.
        held: ``N`` bool, True where a box is held through a frame without a detection.
    """

    shown: Detections
    track_ids: np.ndarray
    held: np.ndarray

    def to_records(self) -> list[dict[str, Any]]:
        """:meth:`Detections.to_records` plus ``track_id`` and ``held`` per box."""
        records = self.shown.to_records()
        for rec, tid, held in zip(records, self.track_ids.tolist(), self.held.tolist(), strict=True):
            rec["track_id"] = tid
            rec["held"] = held
        return records


class DetectionStabilizer:
    """Stabilizes one stream of :class:`~endoedge.detector.Detections` (see :class:`BoxStabilizer`).

    Args:
        config: onset/hold/smoothing/IoU.
        class_names: the detector's class names (labels of the shown boxes by class id).
    """

    def __init__(self, config: StabilizeConfig, class_names: Sequence[str]) -> None:
        self.config = config
        self.core = BoxStabilizer(config)
        self._labels = np.asarray(list(class_names), dtype=object)

    def reset(self) -> None:
        """Drop every track (a reconnected source is a cut in the video)."""
        self.core.reset()

    def update(self, raw: Detections) -> Stabilized:
        """The shown boxes of the next frame, given its raw detections."""
        s = self.core.update(raw.boxes, raw.scores, raw.class_ids)
        labels = self._labels[s.class_ids].tolist() if len(s) else []
        return Stabilized(Detections(s.boxes, s.scores, s.class_ids, labels), s.track_ids, s.held)


def resolve_stabilize(
    mode: StabilizeMode,
    source_kind: str,
    stored: Mapping[str, Any] | None,
    **overrides: Any,
) -> StabilizeConfig | None:
    """The config ``endoedge run`` stabilizes with, or ``None`` to show raw detections.

    Args:
        mode: ``"on"``, ``"off"`` or ``"auto"`` (on unless ``source_kind`` is in :data:`STILL_KINDS`).
        source_kind: :attr:`~endoedge.pipeline.sources.SourceSpec.kind`.
        stored: the model's ``endoedge.stabilize`` config (``ModelSpec.stabilize``), or None.
        **overrides: ``onset``, ``hold``, ``smooth``, ``iou`` from the command line (None = keep).

    Raises:
        InputError: an override is out of range.
    """
    base = StabilizeConfig.from_dict(stored) if stored else StabilizeConfig()
    config = base.replace(**overrides)  # validates overrides even when off
    if mode == "off" or (mode == "auto" and source_kind in STILL_KINDS):
        return None
    return config
