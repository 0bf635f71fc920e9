"""Ground-truth segmentation masks beside a dataset's images (Kvasir-SEG layout).

Kvasir-SEG ships ``masks/<name>`` beside ``images/<name>``: binary JPEGs (white = polyp),
thresholded at > 127 because JPEG blurs the edges.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from endoedge.data.datasets import Sample
from endoedge.data.media import IMAGE_SUFFIXES


def mask_path(sample: Sample) -> Path | None:
    """The mask file of ``sample``: ``<root>/masks/<same name>`` (or the same stem with any image
    suffix); ``None`` when there is none."""
    folder = sample.path.parent.parent / "masks"
    if not folder.is_dir():
        return None
    same = folder / sample.path.name
    if same.is_file():
        return same
    for suffix in IMAGE_SUFFIXES:
        cand = folder / (sample.path.stem + suffix)
        if cand.is_file():
            return cand
    return None


def read_mask(sample: Sample) -> np.ndarray | None:
    """``H x W`` bool mask of ``sample`` in source pixels (> 127), or ``None`` without a mask file."""
    import cv2

    p = mask_path(sample)
    if p is None:
        return None
    m = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
    return None if m is None else m > 127
