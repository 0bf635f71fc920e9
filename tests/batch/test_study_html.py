"""endoedge batch --html: the study report (rendered by headless Chromium), thumbnails kept on
resume, the review list; reduced JPEG decoding against the full decode.

Oracles: Debian's Chromium renders the page and OpenCV finds a thumbnail file in its
screenshot; the review list against the results file; reduced decoding against the bit-exact
full-decode path (``full_decode=True``) on the same frames.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from endoedge.batch import BatchConfig, run_batch
from endoedge.batch.decode import decode_file
from endoedge.cli import main

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                  "--force-device-scale-factor=1")


@pytest.fixture(scope="module")
def capsule_like(tmp_path_factory, sample_paths) -> Path:
    """12 frames: the HoloHub field of view cropped square and saved as 640 x 640 JPEGs (the
    size of WCEBleedGen capsule frames), in a sub-folder, plus one truncated JPEG."""
    root = tmp_path_factory.mktemp("capsule")
    (root / "a").mkdir()
    for i, p in enumerate(sample_paths):
        full = cv2.imread(str(p))
        for j, x0 in enumerate((420, 620)):
            if len(list(root.rglob("*.jpg"))) >= 11:
                break
            img = cv2.resize(full[60:1020, x0:x0 + 960], (640, 640), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(root / "a" / f"f{i:02d}_{j}.jpg"), img)
    data = (root / "a" / "f00_0.jpg").read_bytes()
    (root / "a" / "f99_bad.jpg").write_bytes(data[: len(data) // 3])
    return root


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_html_report_and_resume_keeps_thumbnails(capsule_like, polyp_onnx, tmp_path):
    out, html = tmp_path / "r.jsonl", tmp_path / "study.html"
    cfg = dict(batch_size=4, progress=False, flag_threshold=0.05, html=html)
    run_batch(BatchConfig(capsule_like, [str(polyp_onnx)], out, **cfg))
    full = _lines(out)
    flagged = [r for r in full if r.get("flagged")]
    assert len(full) == 12
    assert sum("error" in r for r in full) == 1
    assert len(flagged) >= 3
    thumbs = sorted((tmp_path / "study_files").glob("*.jpg"))
    assert len(thumbs) == len(flagged)
    # an interrupted run: the last 5 records never reached the file; resume
    out.write_text("".join(json.dumps(r) + "\n" for r in full[:7]))
    kept = {p.name: p.stat().st_mtime_ns for p in thumbs}
    for p in thumbs:  # thumbnails of the lost records go too (written just before the kill)
        if p.name not in _thumb_names(full[:7], html):
            p.unlink()
            kept.pop(p.name)
    run_batch(BatchConfig(capsule_like, [str(polyp_onnx)], out, resume=True, **cfg))
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "study_files").glob("*.jpg")}
    assert set(after) == {p.name for p in thumbs}
    assert all(after[k] == v for k, v in kept.items()), "a kept thumbnail was rewritten on resume"
    # review list: flagged frames in study (sorted path) order, scores as in the results file
    with open(tmp_path / "study_files" / "review.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_path = {r["path"]: r for r in _lines(out)}
    assert [r["path"] for r in rows] == sorted(r["path"] for r in flagged)
    for row in rows:
        assert float(row["score"]) == by_path[row["path"]]["score"]
        assert (html.parent / row["thumbnail"]).is_file()
        assert (html.parent / row["full_frame"]).resolve() == (capsule_like / row["path"]).resolve()
    page = html.read_text()
    assert "<svg" in page
    for remote in ("http://", "https://", "<script"):  # opens offline: nothing fetched, no script
        assert remote not in page.replace("http://www.w3.org/2000/svg", "")


def _thumb_names(records: list[dict], html: Path) -> set[str]:
    from endoedge.batch.gallery import Gallery
    from endoedge.batch.sources import Source

    g = Gallery(html, Source("folder", html.parent))
    return {g.path_of(r).name for r in records if r.get("flagged") and "error" not in r}


def test_html_gallery_renders_in_chromium(capsule_like, polyp_onnx, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's `chromium` is not installed (make system-deps installs it)")
    out, html = tmp_path / "r.jsonl", tmp_path / "report" / "study.html"
    rc = main(["batch", str(capsule_like), "-m", str(polyp_onnx), "-o", str(out), "--html", str(html),
               "--flag-threshold", "0.05", "--quiet"])
    assert rc == 0
    shot = tmp_path / "shot.png"
    cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
           "--window-size=1200,1000", html.resolve().as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=90, check=False)
    assert shot.is_file(), "chromium wrote no screenshot"
    screen = cv2.imread(str(shot))
    with open(html.parent / "study_files" / "review.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    first = cv2.imread(str(html.parent / rows[0]["thumbnail"]))
    assert first.shape[1] == 224
    # the first flagged frame's thumbnail (boxes drawn) is on screen, at its own size
    match = cv2.matchTemplate(screen, first, cv2.TM_CCOEFF_NORMED)
    _, best, _, (x, y) = cv2.minMaxLoc(match)
    assert best > 0.9, f"gallery thumbnail not found in the screenshot (best match {best:.3f})"
    assert y > 300, "the thumbnail should sit below the summary and the timeline"


def test_reduced_decode_matches_full_decode(sample_paths, polyp_onnx, tmp_path):
    study = tmp_path / "hd"
    study.mkdir()
    for p in sample_paths[:6]:
        shutil.copy(p, study / p.name)  # 1920 x 1080 JPEGs: decoded at 1/2 for a 320 x 320 model
    assert decode_file(study / sample_paths[0].name, min_side=320).scale == 2.0
    runs = {}
    for full in (False, True):
        out = tmp_path / f"{full}.jsonl"
        run_batch(BatchConfig(study, [str(polyp_onnx)], out, progress=False, full_decode=full, score_threshold=0.2))
        runs[full] = {r["path"]: r for r in _lines(out)}
    for key, exact in runs[True].items():
        fast = runs[False][key]
        assert (fast["width"], fast["height"]) == (exact["width"], exact["height"]) == (1920, 1080)
        assert abs(fast["score"] - exact["score"]) < 0.05
        assert fast["flagged"] == exact["flagged"]
        for d in exact["detections"]:
            if d["score"] < 0.3:
                continue
            ious = [_iou(d["box"], f["box"]) for f in fast["detections"]]
            assert max(ious, default=0.0) > 0.5, f"{key}: {d} lost by the reduced decode"


def _iou(a: list[float], b: list[float]) -> float:
    a_, b_ = np.array(a), np.array(b)
    lt, rb = np.maximum(a_[:2], b_[:2]), np.minimum(a_[2:], b_[2:])
    inter = float(np.prod(np.clip(rb - lt, 0, None)))
    area = lambda x: float(np.prod(x[2:] - x[:2]))  # noqa: E731
    return inter / (area(a_) + area(b_) - inter)


def test_gallery_rereads_a_frame_without_a_handed_over_thumbnail(capsule_like, tmp_path):
    """The Ray engine (and records resumed from an older run) hand over no thumbnail: the
    frame is read again, reduced, and the boxes drawn at the thumbnail's scale."""
    from endoedge.batch.gallery import Gallery
    from endoedge.batch.sources import open_source

    source = open_source(capsule_like)
    gallery = Gallery(tmp_path / "r.html", source)
    item = source.items[0]
    rec = {"path": item.path, "width": 640, "height": 640, "score": 0.9, "flagged": True,
           "detections": [{"box": [64.0, 64.0, 320.0, 320.0], "score": 0.9, "class_id": 0, "label": "bleeding"}]}
    path = gallery.ensure(rec)
    assert path is not None
    thumb = cv2.imread(str(path))
    assert thumb.shape[:2] == (224, 224)
    plain = cv2.resize(cv2.imread(str(item.file)), (224, 224), interpolation=cv2.INTER_AREA)
    # the box's left edge (x = 64 * 224 / 640 = 22.4) is drawn in yellow; the centre is the frame
    edge = thumb[60:100, 22].astype(int)
    assert (edge[:, 1] > 200).all()
    assert (edge[:, 2] > 200).all()
    assert np.abs(thumb[150:200, 150:200].astype(int) - plain[150:200, 150:200]).mean() < 12
    assert gallery.ensure({"path": item.path, "frame": 3, "flagged": True}) is None  # a video frame
