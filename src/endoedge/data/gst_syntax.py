"""gst-launch syntax shared by every GStreamer string endoedge writes (desktop sources, the video
writer, the Jetson presets): quoting property values."""

from __future__ import annotations

from endoedge.errors import InputError
from endoedge.spec.redact import redact


def quote(value: str, what: str = "location", fix: str = "rename it or use a symlink without it") -> str:
    """Double-quote ``value`` for a gst-launch property, refusing characters that cannot be passed.

    Inside double quotes GStreamer's parser takes spaces, ``!``, ``,``, ``=``, ``'`` and non-ASCII
    literally; a ``"`` or ``\\`` needs escaping whose handling changed between GStreamer releases,
    and control characters break the gst-launch command line, so those are refused.

    Args:
        value: the property value (a path, device node, URL).
        what: what the value is, for the error message.
        fix: how the user can avoid the refused character, for the error message.

    Raises:
        InputError: ``value`` is empty or contains ``"``, ``\\`` or a control character.
    """
    if not isinstance(value, str) or not value:
        raise InputError(f"{what} must be a non-empty string, got {redact(repr(value))}")
    bad = [c for c in value if c in '"\\' or ord(c) < 32 or ord(c) == 127]
    if bad:
        raise InputError(
            f"{what} {redact(repr(value))} contains {bad[0]!r}, which cannot be passed safely in a GStreamer "
            f"pipeline string; {fix}"
        )
    return f'"{value}"'
