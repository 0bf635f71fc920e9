"""Ordered sequences for the video metrics: frame folders or video files, run frame by frame.

A sequence is a folder of frames (ordered by natural sort, so ``seq1_img2`` comes before
``seq1_img10``) or a video file. A folder whose images sit in sub-folders is a set of sequences,
one per sub-folder that holds images. The detector runs on the frames in order, without
resetting its frame cleaning between them (a video), and each frame's boxes at the operating
threshold are kept for :func:`~endoedge.evaluation.video.video_metrics`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from endoedge.data.imageio import read_image
from endoedge.data.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from endoedge.errors import EndoedgeError, InputError
from endoedge.evaluation.video import video_metrics

logger = logging.getLogger(__name__)


def natural_key(path: Path) -> list[Any]:
    """Sort key that orders digit runs by value (``img2`` before ``img10``)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


@dataclass(frozen=True)
class Sequence:
    """One ordered sequence: ``frames`` (image paths in order) or ``video`` (a file)."""

    name: str
    frames: tuple[Path, ...] = ()
    video: Path | None = None


def find_sequences(path: str | Path) -> list[Sequence]:
    """The sequences under ``path`` (a video, a frame folder, or a folder of frame folders).

    Raises:
        InputError: nothing readable is there.
    """
    p = Path(path)
    if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
        return [Sequence(p.stem, video=p)]
    if not p.is_dir():
        raise InputError(f"sequence '{p}' is neither a video ({', '.join(VIDEO_SUFFIXES)}) nor a folder")
    own = sorted((f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)
    if own:
        return [Sequence(p.name, frames=tuple(own))]
    out: list[Sequence] = []
    for sub in sorted((d for d in p.iterdir() if d.is_dir() or d.suffix.lower() in VIDEO_SUFFIXES), key=natural_key):
        try:
            out += find_sequences(sub)
        except InputError:
            continue
    if not out:
        raise InputError(f"'{p}' holds no frames, frame folders or videos")
    return out


def iter_frames(seq: Sequence) -> Iterator[np.ndarray]:
    """The frames of ``seq`` in order (BGR uint8); unreadable frame files are skipped with a
    warning."""
    if seq.video is None:
        for f in seq.frames:
            try:
                yield read_image(f)
            except EndoedgeError as err:  # a dropped frame, as a video player would skip it
                logger.warning("skipped frame: %s", err)
        return
    import cv2

    cap = cv2.VideoCapture(str(seq.video))
    if not cap.isOpened():
        raise InputError(f"cannot open video '{seq.video}'")
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            yield frame
    finally:
        cap.release()


def detect_sequence(det: Any, seq: Sequence) -> list[Any]:
    """Per frame of ``seq``, the :class:`~endoedge.detector.Detections` ``det`` reports at its
    score threshold (boxes xyxy source pixels); frame cleaning starts afresh at the first frame
    only."""
    if det.cleaner is not None:
        det.cleaner.reset()
    return [det.detect(frame) for frame in iter_frames(seq)]


def raw_boxes(detections: list[Any]) -> list[np.ndarray]:
    """What a display without stabilization shows: every detection of every frame."""
    return [np.asarray(d.boxes, np.float32).reshape(-1, 4) for d in detections]


#: Turns a sequence's per-frame detections into the per-frame boxes a display shows.
Shown = Callable[[list[Any]], list[np.ndarray]]


def evaluate_sequences(
    det: Any,
    negatives: Iterable[str | Path] = (),
    polyps: Iterable[str | Path] = (),
    *,
    fps: float = 25.0,
    outputs: Mapping[str, Shown] | None = None,
) -> dict[str, Any]:
    """Run ``det`` over polyp-free and polyp sequences and score each output side by side.

    Args:
        det: a :class:`~endoedge.detector.Detector` at its operating threshold.
        negatives: paths whose every frame is polyp-free; ``polyps``: every frame shows a polyp
            (clips cut around the polyp).
        fps: frame rate for the per-minute numbers.
        outputs: name -> what is shown per frame (default ``{"raw": raw_boxes}``); e.g. add a
            stabilizer's output to score it beside the raw detections.

    Returns:
        ``{"fps", "sequences": [{"name", "truth", "frames"}], "metrics": {name: VideoMetrics dict}}``.
    """
    outputs = dict(outputs or {"raw": raw_boxes})
    dets: list[list[Any]] = []
    truths: list[list[bool]] = []
    listing = []
    for paths, flag in ((negatives, False), (polyps, True)):
        for path in paths:
            for seq in find_sequences(path):
                d = detect_sequence(det, seq)
                dets.append(d)
                truths.append([flag] * len(d))
                listing.append({"name": seq.name, "truth": "polyp" if flag else "polyp-free", "frames": len(d)})
                logger.info("%s: %d frames", seq.name, len(d))
    if not dets:
        raise InputError("no sequence to score")
    metrics = {name: video_metrics([fn(d) for d in dets], truths, fps).to_dict() for name, fn in outputs.items()}
    return {"fps": fps, "sequences": listing, "metrics": metrics}
