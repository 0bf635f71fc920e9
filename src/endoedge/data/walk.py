"""Recursive folder listing that follows symbolic links, safely: the one walker of every folder
input (``run``/``detect``/``batch`` image folders, calibration sets, eval negatives, YOLO datasets).

``Path.rglob`` and ``os.walk`` (Python < 3.13) skip symbolic links to folders, so a dataset linked
into a folder looked empty. :func:`walk_files` follows them, and visits each real folder once: a
link that leads back to one of its own ancestors (a loop) or to a folder already listed is skipped
with one warning, so a loop can neither hang the walk nor list a file twice.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger(__name__)


def walk_files(root: str | Path, *, suffixes: Iterable[str] | None = None) -> list[Path]:
    """Every file under ``root`` (recursive, symbolic links followed), sorted.

    Paths are spelled under ``root`` as the links name them (``root/linked_set/a.jpg``), not
    resolved, so ``path.relative_to(root)`` works. Dangling links and unreadable folders are
    skipped (logged at debug level).

    Args:
        root: the folder to list.
        suffixes: keep only these file suffixes (lower-case, with the dot; compared
            case-insensitively); None keeps every file.
    """
    keep = None if suffixes is None else tuple(s.lower() for s in suffixes)
    root = Path(root)
    try:
        top = os.stat(root)
    except OSError:
        return []
    files: list[Path] = []
    visited = {(top.st_dev, top.st_ino)}
    # (folder, ids of the real folders from root down to it): a link to one of them is a loop.
    stack: list[tuple[Path, tuple[tuple[int, int], ...]]] = [(root, ((top.st_dev, top.st_ino),))]
    while stack:
        folder, ancestors = stack.pop()
        try:
            # real folders before links (a folder reached both ways keeps its own name), by name
            entries = sorted(os.scandir(folder), key=lambda e: (e.is_symlink(), e.name))
        except OSError as err:
            logger.debug("cannot list %s: %s", folder, err.strerror)
            continue
        for entry in entries:
            path = folder / entry.name
            try:
                is_dir = entry.is_dir()  # follows links
                is_file = not is_dir and entry.is_file()
            except OSError:
                continue
            if is_file:
                if keep is None or path.suffix.lower() in keep:
                    files.append(path)
                continue
            if not is_dir:
                if entry.is_symlink():
                    logger.debug("skipping dangling link %s", path)
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue
            ident = (st.st_dev, st.st_ino)
            if ident in ancestors:
                logger.warning("skipping symbolic link %s: it leads back to %s (a loop)", path,
                               os.path.realpath(path))
                continue
            if ident in visited:
                logger.warning("skipping %s: it leads to %s, already listed", path, os.path.realpath(path))
                continue
            visited.add(ident)
            stack.append((path, (*ancestors, ident)))
    return sorted(files)


def unique_files(paths: Iterable[str | Path]) -> list[Path]:
    """``paths`` without repeats of the same real file (first spelling kept, order kept): what a
    recursive glob (``**``, which follows links) returns through a link loop or two links."""
    seen: set[str] = set()
    out: list[Path] = []
    for p in paths:
        real = os.path.realpath(p)
        if real not in seen:
            seen.add(real)
            out.append(Path(p))
    return out
