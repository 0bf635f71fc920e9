"""``endoedge run --display`` on a real X server (Xvfb), checked with a screenshot of the window.

The test starts its own Xvfb and skips with a reason when Xvfb or the X11 GStreamer elements
(``ximagesink`` from gstreamer1.0-x, ``ximagesrc`` from gstreamer1.0-plugins-good) are absent.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.pipeline.test_qrlatency import _spec, _tiny_yolo

REPO = Path(__file__).resolve().parents[2]


def _start_xvfb() -> tuple[subprocess.Popen[bytes], str]:
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    from endoedge.errors import BackendUnavailableError
    from endoedge.pipeline.gst import has_element

    try:
        missing = [e for e in ("ximagesink", "ximagesrc") if not has_element(e)]
    except BackendUnavailableError as err:
        pytest.skip(str(err))
    if missing:
        pytest.skip(f"GStreamer X11 elements missing: {missing} (gstreamer1.0-x, gstreamer1.0-plugins-good)")
    read, write = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1024x768x24", "-nolisten", "tcp", "-noreset"],
                            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    number = b""
    deadline = time.monotonic() + 15
    while not number.endswith(b"\n") and time.monotonic() < deadline:
        chunk = os.read(read, 16)
        if not chunk:
            break
        number += chunk
    os.close(read)
    if not number.strip():
        proc.kill()
        pytest.skip("Xvfb did not start")
    # -noreset: an X server resets when its last client disconnects, and an X sink that connects during
    # the reset fails with "Could not initialise X output" (seen in a full run). -displayfd answers when
    # the server is up; also wait until its socket accepts a client.
    sock_path = f"/tmp/.X11-unix/X{number.strip().decode()}"
    while time.monotonic() < deadline + 15:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(sock_path)
            break
        except OSError:
            time.sleep(0.1)
    return proc, f":{number.strip().decode()}"


def _screenshot(display: str) -> np.ndarray:
    """The whole X screen as BGR, grabbed with GStreamer's ximagesrc."""
    from endoedge.pipeline.capture import GstCapture

    cap = GstCapture(f"ximagesrc display-name={display} use-damage=false num-buffers=1 ! videoconvert ! "
                     "video/x-raw,format=BGR ! appsink name=sink sync=false", location=display, live=False)
    cap.start()
    try:
        frame = cap.read()
        assert frame is not None
        image = np.array(frame.image)
        frame.release()
    finally:
        cap.stop()
    return image


def test_display_window_shows_boxes(sample_paths, tmp_path):
    xvfb, display = _start_xvfb()
    run = None
    try:
        folder = tmp_path / "frames"
        folder.mkdir()
        image = cv2.resize(cv2.imread(str(sample_paths[2])), (640, 360), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / "f.png"), image)
        model = _tiny_yolo(tmp_path / "tiny.onnx")
        env = {**os.environ, "DISPLAY": display, "PYTHONPATH": str(REPO / "src")}
        env.pop("WAYLAND_DISPLAY", None)
        run = subprocess.Popen(
            [sys.executable, "-m", "endoedge.cli", "-q", "run", str(folder), "--live", "--loop", "--fps", "10",
             "--display", "-m", str(model), "--decoder", "yolov8", "--classes", "polyp", "--device", "cpu",
             "--warmup", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        import endoedge
        from endoedge.render import draw_detections

        with endoedge.load(model, device="cpu", spec=_spec()) as det:
            expected = draw_detections(image.copy(), det.detect(image))
        changed = np.abs(expected.astype(int) - image).max(axis=2) > 40  # the box and its label
        assert changed.sum() > 500
        shot = None
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            if run.poll() is not None:
                pytest.fail(f"endoedge run --display exited early: {run.stderr.read().decode()[-800:]}")
            shot = _screenshot(display)
            score = cv2.matchTemplate(shot, expected, cv2.TM_SQDIFF_NORMED)
            if score.min() < 0.01:
                break
            time.sleep(0.5)
        assert shot is not None
        cv2.imwrite(str(tmp_path / "screenshot.png"), shot)
        if os.environ.get("ENDOEDGE_SCREENSHOT"):
            cv2.imwrite(os.environ["ENDOEDGE_SCREENSHOT"], shot)
        score = cv2.matchTemplate(shot, expected, cv2.TM_SQDIFF_NORMED)
        y, x = np.unravel_index(int(score.argmin()), score.shape)
        window = shot[y:y + 360, x:x + 640].astype(int)
        # The window holds the annotated frame (boxes drawn), not the bare frame.
        assert np.abs(window - expected)[changed].mean() < 8
        assert np.abs(window - image)[changed].mean() > 40
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=30) in (0, 130)
    finally:
        if run is not None and run.poll() is None:
            run.kill()
            run.wait()
        xvfb.terminate()
        xvfb.wait(timeout=10)


def test_qr_readback_through_the_display_path():
    """``endoedge latency --output display``: frames go to a window (tee) and to zbar."""
    xvfb, display = _start_xvfb()
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = display
    try:
        from endoedge.pipeline.gst import has_element

        if not (has_element("debugqroverlay") and has_element("zbar")):
            pytest.skip("debugqroverlay/zbar missing (gstreamer1.0-plugins-bad)")
        from endoedge.pipeline.qrlatency import (
            ClockedCapture,
            QrReadback,
            stamped_source_description,
        )

        cap = ClockedCapture(stamped_source_description(width=320, height=240), location="qr", live=True)
        cap.start()
        rb = QrReadback(cap, 30, path="display", warmup=1)
        try:
            for _ in range(8):
                frame = cap.read()
                assert frame is not None
                rb.write(np.array(frame.image), frame.pts_ns)
                frame.release()
        finally:
            rb.close()
            cap.stop()
        g = rb.glass_to_glass()
        assert g["output_path"] == "display"
        assert g["frames_decoded"] >= 6
        assert g["pts_mismatches"] == 0
        assert g["p50"] > 0
    finally:
        if old is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = old
        xvfb.terminate()
        xvfb.wait(timeout=10)
