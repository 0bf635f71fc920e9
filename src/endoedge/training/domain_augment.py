"""Augmentations that mimic other endoscope processors and scopes, on uint8 RGB images.

Kvasir-SEG comes from one centre's processor; other hospitals' video differs in white balance,
sharpness, glare, burned-in text and the shape of the field of view. Each transform here draws
one such difference, leaves the geometry alone (boxes stay valid) and works on the whole image
at once (``cv2`` look-up tables, filters and drawing calls):

- white balance: a gain per channel (RGB), as another processor's colour setting;
- blur: Gaussian (focus) or a short motion streak (camera motion);
- specular highlights: small saturated white blobs with a soft halo, as the light's glare;
- OSD text: date/time/settings text burned into the corners (the processor's overlay);
- FOV mask: black outside an octagon or a circle (the scope's field of view);
- dye (off unless ``p_dye`` > 0): a pale blue-green tint over a soft ellipse, on a boxed lesion or
  anywhere, as chromoendoscopy or the blue submucosal cushion of a lifted lesion (other centres show
  polyps so; Kvasir-SEG does not).

Boxes are not moved (the dye reads them to tint a lesion). A highlight or text may cover part of a
polyp, as in real video.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DomainAugConfig:
    """Probabilities (0..1, per image) and strengths of the domain augmentations.

    Attributes:
        p_white_balance: chance of a per-channel gain; ``wb_gain`` its amplitude (0.15: 0.85..1.15).
        p_blur: chance of a blur; ``blur_max`` the largest kernel side in pixels (odd).
        p_specular: chance of 1..``specular_max`` highlights (radius 1..3% of the image side).
        p_osd: chance of burned-in OSD text lines in the corners.
        p_fov: chance of a black field-of-view mask (octagon or circle).
        p_dye: chance of a blue-dye tint (0 = off: then no random number is drawn for it, so the
            other augmentations' draws are the same as without it).
    """

    p_white_balance: float = 0.5
    wb_gain: float = 0.15
    p_blur: float = 0.3
    blur_max: int = 7
    p_specular: float = 0.4
    specular_max: int = 6
    p_osd: float = 0.3
    p_fov: float = 0.3
    p_dye: float = 0.0


_OSD_WORDS = ("CVP", "EVIS", "LUCERA", "Eh:A5", "Cr:N", "CE:1", "Ef:B4", "ID:", "NBI", "AGC", "Iris:P", "x1.0")


def white_balance(image: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Multiply the R, G, B channels by ``gains`` (3 floats) with per-channel look-up tables."""
    import cv2

    x = np.arange(256, dtype=np.float32)
    chans = [cv2.LUT(image[..., c].copy(), np.clip(x * gains[c], 0, 255).astype(np.uint8)) for c in range(3)]
    return np.ascontiguousarray(np.stack(chans, -1))


def blur(image: np.ndarray, rng: np.random.Generator, max_kernel: int) -> np.ndarray:
    """Gaussian blur (kernel 3..``max_kernel``) or a motion streak along a random angle."""
    import cv2

    k = int(rng.integers(1, max(2, max_kernel // 2 + 1))) * 2 + 1
    if rng.random() < 0.5:
        return cv2.GaussianBlur(image, (k, k), 0)
    kernel = np.zeros((k, k), np.float32)
    kernel[k // 2, :] = 1.0 / k
    rot = cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), float(rng.uniform(0, 180)), 1.0)
    streak = cv2.warpAffine(kernel, rot, (k, k))
    streak = (streak / max(float(streak.sum()), 1e-6)).astype(np.float32)
    return cv2.filter2D(image, -1, streak)


def specular(image: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
    """Add ``count`` glare spots: white ellipses (radius 1..3% of the side) with a soft halo."""
    import cv2

    h, w = image.shape[:2]
    side = min(h, w)
    glare = np.zeros((h, w), np.float32)
    for _ in range(count):
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        ax = max(1, int(side * rng.uniform(0.01, 0.03)))
        ay = max(1, int(ax * rng.uniform(0.4, 1.0)))
        cv2.ellipse(glare, (cx, cy), (ax, ay), float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    halo = cv2.GaussianBlur(glare, (0, 0), max(1.0, side * 0.01))
    alpha = np.clip(glare + halo, 0, 1)[..., None]
    out = image.astype(np.float32) * (1 - alpha) + 255.0 * alpha
    return out.astype(np.uint8)


def osd_text(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Burn 2..5 lines of processor-style text (date, time, settings) into a random corner."""
    import cv2

    out = image.copy()
    h, w = out.shape[:2]
    scale = float(rng.uniform(0.25, 0.5)) * w / 320
    thickness = max(1, int(round(scale * 1.5)))
    line_h = int(22 * scale) + 2
    right = bool(rng.integers(2))
    top = bool(rng.integers(2))
    y = line_h + 2 if top else h - 2 - line_h * int(rng.integers(2, 6))
    colour = (255, 255, 255) if rng.random() < 0.8 else (0, 230, 0)
    for _ in range(int(rng.integers(2, 6))):
        kind = int(rng.integers(3))
        if kind == 0:
            text = f"{rng.integers(1, 29):02d}/{rng.integers(1, 13):02d}/{rng.integers(2005, 2025)}"
        elif kind == 1:
            text = f"{rng.integers(0, 24):02d}:{rng.integers(0, 60):02d}:{rng.integers(0, 60):02d}"
        else:
            text = " ".join(rng.choice(_OSD_WORDS, int(rng.integers(1, 3))).tolist())
        (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        x = w - tw - 4 if right else 4
        cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)
        y += line_h
    return out


def fov_mask(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Black outside a centred octagon (corners cut 10..25% of the side) or a circle/ellipse
    (radius 0.45..0.6 of the side), as the endoscope's field of view."""
    import cv2

    h, w = image.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    if rng.random() < 0.5:
        cut = rng.uniform(0.1, 0.25)
        cx, cy = int(cut * w), int(cut * h)
        pts = np.array([[cx, 0], [w - 1 - cx, 0], [w - 1, cy], [w - 1, h - 1 - cy], [w - 1 - cx, h - 1],
                        [cx, h - 1], [0, h - 1 - cy], [0, cy]], np.int32)
        cv2.fillPoly(mask, [pts], 255)
    else:
        r = rng.uniform(0.45, 0.6)
        cv2.ellipse(mask, (w // 2, h // 2), (int(r * w), int(r * h)), 0, 0, 360, 255, -1)
    return cv2.bitwise_and(image, image, mask=mask)


_DYE_WHITE = np.array([195.0, 215.0, 235.0], np.float32)  # RGB: the pale blue of a lifted lesion's cushion


def dye(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Tint a soft ellipse pale blue, as indigo carmine or a blue submucosal cushion.

    With boxes (xyxy pixels, N x 4), 70% of the time the ellipse covers one of them (1.0-1.6x its
    half sides), else it lies anywhere (radius 10-35% of the shorter side), so that blue alone does
    not mean a lesion. Inside, the colour is replaced by the pixel's luma times a blue-green tint
    (R 0.6-0.85, G 1.0-1.15, B 1.1-1.35; texture and shading kept) lightened toward a pale
    blue-white by 15-40%; the edge is feathered.
    """
    import cv2

    h, w = image.shape[:2]
    if len(boxes) and rng.random() < 0.7:
        x0, y0, x1, y1 = boxes[int(rng.integers(len(boxes)))]
        centre = (int((x0 + x1) / 2), int((y0 + y1) / 2))
        axes = (max(2, int((x1 - x0) / 2 * rng.uniform(1.0, 1.6))), max(2, int((y1 - y0) / 2 * rng.uniform(1.0, 1.6))))
    else:
        side = min(h, w)
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        r = rng.uniform(0.1, 0.35) * side
        axes = (max(2, int(r)), max(2, int(r * rng.uniform(0.5, 1.0))))
    region = np.zeros((h, w), np.float32)
    cv2.ellipse(region, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(region, (0, 0), max(1.0, 0.2 * min(axes))) * float(rng.uniform(0.7, 1.0))
    tint = np.array([rng.uniform(0.6, 0.85), rng.uniform(1.0, 1.15), rng.uniform(1.1, 1.35)], np.float32)
    light = float(rng.uniform(0.15, 0.4))
    x = image.astype(np.float32)
    luma = x @ np.array([0.299, 0.587, 0.114], np.float32)
    tinted = np.clip(luma[..., None] * tint, 0, 255) * (1 - light) + _DYE_WHITE * light
    out = x + alpha[..., None] * (tinted - x)
    return np.clip(out, 0, 255).astype(np.uint8)


def domain_augment(image: np.ndarray, rng: np.random.Generator, cfg: DomainAugConfig,
                   boxes: np.ndarray | None = None) -> np.ndarray:
    """Apply each domain augmentation with its probability; uint8 RGB in, uint8 RGB out,
    same size (boxes, xyxy pixels of ``image``, unchanged; only the dye reads them)."""
    if rng.random() < cfg.p_white_balance:
        image = white_balance(image, 1.0 + rng.uniform(-cfg.wb_gain, cfg.wb_gain, 3))
    if rng.random() < cfg.p_blur:
        image = blur(image, rng, cfg.blur_max)
    if rng.random() < cfg.p_specular:
        image = specular(image, rng, int(rng.integers(1, cfg.specular_max + 1)))
    if rng.random() < cfg.p_osd:
        image = osd_text(image, rng)
    if rng.random() < cfg.p_fov:
        image = fov_mask(image, rng)
    if cfg.p_dye > 0 and rng.random() < cfg.p_dye:
        image = dye(image, np.zeros((0, 4), np.float32) if boxes is None else boxes, rng)
    return image
