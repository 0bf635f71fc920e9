"""The live soak script (benchmarks/soak.py) on a short run: samples, windows, verdicts, the
RESULTS.md section; the full 30-minute soak is run by hand (see benchmarks/RESULTS.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import endoedge

ROOT = Path(__file__).resolve().parents[2]
SRC = str(Path(endoedge.__file__).resolve().parents[1])


@pytest.mark.gstreamer
@pytest.mark.slow
def test_short_soak_writes_samples_windows_and_verdicts(ssdlite, tmp_path):
    out = tmp_path / "soak.json"
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--seconds", "14", "--model", str(ssdlite[2]),
         "--sample-s", "1", "--window-s", "3", "--warmup", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=180, check=False, env=env)
    assert out.is_file(), proc.stderr
    res = json.loads(out.read_text())
    assert res["exit_code"] == 130  # stopped by SIGINT, outputs finalized
    assert res["stopped_by_sigint"]
    assert res["report"]["frames"] > 0
    assert len(res["samples"]) >= 5
    assert res["samples"][-1]["rss_mb"] > 50  # the model and GStreamer loaded
    assert res["samples"][-1]["fds"] >= 3
    assert res["windows"]
    assert res["windows"][0]["e2e_p99_ms"] >= res["windows"][0]["e2e_p50_ms"] > 0
    verdicts = res["summary"]["verdicts"]
    assert set(verdicts) == {"rss_flat", "fds_flat", "p99_no_drift", "clean_stop"}
    assert verdicts["clean_stop"]
    assert proc.returncode == (0 if all(verdicts.values()) else 1)

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import soak

    md = tmp_path / "RESULTS.md"
    md.write_text("# Benchmark results\n")
    soak.update_results(soak.markdown(res), md)
    soak.update_results(soak.markdown(res), md)  # replaced, not appended twice
    text = md.read_text()
    assert text.count(soak.START) == 1
    assert "| open file descriptors |" in text
