"""Denoising of endoscopy frames: median filter and Sym4 wavelet soft-thresholding (seed 004).

The wavelet step follows Donoho & Johnstone: the noise level of each colour channel is estimated
from the finest diagonal detail sub-band as ``sigma = median(|HH1|) / 0.6745``; every detail
coefficient is soft-thresholded, ``sign(c) * max(|c| - t, 0)``, with

- **BayesShrink** (Chang, Yu & Vetterli 2000), per sub-band and channel:
  ``t = sigma^2 / sqrt(max(mean(c^2) - sigma^2, 0))`` (the whole sub-band when that is 0), or
- **VisuShrink** (Donoho & Johnstone 1994), one universal threshold per channel:
  ``t = sigma * sqrt(2 ln N)``, ``N`` = pixels per channel (smoother, removes more detail).

The approximation sub-band is kept. PyWavelets is the ``denoise`` extra and is imported lazily.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from endoedge._optional import require
from endoedge.errors import InputError


def median(src: np.ndarray, ksize: int, dst: np.ndarray) -> np.ndarray:
    """``cv2.medianBlur`` of a uint8 BGR image into ``dst`` (same shape, not ``src``)."""
    cv2.medianBlur(src, ksize, dst=dst)
    return dst


def check_wavelet(name: str) -> None:
    """Import PyWavelets and check that ``name`` is a discrete wavelet it knows.

    Raises:
        BackendUnavailableError: PyWavelets is not installed (``pip install 'endoedge[denoise]'``).
        InputError: an unknown wavelet name.
    """
    pywt = require("pywt", extra="denoise", purpose="wavelet denoising")
    if name not in pywt.wavelist(kind="discrete"):
        raise InputError(f"unknown wavelet '{name}'; PyWavelets' discrete wavelets include sym4, db4, haar")


def wavelet_denoise(
    src: np.ndarray,
    dst: np.ndarray,
    *,
    wavelet: str = "sym4",
    levels: int = 3,
    rule: str = "bayes",
    strength: float = 1.0,
) -> np.ndarray:
    """Soft-threshold wavelet denoising of a uint8 ``H x W x C`` image into ``dst`` (may be ``src``).

    All channels go through one 2-D transform over axes (0, 1); thresholds are per channel
    (and per sub-band for BayesShrink). Levels are capped at PyWavelets' maximum for the
    image size. See the module docstring for the rules.
    """
    pywt = require("pywt", extra="denoise", purpose="wavelet denoising")
    h, w = src.shape[:2]
    levels = max(1, min(levels, pywt.dwt_max_level(min(h, w), pywt.Wavelet(wavelet).dec_len)))
    x = src.astype(np.float32)
    coeffs: list[Any] = pywt.wavedec2(x, wavelet, mode="periodization", level=levels, axes=(0, 1))
    finest_hh = coeffs[-1][2]
    sigma = np.median(np.abs(finest_hh).reshape(-1, finest_hh.shape[-1]), axis=0) / 0.6745
    sigma = np.maximum(sigma, 1e-6).astype(np.float32)
    universal = sigma * math.sqrt(2.0 * math.log(h * w))
    for detail in coeffs[1:]:
        for band in detail:
            if rule == "visu":
                t = universal
            else:
                var = np.mean(np.square(band).reshape(-1, band.shape[-1]), axis=0)
                sigma_x = np.sqrt(np.maximum(var - sigma * sigma, 0.0))
                t = np.where(sigma_x > 0, sigma * sigma / np.maximum(sigma_x, 1e-12), np.abs(band).max())
            _soft_threshold(band, (t * strength).astype(np.float32))
    rec = pywt.waverec2(coeffs, wavelet, mode="periodization", axes=(0, 1))[:h, :w]
    rec += 0.5
    np.clip(rec, 0.0, 255.0, out=rec)
    np.copyto(dst, rec, casting="unsafe")
    return dst


def _soft_threshold(band: np.ndarray, t: np.ndarray) -> None:
    """In place: ``band = sign(band) * max(|band| - t, 0)``; ``t`` broadcasts over the last axis."""
    mag = np.abs(band)
    mag -= t
    np.maximum(mag, 0.0, out=mag)
    np.copysign(mag, band, out=band)


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 images (``inf`` when identical)."""
    return float(cv2.PSNR(reference, image))
