"""One Jetson test (endoedge._tegra.is_jetson), shared by endoedge.jetson and the report's env info."""

from __future__ import annotations

import endoedge.stats
from endoedge import _tegra
from endoedge.jetson import is_jetson, parse_tegra_release


def test_jetson_package_and_stats_use_the_one_detector():
    assert is_jetson is _tegra.is_jetson
    assert parse_tegra_release is _tegra.parse_tegra_release
    assert endoedge.stats.looks_like_jetson is _tegra.looks_like_jetson


def test_read_text_strips_nuls_and_misses_quietly(tmp_path):
    (tmp_path / "model").write_bytes(b"NVIDIA Jetson Orin Nano\x00")
    assert _tegra.read_text(tmp_path / "model") == "NVIDIA Jetson Orin Nano"
    assert _tegra.read_text(tmp_path / "absent") is None


def test_is_jetson_on_fake_roots(tmp_path):
    assert not _tegra.is_jetson(tmp_path)
    (tmp_path / "proc" / "device-tree").mkdir(parents=True)
    (tmp_path / "proc" / "device-tree" / "model").write_bytes(b"NVIDIA DGX Spark\x00")
    assert not _tegra.is_jetson(tmp_path)  # an NVIDIA board that is not a Jetson
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_text("# R36 (release), REVISION: 4.3, GCID: 1\n")
    assert _tegra.is_jetson(tmp_path)


def test_looks_like_jetson_on_contents():
    assert _tegra.looks_like_jetson("# R35 (release), REVISION: 3.1, GCID: 1", None)
    assert _tegra.looks_like_jetson(None, "Jetson Xavier NX Developer Kit")
    assert not _tegra.looks_like_jetson("hello", "NVIDIA DGX Spark")
    assert not _tegra.looks_like_jetson(None, None)


def test_env_info_jetson_entry_follows_the_shared_test(monkeypatch):
    files = {"/proc/device-tree/model": "NVIDIA DGX Spark"}  # an NVIDIA board, not a Jetson
    monkeypatch.setattr(endoedge.stats, "_read_text", files.get)
    assert endoedge.stats._jetson() is None
