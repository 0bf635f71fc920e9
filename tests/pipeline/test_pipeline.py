"""The capture pipeline: sources, live/offline modes, outputs, report, faults (real GStreamer)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from endoedge.cli import main
from endoedge.errors import InputError
from endoedge.pipeline.report import REPORT_KEYS
from endoedge.pipeline.sources import build_pipeline, parse_source

STAT_KEYS = ["mean", "p50", "p90", "p95", "p99", "p999", "max"]
STAGE_KEYS = ["capture", "preprocess", "infer", "postprocess", "render", "e2e"]


def _records(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _count_frames(path) -> int:
    """Decode a video with GStreamer and count its frames (proves the file is playable)."""
    from endoedge.pipeline.capture import GstCapture

    cap = GstCapture(f'filesrc location="{path}" ! decodebin ! videoconvert ! video/x-raw,format=BGR ! '
                     "appsink name=sink sync=false", location=str(path), live=False, stall_timeout_s=20)
    cap.start()
    n = 0
    try:
        while (frame := cap.read()) is not None:
            assert frame.image.std() > 1  # real picture content, not a blank buffer
            frame.release()
            n += 1
    finally:
        cap.stop()
    return n


# -- source parsing (no GStreamer needed) ---------------------------------------------------
def test_parse_sources(tmp_path, sample_paths):
    assert parse_source("test").kind == "test"
    assert parse_source("test").is_live
    assert parse_source("rtsp://cam.local/stream").kind == "rtsp"
    assert parse_source("rtp://0.0.0.0:5004").kind == "rtp"
    folder = parse_source(str(sample_paths[0].parent))
    assert folder.kind == "folder"
    assert len(folder.files) == len(sample_paths)
    assert not folder.is_live
    assert parse_source(str(sample_paths[0].parent / "*.jpg")).kind == "folder"
    video = tmp_path / "clip.mkv"
    video.write_bytes(b"\x1aE\xdf\xa3 not really")
    assert parse_source(str(video)).kind == "file"
    raw = "videotestsrc ! videoconvert ! appsink name=sink"
    assert parse_source(raw).kind == "pipeline"


def test_folder_source_plays_in_natural_order(tmp_path):
    import cv2
    import numpy as np

    from endoedge.pipeline.sources import parse_source

    for i in (1, 2, 10, 11, 100):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), np.zeros((4, 4, 3), np.uint8))
    spec = parse_source(str(tmp_path))
    assert [f.name for f in spec.files] == ["img1.png", "img2.png", "img10.png", "img11.png", "img100.png"]
    assert [f.name for f in parse_source(str(tmp_path / "img*.png")).files] == [f.name for f in spec.files]

@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("/no/such/clip.mp4", "not found"),
        ("/dev/video99", "does not exist"),
        ("videotestsrc ! appsink", "appsink name=sink"),
        ("test:plaid", "unknown test pattern"),
        ("rtp://host", "rtp://HOST:PORT"),
        ("", "empty SOURCE"),
    ],
)
def test_bad_sources(source, message):
    with pytest.raises(InputError, match=message):
        parse_source(source)


def test_bad_caps_options():
    with pytest.raises(InputError, match="--width"):
        parse_source("test", width=0)
    with pytest.raises(InputError, match="--fps"):
        parse_source("test", fps=-5)


def test_live_and_offline_pipeline_strings():
    live = build_pipeline(parse_source("test", width=640, height=480, fps=25), live=True)
    assert "leaky=downstream" in live
    assert "drop=true max-buffers=1" in live
    assert "sync=false" in live
    assert "width=640,height=480,framerate=25/1" in live
    assert live.endswith("emit-signals=false")
    assert "video/x-raw,format=BGR ! appsink name=sink" in live
    offline = build_pipeline(parse_source("test"), live=False)
    assert "drop=false" in offline
    assert "leaky" not in offline
    rtsp = build_pipeline(parse_source("rtsp://cam/s", latency_ms=40), live=True)
    assert "latency=40 drop-on-latency=true" in rtsp
    mjpg = build_pipeline(parse_source("test"), live=True)
    assert "videotestsrc is-live=true" in mjpg


@pytest.mark.gstreamer
@pytest.mark.parametrize("source", ["test", "rtsp://127.0.0.1:9/none", "rtp://0.0.0.0:5004"])
def test_pipeline_strings_parse(source):
    from endoedge.pipeline.gst import gst

    for live in (True, False):
        pipeline = gst().Gst.parse_launch(build_pipeline(parse_source(source), live=live))
        assert pipeline.get_by_name("sink") is not None


# -- runs (real GStreamer, real model) -----------------------------------------------------
@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    pytest.importorskip("gi")
    from endoedge.pipeline.clip import make_sample_clip

    path = tmp_path_factory.mktemp("clip") / "colon_480.mp4"
    return make_sample_clip(path, frames=24, fps=30, size=(480, 270))


def _run(args, capsys):
    rc = main(["-q", "run", *args])
    return rc, capsys.readouterr()


@pytest.mark.gstreamer
def test_offline_file_processes_every_frame(ssdlite, clip, tmp_path, capsys):
    out = tmp_path / "o"
    rc, cap = _run([str(clip), "-m", str(ssdlite[2]), "--warmup", "3", "--video", str(out / "a.mp4"),
                    "--detections", str(out / "d.jsonl"), "--report", str(out / "r.json"),
                    "--plot", str(out / "p.png"), "--stabilize", "off"], capsys)
    assert rc == 0, cap.err
    report = json.loads((out / "r.json").read_text())
    assert list(report) == list(REPORT_KEYS)
    assert report["frames"] + report["warmup_frames"] == 24
    assert report["warmup_frames"] == 3
    assert report["dropped"] == 0
    assert report["source"]["mode"] == "offline"
    assert list(report["stages"]) == STAGE_KEYS
    for stage in STAGE_KEYS:
        assert list(report["stages"][stage]) == STAT_KEYS
        assert report["stages"][stage]["p50"] is not None
    e2e = report["stages"]["e2e"]
    assert e2e["p50"] >= report["stages"]["infer"]["p50"]
    records = _records(out / "d.jsonl")
    assert [r["frame"] for r in records] == list(range(24))
    assert set(records[5]["latency_ms"]) == {"capture", "preprocess", "infer", "postprocess", "e2e", "wait"}
    assert all(r["detections"] for r in records)  # the demo model finds boxes on every frame
    box = np.array(records[5]["detections"][0]["box"])
    assert (box[:2] >= 0).all()
    assert box[2] <= 480
    assert box[3] <= 270
    assert _count_frames(out / "a.mp4") == 24
    assert (out / "p.png").stat().st_size > 10_000
    assert "e2e" in cap.out
    assert "stage (ms)" in cap.out


@pytest.mark.gstreamer
def test_folder_source_offline_and_matches_detect(ssdlite, sample_paths, tmp_path, capsys):
    import endoedge
    from endoedge.data.imageio import read_image

    rc, cap = _run([str(sample_paths[0].parent / "*.jpg"), "-m", str(ssdlite[2]), "--warmup", "0",
                    "--detections", str(tmp_path / "d.jsonl")], capsys)
    assert rc == 0, cap.err
    records = _records(tmp_path / "d.jsonl")
    assert len(records) == len(sample_paths)
    with endoedge.load(ssdlite[2], device="cpu") as det:
        expected = det.detect(read_image(sample_paths[4])).to_records()
    assert records[4]["detections"] == expected


@pytest.mark.gstreamer
def test_live_source_drops_stale_frames(ssdlite, tmp_path, capsys):
    # 1280x720 at 60 fps is faster than this CPU's inference: frames must be dropped, not queued.
    rc, cap = _run(["test", "--fps", "60", "-m", str(ssdlite[2]), "--max-frames", "25", "--warmup", "5",
                    "--report", str(tmp_path / "r.json")], capsys)
    assert rc == 0, cap.err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["source"]["mode"] == "live"
    assert report["frames"] == 20
    assert report["dropped"] > 0
    stages = report["stages"]
    # latest-frame semantics: a frame waits at most about one inference before it is taken
    assert stages["e2e"]["p50"] < 3 * stages["infer"]["p50"] + 100


@pytest.mark.gstreamer
def test_stalled_live_source_reconnects_then_gives_up(ssdlite, tmp_path, capsys):
    # A UDP/RTP source nobody sends to: stalls, is rebuilt with back-off, then the run ends.
    t0 = time.monotonic()
    rc, cap = _run(["rtp://127.0.0.1:47123", "-m", str(ssdlite[2]), "--stall-timeout", "0.5",
                    "--reconnect-backoff", "0.1:0.2", "--max-reconnects", "2",
                    "--report", str(tmp_path / "r.json")], capsys)
    assert rc == 1
    lines = cap.err.strip().splitlines()
    assert lines[-1].startswith("endoedge run: error:")
    assert "gave up after 2 reconnects" in lines[-1]
    assert time.monotonic() - t0 < 30
    report = json.loads((tmp_path / "r.json").read_text())
    assert len(report["source"]["reconnects"]) == 2
    assert report["frames"] == 0


@pytest.mark.parametrize(("flags", "message"), [
    (["--stall-timeout", "0"], "--stall-timeout must be > 0 seconds (got 0)"),
    (["--max-reconnects", "-1"], "--max-reconnects >= 0 (got -1)"),
])
def test_run_refuses_a_zero_stall_timeout_or_negative_reconnects(ssdlite, sample_paths, tmp_path, flags, message,
                                                                 capsys):
    report = tmp_path / "r.json"
    rc, cap = _run([str(sample_paths[0].parent), "-m", str(ssdlite[2]), "--report", str(report), *flags], capsys)
    assert rc == 1
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("endoedge run: error:")
    assert message in lines[0]
    assert not report.exists()


@pytest.mark.gstreamer
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(os.urandom(4096)), "not a video GStreamer can read|GStreamer"),
        (lambda p: p.write_bytes(b""), "not a video|GStreamer|cannot open"),
    ],
)
def test_unreadable_video_is_one_line_error(ssdlite, tmp_path, make, message, capsys):
    bad = tmp_path / "broken.mp4"
    make(bad)
    rc, cap = _run([str(bad), "-m", str(ssdlite[2])], capsys)
    assert rc == 1
    line = cap.err.strip().splitlines()[-1]
    assert line.startswith("endoedge run: error:")
    import re

    assert re.search(message, line)


@pytest.mark.gstreamer
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_finalizes_outputs(ssdlite, tmp_path, sig):
    """Ctrl-C / SIGTERM (a killed run): video, JSONL and report finalized, exit 130."""
    out = tmp_path / "k"
    cmd = [sys.executable, "-m", "endoedge.cli", "-q", "run", "test", "-m", str(ssdlite[2]), "--warmup", "2",
           "--video", str(out / "v.mp4"), "--detections", str(out / "d.jsonl"), "--report", str(out / "r.json")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (out / "d.jsonl").exists() and len((out / "d.jsonl").read_text().splitlines()) >= 6:
            break
        time.sleep(0.2)
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 130, err
    report = json.loads((out / "r.json").read_text())
    records = _records(out / "d.jsonl")
    assert report["frames"] + report["warmup_frames"] == len(records) >= 6
    assert _count_frames(out / "v.mp4") == len(records)
