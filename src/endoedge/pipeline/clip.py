"""Build a sample video clip from the bundled HoloHub colonoscopy frames (Apache-2.0).

The ten bundled frames are consecutive; the clip plays them forwards and backwards (ping-pong)
so it loops smoothly, optionally resized, encoded through :class:`~endoedge.pipeline.writer.VideoWriter`.
"""

from __future__ import annotations

from pathlib import Path

import cv2

from endoedge.errors import InputError


def make_sample_clip(
    path: str | Path, *, frames: int = 90, fps: float = 30.0, size: tuple[int, int] | None = None
) -> Path:
    """Write ``frames`` frames of the bundled colonoscopy sequence to ``path`` (.mp4/.mkv).

    Args:
        path: output video file.
        frames: number of frames (ping-pong over the 10 bundled frames).
        fps: frame rate written into the file.
        size: ``(width, height)`` to resize to; None keeps 1920x1080.

    Raises:
        InputError: the bundled frames are missing or the video cannot be written.
    """
    from endoedge.data.imageio import read_image
    from endoedge.data.samples import sample_frame_paths
    from endoedge.pipeline.writer import VideoWriter

    images = [read_image(p) for p in sample_frame_paths()]
    if not images:
        raise InputError("the bundled sample frames are missing; reinstall endoedge")
    if size is not None:
        images = [cv2.resize(im, size, interpolation=cv2.INTER_AREA) for im in images]
    order = list(range(len(images))) + list(range(len(images) - 2, 0, -1))
    writer = VideoWriter(path, fps)
    try:
        for i in range(frames):
            writer.write(images[order[i % len(order)]], int(i * 1e9 / fps))
    finally:
        writer.close()
    return Path(path)
