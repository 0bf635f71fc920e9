"""Symbolic links in folder inputs: followed everywhere (batch, calibration, eval, train, detect),
loops and duplicate links skipped with a warning, dangling links ignored (real links on disk)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import endoedge
from endoedge.data.walk import walk_files

SRC = str(Path(endoedge.__file__).resolve().parents[1])


@pytest.fixture
def linked(tmp_path, sample_paths) -> Path:
    """``study/`` holds one image, a link to a dataset folder elsewhere (2 images, one in a
    sub-folder), a link back to itself (loop), a second link to the dataset, a dangling link and a
    link to an image file."""
    elsewhere = tmp_path / "elsewhere" / "set_a"
    (elsewhere / "deep").mkdir(parents=True)
    shutil.copy(sample_paths[0], elsewhere / "a0.jpg")
    shutil.copy(sample_paths[1], elsewhere / "deep" / "a1.jpg")
    study = tmp_path / "study"
    study.mkdir()
    shutil.copy(sample_paths[2], study / "own.jpg")
    os.symlink(elsewhere, study / "linked_set")
    os.symlink(elsewhere, study / "zz_same_set_again")
    os.symlink("..", elsewhere / "deep" / "loop")  # deep/loop -> set_a: a loop through the link
    os.symlink(study, study / "self")
    os.symlink(tmp_path / "missing", study / "dangling")
    os.symlink(sample_paths[3], study / "file_link.jpg")
    return study


EXPECTED = ["file_link.jpg", "linked_set/a0.jpg", "linked_set/deep/a1.jpg", "own.jpg"]


def test_walk_follows_links_once_and_skips_loops(linked, caplog):
    with caplog.at_level(logging.WARNING, logger="endoedge.data.walk"):
        files = walk_files(linked, suffixes=(".jpg",))
    assert [f.relative_to(linked).as_posix() for f in files] == EXPECTED
    # the oracle: the real files behind them, each once
    assert len({os.path.realpath(f) for f in files}) == len(files)
    text = caplog.text
    assert "a loop" in text  # self and deep/loop
    assert "already listed" in text  # zz_same_set_again


def test_every_folder_input_sees_linked_images(linked, tmp_path):
    from endoedge.batch.sources import open_source
    from endoedge.calibration.sources import discover
    from endoedge.cli.detect import expand_sources
    from endoedge.evaluation.runner import negative_samples

    assert [it.path for it in open_source(linked).items] == EXPECTED
    assert sorted(p.relative_to(linked).as_posix() for p in expand_sources([str(linked)])) == EXPECTED
    assert sorted(s.path.relative_to(linked).as_posix() for s in negative_samples(linked)) == EXPECTED
    calib = discover(linked)
    assert sorted(it.path.relative_to(linked).as_posix() for it in calib) == EXPECTED


def test_recursive_globs_through_a_loop_list_each_file_once(linked):
    from endoedge.calibration.sources import discover
    from endoedge.cli.detect import expand_sources

    pattern = str(linked / "**" / "*.jpg")
    found = expand_sources([pattern])
    assert len(found) == len({os.path.realpath(p) for p in found}) == 4  # own, file_link, a0, a1
    assert len(discover(pattern)) == 4


def test_yolo_dataset_with_linked_images(linked, tmp_path):
    from endoedge.data.datasets import load_yolo

    root = tmp_path / "yolo"
    (root / "labels" / "linked_set").mkdir(parents=True)
    os.symlink(linked, root / "images")
    (root / "labels" / "own.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "labels" / "linked_set" / "a0.txt").write_text("0 0.4 0.4 0.1 0.1\n")
    ds = load_yolo(root, ["polyp"])
    names = sorted(s.path.relative_to(root / "images").as_posix() for s in ds.samples)
    assert names == EXPECTED
    boxes = {s.path.name: len(s.boxes) for s in ds.samples}
    assert boxes["a0.jpg"] == 1
    assert boxes["own.jpg"] == 1


@pytest.mark.slow
def test_batch_cli_on_a_folder_with_links_and_a_loop(linked, ssdlite, tmp_path):
    out = tmp_path / "r.jsonl"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "endoedge.cli", "batch", str(linked), "-m", str(ssdlite[2]),
                           "--out", str(out), "--quiet", "--batch-size", "2"],
                          env=env, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr
    keys = sorted(json.loads(line)["path"] for line in out.read_text().splitlines())
    assert keys == EXPECTED
    assert "a loop" in proc.stderr
