"""The fuzz targets of ``benchmarks/fuzz``: every crash the fuzzers found stays fixed (its input is
replayed, no atheris needed), the seeds parse, and each target runs a short seeded atheris session
without a crash (skipped when atheris is not installed)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

import endoedge

FUZZ = Path(__file__).resolve().parents[2] / "benchmarks" / "fuzz"
SRC = str(Path(endoedge.__file__).resolve().parents[1])
sys.path.insert(0, str(FUZZ))

import targets  # noqa: E402

CASES = sorted(
    (folder.name, f) for kind in ("regressions", "seeds") for folder in (FUZZ / kind).iterdir()
    if folder.is_dir() for f in folder.iterdir()
)


def test_every_target_has_seeds_and_the_folders_name_targets():
    for kind in ("regressions", "seeds"):
        assert {d.name for d in (FUZZ / kind).iterdir() if d.is_dir()} <= set(targets.TARGETS)
    assert {name for name, f in CASES if f.parent.parent.name == "seeds"} == set(targets.TARGETS)


@pytest.mark.parametrize(("target", "path"), CASES, ids=[f"{f.parent.parent.name}/{t}/{f.name}" for t, f in CASES])
def test_replay(target, path):
    # returns, or raises a one-line EndoedgeError (run_one checks); anything else is a crash
    targets.run_one(target, path.read_bytes())


@pytest.mark.parametrize("target", sorted(targets.TARGETS))
def test_short_seeded_fuzz_run(target, tmp_path):
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    env = {**os.environ, "PYTHONPATH": SRC, "OPENCV_LOG_LEVEL": "OFF"}
    # libFuzzer's RSS limit reads getrusage's ru_maxrss, which Linux carries across fork + exec: the fuzzer
    # starts with this pytest process's high-water mark (over 2 GB late in the suite: a false "out-of-memory"
    # from the first input). Give the run libFuzzer's default 2 GB on top of what it inherits.
    inherited_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    proc = subprocess.run(
        [sys.executable, str(FUZZ / "fuzz.py"), target, str(corpus), str(FUZZ / "seeds" / target),
         "-max_total_time=2", "-seed=1", f"-artifact_prefix={tmp_path}/", f"-rss_limit_mb={inherited_mb + 2048}"],
        capture_output=True, text=True, timeout=120, check=False, env=env)
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
    assert proc.returncode == 0, tail
    assert "Done" in proc.stderr, tail
    assert not list(tmp_path.glob("crash-*")), tail
