"""How detections are stabilized over video frames, as a validated dataclass that round-trips JSON.

The config travels in an exported ONNX under the metadata key ``endoedge.stabilize`` (see
:class:`~endoedge.spec.ModelSpec`), so a deployed model carries the onset/hold it was tuned with;
``endoedge run --onset/--hold/--smooth/--track-iou`` override it. The stabilizer itself is
:class:`~endoedge.postprocess.temporal.BoxStabilizer`.

Defaults, from the GI Genius frame-by-frame study (111 colonoscopies, 1.79 M frames: ~101 false
activations per colonoscopy, most shorter than 3 frames; withholding activations shorter than 6
frames removed 88% of them without changing sensitivity): a box is shown after 3 consecutive hits
(``onset=3``: every 1-2 frame blip is withheld, at 2 frames = 80 ms at 25 fps of added delay on a
real polyp), kept through 5 missed frames (``hold=5``, 200 ms at 25 fps, bridging the detector's
own drop-outs on a polyp it keeps seeing) and smoothed with an exponential moving average.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from endoedge.errors import InputError


@dataclass(frozen=True)
class StabilizeConfig:
    """Settings of :class:`~endoedge.postprocess.temporal.BoxStabilizer` (frames, not seconds).

    Attributes:
        onset: consecutive frames a track must be detected in before its box is shown (``K``;
            1 = show at once).
        hold: frames a shown track stays on screen without a detection (``M``; 0 = drop at the
            first miss). Held boxes keep their last smoothed position.
        smooth: weight of the new detection in the exponential moving average of a track's box
            corners and score (1.0 = no smoothing, 0.5 = half new, half history).
        iou: minimum IoU (intersection over union, 0..1) between a track's box and a detection of
            the same class for the two to be matched.
    """

    onset: int = 3
    hold: int = 5
    smooth: float = 0.5
    iou: float = 0.3

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.onset <= 1000:
            problems.append(f"onset must be 1..1000 frames, got {self.onset}")
        if not 0 <= self.hold <= 1000:
            problems.append(f"hold must be 0..1000 frames, got {self.hold}")
        if not 0.0 < self.smooth <= 1.0:
            problems.append(f"smooth must be in (0, 1], got {self.smooth}")
        if not 0.0 < self.iou <= 1.0:
            problems.append(f"iou must be in (0, 1], got {self.iou}")
        if problems:
            raise InputError("invalid stabilize config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> StabilizeConfig:
        """A copy with the given fields changed; ``None`` values keep the current value."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> StabilizeConfig:
        """Build from a (possibly partial) dict; missing keys take their defaults.

        Raises:
            InputError: an unknown key or an invalid value.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"unknown stabilize config keys {unknown}; known: {', '.join(sorted(known))}")
        kwargs: dict[str, Any] = {}
        try:
            for key, value in values.items():
                default = getattr(cls, key)
                if isinstance(value, bool) or (isinstance(default, int) and float(value) != int(value)):
                    raise TypeError(f"{key} must be a whole number of frames, got {value!r}")
                kwargs[key] = type(default)(value)
        except (TypeError, ValueError) as err:
            raise InputError(f"invalid stabilize config: {err}") from err
        return cls(**kwargs)

    @classmethod
    def parse(cls, text: str) -> StabilizeConfig:
        """Parse ``key=value`` pairs, comma-separated: ``"onset=3,hold=5,smooth=0.5,iou=0.3"``.

        Raises:
            InputError: an item is not ``key=value``, or a key/value is invalid.
        """
        values: dict[str, Any] = {}
        for item in (p.strip() for p in text.split(",")):
            if not item:
                continue
            key, eq, raw = item.partition("=")
            if not eq:
                raise InputError(f"stabilize option '{item}' is not name=value (e.g. onset=3,hold=5)")
            try:
                values[key.strip()] = float(raw)
            except ValueError:
                raise InputError(f"stabilize option '{item}': '{raw}' is not a number") from None
        return cls.from_dict(values)
