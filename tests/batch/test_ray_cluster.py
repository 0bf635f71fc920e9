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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_node(tmp: Path, port: int, *, head: bool, resource: str, ray_tmp: str = "") -> subprocess.Popen[bytes]:
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
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(nodes: list[subprocess.Popen[bytes]]) -> None:
    for p in reversed(nodes):
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
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
        deadline = time.monotonic() + NODE_TIMEOUT_S
        while True:
            if nodes[0].poll() is not None:
                pytest.fail(f"the head node exited: {(tmp_path / 'node_a.log').read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the head node did not open its port in time")
                time.sleep(0.5)
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
                             timeout=NODE_TIMEOUT_S + 60, check=False)
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
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    done = subprocess.run([sys.executable, "-m", "endoedge.cli", "batch", str(folder), "-m", str(polyp_onnx),
                           "-o", str(out), "--engine", "ray", "--address", cluster, "--workers", "2",
                           "--batch-size", "2", "--quiet"], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    want = {r["path"]: r for r in map(json.loads, local.read_text().splitlines())}
    got = {r["path"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert got == want
