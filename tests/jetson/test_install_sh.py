"""jetson/install.sh in --dry-run mode against FAKE L4T release files (no Jetson here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "jetson" / "install.sh"


def _dry(tmp_path, release: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    root = tmp_path / "root"
    if release is not None:
        (root / "etc").mkdir(parents=True)
        (root / "etc/nv_tegra_release").write_text(release + "\n")
    return subprocess.run(["bash", str(SCRIPT), "--dry-run", *args], capture_output=True, text=True, timeout=30,
                          check=False, env={"PATH": "/usr/bin:/bin", "ENDOEDGE_ROOT": str(root), "SUDO": "sudo"})


@pytest.mark.parametrize(
    ("release", "jetpack", "cuda"),
    [
        ("# R36 (release), REVISION: 4.0, GCID: 1, BOARD: generic, EABI: aarch64", 6, "12.6.*"),
        ("# R36 (release), REVISION: 3.0, GCID: 1, BOARD: generic, EABI: aarch64", 6, "12.2.*"),
        ("# R38 (release), REVISION: 2.0, GCID: 41844464, BOARD: generic, EABI: aarch64", 7, "13.*"),
        ("# R39 (release), REVISION: 2.0, GCID: 1, BOARD: generic, EABI: aarch64", 7, "13.*"),
    ],
)
def test_jetpack_6_and_7(tmp_path, release, jetpack, cuda):
    proc = _dry(tmp_path, release, "--venv", str(tmp_path / "venv"))
    assert proc.returncode == 0, proc.stderr
    assert f"JetPack {jetpack}" in proc.stderr
    cmds = proc.stdout.splitlines()
    assert f"+ python3 -m venv --system-site-packages {tmp_path / 'venv'}" in cmds
    assert any("apt-get install" in c and "python3-gi" in c and "gstreamer1.0-plugins-bad" in c for c in cmds)
    install = next(c for c in cmds if "pip install -e" in c)
    assert f"cuda-python=={cuda}" in install
    assert "[plot]" in install
    assert "tensorrt" not in install.split("cuda-python")[0]  # never pip-installs TensorRT or PyGObject
    assert "PyGObject" not in proc.stdout
    assert cmds[-1].endswith("jetson info")


def test_refuses_old_jetpack_and_non_jetson(tmp_path):
    old = _dry(tmp_path, "# R35 (release), REVISION: 4.1, GCID: 1, BOARD: t186ref")
    assert old.returncode == 1
    assert "Python < 3.10" in old.stderr
    none = _dry(tmp_path / "b", None)
    assert none.returncode == 1
    assert "not a Jetson" in none.stderr


def test_no_apt_and_syntax(tmp_path):
    proc = _dry(tmp_path, "# R36 (release), REVISION: 4.3, GCID: 1", "--no-apt", "--extras", "")
    assert proc.returncode == 0
    assert "apt-get" not in proc.stdout
    assert "[" not in next(c for c in proc.stdout.splitlines() if "pip install -e" in c).split("cuda")[0]
    if shutil.which("shellcheck"):
        lint = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True, check=False)
        assert lint.returncode == 0, lint.stdout
