"""endoedge batch --engine ray on a real two-node Ray cluster on loopback.

The test starts a head node (``ray start --head --block``) and a second node that joins it
(``ray start --address``), each a separate raylet with one CPU and its own custom resource
(``node_a`` / ``node_b``) and its own ports, runs ``endoedge batch --engine ray --address`` as a
separate driver process, and stops both nodes by their process groups (never ``ray stop``, which
would stop every Ray on the machine). Oracle: the local engine's records.
Two one-CPU actors on two one-CPU nodes: Ray must place one on each node.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from endoedge.batch import BatchConfig, run_batch

pytestmark = pytest.mark.slow

RAY = Path(sys.executable).with_name("ray")
NODE_TIMEOUT_S = 90
# One authentication mode for the nodes, the probe and the driver. With RAY_AUTH_MODE unset, `ray
# start` turns token authentication on when ~/.ray/auth_token exists (a local ray.init() creates it
# and exports RAY_AUTH_MODE=token to its process), and a driver without the mode is refused: the
# test failed when run alone on a machine with a token, and passed only after the local Ray test.
RAY_ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_node(tmp: Path, port: int, *, head: bool, resource: str, ray_tmp: str = "",
                env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    args = [str(RAY), "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0",
            f"--resources={json.dumps({resource: 1})}", "--object-store-memory=100000000",
            "--disable-usage-stats", f"--node-manager-port={_free_port()}", f"--object-manager-port={_free_port()}",
            f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
            f"--metrics-export-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}"]
    if head:
        args += ["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={ray_tmp}"]
    else:
        args += [f"--address=127.0.0.1:{port}"]
    log = open(tmp / f"{resource}.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env or RAY_ENV)


def _wait_for_head(head: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Until the head node listens on ``port``; fail with its log if it exits or takes too long."""
    deadline = time.monotonic() + NODE_TIMEOUT_S
    while True:
        if head.poll() is not None:
            pytest.fail(f"the head node exited: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail("the head node did not open its port in time")
            time.sleep(0.5)


def _stop(nodes: list[subprocess.Popen[bytes]]) -> None:
    for p in reversed(nodes):
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 5  # `ray start --block` rarely exits on SIGTERM within 20 s (measured): kill after 5
    for p in reversed(nodes):
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


@pytest.fixture
def cluster(tmp_path) -> Iterator[str]:
    """A two-node Ray cluster on 127.0.0.1; yields the head's address."""
    pytest.importorskip("ray")
    if not RAY.is_file():
        pytest.skip(f"no `ray` command beside {sys.executable}")
    port = _free_port()
    ray_tmp = tempfile.mkdtemp(prefix="ee-ray-")  # short: Ray's socket paths must fit in 107 bytes
    nodes = [_start_node(tmp_path, port, head=True, resource="node_a", ray_tmp=ray_tmp)]
    try:
        _wait_for_head(nodes[0], port, tmp_path / "node_a.log")
        nodes.append(_start_node(tmp_path, port, head=False, resource="node_b"))
        address = f"127.0.0.1:{port}"
        probe = ("import ray, time\n"
                 f"ray.init(address={address!r}, log_to_driver=False)\n"
                 f"end = time.monotonic() + {NODE_TIMEOUT_S}\n"
                 "while len([n for n in ray.nodes() if n['Alive']]) < 2 and time.monotonic() < end:\n"
                 "    time.sleep(0.5)\n"
                 "print(json.dumps({'nodes': len([n for n in ray.nodes() if n['Alive']]),"
                 " 'resources': ray.cluster_resources()}))\n")
        got = subprocess.run([sys.executable, "-c", "import json\n" + probe], capture_output=True, text=True,
                             timeout=NODE_TIMEOUT_S + 60, check=False, env=RAY_ENV)
        state = json.loads(got.stdout.strip().splitlines()[-1]) if got.returncode == 0 else {}
        assert state.get("nodes") == 2, f"the second node did not join: {got.stderr[-2000:]}"
        assert state["resources"]["CPU"] == 2
        assert state["resources"]["node_a"] == state["resources"]["node_b"] == 1
        yield address
    finally:
        _stop(nodes)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_two_node_cluster_matches_local(cluster, polyp_onnx, sample_paths, tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    for p in sample_paths[:8]:
        (folder / p.name).symlink_to(p)
    local = tmp_path / "local.jsonl"
    run_batch(BatchConfig(folder, [str(polyp_onnx)], local, batch_size=2, progress=False))
    out = tmp_path / "ray.jsonl"
    env = {**RAY_ENV, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    done = subprocess.run([sys.executable, "-m", "endoedge.cli", "batch", str(folder), "-m", str(polyp_onnx),
                           "-o", str(out), "--engine", "ray", "--address", cluster, "--workers", "2",
                           "--batch-size", "2", "--quiet"], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    want = {r["path"]: r for r in map(json.loads, local.read_text().splitlines())}
    got = {r["path"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert got == want


def test_a_driver_refused_by_a_token_cluster_gets_one_line_with_the_fix(polyp_onnx, sample_paths, tmp_path):
    """A head with token authentication (the token in RAY_AUTH_TOKEN, so no file is written) and a
    driver without it: `endoedge batch` exits non-zero with one line that names the cause and the fix,
    not Ray's traceback."""
    pytest.importorskip("ray")
    if not RAY.is_file():
        pytest.skip(f"no `ray` command beside {sys.executable}")
    import secrets

    token_env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    port = _free_port()
    ray_tmp = tempfile.mkdtemp(prefix="ee-ray-")
    head = _start_node(tmp_path, port, head=True, resource="node_t", ray_tmp=ray_tmp, env=token_env)
    try:
        _wait_for_head(head, port, tmp_path / "node_t.log")
        folder = tmp_path / "study"
        folder.mkdir()
        (folder / sample_paths[0].name).symlink_to(sample_paths[0])
        # two connection attempts, not Ray's ~20 (one a second): the refusal does not go away
        env = {**RAY_ENV, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"),
               "RAY_gcs_server_port_wait_time_s": "2"}
        done = subprocess.run([sys.executable, "-m", "endoedge.cli", "batch", str(folder), "-m", str(polyp_onnx),
                               "-o", str(tmp_path / "r.jsonl"), "--engine", "ray", "--address", f"127.0.0.1:{port}",
                               "--quiet"], capture_output=True, text=True, env=env, timeout=300, check=False)
    finally:
        _stop([head])
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode != 0
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("endoedge batch: error:")]
    assert len(lines) == 1, done.stderr[-3000:]
    assert f"cannot connect to the Ray cluster at 127.0.0.1:{port}: it refused this driver's authentication" in lines[0]
    assert "RAY_AUTH_MODE=token" in lines[0]
    assert "Traceback" not in done.stderr
