"""Files shipped with endoedge (``endoedge/assets``): sample endoscopy frames (see ``assets/holohub/NOTICE.md``)."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "assets"


def sample_frame_paths() -> list[Path]:
    """The bundled 1920x1080 HoloHub colonoscopy frames (Apache-2.0), in order."""
    return sorted((ASSETS / "holohub").glob("*.jpg"))
