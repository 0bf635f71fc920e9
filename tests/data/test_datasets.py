"""Dataset parsers on malformed input: one-line InputErrors naming the file and the fix, and text
files saved with a UTF-8 byte-order mark (Windows editors) read like plain UTF-8."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from endoedge.data.datasets import load_coco, load_kvasir, load_yolo, read_split, read_stems
from endoedge.errors import InputError


@pytest.fixture
def jpg(tmp_path):
    path = tmp_path / "a.jpg"
    cv2.imwrite(str(path), np.full((48, 64, 3), 90, np.uint8))
    return path


def _yolo(tmp_path, jpg, label: str, classes: str = "polyp\n"):
    root = tmp_path / "yolo"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "images" / "a.jpg").write_bytes(jpg.read_bytes())
    (root / "labels" / "a.txt").write_text(label)
    (root / "classes.txt").write_bytes(classes.encode("utf-8-sig"))
    return root


def test_yolo_labels_that_are_not_numbers_name_the_file_and_the_format(tmp_path, jpg):
    with pytest.raises(InputError, match=r"a\.txt: could not convert string 'x'.*expected 'class cx cy w h' numbers"):
        load_yolo(_yolo(tmp_path, jpg, "x 0.5 0.5 0.2 0.2\n"))


def test_yolo_classes_file_with_a_byte_order_mark_reads_its_first_name(tmp_path, jpg):
    data = load_yolo(_yolo(tmp_path, jpg, "0 0.5 0.5 0.25 0.5\n"))
    assert data.class_names == ("polyp",)
    np.testing.assert_allclose(data.samples[0].boxes, [[24, 12, 40, 36]])


@pytest.mark.parametrize(("coco", "message"), [
    ({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"bbox": [1, 2, 3, 4]}], "categories": []},
     r"malformed \(missing key 'image_id'\); it needs images \(id, file_name\)"),
    ([1, 2], r"malformed \('list' object has no attribute 'get'\)"),
    ({"images": [{"id": 1, "file_name": "a.jpg"}],
      "annotations": [{"image_id": 1, "bbox": [1, 2, 3, 4], "category_id": 9}],
      "categories": [{"id": 1, "name": "polyp"}]},
     r"annotations of image 1 use category_id \[9\] that categories does not list \(ids \[1\]\)"),
])
def test_malformed_coco_json_is_one_input_error(tmp_path, jpg, coco, message):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(coco))
    with pytest.raises(InputError, match=message):
        load_coco(path)


def test_split_lists_with_a_byte_order_mark_and_crlf_read_like_plain_ones(tmp_path):
    (tmp_path / "x_train.txt").write_bytes("a\r\nb\r\n".encode("utf-8-sig"))
    (tmp_path / "x_val.txt").write_bytes("c\r\n".encode("utf-8-sig"))
    assert read_split(tmp_path) == (["a", "b"], ["c"])
    assert read_stems(tmp_path / "x_train.txt") == ["a", "b"]


@pytest.mark.parametrize(("ann", "message"), [
    ({"a": {"height": 48}}, r"malformed \(missing key 'width'\); each image id needs height, width and bbox"),
    ({"a": {"height": 48, "width": 64, "bbox": [{"xmin": 1}]}}, r"malformed \(missing key 'label'\)"),
    ({"a": {"height": 48, "width": 64, "bbox": [{"label": "polyp", "xmin": "q", "ymin": 1, "xmax": 2, "ymax": 3}]}},
     r"malformed \(could not convert string to float: 'q'\)"),
])
def test_malformed_kvasir_json_is_one_input_error(tmp_path, jpg, ann, message):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(jpg.read_bytes())
    (tmp_path / "kavsir_bboxes.json").write_text(json.dumps(ann))
    with pytest.raises(InputError, match=message):
        load_kvasir(tmp_path)
