"""Oracle: Ultralytics ONNX exports run through endoedge exactly as Ultralytics' own predict.

Ultralytics (AGPL-3.0) is a test-time peer only. Models are built from Ultralytics' own model
YAMLs (no download) with 3 classes, BatchNorm statistics re-estimated on the bundled frames and
the class bias shifted so a few percent of anchors score above 0.25, as a trained model's do.
Acceptance: >= 99% of detections matched both ways (same class, boxes within 1 px, scores
within 1e-3); all matched when there are at most 100 detections.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest

pytestmark = pytest.mark.ultralytics

torch = pytest.importorskip("torch")

import endoedge  # noqa: E402
from endoedge.spec import spec_for_foreign_yolo  # noqa: E402

NAMES = {0: "normal", 1: "unclear", 2: "tumor"}
IMGSZ = 320


def yolo_from_yaml(family: str, scale_yaml: str, out_dir: Path, frames):
    """``(YOLO, frames as a 0..1 NCHW tensor)``: an Ultralytics model from its YAML with 3 classes and
    BatchNorm statistics re-estimated on ``frames``, in eval mode."""
    import cv2
    import ultralytics
    import yaml
    from ultralytics import YOLO

    cfg = yaml.safe_load((Path(ultralytics.__file__).parent / "cfg" / "models" / family).read_text())
    cfg["nc"] = len(NAMES)
    yaml_path = out_dir / scale_yaml  # Ultralytics reads the scale (n) from the file name
    yaml_path.write_text(yaml.safe_dump(cfg))
    torch.manual_seed(0)  # the random init decides which rows sit on score ties: the same model every run
    yolo = YOLO(str(yaml_path))
    model = yolo.model
    model.names = dict(NAMES)
    batch = np.stack([cv2.resize(f, (IMGSZ, IMGSZ))[..., ::-1] for f in frames])
    x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float() / 255
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()
    return yolo, x


def build_ultralytics_onnx(family: str, scale_yaml: str, out_dir: Path, frames, dynamic: bool) -> Path:
    yolo, x = yolo_from_yaml(family, scale_yaml, out_dir, frames)
    model = yolo.model
    heads = [seq[-1] for seq in model.model[-1].cv3]  # last conv of each class branch
    with torch.no_grad():
        # Temper the class logits (std 1.0, no saturated 1.0 scores that would tie in NMS), then
        # shift them so ~3% of anchors score above 0.25.
        logits = torch.logit(model(x)[0][:, 4:].clamp(1e-6, 1 - 1e-6))
        scale = 1.0 / float(logits.std())
        for conv in heads:
            conv.weight.mul_(scale)
            conv.bias.mul_(scale)
        best = torch.logit(model(x)[0][:, 4:].clamp(1e-6, 1 - 1e-6)).amax(1).flatten()
        shift = float(torch.logit(torch.tensor(0.25)) - torch.quantile(best, 0.97))
        for conv in heads:
            conv.bias += shift
    # A model built from a YAML exports next to its bare file name, i.e. into the working directory.
    old = os.getcwd()
    os.chdir(out_dir)
    try:
        return Path(yolo.export(format="onnx", imgsz=IMGSZ, dynamic=dynamic, simplify=True,
                                verbose=False)).resolve()
    finally:
        os.chdir(old)


@pytest.fixture(scope="module", params=[("v8/yolov8.yaml", "yolov8n.yaml"), ("11/yolo11.yaml", "yolo11n.yaml"),
                                        ("v5/yolov5.yaml", "yolov5n.yaml")],
                ids=["yolov8n", "yolo11n", "yolov5nu"])
def ultralytics_onnx(request, tmp_path_factory, frames):
    d = tmp_path_factory.mktemp(request.param[1].split(".")[0])
    mp = pytest.MonkeyPatch()
    mp.chdir(d)  # Ultralytics writes next to the current directory
    try:
        path = build_ultralytics_onnx(*request.param, d, frames, dynamic=False)
    finally:
        mp.undo()
    return path


def ultralytics_predict(onnx_path, image, conf, iou, max_det, **kwargs):
    from ultralytics import YOLO

    r = YOLO(str(onnx_path), task="detect").predict(
        image, imgsz=IMGSZ, conf=conf, iou=iou, max_det=max_det, verbose=False, **kwargs
    )[0]
    return r.boxes.xyxy.numpy(), r.boxes.conf.numpy(), r.boxes.cls.numpy().astype(int)


def matched_fraction(a_boxes, a_scores, a_cls, b_boxes, b_scores, b_cls):
    """Fraction of detections in ``a`` that ``b`` has too: same class, every coordinate within
    1 px, score within 1e-3."""
    if len(a_boxes) == 0:
        return 1.0
    close = np.abs(a_boxes[:, None, :] - b_boxes[None, :, :]).max(-1) <= 1.0
    close &= a_cls[:, None] == b_cls[None, :]
    close &= np.abs(a_scores[:, None] - b_scores[None, :]) <= 1e-3
    return float(close.any(axis=1).mean())


def assert_same(ref, got):
    """Both ways >= 99% matched. Exact equality is not expected: boxes whose IoU sits on the
    NMS threshold can flip, because Ultralytics offsets classes by 7680 px in float32 before
    torchvision's NMS, where endoedge uses OpenCV's per-class NMS in float64."""
    boxes, scores, classes = ref
    assert len(boxes) > 0 or len(got) == 0
    ours = (got.boxes, got.scores, got.class_ids)
    assert matched_fraction(*ref, *ours) >= 0.99, f"Ultralytics' {len(boxes)} vs our {len(got)}"
    assert matched_fraction(*ours, *ref) >= 0.99, f"our {len(got)} vs Ultralytics' {len(boxes)}"
    if len(boxes) <= 100:  # small sets must agree exactly (order may differ on tied scores)
        assert len(got) == len(boxes)
        assert matched_fraction(*ref, *ours) == 1.0
        assert matched_fraction(*ours, *ref) == 1.0


@pytest.mark.parametrize(("conf", "iou", "max_det"), [(0.25, 0.7, 300), (0.4, 0.5, 5)])
def test_matches_ultralytics_predict(ultralytics_onnx, frames, conf, iou, max_det):
    total = 0
    with endoedge.load(ultralytics_onnx, score_threshold=conf, iou_threshold=iou,
                       max_detections=max_det) as det:
        assert det.spec.producer == "ultralytics"
        assert det.spec.class_names == ("normal", "unclear", "tumor")
        assert det.spec.preprocess.resize == "letterbox"
        for image in frames:
            ref = ultralytics_predict(ultralytics_onnx, image, conf, iou, max_det)
            assert_same(ref, det.detect(image))
            total += len(ref[0])
    assert total > 0


def test_defaults_are_ultralytics_predict_defaults(ultralytics_onnx, frames):
    with endoedge.load(ultralytics_onnx) as det:
        spec = det.spec
        assert (spec.score_threshold, spec.iou_threshold, spec.max_detections) == (0.25, 0.7, 300)
        assert_same(ultralytics_predict(ultralytics_onnx, frames[1], 0.25, 0.7, 300), det.detect(frames[1]))


def _to_yolov5_layout(v8_path: Path, out: Path) -> Path:
    """Rewrite a YOLOv8-layout ONNX (B, 4+nc, A) into the original YOLOv5 layout (B, A, 5+nc).

    Objectness = best class score, class columns = scores / objectness, so objectness x class
    equals the v8 score and Ultralytics' predictions on the v8 model are the oracle.
    """
    from onnx import TensorProto, helper

    model = onnx.load(str(v8_path))
    g = model.graph
    old = g.output[0].name
    nc = len(NAMES)
    g.node.extend([
        helper.make_node("Transpose", [old], ["t"], perm=[0, 2, 1]),
        helper.make_node("Split", ["t", "split_sizes"], ["xywh", "cls"], axis=2),
        helper.make_node("ReduceMax", ["cls", "axis2"], ["obj"], keepdims=1),
        helper.make_node("Div", ["cls", "obj"], ["cls_norm"]),
        helper.make_node("Concat", ["xywh", "obj", "cls_norm"], ["output_v5"], axis=2),
    ])
    g.initializer.extend([
        helper.make_tensor("split_sizes", TensorProto.INT64, [2], [4, nc]),
        helper.make_tensor("axis2", TensorProto.INT64, [1], [2]),
    ])
    g.output.pop()
    g.output.append(helper.make_tensor_value_info("output_v5", TensorProto.FLOAT, None))
    del model.metadata_props[:]  # the original YOLOv5 export carries no Ultralytics metadata
    onnx.save(model, str(out))
    return out


@pytest.mark.parametrize("ultralytics_onnx", [("v8/yolov8.yaml", "yolov8n.yaml")], indirect=True, ids=["yolov8n"])
def test_original_yolov5_layout_with_explicit_flags(ultralytics_onnx, frames, tmp_path):
    v5 = _to_yolov5_layout(ultralytics_onnx, tmp_path / "yolov5_layout.onnx")
    with pytest.raises(endoedge.EndoedgeError, match="--decoder"):
        endoedge.load(v5)
    spec = spec_for_foreign_yolo("yolov5", tuple(NAMES.values()), (IMGSZ, IMGSZ))
    with endoedge.load(v5, spec=spec, iou_threshold=0.7) as det:
        for image in frames:
            assert_same(ultralytics_predict(ultralytics_onnx, image, 0.25, 0.7, 300), det.detect(image))


def test_dynamic_batch_ultralytics_export(tmp_path, frames, monkeypatch):
    """A dynamic export runs as one batch. Ultralytics letterboxes dynamic-shape ONNX to the
    smallest stride-multiple rectangle by default; endoedge keeps the square training size, which
    Ultralytics does with rect=False."""
    monkeypatch.chdir(tmp_path)
    path = build_ultralytics_onnx("v8/yolov8.yaml", "yolov8n.yaml", tmp_path, frames, dynamic=True)
    with endoedge.load(path) as det:
        assert det.backend.max_batch is None
        batch = det.detect_batch(frames)
        for image, got in zip(frames, batch, strict=True):
            assert_same(ultralytics_predict(path, image, 0.25, 0.7, 300, rect=False), got)
