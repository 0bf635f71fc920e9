"""The study report (``endoedge batch --html REPORT.html``): one self-contained HTML page a
reader opens offline (no script, no CDN; inline CSS and SVG, thumbnails beside it).

* Summary: source, frames, ok, flagged, errors, this run's time and images/s, the models and the
  flag threshold.
* Timeline: the frame score along the study as an inline SVG (frames binned to at most
  :data:`TIMELINE_BINS` columns, each column its bin's maximum score, so no flagged frame is
  averaged away), the flag threshold as a dashed line, flagged frames as red ticks, error frames
  as grey ticks.
* Gallery: every flagged frame in study order as a thumbnail with its boxes drawn
  (:mod:`endoedge.batch.gallery`), its position, path and score, linking to the full frame.
* Review list: ``REPORT_files/review.csv`` (order, path, frame, score, detections, thumbnail,
  full frame), the flagged frames in study order; linked from the page.

It is built from the whole results file at the end of a run, so a resumed study gets one page.
"""

from __future__ import annotations

import csv
import datetime as _dt
import html as _html
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from endoedge.batch.gallery import Gallery, iter_detections
from endoedge.batch.results import record_key, scan_results
from endoedge.batch.sources import Source

logger = logging.getLogger(__name__)

TIMELINE_BINS = 1200
REVIEW_CSV = "review.csv"

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:16px 24px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 8px} h2{font-size:16px;margin:20px 0 6px}
table.sum td{padding:2px 14px 2px 0} table.sum td:first-child{color:#666}
.tl{background:#fff;border:1px solid #ddd} .gal{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;background:#fff;border:1px solid #ccc;padding:4px;width:228px}
figure img{display:block;width:224px;height:auto;background:#000}
figcaption{font-size:12px;word-break:break-all} .score{font-weight:bold;color:#b00}
.muted{color:#777}
"""


def _ordered(records: Sequence[dict[str, Any]], source: Source) -> list[dict[str, Any]]:
    """Records in study order: the source's input order (video: frame index), unknown keys last."""
    if source.kind == "video":
        return sorted(records, key=lambda r: (r.get("frame") is None, r.get("frame") or 0))
    index = {it.key: i for i, it in enumerate(source.items)}
    return sorted(records, key=lambda r: index.get(record_key(r), len(index)))


def _href(target: Path, base: Path) -> str:
    """A relative link from the folder ``base`` to ``target`` (URL-quoted, POSIX separators)."""
    try:
        rel = os.path.relpath(os.path.abspath(target), os.path.abspath(base))
    except ValueError:  # another drive (Windows)
        return Path(os.path.abspath(target)).as_uri()
    return quote(Path(rel).as_posix())


def timeline_svg(scores: Sequence[float | None], flagged: Sequence[bool], threshold: float | None,
                 *, width: int = 1000, height: int = 170) -> str:
    """Inline SVG of the frame score (0..1) along the study; ``None`` = an error frame."""
    n = len(scores)
    left, top, plot_w, plot_h = 40, 10, width - 50, height - 40
    bins = max(1, min(n, TIMELINE_BINS))
    peak = [0.0] * bins
    flag_bins, err_bins = set(), set()
    for i, (s, f) in enumerate(zip(scores, flagged, strict=True)):
        b = i * bins // max(n, 1)
        if s is None:
            err_bins.add(b)
            continue
        peak[b] = max(peak[b], float(s))
        if f:
            flag_bins.add(b)

    def x(b: float) -> float:
        return left + plot_w * b / max(bins - 1, 1)

    def y(v: float) -> float:
        return top + plot_h * (1.0 - min(max(v, 0.0), 1.0))

    pts = " ".join(f"{x(b):.1f},{y(v):.1f}" for b, v in enumerate(peak))
    parts = [f'<svg class="tl" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="frame score along the study">']
    for v in (0.0, 0.5, 1.0):
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>'
                     f'<text x="{left - 6}" y="{y(v) + 4:.1f}" font-size="10" text-anchor="end">{v:g}</text>')
    parts.append(f'<polyline fill="none" stroke="#1f5fa8" stroke-width="1" points="{pts}"/>')
    if threshold is not None:
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" '
                     f'stroke="#d00" stroke-dasharray="4 3"/><text x="{left + plot_w}" y="{y(threshold) - 3:.1f}" '
                     f'font-size="10" text-anchor="end" fill="#d00">flag threshold {threshold:g}</text>')
    base = top + plot_h
    for b in sorted(flag_bins):
        parts.append(f'<line x1="{x(b):.1f}" x2="{x(b):.1f}" y1="{base + 3}" y2="{base + 11}" stroke="#d00"/>')
    for b in sorted(err_bins):
        parts.append(f'<line x1="{x(b):.1f}" x2="{x(b):.1f}" y1="{base + 12}" y2="{base + 18}" stroke="#888"/>')
    parts.append(f'<text x="{left}" y="{height - 4}" font-size="10">frame 0</text>'
                 f'<text x="{left + plot_w}" y="{height - 4}" font-size="10" text-anchor="end">frame {max(n - 1, 0)}'
                 "</text></svg>")
    return "".join(parts)


def _flag_threshold(settings: Sequence[Mapping[str, Any]]) -> float | None:
    values = [m.get("flag_threshold") for m in settings if m.get("kind") == "detect"]
    return float(values[0]) if values and values[0] is not None else None


def write_study_html(html: str | Path, out: str | Path, source: Source, gallery: Gallery,
                     summary: Mapping[str, Any]) -> Path:
    """Write the report page and its review list for the whole results file ``out``.

    Args:
        html: the page to write.
        out: the results JSONL (read, never modified).
        source: the study (for its order and the links to full frames).
        gallery: the thumbnail writer of the run (missing thumbnails are made now).
        summary: the job summary of :func:`endoedge.batch.run_batch`.
    """
    page = Path(html)
    base = page.parent
    records = _ordered(scan_results(Path(out), repair=False).records, source)
    files = {it.path: it.file for it in source.items}
    settings = list(summary.get("settings", {}).get("models", []))
    threshold = _flag_threshold(settings)
    scores = [None if "error" in r else float(r.get("score") or 0.0) for r in records]
    flags = [bool(r.get("flagged")) and "error" not in r for r in records]
    rows, figures = [], []
    for order, (rec, flagged) in enumerate(zip(records, flags, strict=True)):
        if not flagged:
            continue
        thumb = gallery.ensure(rec)
        full = files.get(str(rec["path"])) if rec.get("frame") is None else source.location
        full_href = _href(full, base) if full is not None else ""
        thumb_href = _href(thumb, base) if thumb is not None else ""
        dets = list(iter_detections(rec))
        label = record_key(rec)
        rows.append({"order": order, "path": rec["path"], "frame": rec.get("frame", ""), "score": rec.get("score"),
                     "detections": len(dets), "thumbnail": thumb_href, "full_frame": full_href})
        img = (f'<img src="{_html.escape(thumb_href)}" loading="lazy" alt="{_html.escape(label)}">' if thumb_href
               else '<div class="muted">no thumbnail</div>')
        figures.append(
            f'<figure id="f{order}"><a href="{_html.escape(full_href)}" target="_blank">{img}</a>'
            f'<figcaption>#{order} <span class="score">{float(rec.get("score") or 0):.3f}</span> '
            f'{len(dets)} box{"es" if len(dets) != 1 else ""}<br>{_html.escape(label)}</figcaption></figure>')
    csv_path = gallery.dir / REVIEW_CSV
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, ["order", "path", "frame", "score", "detections", "thumbnail", "full_frame"])
        writer.writeheader()
        writer.writerows(rows)
    page.write_text(_page(records, flags, scores, threshold, figures, summary, settings, source,
                          _href(csv_path, base)), encoding="utf-8")
    logger.info("study report %s: %d flagged frames, review list %s", page, len(rows), csv_path)
    return page


def _page(records: Sequence[Mapping[str, Any]], flags: Sequence[bool], scores: Sequence[float | None],
          threshold: float | None, figures: Sequence[str], summary: Mapping[str, Any],
          settings: Sequence[Mapping[str, Any]], source: Source, csv_href: str) -> str:
    esc = _html.escape
    n = len(records)
    n_err = sum(s is None for s in scores)
    n_flag = sum(flags)
    run = summary.get("run", {})
    ips = run.get("images_per_s")
    models = "; ".join(f"{m.get('name')} ({m.get('kind')}, {', '.join(m.get('class_names', []))}, "
                       f"sha256 {str(m.get('sha256', ''))[:12]})" for m in settings)
    facts = [
        ("study", esc(str(source.location))),
        ("frames", f"{n:,}"),
        ("flagged", f"{n_flag:,} ({100.0 * n_flag / max(n, 1):.1f} %)"),
        ("errors (unreadable frames)", f"{n_err:,}"),
        ("time (this run)", f"{run.get('wall_s', 0):.1f} s for {run.get('processed', 0):,} frames"
         + (f", {ips:.1f} frames/s" if ips else "") + (f"; {run.get('resumed')} resumed" if run.get("resumed") else "")),
        ("models", esc(models)),
        ("flag threshold", "n/a" if threshold is None else f"{threshold:g}"),
        ("written", _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
    ]
    errors = [f"<li>{esc(record_key(r))}: {esc(str(r['error']))}</li>" for r in records if "error" in r][:500]
    return "".join([
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>Study report: {esc(source.location.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Study report: {esc(source.location.name)}</h1>",
        "<p class=\"muted\">Frames flagged by software for review; not a diagnosis.</p>",
        "<table class=\"sum\">", *(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in facts), "</table>",
        "<h2>Frame score along the study</h2>", timeline_svg(scores, flags, threshold),
        f"<h2 id=\"gallery\">Flagged frames ({n_flag:,}), in study order</h2>",
        f"<p><a href=\"{esc(csv_href)}\">review list (CSV)</a> &middot; each thumbnail links to the full frame</p>",
        "<div class=\"gal\">", *figures, "</div>",
        (f"<h2>Errors ({n_err})</h2><ul>{''.join(errors)}</ul>" if errors else ""),
        "</body></html>\n",
    ])
