"""No credential in any output of a real ``endoedge run``: stdout, stderr, logs, report.json, JSONL,
plot, video; and a source that yields no frame prints one line (no empty latency table)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import endoedge

SECRETS = ("S3cretPw", "Tok3nValue", "Us3rPw2")
SRC = str(Path(endoedge.__file__).resolve().parents[1])


def _endoedge(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "endoedge.cli", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout, check=False)


def _assert_no_secret(proc: subprocess.CompletedProcess[str], folder: Path) -> None:
    for name, text in (("stdout", proc.stdout), ("stderr", proc.stderr)):
        for secret in SECRETS:
            assert secret not in text, f"{secret} in {name}:\n{text}"
    files = [f for f in folder.rglob("*") if f.is_file()]
    for f in files:
        data = f.read_bytes()
        for secret in SECRETS:
            assert secret.encode() not in data, f"{secret} in {f.name}"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again on exit: connections are refused


class _SilentServer:
    """A TCP server that accepts RTSP connections and never answers (a hung camera)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = int(self.sock.getsockname()[1])
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        for c in self.conns:
            c.close()
        self.sock.close()


def _outputs(out: Path) -> list[str]:
    return ["--report", str(out / "r.json"), "--detections", str(out / "d.jsonl"),
            "--plot", str(out / "p.png"), "--video", str(out / "v.mp4")]


@pytest.mark.gstreamer
@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_refused_rtsp_leaks_no_secret_and_prints_one_error(ssdlite, tmp_path, debug):
    url = f"rtsp://admin:S3cretPw@127.0.0.1:{_closed_port()}/stream?token=Tok3nValue&fps=30"
    out = tmp_path / "o"
    proc = _endoedge([*(["--debug"] if debug else []), "run", url, "-m", str(ssdlite[2]), *_outputs(out)],
                     tmp_path)
    assert proc.returncode == 1
    _assert_no_secret(proc, tmp_path)
    assert "rtsp://***@127.0.0.1" in proc.stderr
    assert "token=***&fps=30" in proc.stderr
    if not debug:
        # the banner, then the one-line error: no latency table, no "wrote" line
        lines = proc.stderr.strip().splitlines()
        assert [ln.split(":")[0] for ln in lines] == ["endoedge run", "endoedge run"], proc.stderr
        assert lines[-1].startswith("endoedge run: error: stream 'rtsp://***@")
        assert proc.stdout == ""
        report = json.loads((out / "r.json").read_text())  # asked for: written, and redacted
        assert report["frames"] == 0
        assert report["source"]["description"].startswith("rtsp rtsp://***@127.0.0.1")
        assert report["source"]["error"] == lines[-1].removeprefix("endoedge run: error: ")
        assert not (out / "p.png").exists()


@pytest.mark.gstreamer
def test_hung_rtsp_server_reconnect_logs_leak_no_secret(ssdlite, tmp_path):
    server = _SilentServer()
    try:
        url = f"rtsps://admin:S3cretPw@127.0.0.1:{server.port}/live?password=Us3rPw2"
        proc = _endoedge(["run", url, "-m", str(ssdlite[2]), "--stall-timeout", "0.5",
                          "--reconnect-backoff", "0.1:0.2", "--max-reconnects", "1", *_outputs(tmp_path / "o")],
                         tmp_path)
    finally:
        server.close()
    assert proc.returncode == 1
    _assert_no_secret(proc, tmp_path)
    assert "reconnecting" in proc.stderr  # the warning was logged, masked
    assert proc.stderr.strip().splitlines()[-1].startswith("endoedge run: error:")
    assert "password=***" in proc.stderr


@pytest.mark.gstreamer
def test_pipeline_source_with_credentials_leaks_no_secret(ssdlite, tmp_path):
    # A pipeline string carrying credentials (rtspsrc user-pw, a URL) that never yields a frame.
    port = _closed_port()
    source = (f'rtspsrc location="rtsp://viewer:S3cretPw@127.0.0.1:{port}/x?token=Tok3nValue" user-id=viewer '
              "user-pw=Us3rPw2 ! decodebin ! videoconvert ! appsink name=sink")
    proc = _endoedge(["--debug", "run", source, "-m", str(ssdlite[2]), *_outputs(tmp_path / "o")], tmp_path)
    assert proc.returncode == 1
    _assert_no_secret(proc, tmp_path)
    assert "user-pw=***" in proc.stderr


@pytest.mark.gstreamer
def test_frames_from_a_source_with_a_secret_leak_nothing(ssdlite, tmp_path):
    # A source that does deliver frames and whose description holds a secret: every output is
    # written (report, JSONL, plot title, video) and none holds it.
    source = ('videotestsrc num-buffers=8 ! video/x-raw,width=320,height=240 ! '
              'textoverlay text="password=S3cretPw" ! videoconvert ! appsink name=sink')
    out = tmp_path / "o"
    proc = _endoedge(["run", source, "-m", str(ssdlite[2]), "--warmup", "2", *_outputs(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    _assert_no_secret(proc, tmp_path)
    report = json.loads((out / "r.json").read_text())
    assert report["frames"] == 6
    assert "password=***" in report["source"]["description"]
    assert (out / "p.png").stat().st_size > 0
    assert "latency per frame" in proc.stdout


@pytest.mark.gstreamer
def test_video_without_frames_prints_one_line(ssdlite, tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video\n")
    proc = _endoedge(["-q", "run", str(bad), "-m", str(ssdlite[2]), "--plot", str(tmp_path / "p.png")], tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2, proc.stderr  # the banner and the error
    assert lines[-1].startswith("endoedge run: error:")
    assert proc.stdout == ""
    assert not (tmp_path / "p.png").exists()


@pytest.mark.parametrize("source", ["rtp://u:S3cret@cam:5004/x", "http://u:S3cret@cam/video.mjpg?token=T0k"])
def test_source_errors_carry_no_secret_even_with_debug(source):
    # --debug re-raises the exception: its own text must already be masked
    from endoedge.errors import InputError
    from endoedge.pipeline.sources import parse_source

    with pytest.raises(InputError) as info:
        parse_source(source)
    assert "S3cret" not in str(info.value)
    assert "T0k" not in str(info.value)
