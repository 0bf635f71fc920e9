"""What an endoscopy frame cleaner does, as a validated dataclass that round-trips through JSON.

The config travels in an exported ONNX under the metadata key ``endoedge.endoscopy`` (see
:class:`~endoedge.spec.ModelSpec`), so a deployed model carries its own frame pre-processing.
Grey levels are 0..255; sizes are pixels of the source frame unless a name says otherwise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from endoedge.errors import InputError

DenoiseMode = Literal["none", "median", "median+wavelet"]
DENOISE_MODES: tuple[str, ...] = ("none", "median", "median+wavelet")
ShrinkRule = Literal["bayes", "visu"]


@dataclass(frozen=True)
class EndoscopyConfig:
    """Settings of :class:`~endoedge.endoscopy.FrameCleaner`.

    Attributes:
        enabled: master switch; ``False`` makes the cleaner a no-op (a stored config can be
            switched off without removing it).
        fov_crop: crop each frame to the bounding rectangle of the scope's field of view (the
            bright, convex region inside the black border; octagonal or circular masks).
        mask_osd: blank the on-screen display: every pixel outside the field-of-view polygon
            (burned-in text in the black corners) becomes 0, and saturated green/teal boxes
            (the scope-position box in the lower left) are filled with the frame's mean tissue
            colour.
        denoise: ``"none"``, ``"median"`` (``cv2.medianBlur``, ``median_ksize``) or
            ``"median+wavelet"`` (then a ``wavelet`` soft-threshold denoise per colour channel;
            seed 004's recipe). The wavelet step costs ~0.2 s per 1080p frame on 2 CPU cores:
            offline use only.
        dark_threshold: highest grey level that may count as scope border. The threshold used
            is the frame perimeter's 10th-percentile grey level plus ``border_margin``, capped
            at this value (overlay borders are often ~20, not 0, and a dark lumen is only a few
            levels brighter).
        border_margin: grey levels above the measured border level that still count as border.
        analysis_width: width in pixels of the downscaled copy the detection runs on (the
            source is reduced by an integer factor to about this width).
        redetect_every: frames between field-of-view re-detections (1 = every frame). Between
            them a cheap test on the downscaled copy re-detects as soon as the border changes.
        change_tolerance: that test's tolerance: the fraction of border pixels that turned
            bright, or of field-of-view rim pixels that turned dark, beyond which it re-detects.
        min_fov_fraction: smallest field of view accepted, as a fraction of the frame area; a
            smaller (or no) bright region keeps the previous field of view, or the whole frame.
        box_hue: OpenCV hue range (0..180) of an OSD box: green (60) to teal/cyan (90).
        box_min_saturation: minimum HSV saturation (0..255) of an OSD box pixel.
        box_min_value: minimum HSV value (0..255) of an OSD box pixel.
        box_min_area: smallest OSD box, as a fraction of the frame area (green speckles of
            video decoding errors are smaller and are left alone).
        box_min_fill: smallest fraction of its bounding rectangle a green region must fill to
            count as a box (text and icons inside the box leave holes).
        osd_pad: pixels added around each OSD box before filling (compression halo).
        median_ksize: median filter aperture (odd, >= 3).
        wavelet: PyWavelets wavelet name.
        wavelet_levels: decomposition levels.
        wavelet_rule: ``"bayes"`` (BayesShrink: threshold ``sigma^2 / sigma_x`` per sub-band)
            or ``"visu"`` (VisuShrink: universal threshold ``sigma * sqrt(2 ln N)``); ``sigma``
            is the noise level estimated per channel as ``median(|HH1|) / 0.6745``.
        wavelet_strength: multiplier on the threshold (1.0 = the rule's value).
    """

    enabled: bool = True
    fov_crop: bool = True
    mask_osd: bool = True
    denoise: DenoiseMode = "none"
    dark_threshold: int = 40
    border_margin: int = 5
    analysis_width: int = 480
    redetect_every: int = 30
    change_tolerance: float = 0.05
    min_fov_fraction: float = 0.1
    box_hue: tuple[int, int] = (35, 100)
    box_min_saturation: int = 100
    box_min_value: int = 60
    box_min_area: float = 0.004
    box_min_fill: float = 0.6
    osd_pad: int = 4
    median_ksize: int = 5
    wavelet: str = "sym4"
    wavelet_levels: int = 3
    wavelet_rule: ShrinkRule = "bayes"
    wavelet_strength: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        if self.denoise not in DENOISE_MODES:
            problems.append(f"denoise must be one of {', '.join(DENOISE_MODES)}, got {self.denoise!r}")
        if self.wavelet_rule not in ("bayes", "visu"):
            problems.append(f"wavelet_rule must be 'bayes' or 'visu', got {self.wavelet_rule!r}")
        if not 0 <= self.dark_threshold < 255 or not 0 <= self.border_margin < 255:
            problems.append(
                f"dark_threshold and border_margin must be in 0..254, got {self.dark_threshold}, "
                f"{self.border_margin}"
            )
        if self.analysis_width < 32 or self.redetect_every < 1 or self.wavelet_levels < 1:
            problems.append("analysis_width >= 32, redetect_every >= 1 and wavelet_levels >= 1 are required")
        if self.median_ksize < 3 or self.median_ksize % 2 == 0:
            problems.append(f"median_ksize must be odd and >= 3, got {self.median_ksize}")
        for name in ("change_tolerance", "min_fov_fraction", "box_min_area", "box_min_fill"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                problems.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if len(self.box_hue) != 2 or not 0 <= self.box_hue[0] <= self.box_hue[1] <= 180:
            problems.append(f"box_hue must be (low, high) within 0..180, got {self.box_hue}")
        if problems:
            raise InputError("invalid endoscopy config: " + "; ".join(problems))

    @property
    def active(self) -> bool:
        """Whether the cleaner changes frames at all."""
        return self.enabled and (self.fov_crop or self.mask_osd or self.denoise != "none")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        out = dataclasses.asdict(self)
        out["box_hue"] = list(self.box_hue)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EndoscopyConfig:
        """Build from a (possibly partial) dict; missing keys take their defaults.

        Raises:
            InputError: an unknown key or an invalid value.
        """
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise InputError(f"unknown endoscopy config keys {unknown}; known: {', '.join(known)}")
        kwargs: dict[str, Any] = {}
        try:
            for key, value in values.items():
                default = getattr(cls, key)
                if isinstance(default, bool):
                    if not isinstance(value, bool):
                        raise TypeError(f"{key} must be true or false")
                    kwargs[key] = value
                elif isinstance(default, tuple):
                    kwargs[key] = tuple(int(v) for v in value)
                else:
                    kwargs[key] = type(default)(value)
        except (TypeError, ValueError) as err:
            raise InputError(f"invalid endoscopy config: {err}") from err
        return cls(**kwargs)

    @classmethod
    def parse(cls, text: str) -> EndoscopyConfig:
        """Parse the command-line form: comma-separated ``fov_crop``, ``mask_osd``, ``median``,
        ``wavelet`` (= median+wavelet), ``all`` (crop + mask), or ``key=value`` pairs.

        Example: ``"fov_crop,mask_osd,denoise=median,redetect_every=1"``.
        """
        values: dict[str, Any] = {"fov_crop": False, "mask_osd": False}
        for item in (p.strip() for p in text.split(",")):
            if not item:
                continue
            if item == "all":
                values.update(fov_crop=True, mask_osd=True)
            elif item in ("fov_crop", "mask_osd"):
                values[item] = True
            elif item in ("median", "wavelet"):
                values["denoise"] = "median" if item == "median" else "median+wavelet"
            elif "=" in item:
                key, _, raw = item.partition("=")
                values[key.strip()] = _literal(raw.strip())
            else:
                raise InputError(
                    f"unknown endoscopy option '{item}'; use fov_crop, mask_osd, median, wavelet, "
                    "all, or name=value (e.g. redetect_every=1)"
                )
        return cls.from_dict(values)


def _literal(raw: str) -> Any:
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw
