"""VideoWriter hands I420 converted by OpenCV to the encoder: colours survive encode + decode."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

pytest.importorskip("endoedge.pipeline.gst")


@pytest.mark.parametrize("size", [(640, 360), (641, 361)], ids=["even-i420", "odd-bgr-padded-rows"])
def test_written_video_keeps_colours(sample_paths, tmp_path, size):
    from endoedge.errors import BackendUnavailableError, InputError
    from endoedge.pipeline.capture import GstCapture
    from endoedge.pipeline.writer import VideoWriter

    frames = [cv2.resize(cv2.imread(str(p)), size, interpolation=cv2.INTER_AREA) for p in sample_paths[:6]]
    path = tmp_path / "v.mp4"
    try:
        writer = VideoWriter(path, 30)
    except (BackendUnavailableError, InputError) as err:
        pytest.skip(str(err))
    for f in frames:
        writer.write(f)
    writer.close()
    assert writer.i420 is (size[0] % 2 == 0 and size[1] % 2 == 0)
    cap = GstCapture(f'filesrc location="{path}" ! decodebin ! videoconvert ! video/x-raw,format=BGR ! '
                     "appsink name=sink sync=false", location=str(path), live=False)
    cap.start()
    decoded = []
    while (fr := cap.read()) is not None:
        decoded.append(np.array(fr.image, dtype=np.float64))
        fr.release()
    cap.stop()
    assert len(decoded) == len(frames)
    for got, want in zip(decoded, frames, strict=True):
        diff = got - want
        assert np.abs(diff).mean() < 6  # lossy H.264 + 4:2:0 chroma
        assert np.abs(diff.reshape(-1, 3).mean(axis=0)).max() < 4.5  # no colour cast (matrix/range agree)
