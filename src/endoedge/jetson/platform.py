"""Jetson detection: is this an NVIDIA Jetson, which board, which L4T / JetPack release.

Whether this is a Jetson at all is decided by :func:`endoedge._tegra.is_jetson` (re-exported here
with :func:`parse_tegra_release`) from ``/etc/nv_tegra_release`` and ``/proc/device-tree/model``.

JetPack is the SDK bundle around an L4T release; the mapping below comes from the project's reference
notes (``shared/reference/tensorrt-jetson-gstreamer.md`` section 2.1, partly third-party sources) and
says which TensorRT, CUDA, Ubuntu and (system) GStreamer a device has. An L4T release not in the table
still gets its JetPack *line* (4, 5, 6 or 7) and the Ubuntu/GStreamer of that line.

Every function takes ``root`` (default ``/``) so tests can point it at a fake file tree.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import NamedTuple, TypedDict

from endoedge._tegra import (
    DEVICE_TREE_MODEL,
    TEGRA_RELEASE,
    is_jetson,
    parse_tegra_release,
    read_text,
    root_path,
)
from endoedge.errors import InputError

log = logging.getLogger(__name__)


class _Row(NamedTuple):
    jetpack: str
    cuda: str
    tensorrt: str


# L4T release (trailing zeros dropped) -> JetPack, CUDA, TensorRT. Reference section 2.1.
_L4T_TABLE: dict[tuple[int, ...], _Row] = {
    (32, 6, 1): _Row("4.6", "10.2", "8.0.1"),
    **{(32, 7, n): _Row(f"4.6.{n}", "10.2", "8.2.1") for n in range(1, 7)},
    (35, 1): _Row("5.0.2", "11.4", "8.4.1"),
    (35, 2, 1): _Row("5.1", "11.4", "8.5.2"),
    (35, 3, 1): _Row("5.1.1", "11.4", "8.5.2"),
    (35, 4, 1): _Row("5.1.2", "11.4", "8.5.2"),
    (35, 5): _Row("5.1.3", "11.4", "8.5.2"),
    (35, 6): _Row("5.1.4", "11.4", "8.5.2"),
    (35, 6, 1): _Row("5.1.5", "11.4", "8.5.2"),
    (35, 6, 2): _Row("5.1.5", "11.4", "8.5.2"),
    (36, 2): _Row("6.0 DP", "12.2", "8.6.2"),
    (36, 3): _Row("6.0", "12.2", "8.6.2"),
    (36, 4): _Row("6.1", "12.6", "10.3.0"),
    (36, 4, 3): _Row("6.2", "12.6", "10.3.0"),
    **{(36, 4, n): _Row("6.2.1", "12.6", "10.3.0") for n in range(4, 8)},
    (36, 5): _Row("6.2.1", "12.6", "10.3.0"),
    (38, 2): _Row("7.0", "13.0", "10.13.3"),
    (38, 4): _Row("7.1", "13.0", "10.13.3"),
    (39, 2): _Row("7.2", "13.2", "10.16"),
}

# L4T major -> (JetPack line, Ubuntu, system GStreamer). Reference section 2.1 "Consequences".
_LINES: dict[int, tuple[int, str, str]] = {
    32: (4, "18.04", "1.14"),
    34: (5, "20.04", "1.16"),
    35: (5, "20.04", "1.16"),
    36: (6, "22.04", "1.20"),
    38: (7, "24.04", "1.24"),
    39: (7, "24.04", "1.24"),
}


class JetsonInfo(TypedDict):
    """What :func:`jetson_info` reports. Version fields are ``None`` where they are not known."""

    model: str | None  # /proc/device-tree/model, e.g. "NVIDIA Jetson AGX Orin Developer Kit"
    l4t_release: str | None  # as written in /etc/nv_tegra_release: "R36 (release), REVISION: 4.0"
    l4t: str | None  # dotted L4T version: "36.4.0"
    jetpack: str | None  # exact JetPack release from the table: "6.1"
    jetpack_major: int | None  # JetPack line: 4, 5, 6 or 7
    cuda: str | None
    tensorrt: str | None
    ubuntu: str | None
    gstreamer: str | None  # the distribution's GStreamer (major.minor)


def _key(version: tuple[int, ...]) -> tuple[int, ...]:
    """Drop trailing zeros so 35.5.0 and 35.5 are the same release (keep at least major.minor)."""
    v = list(version)
    while len(v) > 2 and v[-1] == 0:
        v.pop()
    return tuple(v)


def _parse_l4t(l4t: str) -> tuple[int, ...]:
    text = l4t.strip().lstrip("Rr")
    if not re.fullmatch(r"\d+(?:\.\d+)*", text):
        raise InputError(f"not an L4T version: {l4t!r} (expected e.g. '36.4.0' or 'R35.3.1')")
    return tuple(int(p) for p in text.split("."))


def jetpack_for_l4t(l4t: str | tuple[int, ...]) -> str | None:
    """The JetPack release of an L4T version (``"36.4.0"`` -> ``"6.1"``), or ``None`` if unknown."""
    version = _parse_l4t(l4t) if isinstance(l4t, str) else l4t
    row = _L4T_TABLE.get(_key(version))
    return row.jetpack if row else None


def jetpack_major_for_l4t(l4t: str | tuple[int, ...]) -> int | None:
    """The JetPack line of an L4T version (``"36.x"`` -> 6), or ``None`` for an unknown major."""
    version = _parse_l4t(l4t) if isinstance(l4t, str) else l4t
    line = _LINES.get(version[0])
    return line[0] if line else None


def jetson_info(root: str | Path | None = None) -> JetsonInfo | None:
    """Board model, L4T release and the JetPack/TensorRT/CUDA/GStreamer versions; ``None`` off Jetson."""
    if not is_jetson(root):
        return None
    base = root_path(root)
    model = read_text(base / DEVICE_TREE_MODEL) or None
    info = JetsonInfo(
        model=model,
        l4t_release=None,
        l4t=None,
        jetpack=None,
        jetpack_major=None,
        cuda=None,
        tensorrt=None,
        ubuntu=None,
        gstreamer=None,
    )
    parsed = parse_tegra_release(read_text(base / TEGRA_RELEASE) or "")
    if parsed is None:
        log.debug("Jetson model %r without a readable %s", model, TEGRA_RELEASE)
        return info
    release, version = parsed
    info["l4t_release"] = release
    info["l4t"] = ".".join(str(p) for p in version)
    line = _LINES.get(version[0])
    if line is not None:
        info["jetpack_major"], info["ubuntu"], info["gstreamer"] = line
    row = _L4T_TABLE.get(_key(version))
    if row is not None:
        info["jetpack"], info["cuda"], info["tensorrt"] = row.jetpack, row.cuda, row.tensorrt
    else:
        log.info("L4T %s is not in endoedge's JetPack table; JetPack line %s", info["l4t"], line)
    return info
