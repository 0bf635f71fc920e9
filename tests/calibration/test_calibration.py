"""Calibration data: sources, coverage of the selection, determinism, exact pre-processing, hash,
batching, the ONNX Runtime reader protocol, and one-line errors for bad sources."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from endoedge.calibration import load_calibration_data, select
from endoedge.calibration.data import HASH_VERSION
from endoedge.calibration.sources import Item, discover
from endoedge.errors import CalibrationError, EndoedgeError
from endoedge.preprocess import Preprocessor
from endoedge.spec import ModelSpec, PreprocessSpec

SPEC = ModelSpec(arch="test", class_names=("polyp",), decoder="ssd",
                 preprocess=PreprocessSpec(input_size=(64, 80), mean=(0.485, 0.456, 0.406),
                                           std=(0.229, 0.224, 0.225)))


@pytest.fixture(scope="module")
def crops(sample_paths) -> list[np.ndarray]:
    """Forty different real-looking images (crops of the HoloHub frames), 96 x 128."""
    from endoedge.data.imageio import read_image

    out = []
    for i in range(40):
        frame = read_image(sample_paths[i % 10])
        y, x = 100 + 13 * i, 400 + 17 * i
        out.append(cv2.resize(frame[y : y + 600, x : x + 800], (128, 96), interpolation=cv2.INTER_AREA))
    return out


@pytest.fixture(scope="module")
def tree(tmp_path_factory, crops) -> Path:
    """Three folders of 2, 8 and 30 images (a, b/c nested, d)."""
    root = tmp_path_factory.mktemp("calib_tree")
    sizes = {"a": 2, "b/c": 8, "d": 30}
    k = 0
    for folder, n in sizes.items():
        (root / folder).mkdir(parents=True)
        for j in range(n):
            cv2.imwrite(str(root / folder / f"img{j:02d}.png"), crops[k])
            k += 1
    (root / "notes.txt").write_text("not an image")
    return root


def _tensor_hash(tensors: list[np.ndarray], shape: tuple[int, ...], name: str = "images") -> str:
    h = hashlib.sha256(HASH_VERSION + name.encode() + repr(shape).encode())
    for t in tensors:
        h.update(np.ascontiguousarray(t, dtype=np.float32).tobytes())
    return h.hexdigest()


def test_folder_is_searched_recursively_and_selection_covers_every_folder(tree):
    items = discover(tree)
    assert len(items) == 40
    chosen = select(items, 10, seed=0)
    per_group = {g: sum(1 for it in chosen if it.group == g) for g in {it.group for it in items}}
    assert sorted(per_group.values()) == [1, 2, 7]  # 2/8/30 of 40 -> at least 1 each, rest in proportion
    d_idx = sorted(int(it.path.stem[3:]) for it in chosen if it.group.endswith("/d"))
    assert d_idx[0] < 5
    assert d_idx[-1] >= 25
    assert np.diff(d_idx).min() >= 3


def test_selection_is_deterministic_and_seeded(tree):
    items = discover(tree)
    a, b = select(items, 12, seed=1), select(items, 12, seed=1)
    assert a == b
    assert any(select(items, 12, seed=s) != a for s in (2, 3, 4))
    assert select(items, 100) == items  # fewer than asked: all of them
    with pytest.raises(CalibrationError):
        select(items, 0)


def test_tensors_are_the_runtime_preprocessing_and_hash_covers_them(tree):
    data = load_calibration_data(tree, SPEC, num_images=6, batch_size=1, seed=0)
    assert data.num_images == 6
    assert len(data) == 6
    assert data.batch_shape == (1, 3, 64, 80)
    pre = Preprocessor(SPEC.preprocess)  # what Detector uses
    from endoedge.data.imageio import read_image

    expected = [pre([read_image(it.path)])[0][0].copy() for it in data.items]
    got = [b["images"][0] for b in data]
    for e, g in zip(expected, got, strict=True):
        assert g.dtype == np.float32
        assert g.flags.c_contiguous
        np.testing.assert_array_equal(g, e)
    assert data.content_hash == _tensor_hash(expected, (3, 64, 80))
    again = load_calibration_data(tree, SPEC, num_images=6, batch_size=3, seed=0, max_cache_mb=0)
    assert again.content_hash == data.content_hash  # batching does not change the content
    other = load_calibration_data(tree, SPEC, num_images=6, seed=5)
    assert other.content_hash != data.content_hash


def test_endoscopy_cleaning_of_the_spec_is_applied(sample_paths, tmp_path):
    """A spec with frame cleaning calibrates on the cleaned frame, as Detector feeds it."""
    from dataclasses import replace

    from endoedge.data.imageio import read_image
    from endoedge.endoscopy import EndoscopyConfig, FrameCleaner

    cfg = EndoscopyConfig(fov_crop=True, mask_osd=True)
    spec = replace(SPEC, endoscopy=cfg.to_dict())
    data = load_calibration_data(sample_paths[2], spec, num_images=1)
    frame = read_image(sample_paths[2])
    view, _ = FrameCleaner(cfg)(frame)
    expected = Preprocessor(spec.preprocess)([view])[0][0]
    np.testing.assert_array_equal(next(iter(data))["images"][0], expected)
    plain = Preprocessor(SPEC.preprocess)([frame])[0][0]
    assert not np.array_equal(expected, plain)


def test_batches_pad_the_last_one_with_the_first_images(tree):
    data = load_calibration_data(tree, SPEC, num_images=5, batch_size=2, input_name="x")
    batches = list(data)
    assert len(data) == len(batches) == 3
    assert all(set(b) == {"x"} and b["x"].shape == (2, 3, 64, 80) for b in batches)
    np.testing.assert_array_equal(batches[2]["x"][1], batches[0]["x"][0])  # wrapped around
    assert data.describe()["num_images"] == 5
    # decoding on every pass (no cache) gives the same batches, also with fewer images than a batch
    for n, bs in ((5, 2), (3, 8)):
        cached = list(load_calibration_data(tree, SPEC, num_images=n, batch_size=bs))
        streamed = load_calibration_data(tree, SPEC, num_images=n, batch_size=bs, max_cache_mb=0)
        assert len(streamed) == len(cached)
        for a, b in zip(cached, streamed, strict=True):
            np.testing.assert_array_equal(a["images"], b["images"])
        assert [len(list(streamed.batches(i, i + 1))) for i in range(len(streamed))] == [1] * len(streamed)


def test_ort_reader_protocol(tree):
    from onnxruntime.quantization import CalibrationDataReader

    data = load_calibration_data(tree, SPEC, num_images=4, batch_size=1)
    reader = data.as_ort_reader()
    assert isinstance(reader, CalibrationDataReader)
    assert len(reader) == 4
    n = 0
    while reader.get_next() is not None:
        n += 1
    assert n == 4
    reader.set_range(1, 3)
    assert sum(1 for _ in iter(reader.get_next, None)) == 2
    # the data object itself speaks the protocol too (get_next until None, then starts over)
    assert sum(1 for _ in iter(data.get_next, None)) == 4
    assert data.get_next() is not None


def test_glob_and_split(tree, tmp_path):
    items = discover(str(tree / "**" / "img0*.png"))
    assert len(items) == 2 + 8 + 10
    split = tmp_path / "split.txt"
    split.write_text("# two stems\nimg00\nimg01\n")
    assert {it.path.stem for it in discover(tree, split=split)} == {"img00", "img01"}
    split.write_text("nothere\n")
    with pytest.raises(CalibrationError, match="listed in"):
        discover(tree, split=split)


def _write_video(path: Path, frames: list[np.ndarray]) -> None:
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    assert vw.isOpened()
    for f in frames:
        vw.write(f)
    vw.release()


def test_videos_give_every_kth_frame_spread_across_files(tmp_path, crops):
    _write_video(tmp_path / "one.avi", crops[:30])
    _write_video(tmp_path / "two.avi", crops[30:40])
    items = discover(tmp_path)
    assert len(items) == 40
    assert {it.frame for it in items if it.path.name == "two.avi"} == set(range(10))
    chosen = select(items, 8, seed=0)
    one = [it.frame for it in chosen if it.path.name == "one.avi"]
    two = [it.frame for it in chosen if it.path.name == "two.avi"]
    assert (len(one), len(two)) == (6, 2)  # in proportion to the frame counts
    assert np.diff(one).tolist() == [5] * 5  # every 5th frame of 30
    data = load_calibration_data(tmp_path, SPEC, num_images=8)
    assert data.num_images == 8
    # the decoded frame is the video's frame: compare with a plain OpenCV read of that index
    cap = cv2.VideoCapture(str(tmp_path / "one.avi"))
    for _ in range(one[1]):
        cap.grab()
    ok, raw = cap.read()
    cap.release()
    assert ok
    idx = next(i for i, it in enumerate(data.items) if it.path.name == "one.avi" and it.frame == one[1])
    expected = Preprocessor(SPEC.preprocess)([raw])[0][0]
    np.testing.assert_array_equal(list(data)[idx]["images"][0], expected)


def test_labelled_datasets_use_their_images(tmp_path, crops):
    root = tmp_path / "kvasir"
    (root / "images").mkdir(parents=True)
    ann = {}
    for i in range(6):
        cv2.imwrite(str(root / "images" / f"id{i}.jpg"), crops[i])
        ann[f"id{i}"] = {"height": 96, "width": 128,
                         "bbox": [{"label": "polyp", "xmin": 10, "ymin": 10, "xmax": 50, "ymax": 40}]}
    (root / "kavsir_bboxes.json").write_text(json.dumps(ann))
    (root / "masks").mkdir()
    cv2.imwrite(str(root / "masks" / "id0.jpg"), crops[0])  # masks are not calibration images
    split = tmp_path / "train.txt"
    split.write_text("id1\nid3\nid5\n")
    data = load_calibration_data(root, SPEC, split=split)
    assert sorted(it.path.stem for it in data.items) == ["id1", "id3", "id5"]
    assert all(it.path.parent.name == "images" for it in data.items)


@pytest.mark.parametrize("kind", ["missing", "empty", "text_only", "corrupt"])
def test_bad_sources_give_one_line_errors_with_causes(tmp_path, kind):
    src = tmp_path / "src"
    if kind != "missing":
        src.mkdir()
    if kind == "text_only":
        (src / "a.txt").write_text("hello")
    if kind == "corrupt":
        (src / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        (src / "b.png").write_bytes(b"")
    with pytest.raises(CalibrationError) as info:
        load_calibration_data(src, SPEC)
    msg = str(info.value)
    assert "\n" not in msg
    assert "likely causes" in msg
    assert isinstance(info.value, EndoedgeError)


def test_unreadable_images_are_skipped_and_listed(tree, tmp_path):
    import shutil

    src = tmp_path / "mixed"
    shutil.copytree(tree / "b" / "c", src)
    (src / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    data = load_calibration_data(src, SPEC, num_images=100)
    assert data.num_images == 8
    assert len(data.skipped) == 1
    assert data.skipped[0][0].path.name == "zz_broken.png"
    assert Item("g", Path("v.avi"), 3).describe() == "v.avi#3"
