"""Where calibration images come from, and which of them are used.

A source is found by :func:`discover` as a flat list of :class:`Item` (an image file, or one
frame of a video) with a *group* (the image's folder, or the video file) and chosen by
:func:`select`: a fixed number of items spread over every group in proportion to its size and
evenly inside it (every k-th image or frame, from a seeded offset), so the choice covers the
data rather than taking the first N files.
"""

from __future__ import annotations

import glob as globlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from endoedge.data.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from endoedge.data.walk import unique_files, walk_files
from endoedge.errors import CalibrationError

logger = logging.getLogger(__name__)

_GLOB_CHARS = set("*?[")


@dataclass(frozen=True, order=True)
class Item:
    """One calibration image.

    Attributes:
        group: the folder of an image file, or the video file: selection is spread over groups.
        path: the image or video file.
        frame: 0-based frame index inside a video, ``-1`` for an image file.
    """

    group: str
    path: Path
    frame: int = -1

    def describe(self) -> str:
        """``path`` or ``path#frame``."""
        return str(self.path) if self.frame < 0 else f"{self.path}#{self.frame}"


def likely_causes(source: object) -> str:
    """The one-line list of reasons a calibration source yields nothing."""
    return (
        f"likely causes: the path '{source}' is wrong or relative to another folder; it holds no "
        f"{'/'.join(s.lstrip('.') for s in IMAGE_SUFFIXES)} image or "
        f"{'/'.join(s.lstrip('.') for s in VIDEO_SUFFIXES[:4])}... video; a --calib-split file names "
        "stems that are not in it; the files are corrupt, empty or in a codec OpenCV cannot decode"
    )


def discover(source: str | Path, *, split: str | Path | None = None, role: str = "calibration source") -> list[Item]:
    """Every usable item of ``source``, sorted by (group, path, frame).

    ``source`` is one of: an image or video file; a folder (searched recursively for images and
    videos); a glob pattern (``**`` recursive); a labelled dataset (a Kvasir-SEG folder with
    ``kavsir_bboxes.json``, a COCO ``.json``, or a YOLO folder with ``images/`` and ``labels/``),
    whose images are used and labels ignored. ``split`` keeps only the image stems it lists
    (one a line, as ``data/splits/*.txt``; video frames are kept when the video's stem is listed).
    ``role`` names the source in error messages (e.g. ``"--agree source"``).

    Raises:
        CalibrationError: nothing usable is found; the message lists likely causes.
    """
    text = str(source)
    p = Path(source)
    if not p.exists() and _GLOB_CHARS & set(text):
        files = unique_files(sorted(globlib.glob(text, recursive=True)))  # a link loop: each file once
        items = _from_files([f for f in files if f.is_file()])
    elif not p.exists():
        raise CalibrationError(f"{role} '{p}' does not exist; {likely_causes(p)}")
    elif _is_labelled(p):
        items = _from_dataset(p)
    elif p.is_dir():
        items = _from_files(walk_files(p))
    else:
        items = _from_files([p])
    if split is not None:
        from endoedge.data.datasets import read_stems

        stems = set(read_stems(split))
        items = [it for it in items if it.path.stem in stems]
        if not items:
            raise CalibrationError(
                f"{role} '{source}' has no image whose stem is listed in '{split}'; "
                + likely_causes(source)
            )
    if not items:
        raise CalibrationError(f"{role} '{source}' holds no usable image or video; "
                               + likely_causes(source))
    return sorted(items)


def _is_labelled(p: Path) -> bool:
    from endoedge.data.datasets import KVASIR_JSON

    return (p.is_file() and p.suffix.lower() == ".json") or (
        p.is_dir() and ((p / KVASIR_JSON).is_file() or ((p / "labels").is_dir() and (p / "images").is_dir()))
    )


def _from_dataset(p: Path) -> list[Item]:
    """The images of a labelled dataset (parsed by :func:`endoedge.data.datasets.load_dataset`)."""
    from endoedge.data.datasets import load_dataset
    from endoedge.errors import InputError

    try:
        dataset = load_dataset(p)
    except InputError as err:
        raise CalibrationError(f"calibration dataset '{p}' cannot be read: {err}") from err
    return [Item(str(s.path.parent), s.path) for s in dataset.samples]


def _from_files(files: Sequence[Path]) -> list[Item]:
    items: list[Item] = []
    for f in files:
        suffix = f.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            items.append(Item(str(f.parent), f))
        elif suffix in VIDEO_SUFFIXES:
            n = video_frame_count(f)
            if n == 0:
                logger.warning("calibration: skipped video %s (OpenCV reads no frame from it)", f)
            items.extend(Item(str(f), f, i) for i in range(n))
    return items


def video_frame_count(path: Path) -> int:
    """Frames OpenCV can decode from ``path`` (its container count, checked by reading the last).

    Container counts can be wrong (variable frame rate, cut files); when seeking to the last
    counted frame fails, the frames are counted by decoding (``grab``) the whole file.
    """
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return 0
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if n > 0:
            cap.set(cv2.CAP_PROP_POS_FRAMES, n - 1)
            if cap.grab():
                return n
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        count = 0
        while cap.grab():
            count += 1
        return count
    finally:
        cap.release()


def select(items: Sequence[Item], num: int, seed: int = 0) -> list[Item]:
    """Choose ``min(num, len(items))`` items spread over the data; result sorted like ``items``.

    Each group (folder or video) gets a share proportional to its size (largest remainder; every
    group gets at least one while ``num`` allows), taken evenly spaced through the group from an
    offset drawn with ``seed``: a video of ``F`` frames with share ``q`` gives every
    ``F / q``-th frame. The same items and seed always give the same choice.

    Raises:
        CalibrationError: ``num`` < 1.
    """
    if num < 1:
        raise CalibrationError(f"the number of calibration images must be >= 1, got {num}")
    if num >= len(items):
        return list(items)
    groups: dict[str, list[Item]] = {}
    for it in items:
        groups.setdefault(it.group, []).append(it)
    names = sorted(groups)
    sizes = np.array([len(groups[g]) for g in names], dtype=np.float64)
    quota = _largest_remainder(sizes, num)
    rng = np.random.default_rng(seed)
    chosen: list[Item] = []
    for name, q in zip(names, quota, strict=True):
        members = groups[name]
        if q == 0:
            continue
        step = len(members) / q
        idx = np.floor(rng.uniform(0.0, step) + step * np.arange(q)).astype(np.int64)
        chosen.extend(members[i] for i in np.minimum(idx, len(members) - 1))
    return sorted(chosen)


def _largest_remainder(sizes: np.ndarray, num: int) -> np.ndarray:
    """Integer shares of ``num`` (< ``sizes.sum()``) proportional to ``sizes``, each <= its size,
    at least 1 each while ``num`` >= the number of groups (Hamilton apportionment; ties by group
    order). With one guaranteed item per group, each ideal share stays below ``size - 1``."""
    n_groups = len(sizes)
    base = np.zeros(n_groups, dtype=np.int64)
    if num >= n_groups:
        base += 1
    rest = num - int(base.sum())
    ideal = (sizes - base) / max(float((sizes - base).sum()), 1.0) * rest
    quota = base + np.floor(ideal).astype(np.int64)
    left = num - int(quota.sum())
    order = np.argsort(-(ideal - np.floor(ideal)), kind="stable")
    for i in order:
        if left == 0:
            break
        if quota[i] < sizes[i]:
            quota[i] += 1
            left -= 1
    return quota
