"""The pipeline's seams: any CaptureSource / FrameDetector / FrameSink / LineSink runs through Pipeline."""

from __future__ import annotations

import io
import json
import queue
import time

import numpy as np
import pytest

from endoedge.detector import Detections, StageTimes
from endoedge.errors import EndoedgeError, SourceStalled
from endoedge.pipeline.capture import FolderCapture
from endoedge.pipeline.frames import CaptureSource, Frame, FrameSink, StopFlag
from endoedge.pipeline.runner import LatestSlot, Pipeline, RunOptions


class CountingSource:
    """A CaptureSource of ``n`` black frames (ns timestamps at 30 fps)."""

    def __init__(self, n: int, *, stall_after: int | None = None) -> None:
        self.n = n
        self.stall_after = stall_after
        self.dropped_upstream = 0
        self.started = self.stopped = 0
        self._i = 0

    def start(self) -> None:
        self.started += 1

    def read(self, stop: StopFlag | None = None) -> Frame | None:
        if stop is not None and stop.is_set():
            return None
        if self.stall_after is not None and self._i >= self.stall_after:
            raise SourceStalled("fake source stalled")
        if self._i >= self.n:
            return None
        t = time.perf_counter_ns()
        frame = Frame(self._i, int(self._i * 1e9 / 30), np.zeros((24, 32, 3), np.uint8), t, 0.5)
        self._i += 1
        return frame

    def stop(self) -> None:
        self.stopped += 1


class OneBoxDetector:
    """A FrameDetector finding one box in every frame."""

    def __init__(self) -> None:
        self.timings = StageTimes(1.0, 2.0, 3.0)
        self.cleaner = None
        self.calls = 0

    def detect(self, image_bgr: np.ndarray, /) -> Detections:
        self.calls += 1
        return Detections(np.array([[1, 2, 10, 12]], np.float32), np.array([0.9], np.float32),
                          np.array([0], np.int64), ["polyp"])


class ListSink:
    """A FrameSink keeping (shape, pts) of what it was given."""

    def __init__(self) -> None:
        self.frames: list[tuple[tuple[int, ...], int | None]] = []
        self.closed = False

    def write(self, image: np.ndarray, pts_ns: int | None = None) -> None:
        self.frames.append((image.shape, pts_ns))

    def close(self) -> None:
        self.closed = True


def test_fakes_satisfy_the_protocols_structurally():
    source: CaptureSource = CountingSource(1)
    sink: FrameSink = ListSink()
    assert source.dropped_upstream == 0
    assert sink is not None


def test_pipeline_runs_any_capture_source_detector_and_sinks():
    source, det, video, jsonl = CountingSource(7), OneBoxDetector(), ListSink(), io.StringIO()
    pipe = Pipeline(det, lambda: source, RunOptions(live=False, warmup=2), video=video, jsonl=jsonl)
    stats = pipe.run()
    assert (source.started, source.stopped) == (1, 1)
    assert det.calls == 7
    assert stats.frames == 5
    assert stats.warmup_frames == 2
    assert [pts for _, pts in video.frames] == [int(i * 1e9 / 30) for i in range(7)]
    records = [json.loads(line) for line in jsonl.getvalue().splitlines()]
    assert [r["frame"] for r in records] == list(range(7))
    assert [r["warmup"] for r in records] == [True, True] + [False] * 5
    assert records[3]["detections"][0]["label"] == "polyp"
    assert set(records[3]["latency_ms"]) == {"capture", "preprocess", "infer", "postprocess", "e2e", "wait"}
    assert len(stats.stages["render"]) == 5
    assert pipe.dropped == 0


def test_a_stalled_offline_source_is_an_error():
    pipe = Pipeline(OneBoxDetector(), lambda: CountingSource(5, stall_after=3), RunOptions(live=False, warmup=0))
    with pytest.raises(SourceStalled, match="fake source stalled"):
        pipe.run()


def test_a_stalled_live_source_is_rebuilt_then_given_up():
    made: list[CountingSource] = []

    def make() -> CountingSource:  # the first source stalls after 2 frames, the rebuilt ones at once
        made.append(CountingSource(100, stall_after=0 if made else 2))
        return made[-1]

    options = RunOptions(live=True, warmup=0, backoff_s=(0.01, 0.02), max_reconnects=2)
    pipe = Pipeline(OneBoxDetector(), make, options)
    with pytest.raises(EndoedgeError, match="gave up after 2 reconnects"):
        pipe.run()
    assert len(made) == 3
    assert all(s.stopped >= 1 for s in made)
    assert len(pipe.stats.gaps) == 2


def test_latest_slot_keeps_the_newest_item():
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1) is None
    assert slot.put(2) == 1
    assert slot.get(timeout=0) == 2
    with pytest.raises(queue.Empty):
        slot.get(timeout=0)


def test_folder_capture_is_a_capture_source(sample_paths):
    source: CaptureSource = FolderCapture(sample_paths[:2], fps=30, live=False)
    source.start()
    frames = [source.read(), source.read(), source.read()]
    source.stop()
    assert [f.index for f in frames if f is not None] == [0, 1]
    assert frames[2] is None
