"""``FrameCleaner``: field-of-view crop, OSD masking and denoising of endoscopy frames.

Per frame (uint8 BGR, any size):

1. **analysis copy**: one ``cv2.resize`` (bilinear) by an integer factor to about
   ``analysis_width`` pixels wide (480x270 for 1080p); all detection runs on it.
2. **field of view** (``timings.fov``): found on the analysis copy (see
   :func:`~endoedge.endoscopy.fov.find_fov`) and cached, because a scope's mask is static in a
   video. It is re-detected every ``redetect_every`` frames, when the frame size changes, or
   when a cheap test on the analysis copy sees the border change (border pixels turning bright,
   or the field of view's rim turning dark, beyond ``change_tolerance``), e.g. a new image.
3. **OSD** (``timings.osd``): green/teal boxes are found on every frame (they come and go); the
   crop is copied into a reused buffer with everything outside the field-of-view polygon set to
   0 (burned-in text in the black corners) and the boxes filled with the frame's mean tissue
   colour (a flat fill; no inpainting).
4. **denoise** (``timings.denoise``): optional median and wavelet steps on the cropped frame.

The output is a view of the source frame (crop only) or of a reused buffer that the next call
with the same ``slot`` overwrites. Boxes found on it map back to the source frame by adding the
returned offset: :func:`to_source`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from endoedge.endoscopy.denoise import check_wavelet, median, wavelet_denoise
from endoedge.endoscopy.fov import FieldOfView, Rect, border_threshold, find_fov, find_osd_boxes
from endoedge.errors import InputError
from endoedge.spec.endoscopy import EndoscopyConfig

logger = logging.getLogger(__name__)

_RIM = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))


def to_source(boxes: np.ndarray, offset: tuple[int, int]) -> np.ndarray:
    """Map ``N x 4`` xyxy boxes from cleaned-frame pixels to source pixels, in place.

    ``offset`` is the ``(x, y)`` the cleaner returned. Returns the same array.
    """
    if offset != (0, 0):
        boxes += np.array([offset[0], offset[1], offset[0], offset[1]], dtype=boxes.dtype)
    return boxes


@dataclass
class CleanTimes:
    """Milliseconds (``time.perf_counter_ns``) of the last call, per stage.

    ``fov`` = analysis copy + change test (+ re-detection when it ran); ``osd`` = box search +
    masked copy + box fill; ``denoise`` = median (+ wavelet).
    """

    fov: float = 0.0
    osd: float = 0.0
    denoise: float = 0.0
    redetected: bool = False

    @property
    def total(self) -> float:
        """Sum of the stages, ms."""
        return self.fov + self.osd + self.denoise

    def as_dict(self) -> dict[str, float]:
        """``{"fov", "osd", "denoise", "total"}`` in ms."""
        return {"fov": self.fov, "osd": self.osd, "denoise": self.denoise, "total": self.total}


@dataclass
class _Slot:
    """Reused output buffers of one slot."""

    generation: int = -1
    out: np.ndarray = field(default_factory=lambda: np.empty((0, 0, 3), np.uint8))
    tmp: np.ndarray = field(default_factory=lambda: np.empty((0, 0, 3), np.uint8))


class FrameCleaner:
    """Crops endoscopy frames to the scope's field of view, blanks the OSD, optionally denoises.

    Args:
        config: what to do (see :class:`EndoscopyConfig`); default: crop + OSD mask.

    Raises:
        BackendUnavailableError: the wavelet step is asked for and PyWavelets is missing.
        InputError: an unknown wavelet name.

    Attributes:
        timings: :class:`CleanTimes` of the last call (ms per stage).
        fov: the cached :class:`~endoedge.endoscopy.fov.FieldOfView` (``None`` before the
            first frame).
        osd_boxes: OSD box rectangles of the last frame, source pixels ``(x0, y0, x1, y1)``.

    Example:
        >>> cleaner = FrameCleaner(EndoscopyConfig(denoise="median"))   # doctest: +SKIP
        >>> view, offset = cleaner(frame)                               # doctest: +SKIP
        >>> boxes = to_source(detect(view), offset)                     # doctest: +SKIP
    """

    def __init__(self, config: EndoscopyConfig | None = None) -> None:
        self.config = config or EndoscopyConfig()
        if self.config.active and self.config.denoise == "median+wavelet":
            check_wavelet(self.config.wavelet)  # fail at load time, not on the first frame
        self.timings = CleanTimes()
        self.fov: FieldOfView | None = None
        self.osd_boxes: list[Rect] = []
        self._frames_since = 0
        self._generation = 0
        self._slots: dict[int, _Slot] = {}
        self._small: np.ndarray = np.empty((0, 0, 3), np.uint8)
        self._grey: np.ndarray = np.empty((0, 0), np.uint8)
        self._dark: np.ndarray = np.empty((0, 0), np.uint8)
        self._box_small: np.ndarray = np.empty((0, 0), np.uint8)
        self._crop_mask: np.ndarray = np.empty((0, 0), np.uint8)
        self._small_fov: np.ndarray = np.empty((0, 0), np.uint8)
        self._small_rim: np.ndarray = np.empty((0, 0), np.uint8)
        self._small_border: np.ndarray = np.empty((0, 0), np.uint8)
        self._baseline = (0.0, 0.0)
        self._osd_small: np.ndarray = np.zeros((0, 4), np.int64)

    def reset(self) -> None:
        """Forget the cached field of view (the next frame re-detects it)."""
        self.fov = None

    def __call__(self, bgr: np.ndarray, *, slot: int = 0) -> tuple[np.ndarray, tuple[int, int]]:
        """Clean one ``H x W x 3`` uint8 BGR frame.

        Args:
            bgr: the source frame; it is never modified.
            slot: which reused output buffer to write; frames that must stay valid together
                (a batch) need distinct slots.

        Returns:
            ``(view, (x, y))``: the cleaned frame (a crop view of ``bgr`` when only cropping,
            else a buffer reused by the next call with the same slot) and the source pixel of
            its top-left corner.
        """
        cfg = self.config
        if not cfg.active:
            self.timings = CleanTimes()
            return bgr, (0, 0)
        if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
            raise InputError(f"FrameCleaner needs an H x W x 3 uint8 BGR frame, got {bgr.shape} {bgr.dtype}")
        t0 = time.perf_counter_ns()
        need_analysis = cfg.fov_crop or cfg.mask_osd
        redetected = False
        if need_analysis:
            scale = self._analysis_copy(bgr)
            t1 = time.perf_counter_ns()
            boxes_small = None
            if cfg.mask_osd:
                self.osd_boxes, boxes_small = find_osd_boxes(
                    self._small, scale, bgr.shape[:2], hue=cfg.box_hue,
                    min_saturation=cfg.box_min_saturation, min_value=cfg.box_min_value,
                    min_area=cfg.box_min_area, min_fill=cfg.box_min_fill, pad=cfg.osd_pad,
                )
                self._osd_small = boxes_small
            t_box = time.perf_counter_ns() - t1
            if self._needs_detection(bgr.shape[:2]):
                self._detect(scale, bgr.shape[:2], boxes_small)
                redetected = True
            self._frames_since += 1
            assert self.fov is not None
            fov = self.fov
        else:
            fov, t_box = FieldOfView.whole(bgr.shape[:2]), 0
        x0, y0, x1, y1 = fov.rect if cfg.fov_crop else (0, 0, bgr.shape[1], bgr.shape[0])
        view = bgr[y0:y1, x0:x1]
        t2 = time.perf_counter_ns()
        fov_ns = t2 - t0 - t_box
        if cfg.mask_osd:
            view = self._mask(view, (x0, y0), self._slot(slot, view.shape))
        t3 = time.perf_counter_ns()
        if cfg.denoise != "none":
            view = self._denoise(view, self._slot(slot, view.shape))
        t4 = time.perf_counter_ns()
        self.timings = CleanTimes(fov_ns / 1e6, (t3 - t2 + t_box) / 1e6, (t4 - t3) / 1e6, redetected)
        return view, (x0, y0)

    # -- stages -----------------------------------------------------------------------------
    def _analysis_copy(self, bgr: np.ndarray) -> tuple[float, float]:
        h, w = bgr.shape[:2]
        factor = max(1, w // self.config.analysis_width)
        sw, sh = max(1, w // factor), max(1, h // factor)
        if self._small.shape[:2] != (sh, sw):
            self._small = np.empty((sh, sw, 3), np.uint8)
            self._grey = np.empty((sh, sw), np.uint8)
            self._dark = np.empty((sh, sw), np.uint8)
            self._box_small = np.empty((sh, sw), np.uint8)
        cv2.resize(bgr, (sw, sh), dst=self._small, interpolation=cv2.INTER_LINEAR)
        cv2.cvtColor(self._small, cv2.COLOR_BGR2GRAY, dst=self._grey)
        return w / sw, h / sh

    def _needs_detection(self, frame_size: tuple[int, int]) -> bool:
        cfg = self.config
        if self.fov is None or self.fov.frame_size != frame_size or self._frames_since >= cfg.redetect_every:
            return True
        if self._small_fov.shape != self._grey.shape:
            return True
        border, rim = self._border_stats()
        b0, r0 = self._baseline
        return border > b0 + cfg.change_tolerance or rim > r0 + cfg.change_tolerance

    def _border_stats(self) -> tuple[float, float]:
        """(fraction of border pixels that are bright, fraction of FOV-rim pixels that are dark)."""
        assert self.fov is not None
        cv2.threshold(self._grey, self.fov.threshold, 255, cv2.THRESH_BINARY_INV, dst=self._dark)
        n_border = self._small_fov.size - cv2.countNonZero(self._small_fov)
        dark_border = cv2.countNonZero(cv2.bitwise_and(self._dark, self._small_border))
        n_rim = max(1, cv2.countNonZero(self._small_rim))
        dark_rim = cv2.countNonZero(cv2.bitwise_and(self._dark, self._small_rim))
        border = 1.0 - dark_border / n_border if n_border else 0.0
        return border, dark_rim / n_rim

    def _detect(self, scale: tuple[float, float], frame_size: tuple[int, int],
                boxes_small: np.ndarray | None) -> None:
        cfg = self.config
        threshold = border_threshold(self._grey, cfg.border_margin, cfg.dark_threshold)
        found = find_fov(self._grey, scale, frame_size, threshold=threshold,
                         min_fraction=cfg.min_fov_fraction, boxes=boxes_small)
        if found is None:
            keep = self.fov is not None and self.fov.frame_size == frame_size
            found = self.fov if keep and self.fov is not None else FieldOfView.whole(frame_size, threshold)
            logger.debug("no field of view found; using %s", "the previous one" if keep else "the whole frame")
        self.fov = found
        self._frames_since = 0
        self._generation += 1
        self._crop_mask = found.crop_mask()
        # The field of view at analysis resolution, and its inner rim, for the change test.
        sx, sy = scale
        small_poly = np.round(found.polygon / (sx, sy)).astype(np.int32)
        self._small_fov = np.zeros(self._grey.shape, np.uint8)
        cv2.fillPoly(self._small_fov, [small_poly], 255)
        self._small_border = cv2.bitwise_not(self._small_fov)
        self._small_rim = cv2.subtract(self._small_fov, cv2.erode(self._small_fov, _RIM, iterations=2))
        self._baseline = self._border_stats()

    def _slot(self, slot: int, shape: tuple[int, ...]) -> _Slot:
        s = self._slots.setdefault(slot, _Slot())
        if s.generation != self._generation or s.out.shape != shape:
            s.out = np.zeros(shape, np.uint8)
            s.tmp = np.empty(shape, np.uint8)
            s.generation = self._generation
        return s

    def _mask(self, view: np.ndarray, origin: tuple[int, int], s: _Slot) -> np.ndarray:
        """Copy the field of view into the slot's buffer (outside stays 0) and fill OSD boxes."""
        assert self.fov is not None
        fx0, fy0, fx1, fy1 = self.fov.rect
        ox, oy = origin
        # The FOV rect inside the view (the view is the FOV rect itself, or the whole frame).
        rx0, ry0 = fx0 - ox, fy0 - oy
        dst = s.out[ry0 : ry0 + (fy1 - fy0), rx0 : rx0 + (fx1 - fx0)]
        cv2.copyTo(view[ry0 : ry0 + (fy1 - fy0), rx0 : rx0 + (fx1 - fx0)], self._crop_mask, dst)
        if self.osd_boxes:
            colour = cv2.mean(self._small, mask=self._tissue_mask(self._osd_small))[:3]
            fill = tuple(int(round(c)) for c in colour)
            fov_poly = self.fov.polygon.astype(np.float32)
            for bx0, by0, bx1, by1 in self.osd_boxes:  # one box per frame in practice
                box = np.array([[bx0, by0], [bx1, by0], [bx1, by1], [bx0, by1]], np.float32)
                area, inter = cv2.intersectConvexConvex(fov_poly, box)
                if area > 0 and inter is not None:
                    poly = np.round(inter.reshape(-1, 2) - (fx0, fy0)).astype(np.int32)
                    cv2.fillPoly(dst, [poly], fill)
        return s.out

    def _tissue_mask(self, boxes_small: np.ndarray) -> np.ndarray:
        """Analysis-size mask of field-of-view pixels outside OSD boxes (for the fill colour)."""
        np.copyto(self._box_small, self._small_fov)
        for x, y, bw, bh in boxes_small.tolist():  # a box or two
            self._box_small[y : y + bh, x : x + bw] = 0
        return self._box_small

    def _denoise(self, view: np.ndarray, s: _Slot) -> np.ndarray:
        cfg = self.config
        median(view, cfg.median_ksize, s.tmp)
        if cfg.denoise == "median+wavelet":
            # Into tmp again: ``out`` keeps its zeros outside the field of view for the next frame.
            wavelet_denoise(s.tmp, s.tmp, wavelet=cfg.wavelet, levels=cfg.wavelet_levels,
                            rule=cfg.wavelet_rule, strength=cfg.wavelet_strength)
        return s.tmp
