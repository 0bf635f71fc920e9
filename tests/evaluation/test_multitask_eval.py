"""Multi-task eval metrics: triage and mask metrics against scikit-learn, and `endoedge eval` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from endoedge.evaluation.multitask import dice_iou, mask_overlap, mask_summary, triage_metrics

CLASSES = ("normal", "unclear", "polyp")


def test_triage_metrics_match_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    truth = [CLASSES[i] for i in rng.integers(0, 3, 200)]
    pred = [t if rng.random() < 0.7 else CLASSES[i] for t, i in zip(truth, rng.integers(0, 3, 200), strict=True)]
    ours = triage_metrics(truth, pred, CLASSES)
    np.testing.assert_array_equal(ours["confusion"], sk.confusion_matrix(truth, pred, labels=list(CLASSES)))
    assert ours["accuracy"] == pytest.approx(sk.accuracy_score(truth, pred))
    p, r, f, support = sk.precision_recall_fscore_support(truth, pred, labels=list(CLASSES), zero_division=0)
    for i, c in enumerate(CLASSES):
        m = ours["per_class"][c]
        assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((p[i], r[i], f[i]))
        assert m["support"] == support[i]
        one_vs_rest = sk.accuracy_score([t == c for t in truth], [x == c for x in pred])
        assert m["accuracy"] == pytest.approx(one_vs_rest)
    empty = triage_metrics(["normal"], ["normal"], CLASSES)["per_class"]["polyp"]
    assert empty["precision"] is None
    assert empty["recall"] is None
    with pytest.raises(ValueError, match="not among"):
        triage_metrics(["tumor"], ["polyp"], CLASSES)


def test_mask_dice_iou_match_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(2)
    counts, dices, ious = [], [], []
    for _ in range(5):
        truth = np.zeros((60, 80), bool)
        cv2.circle(truth.view(np.uint8), (int(rng.integers(20, 60)), 30), int(rng.integers(5, 20)), 1, -1)
        pred = np.roll(truth, int(rng.integers(-6, 7)), axis=1) | (rng.random(truth.shape) < 0.02)
        c = mask_overlap(pred, truth)
        counts.append(c)
        d, i = dice_iou(*c)
        assert d == pytest.approx(sk.f1_score(truth.ravel(), pred.ravel()))
        assert i == pytest.approx(sk.jaccard_score(truth.ravel(), pred.ravel()))
        dices.append(d)
        ious.append(i)
    summary = mask_summary(counts)
    assert summary["dice"] == pytest.approx(np.mean(dices))
    assert summary["iou"] == pytest.approx(np.mean(ious))
    assert dice_iou(0, 0, 0) == (1.0, 1.0)


def _seg_set(root: Path, frames: list[np.ndarray]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    ann = {}
    for i, frame in enumerate(frames[1:3]):
        img = cv2.resize(frame, (400, 320))
        mask = np.zeros((320, 400), np.uint8)
        cv2.ellipse(mask, (200, 160), (60, 40), 0, 0, 360, 255, -1)
        cv2.imwrite(str(root / "images" / f"p{i}.jpg"), img)
        cv2.imwrite(str(root / "masks" / f"p{i}.jpg"), mask)
        ann[f"p{i}"] = {"height": 320, "width": 400,
                        "bbox": [{"label": "polyp", "xmin": 140, "ymin": 120, "xmax": 260, "ymax": 200}]}
    (root / "kavsir_bboxes.json").write_text(json.dumps(ann))
    return root


def test_eval_reports_mask_triage_and_prf_iou_thresholds(multitask, frames, tmp_path):
    from endoedge.evaluation import evaluate_model
    from endoedge.evaluation.report import format_table

    _, _, onnx_path = multitask
    data = _seg_set(tmp_path / "kvasir", frames)
    unclear = tmp_path / "unclear"
    unclear.mkdir()
    cv2.imwrite(str(unclear / "u0.jpg"), cv2.GaussianBlur(cv2.resize(frames[3], (400, 320)), (31, 31), 0))
    report = evaluate_model(onnx_path, data, unclear=unclear)
    assert set(report["prf"]) == {"0.45", "0.50", "0.55"}
    assert report["mask"]["n_images"] == 2
    assert 0.0 <= report["mask"]["dice"] <= 1.0
    triage = report["triage"]
    assert triage["n_frames"] == 3
    assert np.array(triage["confusion"]).sum(1).tolist() == [0, 1, 2]  # rows: normal, unclear, polyp truth
    text = format_table(report)
    assert "Frame triage (3 frames)" in text
    assert "mean Dice" in text


def test_box_only_models_report_no_mask_or_triage():
    from endoedge.evaluation.runner import Collected, _multitask_report

    box_only = Collected(frame_labels=[None, None])
    assert _multitask_report(box_only, Collected(), Collected(), None) == {}
