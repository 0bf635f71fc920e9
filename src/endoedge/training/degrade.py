"""Realistic frame degradations: how the ``unclear`` triage class is built from real frames.

Colonoscopy frames become unreadable when the scope shakes, the lens is smeared or fogged, fluid
is injected, or the exposure control lags. The recipe (one or two of these per frame, each at a
severity that makes the mucosa hard to read; sizes are for a 320-px frame and scale with it):

* ``motion``: motion blur along a random camera-shake trajectory (a smoothed random walk of
  9..31 px drawn into the kernel, so kernels are curved and uneven, not just straight lines);
* ``defocus``: a disc (pill-box) kernel of radius 3..8 px;
* ``smear``: mucus or fluid on the lens: inside a feathered random ellipse covering 30..80 % of
  the frame, a strong directional blur, a whitish veil and desaturation;
* ``exposure``: over-exposure (gain 1.8..3.0, highlights blown to white) or under-exposure (gain
  0.10..0.30 with gain-amplified sensor noise);
* ``haze``: fog / injected water: a pinkish-white veil (alpha 0.45..0.75) over a mildly blurred
  frame;
* ``bubbles``: 8..40 air bubbles (radius 3..25 px) refracting what is behind them (magnified),
  each with a bright specular rim, over a frame blurred by the water.

Everything is vectorized OpenCV on uint8 RGB; the random state is the caller's generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

DEGRADATIONS = ("motion", "defocus", "smear", "exposure", "haze", "bubbles")


def _scale(image: np.ndarray) -> float:
    return min(image.shape[:2]) / 320.0


def motion_kernel(length: int, rng: np.random.Generator) -> np.ndarray:
    """A camera-shake kernel: a smoothed random-walk trajectory of ``length`` px, sum 1."""
    size = length | 1
    angle = rng.uniform(0, 2 * np.pi)
    turn = rng.normal(0, 0.25, length).cumsum()  # slowly changing direction
    steps = np.stack([np.cos(angle + turn), np.sin(angle + turn)], 1)
    path = steps.cumsum(0)
    path -= (path.max(0) + path.min(0)) / 2
    fit = (size - 1) / 2 / max(float(np.abs(path).max()), 1e-6)
    path = path * min(1.0, fit) + (size - 1) / 2
    kernel = np.zeros((size, size), np.float32)
    pts = np.rint(path).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(kernel, [pts], False, 1.0, 1, cv2.LINE_AA)
    return kernel / max(float(kernel.sum()), 1e-6)


def motion(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera-shake motion blur."""
    length = int(rng.integers(9, 32) * _scale(image))
    return cv2.filter2D(image, -1, motion_kernel(max(length, 3), rng), borderType=cv2.BORDER_REFLECT)


def defocus(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Out-of-focus blur with a disc kernel."""
    r = max(2, int(rng.uniform(3, 8.5) * _scale(image)))
    kernel = np.zeros((2 * r + 1, 2 * r + 1), np.float32)
    cv2.circle(kernel, (r, r), r, 1.0, -1, cv2.LINE_AA)
    return cv2.filter2D(image, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT)


def _blob(shape: tuple[int, int], rng: np.random.Generator, cover: tuple[float, float]) -> np.ndarray:
    """A feathered random ellipse (float32 0..1) covering roughly ``cover`` of the frame."""
    h, w = shape
    area = rng.uniform(*cover) * h * w
    aspect = rng.uniform(0.5, 2.0)
    a = np.sqrt(area / np.pi * aspect)
    b = area / np.pi / a
    m = np.zeros((h, w), np.float32)
    centre = (int(rng.uniform(0.2, 0.8) * w), int(rng.uniform(0.2, 0.8) * h))
    cv2.ellipse(m, centre, (int(a), int(b)), float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    k = int(0.15 * min(h, w)) | 1
    return cv2.GaussianBlur(m, (k, k), 0)


def smear(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mucus / fluid smeared over part of the lens."""
    length = max(9, int(rng.integers(25, 60) * _scale(image)))
    kernel = np.zeros((length | 1, length | 1), np.float32)
    c = (length | 1) // 2
    ang = rng.uniform(0, np.pi)
    d = np.array([np.cos(ang), np.sin(ang)]) * c
    cv2.line(kernel, (int(c - d[0]), int(c - d[1])), (int(c + d[0]), int(c + d[1])), 1.0, 3)
    blurred = cv2.filter2D(image, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT).astype(np.float32)
    gray = blurred.mean(2, keepdims=True)
    veil = 0.5 * blurred + 0.3 * gray + 0.2 * 235.0
    alpha = _blob(image.shape[:2], rng, (0.3, 0.8))[..., None] * rng.uniform(0.75, 1.0)
    out = image.astype(np.float32) * (1 - alpha) + veil * alpha
    return np.clip(out, 0, 255).astype(np.uint8)


def exposure(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Over-exposure (blown highlights) or under-exposure (dark and noisy)."""
    x = image.astype(np.float32)
    if rng.random() < 0.5:
        out = x * rng.uniform(1.8, 3.0) + rng.uniform(10, 40)
    else:
        gain = rng.uniform(0.10, 0.30)
        out = x * gain + rng.normal(0, 6.0 * (0.3 / gain) ** 0.5, x.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def haze(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fog or injected water: a pinkish-white veil over a mildly blurred frame."""
    k = max(3, int(5 * _scale(image))) | 1
    x = cv2.GaussianBlur(image, (k, k), 0).astype(np.float32)
    veil = np.array([rng.uniform(220, 255), rng.uniform(190, 235), rng.uniform(190, 235)], np.float32)
    alpha = rng.uniform(0.45, 0.75)
    return np.clip(x * (1 - alpha) + veil * alpha, 0, 255).astype(np.uint8)


def bubbles(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Air bubbles in water: refraction (magnified content), bright rims, water blur."""
    h, w = image.shape[:2]
    s = _scale(image)
    k = max(3, int(7 * s)) | 1
    base = cv2.GaussianBlur(image, (k, k), 0)
    map_x, map_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    rim = np.zeros((h, w), np.float32)
    n = int(rng.integers(8, 41))
    cx, cy = rng.uniform(0, w, n), rng.uniform(0, h, n)
    rad = rng.uniform(3, 25, n) * s
    for x0, y0, r in zip(cx, cy, rad, strict=True):
        x1, x2 = int(max(0, x0 - r)), int(min(w, x0 + r + 1))
        y1, y2 = int(max(0, y0 - r)), int(min(h, y0 + r + 1))
        if x2 <= x1 or y2 <= y1:
            continue
        dx, dy = map_x[y1:y2, x1:x2] - x0, map_y[y1:y2, x1:x2] - y0
        inside = dx * dx + dy * dy < r * r
        mag = 0.55  # a bubble shows a magnified, inverted-free view of what is behind it
        map_x[y1:y2, x1:x2] = np.where(inside, x0 + dx * mag, map_x[y1:y2, x1:x2])
        map_y[y1:y2, x1:x2] = np.where(inside, y0 + dy * mag, map_y[y1:y2, x1:x2])
        cv2.circle(rim, (int(x0), int(y0)), int(r), 1.0, max(1, int(r / 6)), cv2.LINE_AA)
        cv2.circle(rim, (int(x0 - r / 3), int(y0 - r / 3)), max(1, int(r / 5)), 1.0, -1, cv2.LINE_AA)
    out = cv2.remap(base, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT).astype(np.float32)
    glow = cv2.GaussianBlur(rim, (3, 3), 0)[..., None]
    return np.clip(out * (1 - 0.8 * glow) + 250.0 * 0.8 * glow, 0, 255).astype(np.uint8)


_OPS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "motion": motion, "defocus": defocus, "smear": smear, "exposure": exposure, "haze": haze, "bubbles": bubbles,
}


def degrade(image: np.ndarray, rng: np.random.Generator, ops: Sequence[str] | None = None) -> np.ndarray:
    """One or two random degradations (or the named ``ops``, in order) of a uint8 RGB frame."""
    if ops is None:
        k = 1 if rng.random() < 0.6 else 2
        ops = [DEGRADATIONS[i] for i in rng.choice(len(DEGRADATIONS), k, replace=False)]
    out = image
    for name in ops:
        out = _OPS[name](out, rng)
    return out
