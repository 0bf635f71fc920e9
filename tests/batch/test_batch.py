"""endoedge batch: sources, bad inputs, resume (incl. a real SIGKILL), settings checks, CLI errors.

Oracles: the same model run image by image through ``endoedge.load(...).detect`` on frames
decoded independently (OpenCV / Pillow), and an uninterrupted run for resume.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from endoedge.batch import BatchConfig, run_batch
from endoedge.batch.decode import decode_file, header_size
from endoedge.batch.results import ResultWriter, scan_results
from endoedge.batch.sources import open_source
from endoedge.cli import main
from endoedge.errors import InputError

REPO = Path(__file__).resolve().parents[2]


def _records(path: Path) -> dict[str, dict]:
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    keys = [r["path"] if "frame" not in r else f"{r['path']}#{r['frame']}" for r in recs]
    assert len(keys) == len(set(keys)), "a key was written twice"
    return dict(zip(keys, recs, strict=True))


@pytest.fixture(scope="module")
def study(tmp_path_factory, sample_paths) -> Path:
    """A 40-image study: HoloHub frames at capsule-like sizes, flipped/cropped, in sub-folders,
    with mixed-case suffixes; plus a non-image file that must be ignored."""
    root = tmp_path_factory.mktemp("study")
    n = 0
    for i, p in enumerate(sample_paths):
        full = cv2.imread(str(p))
        for j, (w, h) in enumerate(((512, 512), (336, 336), (640, 360), (320, 240))):
            img = cv2.resize(full[40:1040, 300 + 40 * j : 1620 - 40 * j], (w, h), interpolation=cv2.INTER_AREA)
            if j % 2:
                img = np.ascontiguousarray(img[:, ::-1])
            sub = root / f"part{j % 2}"
            sub.mkdir(exist_ok=True)
            ext = (".jpg", ".JPG", ".png", ".jpeg")[j]
            cv2.imwrite(str(sub / f"img_{i:02d}_{j}{ext}"), img)
            n += 1
    (root / "notes.txt").write_text("not an image")
    assert n == 40
    return root


def _oracle(model: Path, files: list[Path]) -> dict[str, list]:
    import endoedge

    with endoedge.load(model) as det:
        return {f.name: det.detect(cv2.imread(str(f))).to_records() for f in files}


def test_folder_matches_per_image_detect(study, polyp_onnx, tmp_path):
    out = tmp_path / "r.jsonl"
    summary = run_batch(BatchConfig(study, [str(polyp_onnx)], out, report=tmp_path / "s.json",
                                    batch_size=6, progress=False, flag_threshold=0.3))
    recs = _records(out)
    files = sorted(study.rglob("img_*"))
    assert len(recs) == 40
    assert set(recs) == {f.relative_to(study).as_posix() for f in files}
    oracle = _oracle(polyp_onnx, files)
    for key, rec in recs.items():
        img = cv2.imread(str(study / key))
        assert (rec["width"], rec["height"]) == (img.shape[1], img.shape[0])
        assert rec["detections"] == oracle[Path(key).name]
        scores = [d["score"] for d in rec["detections"]]
        assert rec["score"] == (max(scores) if scores else 0.0)
        assert rec["flagged"] == (rec["score"] >= 0.3)
    rep = json.loads((tmp_path / "s.json").read_text())
    assert rep["counts"] == summary["counts"] == {"images": 40, "ok": 40, "errors": 0,
                                                  "flagged": sum(r["flagged"] for r in recs.values())}
    assert rep["flagged"] == sorted(k for k, r in recs.items() if r["flagged"])
    assert set(rep["run"]["stage_ms_total"]) == {"decode", "preprocess", "infer", "postprocess", "write"}
    assert rep["run"]["images_per_s"] > 0
    assert rep["run"]["minutes_per_50k"] > 0


def test_a_list_file_saved_with_a_byte_order_mark_finds_its_first_image(tmp_path):
    (tmp_path / "a.jpg").write_bytes(cv2.imencode(".jpg", np.full((32, 32, 3), 80, np.uint8))[1].tobytes())
    listing = tmp_path / "study.txt"
    listing.write_bytes("a.jpg\r\n".encode("utf-8-sig"))  # as Windows Notepad saves it
    items = open_source(listing).items
    assert [(i.path, i.file) for i in items] == [("a.jpg", tmp_path / "a.jpg")]


def test_list_file_processes_and_streams_give_the_same_records(study, polyp_onnx, tmp_path):
    files = sorted(study.rglob("img_*"))[:7]
    lst = study / "list.txt"
    lst.write_text("# study list\n" + "\n".join(f.relative_to(study).as_posix() for f in files) + "\n\n")
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    run_batch(BatchConfig(lst, [str(polyp_onnx)], a, batch_size=3, progress=False))
    run_batch(BatchConfig(lst, [str(polyp_onnx)], b, batch_size=4, workers=2, decode="processes", progress=False))
    c = tmp_path / "c.jsonl"
    run_batch(BatchConfig(lst, [str(polyp_onnx)], c, batch_size=2, streams=2, progress=False))
    ra, rb = _records(a), _records(b)
    assert list(_records(c)) == list(ra)  # two inference streams: same records, same order
    assert _records(c) == ra
    assert list(ra) == [f.relative_to(study).as_posix() for f in files]  # list order, paths as written
    assert ra == rb


def test_video_records_per_frame(sample_paths, polyp_onnx, tmp_path):
    video = tmp_path / "capsule.avi"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 2, (320, 240))
    for p in sample_paths[:6]:
        vw.write(cv2.resize(cv2.imread(str(p)), (320, 240)))
    vw.release()
    out = tmp_path / "v.jsonl"
    run_batch(BatchConfig(video, [str(polyp_onnx)], out, batch_size=4, progress=False))
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["frame"] for r in recs] == list(range(6))
    import endoedge

    cap = cv2.VideoCapture(str(video))
    with endoedge.load(polyp_onnx) as det:
        for rec in recs:
            ok, frame = cap.read()
            assert ok
            assert rec["detections"] == det.detect(frame).to_records()
    # resume a video: drop the last 2 records, finish, same file content
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:4]))
    run_batch(BatchConfig(video, [str(polyp_onnx)], out, batch_size=4, resume=True, progress=False))
    assert out.read_text() == "".join(lines)


def test_sources_and_errors(study, tmp_path):
    src = open_source(study)
    assert src.kind == "folder"
    assert src.count == 40
    assert all(p.path.startswith("part") for p in src.items)  # recursive, notes.txt ignored
    with pytest.raises(InputError, match="does not exist"):
        open_source(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no"):
        open_source(tmp_path / "empty")
    lst = tmp_path / "l.txt"
    lst.write_text("gone/missing.jpg\n")
    assert [i.file for i in open_source(lst).items] == [tmp_path / "gone" / "missing.jpg"]
    from endoedge.batch.prepare import prepare_file

    err = prepare_file(open_source(lst).items[0], []).error
    assert err is not None
    assert "No such file" in err
    (tmp_path / "x.bin").write_bytes(b"1")
    with pytest.raises(InputError, match="neither a folder"):
        open_source(tmp_path / "x.bin")


# -- bad inputs ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, sample_paths) -> Path:
    """Every kind of file a study may hold, made with OpenCV/Pillow from a real frame."""
    from PIL import Image

    d = tmp_path_factory.mktemp("bad")
    full = cv2.imread(str(sample_paths[4]))  # 1920 x 1080
    small = cv2.resize(full, (480, 270), interpolation=cv2.INTER_AREA)
    rgb = Image.fromarray(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
    cv2.imwrite(str(d / "ok.jpg"), small)
    cv2.imwrite(str(d / "ok.png"), small)
    jpg = (d / "ok.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    (d / "truncated.png").write_bytes((d / "ok.png").read_bytes()[:5000])
    (d / "zero.jpg").write_bytes(b"")
    (d / "text.png").write_text("this is a radiology report, not an image\n")
    rgb.convert("L").save(d / "gray.jpg", quality=95)
    rgb.convert("RGBA").save(d / "rgba.png")
    gray16 = (np.asarray(rgb.convert("L")).astype(np.uint16) * 257)
    cv2.imwrite(str(d / "gray16.png"), gray16)
    cv2.imwrite(str(d / "color16.png"), small.astype(np.uint16) * 257)
    rgb.convert("CMYK").save(d / "cmyk.jpg", quality=95)
    cv2.imwrite(str(d / "big.jpg"), full)  # 2.07 Mpx: over the 1 Mpx test limit -> decoded at 1/2
    cv2.imwrite(str(d / "big.png"), full)  # PNG over the limit -> refused
    # a decompression bomb: a real JPEG whose frame header claims 65000 x 65000 pixels
    data = bytearray(jpg)
    i = next(k for k in range(2, len(data) - 9) if data[k] == 0xFF and data[k + 1] in (0xC0, 0xC2))
    data[i + 5 : i + 9] = (65000).to_bytes(2, "big") * 2
    (d / "bomb.jpg").write_bytes(bytes(data))
    return d


def test_bad_inputs_convert_or_error(bad_inputs, polyp_onnx, tmp_path):
    import endoedge

    out = tmp_path / "bad.jsonl"
    rc = main(["batch", str(bad_inputs), "-m", str(polyp_onnx), "-o", str(out), "--quiet",
               "--max-pixels", "1000000", "--batch-size", "4"])
    assert rc == 0  # errors do not fail the study unless asked
    recs = _records(out)
    assert len(recs) == 14
    errors = {k: r["error"] for k, r in recs.items() if "error" in r}
    assert set(errors) == {"truncated.jpg", "truncated.png", "zero.jpg", "text.png", "big.png", "bomb.jpg"}
    assert "truncated JPEG" in errors["truncated.jpg"]
    assert "truncated PNG" in errors["truncated.png"]
    assert "zero-byte" in errors["zero.jpg"]
    assert "not an image" in errors["text.png"]
    assert "65000 x 65000" in errors["bomb.jpg"]
    assert "limit" in errors["big.png"]
    ok = cv2.imread(str(bad_inputs / "ok.png"))
    with endoedge.load(polyp_onnx) as det:
        def expect(img):
            return det.detect(img).to_records()
        assert recs["ok.png"]["detections"] == expect(ok)
        assert recs["rgba.png"]["detections"] == expect(ok)  # alpha dropped, same pixels
        assert recs["color16.png"]["detections"] == expect(ok)  # 16-bit v*257 -> v
        gray = cv2.imread(str(bad_inputs / "gray.jpg"), cv2.IMREAD_GRAYSCALE)
        assert recs["gray.jpg"]["detections"] == expect(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
        g16 = cv2.imread(str(bad_inputs / "gray16.png"), cv2.IMREAD_UNCHANGED)
        assert recs["gray16.png"]["detections"] == expect(cv2.cvtColor((g16 >> 8).astype(np.uint8), cv2.COLOR_GRAY2BGR))
        cmyk = decode_file(bad_inputs / "cmyk.jpg").image  # pixels checked against Pillow below
        assert (recs["cmyk.jpg"]["width"], recs["cmyk.jpg"]["height"]) == (480, 270)
        assert recs["cmyk.jpg"]["detections"] == expect(cmyk)
        # the big JPEG: decoded at 1/2 scale, boxes in full-size pixels
        half = cv2.imread(str(bad_inputs / "big.jpg"), cv2.IMREAD_REDUCED_COLOR_2)
        d = det.detect(half)
        assert (recs["big.jpg"]["width"], recs["big.jpg"]["height"]) == (1920, 1080)
        got = np.array([r["box"] for r in recs["big.jpg"]["detections"]]).reshape(-1, 4)
        np.testing.assert_allclose(got, np.round(d.boxes * 2, 2).reshape(-1, 4), atol=0.011)
    rc = main(["batch", str(bad_inputs), "-m", str(polyp_onnx), "-o", str(tmp_path / "b2.jsonl"), "--quiet",
               "--fail-on-error"])
    assert rc == 2


def test_header_size_reads_without_decoding(bad_inputs):
    for name, size in (("ok.jpg", (480, 270)), ("ok.png", (480, 270)), ("bomb.jpg", (65000, 65000))):
        data = np.fromfile(bad_inputs / name, dtype=np.uint8)
        kind = "PNG" if name.endswith("png") else "JPEG"
        assert header_size(data, kind) == size
    from PIL import Image

    cmyk = decode_file(bad_inputs / "cmyk.jpg").image
    pil = cv2.cvtColor(np.asarray(Image.open(bad_inputs / "cmyk.jpg").convert("RGB")), cv2.COLOR_RGB2BGR)
    assert cmyk.shape == (270, 480, 3)
    # OpenCV's (libjpeg's) and Pillow's CMYK -> RGB conversions differ slightly, not in kind
    assert np.abs(cmyk.astype(int) - pil).mean() < 8


# -- results file and resume -----------------------------------------------------------------
def test_scan_repairs_torn_last_line(tmp_path):
    out = tmp_path / "r.jsonl"
    with ResultWriter(out, fsync_every=1) as w:
        w.write([{"path": "a.jpg", "score": 0.1}, {"path": "b.jpg", "error": "x"}])
    good = out.read_bytes()
    out.write_bytes(good + b'{"path":"c.jpg","wid')
    scan = scan_results(out)
    assert scan.keys == {"a.jpg", "b.jpg"}
    assert scan.repaired_bytes == 20
    assert out.read_bytes() == good
    out.write_bytes(good + b"\x00\x00\x00\n")  # power loss: a zero-filled last line
    assert scan_results(out).keys == {"a.jpg", "b.jpg"}
    assert out.read_bytes() == good
    out.write_bytes(b"garbage\n" + good)
    with pytest.raises(InputError, match="line 1"):
        scan_results(out)


def test_cli_refuses_to_clobber_and_checks_settings(study, polyp_onnx, tmp_path, capsys):
    lst = study / "two.txt"
    lst.write_text("part0/img_00_0.jpg\npart0/img_01_0.jpg\n")
    out = tmp_path / "r.jsonl"
    base = ["batch", str(lst), "-m", str(polyp_onnx), "-o", str(out), "--quiet"]
    assert main(base) == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert main(base) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "already exists; pass --resume" in err[0]
    assert main([*base, "--resume", "--flag-threshold", "0.9"]) == 1
    assert "other settings" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main([*base, "--resume"]) == 0
    assert out.read_bytes() == before
    assert main([*base, "--overwrite"]) == 0
    assert out.read_bytes() == before
    capsys.readouterr()
    assert main([*base, "--resume", "--overwrite"]) == 1
    assert main(["batch", str(lst), "-m", str(polyp_onnx), "-o", str(tmp_path / "x.jsonl"), "--batch-size", "0"]) == 1
    assert main(["batch", str(lst), "-m", str(polyp_onnx), "-o", str(tmp_path / "y.jsonl"), "--address", "auto"]) == 1
    assert main(["batch", str(tmp_path / "nope"), "-m", str(polyp_onnx), "-o", str(tmp_path / "z.jsonl")]) == 1
    assert main(["batch", str(lst), "-m", str(tmp_path / "none.onnx"), "-o", str(tmp_path / "w.jsonl")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5, err
    assert all(line.startswith("endoedge batch: error:") for line in err), err


def test_sigkill_mid_run_then_resume_equals_uninterrupted(study, polyp_onnx, tmp_path):
    """Kill a real `endoedge batch` process with SIGKILL mid-way, tear its last line, resume."""
    ref = tmp_path / "ref.jsonl"
    run_batch(BatchConfig(study, [str(polyp_onnx)], ref, batch_size=4, progress=False))
    out = tmp_path / "killed.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "endoedge.cli", "batch", str(study), "-m", str(polyp_onnx), "-o", str(out),
           "--batch-size", "2", "--fsync-every", "1", "--quiet", "--threads", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if out.exists() and out.read_bytes().count(b"\n") >= 6:
                break
            assert proc.poll() is None, "batch ended before it could be killed"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done = out.read_bytes().count(b"\n")
    assert 6 <= done < 40, done
    with open(out, "ab") as f:  # what a kill in the middle of a write leaves
        f.write(b'{"path":"part1/img_09_3.jpeg","width":32')
    rc = subprocess.run([*cmd, "--resume", "--batch-size", "5"], env=env, capture_output=True, text=True, timeout=120)
    assert rc.returncode == 0, rc.stderr
    assert "torn last line" in rc.stderr
    assert _records(out) == _records(ref)  # exactly one record per input, identical values


def test_sigterm_stops_cleanly_and_resume_finishes(study, polyp_onnx, tmp_path):
    out = tmp_path / "term.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "endoedge.cli", "batch", str(study), "-m", str(polyp_onnx), "-o", str(out),
           "--batch-size", "2", "--quiet", "--threads", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.exists() and out.read_bytes().count(b"\n") >= 4):
        assert proc.poll() is None, "batch ended before SIGTERM"
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "finish with --resume" in err
    data = out.read_bytes()
    assert data.endswith(b"\n")  # whole records only
    assert data.count(b"\n") < 40
    assert subprocess.run([*cmd, "--resume"], env=env, capture_output=True, timeout=120).returncode == 0
    assert len(_records(out)) == 40


def test_a_study_where_every_image_fails_exits_1_and_keeps_its_records(study, polyp_onnx, tmp_path, capsys):
    # a wrong list file (paths relative to somewhere else) must not end as a "successful" empty study
    lst = tmp_path / "wrong.txt"
    lst.write_text("elsewhere/img_00_0.jpg\nelsewhere/img_01_0.jpg\n")
    out = tmp_path / "r.jsonl"
    capsys.readouterr()
    assert main(["batch", str(lst), "-m", str(polyp_onnx), "-o", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("endoedge batch: error: none of the 2 images could be read (first: '"), err
    assert "img_00_0.jpg" in err[-1]
    assert str(out) in err[-1]
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 2
    assert all(r.get("error") for r in recs)
    # one readable image is enough for a normal exit (errors are records, --fail-on-error makes them fatal)
    lst.write_text(f"{study / 'part0' / 'img_00_0.jpg'}\nelsewhere/img_01_0.jpg\n")
    assert main(["batch", str(lst), "-m", str(polyp_onnx), "-o", str(tmp_path / "r2.jsonl"), "--quiet"]) == 0
