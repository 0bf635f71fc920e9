"""Endoscopy frame pre-processing: field-of-view crop, OSD masking, denoising.

Example::

    from endoedge.endoscopy import EndoscopyConfig, FrameCleaner, to_source

    cleaner = FrameCleaner(EndoscopyConfig(fov_crop=True, mask_osd=True, denoise="median"))
    view, offset = cleaner(frame_bgr)   # cleaned crop; offset = its top-left (x, y) in the frame
    boxes_in_frame = to_source(boxes_in_view, offset)   # N x 4 xyxy, in place
    print(cleaner.timings.as_dict())    # ms per stage: fov, osd, denoise, total

A :class:`~endoedge.detector.Detector` applies a cleaner itself when its model stores a config
(``endoedge export --endoscopy ...``) or ``endoedge.load(..., endoscopy=EndoscopyConfig())`` asks.
"""

from __future__ import annotations

from endoedge.endoscopy.cleaner import CleanTimes, FrameCleaner, to_source
from endoedge.endoscopy.fov import FieldOfView
from endoedge.spec.endoscopy import DENOISE_MODES, EndoscopyConfig

__all__ = ["DENOISE_MODES", "CleanTimes", "EndoscopyConfig", "FieldOfView", "FrameCleaner", "to_source"]
