"""Temporal stabilization in the pipeline: shown vs raw detections, track ids, the stage, resets."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from endoedge.detector import Detections, StageTimes
from endoedge.errors import InputError
from endoedge.pipeline.runner import Pipeline, RunOptions
from endoedge.pipeline.stabilize import DetectionStabilizer, resolve_stabilize
from endoedge.spec.stabilize import StabilizeConfig
from tests.pipeline.test_frames import CountingSource

BOX = np.array([[4, 5, 20, 22]], np.float32)


class FlickerDetector:
    """A FrameDetector that finds one polyp box on the frames of ``pattern`` (1 = found)."""

    def __init__(self, pattern: list[int]) -> None:
        self.pattern = pattern
        self.timings = StageTimes(1.0, 2.0, 3.0)
        self.cleaner = None
        self.calls = 0

    def detect(self, image_bgr: np.ndarray, /) -> Detections:
        hit = self.pattern[self.calls % len(self.pattern)]
        self.calls += 1
        n = 1 if hit else 0
        return Detections(BOX[:n] + self.calls, np.full(n, 0.8, np.float32), np.zeros(n, np.int64), ["polyp"] * n)


class PacedSource(CountingSource):
    """A live CountingSource that delivers a frame every 20 ms (so the detector sees each one)."""

    def read(self, stop=None):
        time.sleep(0.02)
        return super().read(stop)


def _records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_jsonl_detections_are_what_is_shown_and_raw_is_the_detector_output():
    pattern = [1, 0, 1, 1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    det, jsonl = FlickerDetector(pattern), io.StringIO()
    stab = DetectionStabilizer(StabilizeConfig(onset=3, hold=2), ["polyp"])
    pipe = Pipeline(det, lambda: CountingSource(len(pattern)), RunOptions(live=False, warmup=0),
                    jsonl=jsonl, stabilizer=stab)
    stats = pipe.run()
    records = _records(jsonl.getvalue())
    assert [len(r["raw"]) for r in records] == pattern
    shown = [len(r["detections"]) for r in records]
    assert shown == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    assert {d["track_id"] for r in records for d in r["detections"]} == {2}  # track 1 was a blip
    assert [d["held"] for r in records[6:11] for d in r["detections"]] == [True, True, False, True, True]
    assert records[4]["detections"][0]["label"] == "polyp"
    assert "stabilize" in records[4]["latency_ms"]
    assert len(stats.stages["stabilize"]) == len(pattern)
    assert max(stats.stages["stabilize"]) < 50  # ms: cheap, and a separate stage


def test_without_a_stabilizer_records_are_unchanged():
    det, jsonl = FlickerDetector([1, 0]), io.StringIO()
    stats = Pipeline(det, lambda: CountingSource(4), RunOptions(live=False, warmup=0), jsonl=jsonl).run()
    records = _records(jsonl.getvalue())
    assert [len(r["detections"]) for r in records] == [1, 0, 1, 0]
    assert all("raw" not in r and "track_id" not in str(r) for r in records)
    assert "stabilize" not in stats.stages


def test_a_reconnect_resets_the_tracks():
    made: list[PacedSource] = []

    def make() -> PacedSource:  # the first source stalls after 6 frames, the second runs to its end
        made.append(PacedSource(4 if made else 100, stall_after=None if made else 6))
        return made[-1]

    jsonl = io.StringIO()
    stab = DetectionStabilizer(StabilizeConfig(onset=2, hold=10), ["polyp"])
    options = RunOptions(live=True, warmup=0, backoff_s=(0.01, 0.02), max_reconnects=1)
    pipe = Pipeline(FlickerDetector([1]), make, options, jsonl=jsonl, stabilizer=stab)
    pipe.run()
    records = _records(jsonl.getvalue())
    tracks = [{d["track_id"] for d in r["detections"]} for r in records]
    ids = sorted(set().union(*tracks))
    assert len(ids) == 2  # the held track did not survive the cut: a new one after onset
    first_new = next(i for i, t in enumerate(tracks) if ids[1] in t)
    assert tracks[first_new - 1] == set()  # the frame after the cut shows nothing (onset)
    assert tracks[first_new - 2] == {ids[0]}


def test_resolve_stabilize_defaults_model_config_and_overrides():
    assert resolve_stabilize("auto", "folder", None) is None
    assert resolve_stabilize("off", "file", None) is None
    assert resolve_stabilize("auto", "file", None) == StabilizeConfig()
    assert resolve_stabilize("on", "folder", None) == StabilizeConfig()
    stored = {"onset": 4, "hold": 9, "smooth": 0.7, "iou": 0.2}
    assert resolve_stabilize("auto", "rtsp", stored) == StabilizeConfig(4, 9, 0.7, 0.2)
    got = resolve_stabilize("auto", "v4l2", stored, onset=2, hold=None, smooth=None, iou=None)
    assert got == StabilizeConfig(2, 9, 0.7, 0.2)
    with pytest.raises(InputError, match="onset"):
        resolve_stabilize("off", "file", None, onset=0)  # a bad value is refused even when off


def test_model_metadata_round_trip_and_load(ssdlite, tmp_path):
    from dataclasses import replace

    import onnx

    import endoedge
    from endoedge.spec import ModelSpec

    model = onnx.load(str(ssdlite[2]))
    spec = ModelSpec.from_metadata({p.key: p.value for p in model.metadata_props})
    assert spec.stabilize is None
    stored = StabilizeConfig(onset=2, hold=1).to_dict()
    props = replace(spec, stabilize=stored).to_metadata()
    assert json.loads(props["endoedge.stabilize"]) == stored
    assert ModelSpec.from_metadata(props).stabilize == stored
    onnx.helper.set_model_props(model, props)
    path = tmp_path / "stab.onnx"
    onnx.save(model, str(path))
    with endoedge.load(path, device="cpu") as det:
        assert det.spec.stabilize == stored
    bad = dict(props, **{"endoedge.stabilize": '{"onset": 0}'})
    with pytest.raises(endoedge.errors.ModelFormatError, match="stabilize"):
        ModelSpec.from_metadata(bad)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    pytest.importorskip("gi")
    from endoedge.pipeline.clip import make_sample_clip

    return make_sample_clip(tmp_path_factory.mktemp("clip") / "c.mp4", frames=16, fps=25, size=(320, 180))


@pytest.mark.gstreamer
def test_endoedge_run_over_a_clip_stabilizes_by_default(ssdlite, clip, tmp_path):
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "endoedge.cli", "-q", "run", str(clip), "-m", str(ssdlite[2]),
           "--warmup", "2", "--onset", "2", "--hold", "3", "--conf", "0.05",
           "--detections", str(out / "d.jsonl"), "--report", str(out / "r.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "stabilized (onset 2, hold 3" in proc.stderr
    records = _records((out / "d.jsonl").read_text())
    assert len(records) == 16
    assert all("raw" in r for r in records)
    assert any(r["raw"] for r in records)
    assert records[0]["detections"] == []  # nothing is shown before the onset
    shown = [d for r in records for d in r["detections"]]
    assert shown
    assert all(isinstance(d["track_id"], int) and isinstance(d["held"], bool) for d in shown)
    assert all(set(d) == {"box", "score", "class_id", "label", "track_id", "held"} for d in shown)
    report = json.loads((out / "r.json").read_text())
    assert report["stages"]["stabilize"]["p50"] is not None
    assert report["stages"]["stabilize"]["p50"] < 5  # ms
    assert report["source"]["stabilize"]["onset"] == 2
    assert "stabilize" in proc.stdout  # the printed latency table has the stage


@pytest.mark.slow
def test_export_stores_the_stabilize_config(ssdlite, tmp_path, capsys):
    from endoedge.cli import main
    from endoedge.spec import ModelSpec, read_onnx_metadata

    out = tmp_path / "m.onnx"
    rc = main(["export", str(ssdlite[1]), "-o", str(out), "--no-check", "--no-simplify",
               "--stabilize", "onset=4,hold=2"])
    assert rc == 0, capsys.readouterr().err
    stored = ModelSpec.from_metadata(read_onnx_metadata(out)).stabilize
    assert stored == StabilizeConfig(onset=4, hold=2).to_dict()
    assert main(["export", str(ssdlite[1]), "-o", str(tmp_path / "n.onnx"), "--no-check",
                 "--stabilize", "onset=0"]) != 0
    assert "onset" in capsys.readouterr().err
