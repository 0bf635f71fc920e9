"""The typed engine manifest: today's JSON files read and written back unchanged, typed fields, errors.

``data/*.engine.json`` were written by the dict-based writer of endoedge 0.1.0 (before the typed
record existed), so these tests hold the file format fixed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from endoedge.errors import ModelFormatError
from endoedge.tensorrt.engine_manifest import EngineManifest, ShapeRange, TensorIO, parse_profile
from endoedge.tensorrt.gpu_info import GpuInfo
from endoedge.tensorrt.manifest import (
    cache_key,
    find_manifest,
    load_manifest,
    read_manifest,
    write_manifest,
)

DATA = Path(__file__).parent / "data"
# cache keys the dict-based code gave these manifests: the cache must keep finding their engines
OLD_KEYS = {"orin_int8": "8963f23ece03aaf4", "a100_fp16": "7d0f0d1e2b568761"}


@pytest.mark.parametrize("name", sorted(OLD_KEYS))
def test_old_writer_files_round_trip_byte_for_byte(tmp_path, name):
    old = DATA / f"{name}.engine.json"
    manifest = read_manifest(DATA / f"{name}.engine")
    assert list(manifest.to_dict().items()) == list(json.loads(old.read_text(encoding="utf-8")).items())
    written = write_manifest(tmp_path / f"{name}.engine", manifest)
    assert written.read_bytes() == old.read_bytes()
    assert cache_key(manifest) == OLD_KEYS[name]


def test_typed_fields_of_an_old_file():
    m = read_manifest(DATA / "orin_int8.engine")
    assert (m.trt_version, m.jetpack, m.l4t, m.precision, m.int8_source) == ("10.3.0.30", "6.1", "36.4.0", "int8",
                                                                             "calibrator")
    assert m.gpu == GpuInfo("Orin", "8.7", 16)
    assert (m.dla_core, m.version_compatible, m.hardware_compatibility) == (0, False, "none")
    assert m.onnx_path == "/models/polyp.onnx"
    assert m.calibration_hash == "9c0ffee0deadbeef"
    assert m.profiles == ({"images": ShapeRange((1, 3, 320, 320), (4, 3, 320, 320), (8, 3, 320, 320))},)
    assert m.inputs == (TensorIO("images", "input", "float32", (-1, 3, 320, 320)),)
    assert [t.name for t in m.outputs] == ["output0"]
    assert m.max_batch == 8
    assert m.spec["endoedge.class_names"] == '["polyp", "adenoma \\"x\\""]'
    a100 = read_manifest(DATA / "a100_fp16.engine")
    assert (a100.jetpack, a100.l4t, a100.dla_core, a100.version_compatible) == (None, None, None, True)
    assert a100.max_batch == 2


def test_parse_profile_matches_the_plan_form():
    raw = {"images": {"min": [1, 3, 8, 8], "opt": [2, 3, 8, 8], "max": [4, 3, 8, 8]}}
    assert {k: v.to_dict() for k, v in parse_profile(raw).items()} == raw


def _broken(tmp_path, data) -> Path:
    engine = tmp_path / "m.engine"
    (tmp_path / "m.engine.json").write_text(json.dumps(data), encoding="utf-8")
    return engine


@pytest.mark.parametrize(("change", "needle"), [
    ({"io": [{"name": "images", "mode": "input", "dtype": "float32"}]}, "io[0] lacks shape"),
    ({"io": "images"}, "io is str, not a list"),
    ({"gpu": {"name": "Orin"}}, "gpu lacks compute_capability, sm_count"),
    ({"gpu": "Orin"}, "gpu is str, not an object"),
    ({"profiles": [{"images": {"min": [1, 3], "max": [2, 3]}}]}, "profiles[0].images lacks min, opt or max"),
    ({"profiles": [{"images": {"min": [1, "x"], "opt": [1, 3], "max": [2, 3]}}]}, "profiles[0].images.min[1] is 'x'"),
    ({"spec": ["a"]}, "spec is list, not an object"),
    ({"dla_core": "zero"}, "dla_core is 'zero', not a whole number"),
    ({"trt_version": {"major": 10}}, "trt_version is a JSON dict, not a string"),
])
def test_incomplete_manifest_is_one_line_naming_file_and_rebuild(tmp_path, change, needle):
    data = {**json.loads((DATA / "orin_int8.engine.json").read_text(encoding="utf-8")), **change}
    engine = _broken(tmp_path, data)
    with pytest.raises(ModelFormatError) as info:
        read_manifest(engine)
    msg = str(info.value)
    assert "\n" not in msg
    assert needle in msg
    assert f"engine manifest '{tmp_path / 'm.engine.json'}' is unreadable or incomplete" in msg
    assert f"`endoedge build /models/polyp.onnx -o {engine} --force`" in msg


def test_not_a_manifest_object(tmp_path):
    with pytest.raises(ModelFormatError, match=r"is not an endoedge-engine-manifest/1 file \(a JSON list\); rebuild "
                                               r"the engine with `endoedge build MODEL.onnx -o .*m.engine --force`"):
        read_manifest(_broken(tmp_path, [1, 2]))


def test_partial_manifest_needs_only_io(tmp_path):
    io = [{"name": "x", "mode": "input", "dtype": "float32", "shape": [1, 3]}]
    engine = _broken(tmp_path, {"io": io, "profiles": [None], "gpu": {"name": "Orin"}})
    with pytest.raises(ModelFormatError, match="is not an endoedge-engine-manifest/1 file"):
        read_manifest(engine)  # loading an engine needs the whole manifest
    m = load_manifest(tmp_path / "m.engine.json", engine=engine, partial=True)
    assert m.io == (TensorIO("x", "input", "float32", (1, 3)),)
    assert (m.trt_version, m.precision, m.gpu.name, m.profiles, dict(m.spec)) == ("", "", "Orin", ({},), {})
    assert m.max_batch is None
    with pytest.raises(ModelFormatError, match="lacks io"):
        EngineManifest.from_dict({"gpu": {}}, partial=True)


def test_find_manifest_beside_the_engine(tmp_path):
    engine = tmp_path / "m.plan"
    assert find_manifest(engine) is None
    shutil.copyfile(DATA / "orin_int8.engine.json", tmp_path / "m.json")
    assert find_manifest(engine) == tmp_path / "m.json"
    shutil.copyfile(DATA / "orin_int8.engine.json", tmp_path / "m.plan.json")
    assert find_manifest(engine) == tmp_path / "m.plan.json"  # what endoedge build writes comes first
