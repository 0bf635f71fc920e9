"""Thumbnails of flagged frames, written as the batch goes (so ``--resume`` keeps them).

For ``--html REPORT.html`` every flagged frame gets ``REPORT_files/<key hash>.jpg``: the frame
shrunk to ``side`` pixels on its longer side with its detections drawn (boxes scaled from source
pixels). The local engine hands over the thumbnail its decode worker made; otherwise (Ray, or a
record resumed from an older run) the file is read again, reduced by libjpeg where it can be.
Each thumbnail is written to a temporary name and renamed, so a killed run never leaves half a
JPEG; one that exists is never redone.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from endoedge.batch.decode import decode_file
from endoedge.batch.prepare import make_thumb
from endoedge.batch.results import record_key
from endoedge.batch.sources import Source
from endoedge.errors import InputError

logger = logging.getLogger(__name__)

#: Longer side of a thumbnail in pixels.
THUMB_SIDE = 224
BOX_BGR = (0, 255, 255)  # yellow: visible on the red and brown of capsule frames


def assets_dir(html: Path) -> Path:
    """The folder beside ``html`` that holds its thumbnails and review list."""
    return html.with_name(html.stem + "_files")


def iter_detections(rec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every detection of a record: top-level (one model) or under each detector's name."""
    if "detections" in rec:
        yield from rec["detections"]
        return
    for value in rec.values():
        if isinstance(value, Mapping) and "detections" in value:
            yield from value["detections"]


def draw_thumb(thumb: np.ndarray, rec: Mapping[str, Any]) -> np.ndarray:
    """``thumb`` (BGR, a shrunk copy of the record's frame) with the record's boxes and scores."""
    import cv2

    out = np.ascontiguousarray(thumb)
    h, w = out.shape[:2]
    sx, sy = w / max(1, int(rec.get("width") or w)), h / max(1, int(rec.get("height") or h))
    for d in iter_detections(rec):
        x1, y1, x2, y2 = (float(v) for v in d["box"])
        p1 = (round(x1 * sx), round(y1 * sy))
        p2 = (round(x2 * sx), round(y2 * sy))
        cv2.rectangle(out, p1, p2, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.rectangle(out, p1, p2, BOX_BGR, 1, cv2.LINE_AA)
        text = f"{float(d['score']):.2f}"
        org = (p1[0] + 2, max(12, p1[1] - 3) if p1[1] > 14 else p1[1] + 13)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.4, BOX_BGR, 1, cv2.LINE_AA)
    return out


class Gallery:
    """Writes the thumbnails of flagged records under :func:`assets_dir` of ``html``.

    Args:
        html: the report's path (its folder is created).
        source: the study, to read a frame again when no thumbnail was handed over.
        side: thumbnail size (longer side, pixels).
    """

    def __init__(self, html: str | Path, source: Source, side: int = THUMB_SIDE) -> None:
        self.html = Path(html)
        self.dir = assets_dir(self.html)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"cannot create '{self.dir}' for the report's thumbnails: {err.strerror}") from err
        self.side = side
        self.files = {it.path: it.file for it in source.items}
        self.written = 0

    def path_of(self, rec: Mapping[str, Any]) -> Path:
        """The thumbnail file of a record (named by a hash of its key: stable across runs)."""
        digest = hashlib.sha1(record_key(rec).encode("utf-8")).hexdigest()[:20]
        return self.dir / f"{digest}.jpg"

    def add(self, records: Sequence[Mapping[str, Any]], thumbs: Sequence[np.ndarray | None] | None = None) -> None:
        """Write the thumbnail of every flagged record that has none yet."""
        for i, rec in enumerate(records):
            if "error" in rec or not rec.get("flagged"):
                continue
            self.ensure(rec, thumbs[i] if thumbs is not None else None)

    def ensure(self, rec: Mapping[str, Any], thumb: np.ndarray | None = None) -> Path | None:
        """The record's thumbnail, written now if missing; ``None`` if the frame cannot be read
        again (a video frame without a handed-over thumbnail, a file gone since)."""
        path = self.path_of(rec)
        if path.is_file():
            return path
        if thumb is None:
            thumb = self._reread(rec)
            if thumb is None:
                return None
        import cv2

        ok, data = cv2.imencode(".jpg", draw_thumb(thumb, rec), [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            return None
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data.tobytes())
        os.replace(tmp, path)
        self.written += 1
        return path

    def _reread(self, rec: Mapping[str, Any]) -> np.ndarray | None:
        file = self.files.get(str(rec.get("path"))) if rec.get("frame") is None else None
        if file is None:
            return None
        try:
            decoded = decode_file(file, min_side=self.side)
        except InputError as err:
            logger.warning("no thumbnail for %s: %s", rec.get("path"), err)
            return None
        return make_thumb(decoded.image, self.side)
