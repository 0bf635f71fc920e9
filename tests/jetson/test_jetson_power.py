"""nvpmodel / jetson_clocks / tegrastats around bench and run: tested with FAKE executables.

No Jetson is available: ``nvpmodel``, ``jetson_clocks`` and ``tegrastats`` below are FAKES (small
Python scripts on the PATH) that print output in the tools' formats and log how they were called.
The ``jetson_clocks --show`` text follows the L4T format as remembered (not verified on a device).
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from endoedge.cli import main
from endoedge.errors import EndoedgeError
from endoedge.jetson.power import (
    BenchProtocol,
    CommandResult,
    device_state,
    parse_jetson_clocks,
    parse_nvpmodel,
)
from tests.jetson.test_tegrastats import AGX_ORIN_JP6
from tests.pipeline.test_qrlatency import _tiny_yolo

CLOCKS_SHOW = """SOC family:tegra234  Machine:NVIDIA Jetson AGX Orin Developer Kit
Online CPUs: 0-11
cpu0: Online=1 Governor=schedutil MinFreq=729600 MaxFreq=2201600 CurrentFreq=1190400 IdleStates: WFI=1 c7=1
cpu1: Online=1 Governor=schedutil MinFreq=729600 MaxFreq=2201600 CurrentFreq=729600 IdleStates: WFI=1 c7=1
GPU MinFreq=306000000 MaxFreq=1300500000 CurrentFreq=306000000
EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=0
DLA0_CORE: Online=1 MinFreq=0 MaxFreq=1600000000 CurrentFreq=1600000000
NV Power Mode: MAXN"""


def test_parse_nvpmodel_and_clocks():
    assert parse_nvpmodel("NV Power Mode: MAXN\n0\n") == {"name": "MAXN", "id": 0}
    assert parse_nvpmodel("NV Power Mode: 15W\n") == {"name": "15W", "id": None}
    assert parse_nvpmodel("nvpmodel: command not found") is None
    clocks = parse_jetson_clocks(CLOCKS_SHOW)
    assert clocks["GPU"] == {"min": 306000000, "max": 1300500000, "current": 306000000}
    assert clocks["cpu0"]["max"] == 2201600
    assert clocks["EMC"]["current"] == 3199000000
    assert clocks["DLA0_CORE"]["max"] == 1600000000


class FakeRunner:
    """FAKE command runner: records calls, answers like the tools, fails where told."""

    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[str] = []
        self.fail = fail
        self.mode = 2

    def __call__(self, cmd):
        text = " ".join(cmd)
        self.calls.append(text)
        if self.fail and text.startswith(self.fail):
            return CommandResult(list(cmd), 1, "permission denied")
        if cmd[:2] == ["nvpmodel", "-q"]:
            return CommandResult(list(cmd), 0, f"NV Power Mode: MODE{self.mode}\n{self.mode}")
        if cmd[:2] == ["nvpmodel", "-m"]:
            self.mode = int(cmd[2])
        if cmd[:2] == ["jetson_clocks", "--show"]:
            return CommandResult(list(cmd), 0, CLOCKS_SHOW)
        return CommandResult(list(cmd), 0, "")


def test_protocol_order_and_restore_on_error(tmp_path):
    fake = FakeRunner()
    store = str(tmp_path / "l4t_dfs.conf")
    with pytest.raises(RuntimeError), BenchProtocol(mode=0, warmup=5, runner=fake, store_file=store) as proto:
        raise RuntimeError("benchmark crashed")
    assert fake.calls == ["nvpmodel -q", "nvpmodel -m 0", f"jetson_clocks --store {store}", "jetson_clocks",
                          "jetson_clocks --show", "nvpmodel -q", f"jetson_clocks --restore {store}", "nvpmodel -m 2"]
    rec = proto.record()
    assert rec["before"] == {"name": "MODE2", "id": 2}
    assert rec["during"]["power_mode"] == {"name": "MODE0", "id": 0}
    assert rec["during"]["clocks"]["GPU"]["max"] == 1300500000
    assert rec["restored"] is True
    assert rec["warmup"] == 5


def test_protocol_failed_steps_undo_what_was_done(tmp_path):
    failing = FakeRunner(fail="jetson_clocks --store")
    with pytest.raises(EndoedgeError, match="run with sudo"), BenchProtocol(runner=failing, store_file=str(tmp_path / "s")):
        pass
    assert failing.calls == ["nvpmodel -q", f"jetson_clocks --store {tmp_path / 's'}"]  # nothing stored: no restore
    # The lock itself failing after a store: the stored settings are restored.
    fake = FakeRunner()

    def runner(cmd):
        if cmd == ["jetson_clocks"]:
            fake.calls.append("jetson_clocks")
            return CommandResult(list(cmd), 1, "not permitted")
        return fake(cmd)

    with pytest.raises(EndoedgeError), BenchProtocol(runner=runner, store_file="S"):
        pass
    assert fake.calls[-2:] == ["jetson_clocks", "jetson_clocks --restore S"]


def test_device_state_with_fake_tree(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.0, GCID: 1, BOARD: generic\n")
    (tmp_path / "usr/local/cuda").mkdir(parents=True)
    (tmp_path / "usr/local/cuda/version.json").write_text('{"cuda": {"name": "CUDA SDK", "version": "12.6.68"}}')
    out = device_state(root=tmp_path, runner=FakeRunner())
    assert out["jetson"] is True
    assert out["jetpack"] == "6.1"
    assert out["tensorrt"] == "10.3.0"
    assert out["cuda_installed"] == "12.6.68"
    assert out["power_mode"] == {"name": "MODE2", "id": 2}
    assert out["clocks"]["EMC"]["max"] == 3199000000
    off = device_state(root=tmp_path / "nowhere", runner=lambda c: CommandResult(list(c), 127, "not found"))
    assert off["jetson"] is False
    assert off["power_mode"] is None
    assert off["clocks"] is None


@pytest.fixture
def fake_tools(tmp_path, monkeypatch):
    """FAKE nvpmodel, jetson_clocks and tegrastats executables first on the PATH; calls logged."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    common = f"import sys, time\nopen({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
    tools = {
        "nvpmodel": common + "if sys.argv[1:] == ['-q']: print('NV Power Mode: MAXN'); print(0)\n",
        "jetson_clocks": common + f"if sys.argv[1:] == ['--show']: print({CLOCKS_SHOW!r})\n",
        "tegrastats": common + f"while True:\n    print({AGX_ORIN_JP6!r}, flush=True)\n    time.sleep(0.05)\n",
    }
    for name, body in tools.items():
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n" + body)
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def test_bench_records_protocol_and_tegrastats(fake_tools, tmp_path, capsys):
    model = _tiny_yolo(tmp_path / "tiny.onnx")
    out = tmp_path / "b.json"
    rc = main(["-q", "bench", str(model), "--device", "cpu", "--iterations", "50", "--duration", "0.6", "--warmup", "3",
               "--nvpmodel", "0", "--lock-clocks", "--tegrastats-interval", "50", "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    jet = json.loads(out.read_text())["jetson"]
    steps = [s["command"] for s in jet["protocol"]["steps"]]
    assert steps[0] == "nvpmodel -q"
    assert steps[1].startswith("jetson_clocks --store ")
    assert steps[-1].startswith("jetson_clocks --restore ")
    assert "nvpmodel -m 0" not in steps  # already in mode 0: not switched
    assert jet["protocol"]["restored"] is True
    assert jet["protocol"]["warmup"] == 3
    assert jet["tegrastats"]["samples"] >= 1
    assert jet["tegrastats"]["power_mw"]["VDD_GPU_SOC"]["max"] == 2412
    assert "--interval 50" in fake_tools.read_text()


def test_run_report_has_tegrastats(fake_tools, sample_paths, tmp_path, capsys):
    model = _tiny_yolo(tmp_path / "tiny.onnx")
    report = tmp_path / "r.json"
    rc = main(["-q", "run", str(sample_paths[0].parent / "*.jpg"), "-m", str(model), "--decoder", "yolov8",
               "--classes", "polyp", "--device", "cpu", "--warmup", "0", "--tegrastats", "on",
               "--tegrastats-interval", "20", "--report", str(report)])
    assert rc == 0, capsys.readouterr().err
    rep = json.loads(report.read_text())
    assert rep["jetson"]["tegrastats"]["samples"] >= 1
    assert "protocol" not in rep["jetson"]


def test_jetson_info_cli_prints_state(fake_tools, capsys):
    assert main(["jetson", "info"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["power_mode"] == {"name": "MAXN", "id": 0}  # from the FAKE nvpmodel
    assert out["clocks"]["GPU"]["current"] == 306000000
