"""What ``endoedge batch SRC`` reads: an image folder (recursive), a list file, or a video.

Every input becomes an :class:`Item` whose :attr:`Item.key` identifies it in the results file
(resume skips keys already written): the image path relative to the folder / as written in the
list file (normalised, POSIX separators), or ``"<video file name>#<frame index>"`` for a video frame.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from endoedge.data.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from endoedge.data.walk import walk_files
from endoedge.errors import InputError

#: Image suffixes a folder source picks up (case-insensitive).
BATCH_SUFFIXES = IMAGE_SUFFIXES
LIST_SUFFIXES = (".txt", ".lst", ".list", ".csv")


@dataclass(frozen=True)
class Item:
    """One input: an image file, or frame ``frame`` of a video.

    Attributes:
        path: the name written into the record (relative to the folder or list file, or the
            video's file name).
        file: the file to read (absolute).
        frame: the frame index in a video (0-based), ``None`` for an image file.
    """

    path: str
    file: Path
    frame: int | None = None

    @property
    def key(self) -> str:
        """The identity of this input in the results file."""
        return self.path if self.frame is None else f"{self.path}#{self.frame}"


@dataclass
class Source:
    """A parsed ``SRC``: ``kind`` is ``folder``, ``list`` or ``video``.

    ``items`` lists every image of a folder or list; a video's frames are read in order by
    :meth:`frames` (``count`` is the container's frame count, an estimate for some formats).
    """

    kind: str
    location: Path
    items: list[Item] = field(default_factory=list)
    count: int = 0

    def describe(self) -> str:
        """One line for logs: kind, location and size."""
        return f"{self.kind} {self.location} ({self.count} {'frames' if self.kind == 'video' else 'images'})"

    def frames(self, skip: set[str] | frozenset[str] = frozenset()) -> Iterator[tuple[Item, np.ndarray | None]]:
        """Yield ``(item, BGR frame)`` of a video in order; frames whose key is in ``skip`` are
        grabbed without decoding and yielded with ``None``.

        Raises:
            InputError: the video cannot be opened.
        """
        import cv2

        cap = cv2.VideoCapture(str(self.location))
        if not cap.isOpened():
            raise InputError(f"cannot open video '{self.location}' (no decoder for it in OpenCV)")
        name = self.location.name  # the same key whatever spelling of the path SRC used
        try:
            index = 0
            while True:
                item = Item(name, self.location, index)
                if item.key in skip:
                    if not cap.grab():
                        return
                    yield item, None
                else:
                    ok, frame = cap.read()
                    if not ok:
                        return
                    yield item, frame
                index += 1
        finally:
            cap.release()


def open_source(src: str | Path) -> Source:
    """Parse ``SRC``: a folder (images found recursively, sorted), a list file, or a video.

    Raises:
        InputError: it does not exist, is an empty folder/list, or has an unknown suffix.
    """
    p = Path(src)
    if p.is_dir():
        return _folder(p)
    if not p.is_file():
        raise InputError(f"source '{p}' does not exist; give an image folder, a list file or a video")
    suffix = p.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return _video(p)
    if suffix in LIST_SUFFIXES:
        return _list(p)
    raise InputError(
        f"source '{p}' is neither a folder, a list file ({', '.join(LIST_SUFFIXES)}: one image path "
        f"per line) nor a video ({', '.join(VIDEO_SUFFIXES)})"
    )


def _folder(root: Path) -> Source:
    root = root.resolve()
    items = [Item(f.relative_to(root).as_posix(), f) for f in walk_files(root, suffixes=BATCH_SUFFIXES)
             if not f.name.startswith(".")]  # symbolic links followed, loops skipped
    if not items:
        raise InputError(f"folder '{root}' holds no {'/'.join(s[1:] for s in BATCH_SUFFIXES)} images")
    items.sort(key=lambda it: it.path)
    return Source("folder", root, items, len(items))


_CSV_HEADERS = ("path", "file", "filename", "image", "name")


def _list(path: Path) -> Source:
    """One path per line, relative to the list file's folder (or absolute); '#' comments, blanks
    and duplicate lines are skipped. A ``.csv`` list: the first column, after an optional header
    row (``path``, ``file``, ``filename``, ``image`` or ``name``)."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read list file '{path}': {err}") from err
    base = path.resolve().parent
    items, seen = [], set()
    csv = path.suffix.lower() == ".csv"
    for i, line in enumerate(lines):
        name = line.split(",", 1)[0].strip().strip('"') if csv else line.strip()
        if csv and i == 0 and name.lower() in _CSV_HEADERS:
            continue  # a header row
        if not name or name.startswith("#"):
            continue
        name = os.path.normpath(name)  # ./a.jpg, a//b.jpg: one input, one key
        if name in seen:
            continue
        seen.add(name)
        f = Path(name)
        items.append(Item(Path(name).as_posix(), f if f.is_absolute() else base / f))
    if not items:
        raise InputError(f"list file '{path}' names no image (one path per line)")
    return Source("list", path.resolve(), items, len(items))


def _video(path: Path) -> Source:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise InputError(f"cannot open video '{path}' (no decoder for it in OpenCV)")
        count = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
    finally:
        cap.release()
    return Source("video", path, [], count)
