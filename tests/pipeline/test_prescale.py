"""Pre-scaling in GStreamer before the BGR conversion: frame size, pixels vs OpenCV, boxes in source pixels."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from endoedge.cli import main
from tests.pipeline.test_qrlatency import _spec, _tiny_yolo

gst_mod = pytest.importorskip("endoedge.pipeline.gst")


@pytest.fixture(scope="module")
def clip(tmp_path_factory, sample_paths):
    """A 640x360 H.264 MP4 of 10 real frames (x264/openh264 through endoedge's VideoWriter)."""
    from endoedge.errors import BackendUnavailableError, InputError
    from endoedge.pipeline.writer import VideoWriter

    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    try:
        writer = VideoWriter(path, 30)
    except (BackendUnavailableError, InputError) as err:
        pytest.skip(str(err))
    for p in sample_paths:
        writer.write(cv2.resize(cv2.imread(str(p)), (640, 360), interpolation=cv2.INTER_AREA))
    writer.close()
    return path


def _frames(description: str, cls):
    cap = cls(description, location="clip", live=False)
    cap.start()
    out = []
    try:
        while (f := cap.read()) is not None:
            out.append(np.array(f.image))
            f.release()
    finally:
        cap.stop()
    return cap, out


def test_letterbox_prescale_matches_opencv_resize(clip):
    from endoedge.pipeline.capture import GstCapture
    from endoedge.pipeline.prescale import PrescaledCapture, prescale_caps, prescaled_description
    from endoedge.pipeline.sources import build_pipeline, parse_source

    full_desc = build_pipeline(parse_source(str(clip)), live=False)
    desc = prescaled_description(full_desc, prescale_caps(_spec().preprocess))
    cap, small = _frames(desc, PrescaledCapture)
    _, full = _frames(full_desc, GstCapture)
    assert len(small) == len(full) == 10
    assert small[0].shape == (36, 64, 3)  # aspect kept: the detector's own letterbox size
    assert cap.full_size == (640, 360)
    assert cap.scale == (10.0, 10.0)
    # Same picture as OpenCV's bilinear resize of the full-size frame, up to interpolation rounding.
    for s, f in zip(small, full, strict=True):
        ref = cv2.resize(f, (64, 36), interpolation=cv2.INTER_LINEAR)
        assert np.abs(s.astype(int) - ref).mean() < 6


def test_stretch_caps_are_exact():
    from endoedge.pipeline.prescale import prescale_caps, prescaled_description
    from endoedge.spec import PreprocessSpec

    assert prescale_caps(PreprocessSpec((320, 320), resize="stretch")) == "video/x-raw,width=320,height=320"
    with pytest.raises(Exception, match="cannot pre-scale"):
        prescaled_description("videotestsrc ! appsink name=sink", "video/x-raw")


def test_run_boxes_in_source_pixels_with_and_without_prescale(clip, tmp_path, capsys):
    model = _tiny_yolo(tmp_path / "tiny.onnx")
    common = ["-q", "run", str(clip), "--stabilize", "off", "-m", str(model), "--decoder", "yolov8", "--classes", "polyp",
              "--device", "cpu", "--warmup", "0"]
    boxes, reports = {}, {}
    for mode in ("auto", "off"):
        jsonl, report = tmp_path / f"{mode}.jsonl", tmp_path / f"{mode}.json"
        assert main([*common, "--prescale", mode, "--detections", str(jsonl), "--report", str(report)]) == 0
        records = [json.loads(line) for line in jsonl.read_text().splitlines()]
        assert len(records) == 10
        boxes[mode] = np.array([d["box"] for r in records for d in r["detections"]])
        reports[mode] = json.loads(report.read_text())
    capsys.readouterr()
    assert reports["auto"]["source"]["prescale"].startswith("video/x-raw,width=[1,64]")
    assert "prescale" not in reports["off"]["source"]
    assert boxes["auto"].shape == boxes["off"].shape == (10, 4)
    np.testing.assert_allclose(boxes["auto"], boxes["off"], atol=0.05)
    assert boxes["off"][0, 0] > 320  # bottom-right quarter of the 640x360 source


def test_no_prescale_with_video_output(clip, tmp_path, capsys):
    model = _tiny_yolo(tmp_path / "tiny.onnx")
    report = tmp_path / "r.json"
    assert main(["-q", "run", str(clip), "-m", str(model), "--decoder", "yolov8", "--classes", "polyp", "--device",
                 "cpu", "--warmup", "0", "--video", str(tmp_path / "o.mp4"), "--report", str(report)]) == 0
    capsys.readouterr()
    assert "prescale" not in json.loads(report.read_text())["source"]


def test_scale_back_maps_a_multitask_mask_to_source_size():
    from types import SimpleNamespace

    from endoedge.detector import Detections
    from endoedge.pipeline.prescale import ScaleBack

    small = np.zeros((180, 320), np.float32)
    cv2.circle(small, (160, 90), 40, 1.0, -1)
    det = Detections(boxes=np.zeros((0, 4), np.float32), scores=np.zeros(0, np.float32),
                     class_ids=np.zeros(0, np.int64), labels=[], mask=small, frame_label="unclear",
                     frame_scores={"normal": 0.2, "unclear": 0.7, "polyp": 0.1})
    inner = SimpleNamespace(detect=lambda image: det)
    back = ScaleBack(inner, lambda: SimpleNamespace(scale=(6.0, 6.0)))  # type: ignore[arg-type]
    out = back.detect(np.zeros((180, 320, 3), np.uint8))
    assert out.frame_label == "unclear"
    assert out.mask is not None
    assert out.mask.shape == (1080, 1920)
    np.testing.assert_allclose(out.mask, cv2.resize(small, (1920, 1080), interpolation=cv2.INTER_LINEAR))
