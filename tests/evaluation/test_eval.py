"""``endoedge eval``: metric code on detections with known answers, and end-to-end CLI runs.

The oracles are worked out by hand from the definitions: ground-truth boxes as detections give
mAP 1; boxes shifted to chosen IoUs give known TP/FP counts per IoU threshold, a known
101-point AP and known overlap buckets; AUCs of small score lists are counted pair by pair.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from endoedge.cli import main
from endoedge.data.datasets import Dataset, Sample, read_stems
from endoedge.errors import InputError
from endoedge.evaluation import metrics
from endoedge.evaluation.metrics import Prediction
from endoedge.evaluation.runner import box_free_strip, class_mapping

pytest.importorskip("pycocotools")

SIZE = (400, 600)  # (height, width) of every synthetic image


def _dataset(boxes_per_image: list[list[list[float]]], names=("polyp",), labels=None) -> Dataset:
    samples = []
    for i, rows in enumerate(boxes_per_image):
        b = np.asarray(rows, np.float32).reshape(-1, 4)
        lab = np.zeros(len(b), np.int64) if labels is None else np.asarray(labels[i], np.int64)
        samples.append(Sample(f"img{i}", Path(f"img{i}.jpg"), b, lab, SIZE))
    return Dataset(samples, tuple(names), "synthetic")


def _pred(rows, scores, labels=None) -> Prediction:
    b = np.asarray(rows, np.float32).reshape(-1, 4)
    lab = np.zeros(len(b), np.int64) if labels is None else np.asarray(labels, np.int64)
    return Prediction(b, np.asarray(scores, np.float32), lab)


def _shifted(box: list[float], iou: float) -> list[float]:
    """``box`` moved right so that its IoU with the original is ``iou``: (w - d) / (w + d)."""
    w = box[2] - box[0]
    d = w * (1 - iou) / (1 + iou)
    return [box[0] + d, box[1], box[2] + d, box[3]]


GT = [[[50, 60, 150, 180]], [[200, 100, 300, 260]], [[10, 10, 110, 90]], [[300, 200, 500, 380]]]


def _evaluate(dataset, preds, conf=0.5):
    sizes = [SIZE] * len(preds)
    coco = metrics.coco_map(metrics.coco_evaluation(dataset, sizes, preds), dataset.class_names)
    prf_ev = metrics.coco_evaluation(dataset, sizes, preds, iou_thrs=metrics.PRF_IOUS)
    prf = metrics.precision_recall_f1(prf_ev, dataset.class_names, conf)
    return coco, prf, metrics.overlap_buckets(dataset, preds, conf)


def test_ground_truth_as_detections_is_perfect():
    ds = _dataset(GT)
    preds = [_pred(rows, [0.9]) for rows in GT]
    coco, prf, overlap = _evaluate(ds, preds)
    assert coco["map50"] == pytest.approx(1.0)
    assert coco["map50_95"] == pytest.approx(1.0)
    for iou in ("0.45", "0.50", "0.55"):
        assert prf[iou]["all"] == {"tp": 4, "fp": 0, "fn": 0, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert overlap == {"iou>=0.6": 1.0, "iou>=0.7": 1.0, "iou>=0.8": 1.0, "iou>=0.9": 1.0,
                       "mean_best_iou": pytest.approx(1.0), "n_gt": 4}


def test_shifted_boxes_give_known_counts_ap_and_buckets():
    ds = _dataset(GT)
    ious = [0.95, 0.57, 0.52, 0.47]  # detection i overlaps ground truth i this much
    scores = [0.9, 0.8, 0.7, 0.6]
    preds = [_pred([_shifted(g[0], iou)], [s]) for g, iou, s in zip(GT, ious, scores, strict=True)]
    np.testing.assert_allclose(
        [metrics.box_iou(np.array(g, float), p.boxes.astype(float))[0, 0] for g, p in zip(GT, preds, strict=True)],
        ious, atol=1e-4)
    coco, prf, overlap = _evaluate(ds, preds)
    # IoU 0.45: all match; 0.50: the 0.47 box is a FP; 0.55: the 0.52 one too.
    assert prf["0.45"]["all"]["tp"] == 4
    assert (prf["0.50"]["all"]["tp"], prf["0.50"]["all"]["fp"], prf["0.50"]["all"]["fn"]) == (3, 1, 1)
    assert (prf["0.55"]["all"]["tp"], prf["0.55"]["all"]["fp"]) == (2, 2)
    assert prf["0.50"]["polyp"]["precision"] == pytest.approx(0.75)
    assert prf["0.55"]["polyp"]["f1"] == pytest.approx(0.5)
    # AP@0.5 (COCO 101-point): the three matches rank first, so precision is 1 up to recall 0.75
    # and 0 beyond: 76 of the 101 recall points.
    assert coco["map50"] == pytest.approx(76 / 101)
    # Seed 004 Table 6 buckets: best IoUs 0.95, 0.57, 0.52, 0.47.
    assert overlap["iou>=0.6"] == pytest.approx(0.25)
    assert overlap["iou>=0.9"] == pytest.approx(0.25)
    assert overlap["mean_best_iou"] == pytest.approx(np.mean(ious), abs=1e-4)
    # An operating threshold above the weakest two detections drops them from P/R/F1 and overlap.
    _, prf_hi, overlap_hi = _evaluate(ds, preds, conf=0.75)
    assert prf_hi["0.45"]["all"] == {"tp": 2, "fp": 0, "fn": 2, "precision": 1.0, "recall": 0.5,
                                     "f1": pytest.approx(2 / 3)}
    assert overlap_hi["mean_best_iou"] == pytest.approx((0.95 + 0.57) / 4, abs=1e-4)


def test_classes_are_matched_separately():
    ds = _dataset([[[10, 10, 100, 100], [200, 200, 300, 300]]], names=("a", "b"), labels=[[0, 1]])
    right = _pred([[10, 10, 100, 100], [200, 200, 300, 300]], [0.9, 0.8], [0, 1])
    swapped = _pred([[10, 10, 100, 100], [200, 200, 300, 300]], [0.9, 0.8], [1, 0])
    coco, prf, _ = _evaluate(ds, [right])
    assert coco["per_class"]["a"]["ap50"] == pytest.approx(1.0)
    assert prf["0.50"]["b"]["tp"] == 1
    coco, prf, overlap = _evaluate(ds, [swapped])
    assert coco["map50"] == pytest.approx(0.0)
    assert prf["0.50"]["all"] == {"tp": 0, "fp": 2, "fn": 2, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert overlap["iou>=0.6"] == 0.0


def test_no_detections_at_all():
    ds = _dataset(GT)
    coco, prf, overlap = _evaluate(ds, [Prediction.empty() for _ in GT])
    assert coco["map50"] == pytest.approx(0.0)
    assert prf["0.50"]["all"]["precision"] is None
    assert prf["0.50"]["all"]["recall"] == 0.0
    assert overlap["mean_best_iou"] == 0.0


def test_frame_level_confusion_and_rates():
    ds = _dataset([GT[0][0:1], GT[1][0:1], GT[2][0:1], [], []])
    preds = [
        _pred(GT[0][0], [0.9]),  # polyp found
        _pred(GT[1][0], [0.2]),  # below conf: background
        _pred([[0, 0, 5, 5]], [0.6]),  # a detection elsewhere still makes it a polyp frame
        _pred([[0, 0, 5, 5]], [0.7]),  # false alarm on a negative
        Prediction.empty(),  # correct negative
    ]
    fr = metrics.frame_level(metrics.frame_truth(ds), preds, ("polyp",), conf=0.5)
    assert fr["labels"] == ["polyp", "background"]
    assert fr["confusion"] == [[2, 1], [1, 1]]
    assert fr["sensitivity"] == pytest.approx(2 / 3)
    assert fr["specificity"] == pytest.approx(0.5)
    assert fr["accuracy"] == pytest.approx(3 / 5)
    no_neg = metrics.frame_level(metrics.frame_truth(_dataset(GT[:2])), preds[:2], ("polyp",), 0.5)
    assert no_neg["specificity"] is None


def test_auc_counts_pairs_with_half_ties():
    # positives 0.9, 0.8, 0.3; negatives 0.4, 0.1: 2 + 2 + 1 winning pairs out of 6.
    assert metrics.auc(np.array([0.9, 0.8, 0.3, 0.4, 0.1]), np.array([1, 1, 1, 0, 0], bool)) == pytest.approx(5 / 6)
    assert metrics.auc(np.array([0.5, 0.5]), np.array([True, False])) == pytest.approx(0.5)
    assert metrics.auc(np.array([0.5, 0.7, 0.5]), np.array([True, True, False])) == pytest.approx(0.75)
    assert metrics.auc(np.array([0.5, 0.7]), np.array([True, True])) is None
    fpr, tpr = metrics.roc_curve(np.array([0.9, 0.8, 0.3, 0.4, 0.1]), np.array([1, 1, 1, 0, 0], bool))
    assert np.trapezoid(tpr, fpr) == pytest.approx(5 / 6)


def test_class_mapping_rules():
    m, how = class_mapping(("normal", "unclear", "tumor"), ("tumor",))
    assert how == "by name"
    assert m.tolist() == [-1, -1, 0]
    m, how = class_mapping(("class0",), ("polyp",))
    assert how == "by position"
    assert m.tolist() == [0]
    with pytest.raises(InputError, match="do not cover"):
        class_mapping(("a", "b"), ("polyp",))


def test_box_free_strip():
    boxes = np.array([[300, 100, 400, 200]], np.float32)
    assert box_free_strip(boxes, (400, 600)) == (0, 0, 292, 400)  # left of the box, 8 px clear
    assert box_free_strip(np.array([[100, 100, 500, 300]], np.float32), (400, 600)) is None


def test_read_stems(tmp_path):
    f = tmp_path / "split.txt"
    f.write_text("# val\na\n\nb  # comment\na\n")
    assert read_stems(f) == ["a", "b"]
    f.write_text("# nothing\n\n")
    with pytest.raises(InputError, match="lists no image stems"):
        read_stems(f)


# -- end to end -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kvasir_like(tmp_path_factory, sample_paths) -> Path:
    """Five real-looking images in Kvasir-SEG layout (class 'tumor', one of the demo model's),
    a corrupt sixth image, and a folder of two negatives."""
    from endoedge.data.imageio import read_image

    root = tmp_path_factory.mktemp("kvasir_like")
    (root / "images").mkdir()
    ann = {}
    for i, p in enumerate(sample_paths[:5]):
        img = cv2.resize(read_image(p)[60:1000, 200:1700], (600, 400))
        cv2.imwrite(str(root / "images" / f"f{i}.jpg"), img)
        x = 80 + 60 * i
        ann[f"f{i}"] = {"height": 400, "width": 600,
                        "bbox": [{"label": "tumor", "xmin": x, "ymin": 90, "xmax": x + 160, "ymax": 250}]}
    (root / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    ann["broken"] = {"height": 400, "width": 600,
                     "bbox": [{"label": "tumor", "xmin": 1, "ymin": 1, "xmax": 50, "ymax": 50}]}
    (root / "kavsir_bboxes.json").write_text(json.dumps(ann))
    neg = root / "negatives"
    neg.mkdir()
    for i, p in enumerate(sample_paths[5:7]):
        cv2.imwrite(str(neg / f"n{i}.png"), cv2.resize(read_image(p), (480, 270)))
    return root


def test_eval_cli_end_to_end(ssdlite, kvasir_like, tmp_path, capsys):
    out_json, out_png = tmp_path / "report.json", tmp_path / "pr.png"
    rc = main(["eval", str(ssdlite[2]), str(kvasir_like), "--negatives", str(kvasir_like / "negatives"),
               "--conf", "0.3", "--json", str(out_json), "--plot", str(out_png)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "COCO mAP@0.5" in captured.out
    assert "true background" in captured.out
    report = json.loads(out_json.read_text())
    for key in ("coco", "prf", "frame", "auc", "overlap", "pr_curves", "roc_curve", "skipped", "timing"):
        assert key in report
    assert report["n_images"] == 5
    assert report["n_negative_images"] == 2
    assert report["n_skipped"] == 1
    assert "broken.jpg" in report["skipped"][0]["path"]
    assert report["class_mapping"] == "by name"
    assert set(report["prf"]) == {"0.45", "0.50", "0.55"}
    assert 0.0 <= report["coco"]["map50"] <= 1.0
    assert report["frame"]["n_negative"] == 2
    assert sum(map(sum, report["frame"]["confusion"])) == 7
    assert report["auc"]["value"] is not None
    assert cv2.imread(str(out_png)) is not None


def test_eval_cli_without_negatives_says_why_auc_is_missing(ssdlite, kvasir_like, tmp_path, capsys):
    split = tmp_path / "val.txt"
    split.write_text("f0\nf1\nf2\n")
    rc = main(["eval", str(ssdlite[2]), str(kvasir_like), "--split", str(split),
               "--json", str(tmp_path / "r.json")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n_images"] == 3
    assert report["conf"] == pytest.approx(0.5)  # the demo model's own threshold
    assert report["auc"]["value"] is None
    assert "Kvasir-SEG has only polyp images" in report["auc"]["reason"]
    assert report["frame"]["specificity"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/nowhere"], "does not exist"),
        (["{data}", "--split", "{tmp}/empty.txt"], "lists no image stems"),
        (["{data}", "--split", "{tmp}/unknown.txt"], "split entries are not in"),
        (["{data}", "--negatives", "{tmp}/nowhere"], "is not a folder"),
        (["{data}", "--conf", "1.5"], "[0, 1]"),
        (["{data}", "--target-sensitivity", "1.5"], "within (0, 1]"),
        (["--target-sensitivity", "0.9", "--video-negatives", "{tmp}"], "give MODEL DATA"),
        (["{data}", "--reason", "kept"], "--conf T --reason TEXT --save-operating-point"),
        (["{data}", "--conf", "0.3", "--reason", " ", "--save-operating-point", "{tmp}/x.pt"], "--reason is empty"),
        (["{data}", "--conf", "0.3", "--reason", "kept", "--target-fa", "0.1", "--negatives", "{data}"],
         "drop it with --target-fa"),
        (["{data}", "--save-operating-point", "{tmp}/x.pt"], "or --conf T --reason TEXT"),
        (["{data}", "--conf", "1", "--reason", "kept", "--save-operating-point", "{tmp}/x.pt"], "within (0, 1)"),
    ],
)
def test_eval_cli_bad_input_is_one_line_error(ssdlite, kvasir_like, tmp_path, capsys, args, message):
    (tmp_path / "empty.txt").write_text("\n")
    (tmp_path / "unknown.txt").write_text("zzz\n")
    argv = [a.format(tmp=tmp_path, data=kvasir_like) for a in args]
    rc = main(["eval", str(ssdlite[2]), *argv])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("endoedge eval: error:")
    assert message in err
    assert len(err.strip().splitlines()) == 1


def report_curve(path):
    """The operating curve rows of an ``endoedge eval --json`` report."""
    return json.loads(path.read_text())["operating_curve"]


def test_eval_cli_operating_point_and_video_metrics(ssdlite, kvasir_like, tmp_path, capsys):
    from endoedge.models.checkpoint import load_checkpoint

    out_pt, out_json = tmp_path / "op.pt", tmp_path / "r.json"
    rc = main(["eval", str(ssdlite[1]), str(kvasir_like), "--negatives", str(kvasir_like / "negatives"),
               "--target-fa", "0.5", "--save-operating-point", str(out_pt), "--json", str(out_json)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "Operating curve" in captured.out
    assert "<- chosen" in captured.out
    report = json.loads(out_json.read_text())
    point = report["operating_point"]
    assert point["false_alarm_share"] <= 0.5
    assert point["n_negative"] == 2
    loaded = load_checkpoint(out_pt)
    assert loaded.spec.score_threshold == pytest.approx(point["score_threshold"])
    assert loaded.spec.operating_point["target_false_alarm_share"] == 0.5
    # video metrics alone: MODEL plus ordered sequences
    rc = main(["eval", str(ssdlite[2]), "--video-negatives", str(kvasir_like / "negatives"),
               "--video-polyps", str(kvasir_like / "images"), "--conf", "0.3", "--json", str(out_json)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "false activations" in captured.out
    assert "toggles per 100 frames" in captured.out
    video = json.loads(out_json.read_text())["video"]
    raw, stab = video["metrics"]["raw"], video["metrics"]["stabilized"]
    assert (raw["n_negative"], raw["n_positive"]) == (2, 5)
    assert (stab["n_negative"], stab["n_positive"]) == (2, 5)
    assert 0.0 <= stab["false_alarm_share"] <= 1.0
    assert len(raw["frames_to_first"]) == 1
    rc = main(["eval", str(ssdlite[2]), str(kvasir_like), "--target-fa", "0.1"])
    assert rc == 1
    assert "--negatives" in capsys.readouterr().err
    # the other way round: the quietest threshold that keeps a sensitivity target
    rc = main(["eval", str(ssdlite[1]), str(kvasir_like), "--negatives", str(kvasir_like / "negatives"),
               "--target-sensitivity", "0.4", "--save-operating-point", str(out_pt), "--json", str(out_json)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "<- chosen: sensitivity >= 40%" in captured.out
    point = json.loads(out_json.read_text())["operating_point"]
    assert point["sensitivity"] >= 0.4
    assert point["target_sensitivity"] == 0.4
    assert load_checkpoint(out_pt).spec.score_threshold == pytest.approx(point["score_threshold"])
    rc = main(["eval", str(ssdlite[2]), str(kvasir_like), "--target-fa", "0.1", "--target-sensitivity", "0.9",
               "--negatives", str(kvasir_like / "negatives")])
    assert rc == 1
    assert "not both" in capsys.readouterr().err
    # a threshold given by hand: stored with its reason and what it measures on these frames
    rc = main(["eval", str(ssdlite[1]), str(kvasir_like), "--negatives", str(kvasir_like / "negatives"),
               "--conf", "0.37", "--reason", "kept from the previous model.", "--save-operating-point", str(out_pt),
               "--json", str(out_json)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "<- chosen: threshold given" in captured.out
    point = json.loads(out_json.read_text())["operating_point"]
    stored = dict(load_checkpoint(out_pt).spec.operating_point or {})
    assert stored == point
    assert point["score_threshold"] == pytest.approx(0.37)
    assert point["target_false_alarm_share"] is None
    assert point["target_sensitivity"] is None
    assert point["chosen_on"].startswith("kept from the previous model. Measured on ")
    assert point["n_negative"] == 2
    curve = {round(r["threshold"], 4): r for r in report_curve(out_json)}
    assert point["false_alarm_share"] == pytest.approx(curve[0.37]["false_alarm_share"])
    assert point["sensitivity"] == pytest.approx(curve[0.37]["sensitivity"])
