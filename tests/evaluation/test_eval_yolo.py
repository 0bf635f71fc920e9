"""endoedge eval on a YOLO folder whose negatives are frames with empty label files (the
WCEBleedGen layout): frame-level AUC, sensitivity and specificity beside box mAP.

Oracles: the model run frame by frame through ``endoedge.load(...).detect`` (frame score = max
detection score), the AUC as the share of (positive, negative) pairs ranked right (ties half),
counted pair by pair; the frame rates counted from the same scores.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import cv2
import pytest

from endoedge.cli import main


@pytest.fixture(scope="module")
def yolo_capsule(tmp_path_factory, sample_paths) -> Path:
    """8 frames 640 x 640: 4 with a `polyp` box (YOLO cx cy w h), 4 with an empty label file."""
    root = tmp_path_factory.mktemp("yolo")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    for i, p in enumerate(sample_paths[:8]):
        img = cv2.resize(cv2.imread(str(p))[60:1020, 480:1440], (640, 640), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(root / "images" / f"f{i}.jpg"), img)
        label = f"0 {0.3 + 0.05 * i:.3f} 0.45 0.30 0.35\n" if i % 2 == 0 else ""
        (root / "labels" / f"f{i}.txt").write_text(label)
    return root


def test_eval_yolo_frame_metrics_with_empty_label_negatives(polyp_onnx, yolo_capsule, tmp_path, capsys):
    import endoedge

    out = tmp_path / "r.json"
    conf = 0.3
    rc = main(["eval", str(polyp_onnx), str(yolo_capsule), "--names", "polyp", "--conf", str(conf),
               "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    assert "AUC of the frame score" in text
    assert "specificity" in text
    report = json.loads(out.read_text())
    assert report["n_images"] == 8
    assert report["n_negative_images"] == 0  # the negatives are inside the dataset
    assert report["frame"]["negatives"] == "4 dataset images without boxes"
    assert 0.0 <= report["coco"]["map50"] <= 1.0
    with endoedge.load(polyp_onnx, score_threshold=0.001) as det:
        scores = {}
        for f in sorted((yolo_capsule / "images").glob("*.jpg")):
            d = det.detect(cv2.imread(str(f)))
            scores[f.stem] = float(d.scores.max()) if len(d) else 0.0
    pos = [s for k, s in scores.items() if int(k[1:]) % 2 == 0]
    neg = [s for k, s in scores.items() if int(k[1:]) % 2 == 1]
    pairs = [1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)]
    assert report["auc"]["n_positive"] == 4
    assert report["auc"]["n_negative"] == 4
    assert report["auc"]["value"] == pytest.approx(sum(pairs) / len(pairs), abs=1e-9)
    assert report["frame"]["sensitivity"] == pytest.approx(sum(s >= conf for s in pos) / 4)
    assert report["frame"]["specificity"] == pytest.approx(sum(s < conf for s in neg) / 4)
