"""Scale frames down inside GStreamer, before the BGR conversion, when no full-size frame is needed.

With detections only (no ``--video``, no ``--display``) nothing downstream needs the 1080p frame:
the detector shrinks it to its input size anyway. Here the capture does that in GStreamer's C
elements on the decoded YUV planes: ``identity name=fullsize ! videoscale ! <caps> ! videoconvert !
BGR``. So the YUV→BGR conversion, the buffer that reaches Python and the detector's own resize all
handle a frame of the network's size, not 2 MP.

* letterbox models (Ultralytics): caps ``width=[1,W],height=[1,H],pixel-aspect-ratio=1/1``;
  ``videoscale`` keeps the aspect ratio and fits the frame into the input (1920x1080 → 320x180 for
  320), which is the detector's own letterbox size, so the detector's resize does nothing;
* stretch models (torchvision SSD): caps ``width=W,height=H`` exactly.

:class:`ScaleBack` wraps the detector so boxes come back in **source pixels** (x by full width /
scaled width, y by full height / scaled height; the full size is read from the ``fullsize``
element's caps). Scaling is bilinear in both cases (``videoscale method=bilinear``; endoedge's
pre-processing uses ``cv2.INTER_LINEAR`` without anti-aliasing), so the network input differs from
the full-size path by interpolation rounding only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from endoedge.errors import EndoedgeError
from endoedge.pipeline.capture import GstCapture
from endoedge.pipeline.sources import JetsonMode, SourceSpec, build_pipeline

if TYPE_CHECKING:
    from endoedge.detector import Detections, StageTimes
    from endoedge.endoscopy import FrameCleaner
    from endoedge.pipeline.frames import CaptureSource, Frame, FrameDetector, StopFlag
    from endoedge.spec import PreprocessSpec

logger = logging.getLogger(__name__)

#: Source kinds whose GStreamer string endoedge builds (a raw pipeline or a folder is left alone).
PRESCALE_KINDS = frozenset({"file", "v4l2", "rtsp", "rtp", "test"})
_TAIL = "videoconvert ! video/x-raw,format=BGR ! "


def prescale_caps(pre: PreprocessSpec) -> str:
    """The caps after ``videoscale`` for a model's pre-processing (see the module docstring)."""
    h, w = pre.input_size
    if pre.resize == "letterbox":
        return f"video/x-raw,width=[1,{w}],height=[1,{h}],pixel-aspect-ratio=1/1"
    return f"video/x-raw,width={w},height={h}"


def prescaled_description(description: str, caps: str) -> str:
    """``description`` with ``identity name=fullsize ! videoscale ! caps`` before its BGR conversion.

    Raises:
        EndoedgeError: the description has no ``videoconvert ! video/x-raw,format=BGR`` tail.
    """
    if _TAIL not in description:
        raise EndoedgeError("cannot pre-scale this pipeline: it has no 'videoconvert ! video/x-raw,format=BGR' step")
    return description.replace(_TAIL, f"identity name=fullsize silent=true ! videoscale method=bilinear ! {caps} ! {_TAIL}", 1)


class PrescaledCapture(GstCapture):
    """A :class:`GstCapture` whose frames are pre-scaled; ``scale`` = (full / scaled) per axis,
    known after the first frame."""

    scale: tuple[float, float] | None = None
    full_size: tuple[int, int] | None = None

    def read(self, stop: StopFlag | None = None) -> Frame | None:
        """The next (scaled) frame; the first one also reads the full size from the caps."""
        frame = super().read(stop)
        if frame is not None and self.scale is None:
            self.full_size = self._full_size()
            h, w = frame.image.shape[:2]
            self.scale = (self.full_size[0] / w, self.full_size[1] / h)
            logger.info("pre-scaled capture: %dx%d -> %dx%d before BGR conversion", *self.full_size, w, h)
        return frame

    def _full_size(self) -> tuple[int, int]:
        element = self._pipeline.get_by_name("fullsize")
        caps = element.get_static_pad("src").get_current_caps() if element is not None else None
        if caps is None:
            raise EndoedgeError("pre-scaled capture: the source's full frame size is unknown")
        s = caps.get_structure(0)
        return int(s.get_value("width")), int(s.get_value("height"))


class ScaleBack:
    """A :class:`~endoedge.pipeline.frames.FrameDetector` that maps boxes from the pre-scaled frame
    back to source pixels (``current()`` returns the capture in use, which may be rebuilt)."""

    def __init__(self, detector: FrameDetector, current: Callable[[], PrescaledCapture | None]) -> None:
        self.detector = detector
        self.current = current

    def detect(self, image_bgr: np.ndarray, /) -> Detections:
        """Detect on the scaled frame; boxes xyxy (and a multi-task model's mask) in source pixels."""
        result = self.detector.detect(image_bgr)
        cap = self.current()
        if cap is None or cap.scale is None:
            return result
        sx, sy = cap.scale
        changes: dict[str, Any] = {}
        if len(result.scores):
            boxes = result.boxes * np.asarray([sx, sy, sx, sy], dtype=np.float32)
            changes["boxes"] = boxes.astype(np.float32, copy=False)
        if result.mask is not None:
            import cv2

            h, w = result.mask.shape
            changes["mask"] = cv2.resize(result.mask, (round(w * sx), round(h * sy)), interpolation=cv2.INTER_LINEAR)
        return replace(result, **changes) if changes else result

    @property
    def timings(self) -> StageTimes:
        """The wrapped detector's stage times."""
        return self.detector.timings

    @property
    def cleaner(self) -> FrameCleaner | None:
        """The wrapped detector's frame cleaner (None: pre-scaling is only used without one)."""
        return self.detector.cleaner


@dataclass
class Prescaled:
    """What :func:`prescale_pipeline` returns: the capture factory, the wrapped detector, the caps."""

    make_capture: Callable[[], CaptureSource]
    detector: ScaleBack
    caps: str
    description: str


def prescale_pipeline(spec: SourceSpec, detector: Any, *, live: bool, stall_timeout_s: float,
                      jetson: JetsonMode) -> Prescaled | None:
    """Pre-scaling for ``spec`` and ``detector``, or ``None`` where it does not apply: a folder or raw
    pipeline source, NVIDIA presets in use (Jetson), a detector with endoscopy frame cleaning (its
    field-of-view and OSD steps work on full-size frames), or no model pre-processing spec."""
    if spec.kind not in PRESCALE_KINDS or getattr(detector, "cleaner", None) is not None:
        return None
    pre = getattr(getattr(detector, "spec", None), "preprocess", None)
    if pre is None:
        return None
    if jetson == "on" or (jetson == "auto" and spec.kind in ("file", "v4l2", "rtsp")):
        from endoedge.jetson import is_jetson

        if jetson == "on" or is_jetson():
            return None
    caps = prescale_caps(pre)
    description = prescaled_description(build_pipeline(spec, live=live), caps)
    captures: list[PrescaledCapture] = []

    def make() -> CaptureSource:
        cap = PrescaledCapture(description, location=spec.location, live=live, stall_timeout_s=stall_timeout_s)
        captures[:] = [cap]
        return cap

    return Prescaled(make, ScaleBack(detector, lambda: captures[0] if captures else None), caps, description)
