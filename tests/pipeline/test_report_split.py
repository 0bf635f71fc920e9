"""The run report separates queueing from processing (``e2e_split``) and labels offline e2e."""

from __future__ import annotations

import json

import numpy as np

from endoedge.cli import main
from tests.pipeline.test_qrlatency import _tiny_yolo


def test_offline_report_splits_queue_and_process(sample_paths, tmp_path, capsys):
    model = _tiny_yolo(tmp_path / "tiny.onnx")
    out = tmp_path / "out"
    rc = main(["-q", "run", str(sample_paths[0].parent / "*.jpg"), "-m", str(model), "--decoder", "yolov8",
               "--classes", "polyp", "--warmup", "0", "--device", "cpu", "--report", str(out / "r.json"),
               "--detections", str(out / "d.jsonl"), "--plot", str(out / "p.png")])
    printed = capsys.readouterr().out
    assert rc == 0
    report = json.loads((out / "r.json").read_text())
    split = report["e2e_split"]
    assert split["mode"] == "offline"
    assert "queueing" in split["note"]
    assert "e2e: queue" in printed
    assert "e2e: process" in printed
    assert "mostly queueing" in printed
    # Per frame, e2e = queue + process (the JSONL keeps wait = queue; process = e2e - wait >= its parts).
    records = [json.loads(line) for line in (out / "d.jsonl").read_text().splitlines()]
    lat = [r["latency_ms"] for r in records]
    e2e = np.array([x["e2e"] for x in lat])
    wait = np.array([x["wait"] for x in lat])
    parts = np.array([x["preprocess"] + x["infer"] + x["postprocess"] for x in lat])
    assert (e2e - wait >= parts - 0.01).all()
    assert abs(split["queue"]["p50"] - np.percentile(wait, 50)) < 0.01
    assert split["process"]["max"] <= report["stages"]["e2e"]["max"] + 0.001
    assert (out / "p.png").stat().st_size > 10_000
