"""Classifiers in endoedge batch (export, Classifier API, classifier + detector in one pass) and the
Ray engine. Oracles: onnxruntime run directly + torch.softmax, the PyTorch model itself, and the
local engine's records for Ray."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from endoedge.batch import BatchConfig, run_batch
from endoedge.cli import main

KVASIR_CLASSES = ("dyed-lifted-polyps", "dyed-resection-margins", "esophagitis", "normal-cecum",
                  "normal-pylorus", "normal-z-line", "polyps", "ulcerative-colitis")


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    """A small seeded conv net over Kvasir's 8 classes, exported with endoedge's metadata."""
    torch = pytest.importorskip("torch")
    from torch import nn

    from endoedge.export import export_classifier

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, len(KVASIR_CLASSES)),
    ).eval()
    with torch.no_grad():  # make the logits spread (a random head gives near-uniform ones)
        model[-1].weight.mul_(40.0)
    path = tmp_path_factory.mktemp("clf") / "site.onnx"
    export_classifier(model, path, KVASIR_CLASSES, input_size=(96, 128), top_k=3, arch="tinynet")
    return model, path


@pytest.fixture(scope="module")
def images(sample_paths) -> list[np.ndarray]:
    """Real frames, some altered (inverted, channel-swapped, grey, zoomed) so classes differ."""
    base = [cv2.resize(cv2.imread(str(p)), (480, 360), interpolation=cv2.INTER_AREA) for p in sample_paths[:6]]
    base[1] = 255 - base[1]
    base[2] = np.ascontiguousarray(base[2][:, :, ::-1])
    base[3] = cv2.cvtColor(cv2.cvtColor(base[3], cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    base[4] = cv2.resize(base[4][120:240, 160:320], (480, 360))
    return base


def test_classifier_matches_onnxruntime_and_torch(tiny_classifier, images):
    import onnxruntime as ort
    import torch

    import endoedge
    from endoedge.preprocess import Preprocessor

    model, path = tiny_classifier
    with endoedge.load_classifier(path) as clf:
        assert clf.class_names == KVASIR_CLASSES
        assert clf.spec.decoder == "classify"
        results = clf.classify_batch(images)
        batch, _ = Preprocessor(clf.spec.preprocess)(images)
        batch = batch.copy()
    logits = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": batch})[0]
    want = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    got = np.stack([r.probs for r in results])
    np.testing.assert_allclose(got, want, atol=1e-6)
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(torch.from_numpy(batch)).numpy(), atol=1e-4)
    assert [r.class_id for r in results] == want.argmax(1).tolist()
    for r, row in zip(results, want, strict=True):
        top = np.argsort(-row)[:3]
        assert [lab for lab, _ in r.top_k] == [KVASIR_CLASSES[i] for i in top]
        assert r.label == KVASIR_CLASSES[top[0]]
        assert r.score == pytest.approx(float(row[top[0]]), abs=1e-6)
    assert len({r.label for r in results}) > 1  # the fixture's logits really differ between frames


def test_classifier_public_surface_matches_the_detector(tiny_classifier, images):
    import endoedge
    from endoedge.preprocess import Preprocessor

    with endoedge.load_classifier(tiny_classifier[1]) as clf:
        assert clf.input_size == (96, 128) == clf.preprocess_spec.input_size
        assert clf.max_batch is None
        assert "onnxruntime" in clf.describe()
        assert clf.describe() in repr(clf)
        want = clf.classify_batch(images)
        batch, _ = Preprocessor(clf.preprocess_spec)(images)
        got = clf.classify_prepared(batch.copy())
        assert clf.timings["preprocess"] == 0.0
        assert clf.timings["infer"] > 0
    assert [g.to_record() for g in got] == [w.to_record() for w in want]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g.probs, w.probs)


def test_loading_the_wrong_kind_is_a_clear_error(tiny_classifier, polyp_onnx):
    import endoedge
    from endoedge.errors import ModelFormatError

    with pytest.raises(ModelFormatError, match="frame classifier, not a detector"):
        endoedge.load(tiny_classifier[1])
    with pytest.raises(ModelFormatError, match="not a classifier"):
        endoedge.load_classifier(polyp_onnx)


def test_classifier_and_detector_in_one_pass(tiny_classifier, polyp_onnx, images, tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    for i, img in enumerate(images):
        cv2.imwrite(str(folder / f"f{i}.png"), img)
    both, det_only, clf_only = tmp_path / "both.jsonl", tmp_path / "det.jsonl", tmp_path / "clf.jsonl"
    assert main(["batch", str(folder), "-m", f"site={tiny_classifier[1]}", "-m", f"polyp={polyp_onnx}",
                 "-o", str(both), "--quiet", "--batch-size", "4", "--flag-label", "esophagitis"]) == 0
    run_batch(BatchConfig(folder, [str(polyp_onnx)], det_only, progress=False))
    run_batch(BatchConfig(folder, [str(tiny_classifier[1])], clf_only, progress=False, flag_labels=["esophagitis"]))
    b = [json.loads(x) for x in both.read_text().splitlines()]
    d = [json.loads(x) for x in det_only.read_text().splitlines()]
    c = [json.loads(x) for x in clf_only.read_text().splitlines()]
    import endoedge

    with endoedge.load_classifier(tiny_classifier[1]) as clf:
        for rb, rd, rc, img in zip(b, d, c, images, strict=True):
            assert set(rb) == {"path", "width", "height", "site", "polyp", "score", "flagged"}
            assert rb["polyp"] == {k: rd[k] for k in ("detections", "score", "flagged")}
            assert rb["site"] == {k: rc[k] for k in ("label", "class_id", "score", "top_k", "flagged")}
            assert rb["site"]["label"] == clf.classify(img).label
            assert rb["site"]["flagged"] == (rb["site"]["label"] == "esophagitis")
            assert rb["score"] == rd["score"]
            assert rb["flagged"] == (rd["flagged"] or rb["site"]["flagged"])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inside Ray Data
def test_ray_engine_matches_local(polyp_onnx, sample_paths, tmp_path):
    pytest.importorskip("ray")
    folder = tmp_path / "study"
    folder.mkdir()
    for i, p in enumerate(sample_paths):
        cv2.imwrite(str(folder / f"{i:02d}.jpg"), cv2.resize(cv2.imread(str(p)), (400, 300)))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut")
    local, ray_out = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    run_batch(BatchConfig(folder, [str(polyp_onnx)], local, batch_size=4, progress=False))
    summary = run_batch(BatchConfig(folder, [str(polyp_onnx)], ray_out, batch_size=4, workers=2,
                                    engine="ray", progress=False))
    lo = {r["path"]: r for r in map(json.loads, local.read_text().splitlines())}
    ra = {r["path"]: r for r in map(json.loads, ray_out.read_text().splitlines())}
    assert len(ra) == 11
    assert ra == lo
    assert summary["counts"]["errors"] == 1
    assert summary["engine"] == "ray"
    assert Path(str(ray_out) + ".meta.json").is_file()


def test_downscaled_multitask_results_keep_frame_label_and_full_size_mask():
    """A multi-task model's mask of a downscaled decode goes back to source size; the frame label stays."""
    from types import SimpleNamespace

    from endoedge.batch.models import DetectorModel
    from endoedge.batch.prepare import Prepared
    from endoedge.detector import Detections
    from endoedge.postprocess.mask import rle_decode

    small = np.zeros((270, 480), np.float32)
    cv2.circle(small, (240, 135), 60, 1.0, -1)
    det = Detections(boxes=np.array([[180, 75, 300, 195]], np.float32), scores=np.array([0.9], np.float32),
                     class_ids=np.zeros(1, np.int64), labels=["polyp"], mask=small, frame_label="polyp",
                     frame_scores={"normal": 0.1, "unclear": 0.1, "polyp": 0.8})
    prepared = Prepared(item=None, width=1920, height=1080, scale=4.0)  # type: ignore[arg-type]
    part = DetectorModel._part(SimpleNamespace(flag_threshold=0.5), det, prepared)  # type: ignore[arg-type]
    assert part["frame_label"] == "polyp"
    assert part["detections"][0]["box"] == [720.0, 300.0, 1200.0, 780.0]
    mask = rle_decode(part["mask"])
    assert mask.shape == (1080, 1920)
    expected = cv2.resize(small, (1920, 1080), interpolation=cv2.INTER_LINEAR) > 0.5
    np.testing.assert_array_equal(mask.astype(bool), expected)
