"""Is this an NVIDIA Jetson? The one test, at the bottom layer so that both
:mod:`endoedge.jetson` (JetPack details, GStreamer presets) and :mod:`endoedge.stats` (the machine
description in reports) use it.

Two files identify a Jetson running NVIDIA's Linux for Tegra (L4T):

* ``/etc/nv_tegra_release``: first line ``# R36 (release), REVISION: 4.0, GCID: ..., BOARD: ...``
  (L4T 36.4.0). It is also present in NVIDIA's ``l4t-*`` containers.
* ``/proc/device-tree/model``: the board name, NUL-terminated, e.g.
  ``NVIDIA Jetson AGX Orin Developer Kit``.

Paths are relative to ``root`` (default ``/``) so tests can point them at a fake file tree. Only
the standard library is used; nothing is read at import.
"""

from __future__ import annotations

import re
from pathlib import Path

TEGRA_RELEASE = "etc/nv_tegra_release"
DEVICE_TREE_MODEL = "proc/device-tree/model"

_RELEASE_RE = re.compile(r"#?\s*R(\d+)\s*\(release\),\s*REVISION:\s*(\d+(?:\.\d+)*)")
# Substrings of /proc/device-tree/model that mean an NVIDIA Jetson (word-bounded, case-sensitive).
_MODEL_RE = re.compile(r"NVIDIA Jetson|\b(?:Orin|Xavier|Thor)\b")


def read_text(path: str | Path) -> str | None:
    """A small text file, NULs removed and stripped; None when it cannot be read."""
    try:
        return Path(path).read_bytes().decode("utf-8", errors="replace").replace("\x00", "").strip()
    except OSError:
        return None


def root_path(root: str | Path | None) -> Path:
    """``root`` as a Path (``/`` when None)."""
    return Path(root) if root is not None else Path("/")


def parse_tegra_release(text: str) -> tuple[str, tuple[int, ...]] | None:
    """Parse the first line of ``/etc/nv_tegra_release``.

    Returns ``("R36 (release), REVISION: 4.0", (36, 4, 0))``, or ``None`` if the text is not an L4T
    release line.
    """
    m = _RELEASE_RE.search(text.splitlines()[0] if text else "")
    if m is None:
        return None
    version = (int(m.group(1)), *(int(p) for p in m.group(2).split(".")))
    return m.group(0).lstrip("#").strip(), version


def looks_like_jetson(release: str | None, model: str | None) -> bool:
    """The Jetson test on the two files' contents (None = file absent): an L4T release line, or a
    device-tree model naming a Jetson."""
    if release and parse_tegra_release(release) is not None:
        return True
    return bool(model and _MODEL_RE.search(model))


def is_jetson(root: str | Path | None = None) -> bool:
    """True on an NVIDIA Jetson: an L4T release file, or a device-tree model naming a Jetson."""
    base = root_path(root)
    return looks_like_jetson(read_text(base / TEGRA_RELEASE), read_text(base / DEVICE_TREE_MODEL))
