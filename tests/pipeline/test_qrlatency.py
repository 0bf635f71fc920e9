"""Source-to-output latency from QR stamps: debugqroverlay -> pipeline -> zbar (real GStreamer, CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from endoedge.cli import main

gst_mod = pytest.importorskip("endoedge.pipeline.gst")


def _need(*elements: str) -> None:
    from endoedge.errors import BackendUnavailableError

    try:
        missing = [e for e in elements if not gst_mod.has_element(e)]
    except BackendUnavailableError as err:
        pytest.skip(str(err))
    if missing:
        pytest.skip(f"GStreamer elements missing: {', '.join(missing)} (gstreamer1.0-plugins-bad)")


def _frames(n: int, path: str, *, cover: frozenset[int] = frozenset()):
    """Read ``n`` stamped frames through a raw read-back; black out the QR corner of frames in ``cover``."""
    from endoedge.pipeline.qrlatency import ClockedCapture, QrReadback, stamped_source_description

    cap = ClockedCapture(stamped_source_description(width=320, height=240, fps=30), location="qr", live=True)
    cap.start()
    rb = QrReadback(cap, 30, path=path, warmup=2)
    pts = []
    try:
        for i in range(n):
            frame = cap.read()
            assert frame is not None
            image = np.array(frame.image)
            frame.release()
            if i in cover:
                image[: image.shape[0] // 2, : image.shape[1] // 2] = 0
            pts.append(frame.pts_ns)
            rb.write(image, frame.pts_ns)
    finally:
        rb.close()
        cap.stop()
    return rb, pts


@pytest.mark.parametrize("path", ["raw", "h264"])
def test_stamp_read_back_from_pixels(path):
    _need("debugqroverlay", "zbar")
    rb, pts = _frames(12, path, cover=frozenset({5, 8}))
    g = rb.glass_to_glass()
    # Every frame whose QR stayed visible is decoded; the covered two are not (time from pixels only).
    assert g["frames_sent"] == 12
    assert g["frames_decoded"] == 10
    assert g["undecoded"] == 2
    assert g["warmup_decoded"] == 2
    assert g["frames_measured"] == 8
    assert g["pts_mismatches"] == 0  # the decoded stamp is the running time the frame carried
    # BUFFERCOUNT in the QR is debugqroverlay's own counter: strictly increasing, gaps where covered.
    counts = rb.stats.buffer_counts
    assert counts == sorted(counts)
    assert len(set(counts)) == len(counts)
    lat = np.asarray(rb.stats.latency_ms)
    assert (lat > 0).all()
    assert (lat < 2000).all()
    assert g["p50"] <= g["p90"] <= g["p99"] <= g["max"]


def test_unknown_output_path_and_pattern():
    _need("debugqroverlay", "zbar")
    from endoedge.errors import InputError
    from endoedge.pipeline.qrlatency import ClockedCapture, QrReadback, stamped_source_description

    with pytest.raises(InputError, match="unknown test pattern"):
        stamped_source_description(pattern="plaid")
    with pytest.raises(InputError, match="unknown output path"):
        QrReadback(ClockedCapture("x", location="x", live=True), 30, path="hdmi")


def _tiny_yolo(path):
    """A real ONNX in Ultralytics' YOLOv8 layout (1 x 5 x 64): a strided Conv whose zero weights and
    fixed biases put one box (cx, cy, w, h = 48, 48, 20, 20 on the 64 px input) with score 0.9 in
    every cell, so NMS leaves one box in the bottom-right quarter, away from the QR stamp."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((5, 3, 8, 8), np.float32), "w")
    b = numpy_helper.from_array(np.array([48, 48, 20, 20, 0.9], np.float32), "b")
    shape = numpy_helper.from_array(np.array([1, 5, 64], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w", "b"], ["c"], strides=[8, 8]),
         helper.make_node("Reshape", ["c", "shape"], ["output0"])],
        "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 5, 64])], [w, b, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_latency_cli_reports_glass_to_glass(tmp_path, capsys):
    """A tiny real ONNX through the whole pipeline and the H.264 encode+decode path."""
    _need("debugqroverlay", "zbar")
    report = tmp_path / "lat.json"
    model = _tiny_yolo(tmp_path / "tiny.onnx")
    rc = main(["-q", "latency", "-m", str(model), "--decoder", "yolov8", "--classes", "polyp", "--seconds", "3",
               "--width", "320", "--height", "240", "--warmup", "3", "--report", str(report), "--device", "cpu",
               "--plot", str(tmp_path / "lat.png")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "glass_to_glass" in out
    rep = json.loads(report.read_text())
    g = rep["glass_to_glass"]
    assert g["frames_decoded"] >= 0.8 * g["frames_sent"] > 0
    assert g["pts_mismatches"] == 0
    # Source->output contains the in-process inference of the same frames.
    assert g["p50"] > rep["stages"]["infer"]["p50"]
    assert rep["stages"]["e2e"]["p50"] is not None
    assert (tmp_path / "lat.png").stat().st_size > 10_000


def test_tiny_model_draws_one_box_away_from_the_stamp(tmp_path):
    import endoedge

    with endoedge.load(_tiny_yolo(tmp_path / "tiny.onnx"), device="cpu", spec=_spec()) as det:
        r = det.detect(np.zeros((240, 320, 3), np.uint8))
    assert len(r.scores) == 1
    x1, y1, _, _ = r.boxes[0]
    assert x1 > 160
    assert y1 > 120


def _spec():
    from endoedge.spec import spec_for_foreign_yolo

    return spec_for_foreign_yolo("yolov8", ("polyp",), (64, 64))
