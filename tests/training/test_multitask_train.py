"""Multi-task training: masks follow the augmentation, degradations, a smoke run that resumes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from endoedge.data.datasets import load_dataset
from endoedge.training.degrade import DEGRADATIONS, degrade, motion_kernel

TINY = [((200, 160), [20, 30, 90, 100]), ((180, 150), [100, 20, 170, 90]),
        ((220, 170), [60, 40, 160, 150]), ((160, 160), [5, 5, 80, 70])]


@pytest.fixture(scope="module")
def tiny_seg(tmp_path_factory, sample_paths) -> tuple[Path, Path]:
    """A Kvasir-SEG-like folder (images/, masks/, kavsir_bboxes.json) of real frames with a drawn
    "polyp" ellipse, and a folder of polyp-free frames."""
    from endoedge.data.imageio import read_image

    root = tmp_path_factory.mktemp("kvasir_seg")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    ann = {}
    for i, ((w, h), (x1, y1, x2, y2)) in enumerate(TINY):
        img = cv2.resize(read_image(sample_paths[i])[100:1000, 450:1450], (w, h), interpolation=cv2.INTER_AREA)
        mask = np.zeros((h, w), np.uint8)
        ellipse = ((x1 + x2) // 2, (y1 + y2) // 2), ((x2 - x1) // 2, (y2 - y1) // 2)
        cv2.ellipse(img, *ellipse, 0, 0, 360, (60, 90, 200), -1)
        cv2.ellipse(mask, *ellipse, 0, 0, 360, 255, -1)
        cv2.imwrite(str(root / "images" / f"img{i}.jpg"), img)
        cv2.imwrite(str(root / "masks" / f"img{i}.jpg"), mask)
        ann[f"img{i}"] = {"height": h, "width": w, "bbox": [
            {"label": "polyp", "xmin": x1, "ymin": y1, "xmax": x2, "ymax": y2}]}
    (root / "kavsir_bboxes.json").write_text(json.dumps(ann))
    normal = tmp_path_factory.mktemp("normal") / "seq1"
    normal.mkdir()
    for i in range(4, 8):
        cv2.imwrite(str(normal / f"f{i}.jpg"), cv2.resize(read_image(sample_paths[i]), (192, 108)))
    return root, normal


def test_degradations_blur_and_keep_shape(frames):
    rng = np.random.default_rng(0)
    img = np.ascontiguousarray(cv2.resize(frames[1], (320, 320))[..., ::-1])
    sharp = cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()
    for op in DEGRADATIONS:
        out = degrade(img, rng, [op])
        assert out.shape == img.shape
        assert out.dtype == np.uint8
        assert np.abs(out.astype(int) - img).mean() > 1, op  # changed
    for op in ("motion", "defocus", "haze"):
        blurred = cv2.Laplacian(cv2.cvtColor(degrade(img, rng, [op]), cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()
        assert blurred < 0.5 * sharp, op
    k = motion_kernel(21, rng)
    assert k.shape == (21, 21)
    assert k.sum() == pytest.approx(1.0, abs=1e-5)
    assert (k > 0).sum() >= 10


def test_multitask_smoke_training_and_resume(tiny_seg, tmp_path):
    torch = pytest.importorskip("torch")
    from endoedge.data.datasets import load_negatives
    from endoedge.models.checkpoint import load_checkpoint
    from endoedge.training.multitask import MultiTaskConfig, MultiTaskTrainer

    torch.set_num_threads(1)
    root, normal_dir = tiny_seg
    data = load_dataset(root)
    normal = load_negatives([str(normal_dir)], data.class_names)
    cfg = MultiTaskConfig(arch="ssdlite320_efficientnet_lite0_multitask", out=str(tmp_path / "run"), imgsz=128,
                          epochs=2, batch=4, pretrained=False, unclear_ratio=0.5, warmup_epochs=0, threads=1)
    trainer = MultiTaskTrainer(cfg, data.subset(["img0", "img1", "img2"]), data.subset(["img3"]), normal)
    trainer.load_data()
    assert trainer.train_masks is not None
    assert trainer.train_masks[:3].any(axis=(1, 2)).all()
    assert not trainer.train_masks[3:].any()
    # the mask follows the geometric augmentation: it stays inside the augmented box
    x, targets = trainer._batch(np.arange(4))
    assert x.shape == (4, 3, 128, 128)
    for t in targets[:3]:
        m = t["mask"].numpy() > 0.5
        if len(t["boxes"]) and m.any():
            ys, xs = np.nonzero(m)
            b = t["boxes"][0].numpy()
            assert xs.min() >= b[0] - 2
            assert xs.max() <= b[2] + 2
            assert ys.min() >= b[1] - 2
            assert ys.max() <= b[3] + 2
    assert {int(t["frame"]) for t in targets} <= {0, 1, 2}
    record = trainer.fit(until=1)
    for key in ("map50", "dice", "iou", "triage_acc"):
        assert 0.0 <= record[key] <= 1.0
    assert np.isfinite(record["loss"])
    # resume continues at epoch 1 and finishes; the checkpoint loads as the multi-task arch
    again = MultiTaskTrainer(cfg, data.subset(["img0", "img1", "img2"]), data.subset(["img3"]), normal)
    again.load_state(Path(cfg.out) / "train_state.pt")
    assert again.epoch == 1
    assert again.fit()["epoch"] == 2
    loaded = load_checkpoint(Path(cfg.out) / "last.pt")
    assert loaded.spec.decoder_params["frame_classes"] == ["normal", "unclear", "polyp"]


def test_cli_train_routes_multitask_archs(tiny_seg, tmp_path, capsys):
    pytest.importorskip("torch")
    from endoedge.cli import main

    root, normal_dir = tiny_seg
    out = tmp_path / "cli_run"
    rc = main(["train", "--data", str(root), "--val-count", "1", "--arch", "ssdlite320_efficientnet_lite0_multitask",
               "--imgsz", "64", "--epochs", "1", "--batch", "4", "--no-pretrained", "--threads", "1",
               "--negatives", str(normal_dir), "--unclear-ratio", "0.3", "--warmup-epochs", "0", "--out", str(out),
               "--endoscopy", "all"])
    assert rc == 0
    from endoedge.endoscopy import EndoscopyConfig
    from endoedge.models.checkpoint import load_checkpoint

    assert load_checkpoint(out / "last.pt").spec.endoscopy == EndoscopyConfig.parse("all").to_dict()
    text = capsys.readouterr().out
    assert "3 polyp + 4 normal train frames" in text
    assert "triage accuracy" in text
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"dice", "iou", "triage_acc", "map50"} <= set(record)
    assert json.loads(__import__("torch").load(out / "train_state.pt", weights_only=True)["config"])["focal"]


def test_init_from_box_only_checkpoint(tiny_seg, tmp_path, capsys, caplog):
    """``--init`` with the box-only SSD fills the multi-task model's backbone and SSD heads (the
    new parts start fresh); a multi-task checkpoint cannot initialise the box-only SSD."""
    torch = pytest.importorskip("torch")
    from endoedge.cli import main
    from endoedge.models.checkpoint import load_checkpoint

    root, normal_dir = tiny_seg
    common = ["train", "--data", str(root), "--val-count", "1", "--imgsz", "64", "--epochs", "1", "--batch", "4",
              "--no-pretrained", "--threads", "1", "--warmup-epochs", "0"]
    box = tmp_path / "box"
    assert main([*common, "--out", str(box)]) == 0
    multi = tmp_path / "multi"
    with caplog.at_level("INFO", logger="endoedge.training.trainer"):
        rc = main([*common, "--arch", "ssdlite320_efficientnet_lite0_multitask", "--negatives", str(normal_dir),
                   "--init", str(box / "last.pt"), "--freeze", "16", "--out", str(multi)])
    assert rc == 0
    assert "initialised 462 of 592 tensors" in caplog.text
    before = load_checkpoint(box / "last.pt").model.state_dict()
    after = load_checkpoint(multi / "last.pt").model.state_dict()
    frozen = "backbone.stem.1.weight"  # the stem: frozen, so it must be the init's exactly
    assert frozen in before
    torch.testing.assert_close(after[frozen], before[frozen])
    capsys.readouterr()
    rc = main([*common, "--init", str(multi / "last.pt"), "--out", str(tmp_path / "back")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "do not fit ssdlite320_efficientnet_lite0" in err


def test_masks_follow_the_endoscopy_crop(tiny_seg, tmp_path):
    """With ``--endoscopy`` the frames are cropped to the field of view before caching; the masks
    must be cut the same way: the cached mask covers the drawn polyp in the cached image."""
    from endoedge.data.datasets import load_cache
    from endoedge.endoscopy import EndoscopyConfig
    from endoedge.training.multitask import load_masks
    from endoedge.training.trainer import _cleaning

    root, _ = tiny_seg
    padded = tmp_path / "padded"
    (padded / "images").mkdir(parents=True)
    (padded / "masks").mkdir()
    ann = json.loads((root / "kavsir_bboxes.json").read_text())
    pad = ((25, 15), (40, 10))  # rows (top, bottom), columns (left, right): a black scope border
    for stem, a in ann.items():
        img = cv2.imread(str(root / "images" / f"{stem}.jpg"))
        mask = cv2.imread(str(root / "masks" / f"{stem}.jpg"), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(padded / "images" / f"{stem}.png"), np.pad(img, (*pad, (0, 0))))
        cv2.imwrite(str(padded / "masks" / f"{stem}.png"), np.pad(mask, pad))
        a["height"], a["width"] = img.shape[0] + 40, img.shape[1] + 50
        for b in a["bbox"]:
            b.update(xmin=b["xmin"] + 40, xmax=b["xmax"] + 40, ymin=b["ymin"] + 25, ymax=b["ymax"] + 25)
    (padded / "kavsir_bboxes.json").write_text(json.dumps(ann))
    data = load_dataset(padded)
    n = len(data.samples)
    cache = load_cache(data, 96, _cleaning(EndoscopyConfig.parse("all")))
    sizes = [cv2.imread(str(root / "masks" / f"{s.stem}.jpg"), cv2.IMREAD_GRAYSCALE).shape for s in data.samples]
    for (x0, y0, x1, y1), (h, w) in zip(cache.crops, sizes, strict=True):  # the border was cut off
        assert np.allclose([x0, y0, x1, y1], [40, 25, 40 + w, 25 + h], atol=2)
    cut = load_masks(data.samples, 96, required=n, crops=cache.crops)
    uncut = load_masks(data.samples, 96, required=n)
    original = load_masks(load_dataset(root).samples, 96, required=n)  # the unpadded masks

    def iou(a: np.ndarray, b: np.ndarray) -> float:
        return float((a & b).sum() / max((a | b).sum(), 1))

    assert min(iou(original[i] > 0, cut[i] > 0) for i in range(n)) > 0.95
    assert max(iou(original[i] > 0, uncut[i] > 0) for i in range(n)) < 0.8
