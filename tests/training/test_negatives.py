"""Training on polyp-free frames: domain augmentations, the loss on empty images, hard-negative
draws, validation on held-out negatives, the CLI flags."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from endoedge.data.datasets import load_dataset, load_negatives
from endoedge.errors import InputError
from endoedge.training.augment import AugmentConfig, augment
from endoedge.training.domain_augment import (
    DomainAugConfig,
    domain_augment,
    dye,
    fov_mask,
    white_balance,
)

ALWAYS = DomainAugConfig(p_white_balance=1, p_blur=1, p_specular=1, p_osd=1, p_fov=1)


@pytest.fixture(scope="module")
def frame(sample_paths) -> np.ndarray:
    from endoedge.data.imageio import read_image

    return cv2.resize(read_image(sample_paths[0]), (320, 320), interpolation=cv2.INTER_AREA)


def test_white_balance_is_a_per_channel_gain(frame):
    gains = np.array([1.1, 0.9, 1.0])
    ref = np.clip(np.floor(frame.astype(np.float32) * gains.astype(np.float32)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(white_balance(frame, gains), ref)


def test_fov_mask_blacks_out_the_corners(frame):
    rng = np.random.default_rng(0)
    for _ in range(6):
        out = fov_mask(frame, rng)
        assert out.shape == frame.shape
        assert out[0, 0].max() == out[-1, -1].max() == out[0, -1].max() == out[-1, 0].max() == 0
        np.testing.assert_array_equal(out[160, 160], frame[160, 160])


def test_domain_augment_keeps_size_and_changes_pixels(frame):
    rng = np.random.default_rng(1)
    out = domain_augment(frame, rng, ALWAYS)
    assert out.shape == frame.shape
    assert out.dtype == np.uint8
    assert np.abs(out.astype(int) - frame).mean() > 2
    assert domain_augment(frame, rng, DomainAugConfig(0, 0.1, 0, 3, 0, 1, 0, 0)) is frame


def test_domain_augmentations_leave_the_boxes_alone(frame):
    box = np.array([[60, 80, 200, 210]], np.float32)
    for seed in range(5):
        plain = augment(frame, box, np.zeros(1, np.int64), 256, np.random.default_rng(seed), AugmentConfig())
        dom = augment(frame, box, np.zeros(1, np.int64), 256, np.random.default_rng(seed),
                      AugmentConfig(domain=ALWAYS))
        np.testing.assert_array_equal(plain[1], dom[1])
        assert dom[0].shape == (256, 256, 3)


def test_dye_tints_a_region_and_turns_a_covered_lesion_bluer(frame):
    rgb = np.ascontiguousarray(frame[..., ::-1])  # read_image gives BGR; training images are RGB
    box = np.array([[120, 120, 200, 190]], np.float32)
    on_box = 0
    for seed in range(12):
        out = dye(rgb, box, np.random.default_rng(seed))
        assert out.shape == frame.shape
        assert out.dtype == np.uint8
        changed = np.abs(out.astype(int) - rgb).sum(2) > 0
        assert 0 < changed.mean() < 1  # a region, not the whole frame
        if np.abs(out[155, 160].astype(int) - rgb[155, 160]).sum() > 20:  # the ellipse covers the lesion
            on_box += 1
            before, after = rgb[150:160, 155:165].astype(float), out[150:160, 155:165].astype(float)
            # bluer: blue minus red rises at the lesion
            assert (after[..., 2] - after[..., 0]).mean() > (before[..., 2] - before[..., 0]).mean() + 10
    assert on_box >= 5  # 70% of draws aim at the box


def test_dye_comes_last_and_off_draws_nothing(frame):
    """With p_dye 0 the other augmentations draw exactly as before it existed; with p_dye 1 the
    result is the p_dye-0 image dyed with the rest of the same random stream."""
    box = np.array([[60, 80, 200, 210]], np.float32)
    rng_off, rng_on = np.random.default_rng(3), np.random.default_rng(3)
    off = domain_augment(frame, rng_off, ALWAYS, box)
    on = domain_augment(frame, rng_on, DomainAugConfig(1, 0.15, 1, 7, 1, 6, 1, 1, p_dye=1.0), box)
    rng_off.random()  # the dye's coin
    np.testing.assert_array_equal(on, dye(off, box, rng_off))


@pytest.fixture(scope="module")
def data(tmp_path_factory, sample_paths):
    """A 3-image boxed set and two polyp-free "sequences" of real colonoscopy frames."""
    from endoedge.data.imageio import read_image

    root = tmp_path_factory.mktemp("negdata")
    (root / "kv" / "images").mkdir(parents=True)
    ann = {}
    for i in range(3):
        img = cv2.resize(read_image(sample_paths[i])[100:1000, 450:1450], (160, 144))
        cv2.ellipse(img, (70 + 10 * i, 70), (30, 25), 0, 0, 360, (60, 90, 200), -1)
        cv2.imwrite(str(root / "kv" / "images" / f"k{i}.jpg"), img[..., ::-1])
        ann[f"k{i}"] = {"height": 144, "width": 160,
                        "bbox": [{"label": "polyp", "xmin": 40 + 10 * i, "ymin": 45, "xmax": 100 + 10 * i, "ymax": 95}]}
    (root / "kv" / "kavsir_bboxes.json").write_text(json.dumps(ann))
    for seq, idx in (("seq1_neg", (3, 4, 5)), ("seq2_neg", (6, 7))):
        (root / "neg" / seq).mkdir(parents=True)
        for j in idx:
            img = cv2.resize(read_image(sample_paths[j]), (192, 108))
            cv2.imwrite(str(root / "neg" / seq / f"f{j}.jpg"), img[..., ::-1])
    return root


def test_load_negatives_names_frames_by_sequence(data):
    neg = load_negatives([data / "neg" / "seq1_neg", data / "neg" / "seq2_neg"], ("polyp",))
    assert [s.stem for s in neg.samples] == ["seq1_neg/f3", "seq1_neg/f4", "seq1_neg/f5", "seq2_neg/f6", "seq2_neg/f7"]
    assert all(s.boxes.shape == (0, 4) for s in neg.samples)
    with pytest.raises(InputError, match="does not exist"):
        load_negatives([data / "missing"], ("polyp",))


def _cfg(out: Path, **kw):
    from endoedge.training.trainer import TrainConfig

    base = dict(arch="ssdlite320_efficientnet_lite0", out=str(out), imgsz=96, epochs=1, batch=2,
                pretrained=False, warmup_epochs=0, threads=2, lr=2e-3, neg_ratio=1.0)
    base.update(kw)
    return TrainConfig(**base)


def test_empty_images_train_the_scores_down(data, tmp_path):
    torch = pytest.importorskip("torch")
    from endoedge.evaluation.coco import max_scores
    from endoedge.training.loss import ssd_loss
    from endoedge.training.trainer import Trainer

    kv = load_dataset(data / "kv")
    neg = load_negatives([data / "neg" / "seq1_neg"], kv.class_names)
    t = Trainer(_cfg(tmp_path), kv, kv.subset([]), neg)
    t.load_data()
    assert t.steps_per_epoch == 3  # 3 boxed + 3 negatives, batch 2
    x, targets = t._batch(np.array([3, 4]))  # two negatives
    assert all(len(tg["boxes"]) == 0 for tg in targets)
    t.model.train()

    def cls_loss() -> float:
        with torch.no_grad():
            head = t.model.head(list(t.model.backbone(x).values()))
            return float(ssd_loss(t.model, head, t.anchors, targets)["classification"])

    before = cls_loss()
    assert before > 0  # torchvision's mining would keep no negative anchor of an empty image
    for _ in range(6):
        t.train_step(x, targets)
    assert cls_loss() < 0.8 * before
    assert max_scores(t.model, [x]).shape == (2,)


def test_hard_negatives_are_drawn_by_score(data, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from endoedge.training import trainer as trainer_mod

    kv = load_dataset(data / "kv")
    neg = load_negatives([data / "neg" / "seq1_neg"], kv.class_names)
    t = trainer_mod.Trainer(_cfg(tmp_path, neg_ratio=20.0, hard_share=1.0), kv, kv.subset([]), neg)
    t.load_data()
    monkeypatch.setattr(trainer_mod, "max_scores", lambda model, batches: np.array([0.0, 0.0, 0.9]))
    assert set(t._draw_negatives().tolist()) == {2}
    t.cfg = _cfg(tmp_path, neg_ratio=20.0, hard_share=0.0)
    assert set(t._draw_negatives().tolist()) == {0, 1, 2}


def test_cli_trains_with_negatives_and_reports_them(data, tmp_path, capsys):
    pytest.importorskip("torch")
    from endoedge.cli import main

    out = tmp_path / "run"
    common = ["train", "--data", str(data / "kv"), "--val-count", "1", "--epochs", "1", "--imgsz", "96",
              "--batch", "2", "--no-pretrained", "--threads", "2", "--out", str(out)]
    rc = main([*common, "--negatives", str(data / "neg" / "seq1_neg"),
               "--val-negatives", str(data / "neg" / "seq2_neg"), "--save-epochs", "--zoom", "0.5", "1.5",
               "--dye", "0.2"])
    assert rc == 0
    import torch

    saved = json.loads(torch.load(out / "train_state.pt", map_location="cpu", weights_only=False)["config"])
    assert saved["augment"]["scale"] == [0.5, 1.5]
    assert saved["augment"]["domain"]["p_dye"] == 0.2
    text = capsys.readouterr().out
    assert "negatives: 3 frames" in text
    assert "negatives with a box" in text
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 <= record["neg_fa"] <= 1
    assert (out / "epoch_001.pt").is_file()
    # fine-tune from the checkpoint just written
    rc = main([*common[:-1], str(tmp_path / "ft"), "--init", str(out / "last.pt")])
    assert rc == 0
    capsys.readouterr()
    rc = main([*common, "--negatives", str(data / "neg"), "--val-negatives", str(data / "neg" / "seq2_neg")])
    assert rc == 1
    assert "both --negatives and --val-negatives" in capsys.readouterr().err
    for bad, msg in ((["--dye", "1.5"], "--dye must be a chance between 0 and 1"),
                     (["--dye", "nan"], "--dye must be a chance"),
                     (["--dye", "0.3", "--domain-aug", "off"], "drop --domain-aug off or --dye"),
                     (["--zoom", "1.5", "0.7"], "--zoom MIN MAX must satisfy"),
                     (["--zoom", "0", "1"], "--zoom MIN MAX must satisfy")):
        assert main([*common, *bad]) == 1
        assert msg in capsys.readouterr().err


def test_cache_sees_frames_as_the_deployed_cleaner_does(data, tmp_path, sample_paths):
    """``load_cache(transform=)``: the cached image is the cleaned frame resized, boxes move by the
    cleaner's own offset (the oracle), a box cut by the crop is clipped, one outside is dropped."""
    from endoedge.data.datasets import Dataset, Sample, load_cache
    from endoedge.data.imageio import read_image
    from endoedge.endoscopy import EndoscopyConfig, FrameCleaner
    from endoedge.training.trainer import _cleaning

    src = read_image(sample_paths[4])  # 1080p with black borders and the OSD box
    path = tmp_path / "f.png"
    cv2.imwrite(str(path), src[..., ::-1])
    view, (ox, oy) = FrameCleaner(EndoscopyConfig.parse("all"))(src[..., ::-1].copy())
    assert (ox, oy) != (0, 0)
    h, w = view.shape[:2]
    boxes = np.array([[ox + 100, oy + 50, ox + 300, oy + 200],  # inside the field of view
                      [ox - 40, oy + 10, ox + 60, oy + 90],    # cut by the crop's left edge
                      [0, 0, max(ox - 5, 1), 30]], np.float32)  # in the black border only
    ds = Dataset([Sample("f", path, boxes, np.array([0, 0, 0], np.int64))], ("polyp",), "test")
    plain = load_cache(ds, 160)
    cleaned = load_cache(ds, 160, _cleaning(EndoscopyConfig.parse("all")))
    assert plain.sizes == [src.shape[:2]]
    assert cleaned.sizes == [(h, w)]
    ref = cv2.resize(view, (160, 160), interpolation=cv2.INTER_AREA)[..., ::-1]
    np.testing.assert_array_equal(cleaned.images[0], ref)
    sx, sy = 160 / w, 160 / h
    np.testing.assert_allclose(cleaned.boxes[0], [[100 * sx, 50 * sy, 300 * sx, 200 * sy],
                                                  [0, 10 * sy, 60 * sx, 90 * sy]], rtol=1e-5)
    assert cleaned.labels[0].tolist() == [0, 0]
    assert _cleaning(None) is None
    assert _cleaning(EndoscopyConfig(enabled=False)) is None


def test_cli_train_with_endoscopy_stores_it_in_the_checkpoints(data, tmp_path, capsys):
    pytest.importorskip("torch")
    from endoedge.cli import main
    from endoedge.endoscopy import EndoscopyConfig
    from endoedge.models.checkpoint import load_checkpoint

    out = tmp_path / "run"
    common = ["train", "--data", str(data / "kv"), "--val-count", "1", "--epochs", "1", "--imgsz", "96",
              "--batch", "2", "--no-pretrained", "--threads", "2", "--negatives", str(data / "neg" / "seq1_neg")]
    assert main([*common, "--endoscopy", "all", "--out", str(out)]) == 0
    spec = load_checkpoint(out / "last.pt").spec
    assert spec.endoscopy == EndoscopyConfig.parse("all").to_dict()
    capsys.readouterr()
    assert main([*common, "--endoscopy", "fov_crop,bogus", "--out", str(tmp_path / "bad")]) == 1
    assert "unknown endoscopy option 'bogus'" in capsys.readouterr().err
