"""Oracle: NMS-free (end-to-end) Ultralytics exports, YOLO26 and YOLOv10 (``nms=False``: one
``B x 300 x 6`` output), run through endoedge exactly as Ultralytics' own predict; and they
build under TensorRT for RTX.

Models come from Ultralytics' own YAMLs (no download), 3 classes, BatchNorm statistics
re-estimated on the bundled frames, and the one-to-one class bias shifted so that about 15 of
the 300 rows per frame score above 0.3 (random heads otherwise score nothing). Acceptance: the
same detections both ways (same class, boxes within 1 px, scores within 1e-3).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.ultralytics

torch = pytest.importorskip("torch")

import endoedge  # noqa: E402
from tests.postprocess.test_ultralytics import (  # noqa: E402
    IMGSZ,
    matched_fraction,
    ultralytics_predict,
    yolo_from_yaml,
)


def build_end2end_onnx(family: str, scale_yaml: str, out_dir: Path, frames, dynamic: bool = False) -> Path:
    yolo, x = yolo_from_yaml(family, scale_yaml, out_dir, frames)
    model = yolo.model
    model.end2end = True
    head = model.model[-1]
    convs = [seq[-1] for seq in head.one2one_cv3]  # last conv of each one-to-one class branch
    with torch.no_grad():
        out = model(x)
        rows = out[0] if isinstance(out, tuple | list) else out
        assert rows.shape[1:] == (300, 6), rows.shape
        logits = torch.logit(rows[..., 4].clamp(1e-6, 1 - 1e-6))  # sorted by score per image
        shift = float(torch.logit(torch.tensor(0.3)) - logits[:, 15].median())
        for conv in convs:
            conv.bias += shift
    path = yolo.export(format="onnx", imgsz=IMGSZ, nms=False, dynamic=dynamic, simplify=True, verbose=False)
    return Path(path).resolve()


@pytest.fixture(scope="module", params=[("26/yolo26.yaml", "yolo26n.yaml"), ("v10/yolov10n.yaml", "yolov10n.yaml")],
                ids=["yolo26n", "yolov10n"])
def end2end_onnx(request, tmp_path_factory, frames):
    d = tmp_path_factory.mktemp(request.param[1].split(".")[0])
    mp = pytest.MonkeyPatch()
    mp.chdir(d)  # Ultralytics writes next to the current directory
    try:
        path = build_end2end_onnx(*request.param, d, frames)
    finally:
        mp.undo()
    return path


@pytest.mark.parametrize(("conf", "max_det"), [(0.25, 300), (0.4, 5)])
def test_end2end_matches_ultralytics_predict(end2end_onnx, frames, conf, max_det):
    import onnx

    shape = [d.dim_value for d in onnx.load(str(end2end_onnx)).graph.output[0].type.tensor_type.shape.dim]
    assert shape == [1, 300, 6]
    total = 0
    with endoedge.load(end2end_onnx, score_threshold=conf, max_detections=max_det) as det:
        assert det.spec.decoder == "yolo_end2end"
        assert det.spec.class_names == ("normal", "unclear", "tumor")
        for image in frames:
            ref = ultralytics_predict(end2end_onnx, image, conf, 0.7, max_det)
            got = det.detect(image)
            assert len(got) == len(ref[0])
            # the graph keeps its top 300 rows: when all 300 pass ``conf``, a row on a score tie at
            # that cut can differ after the two letterboxes' rounding (as NMS ties in assert_same)
            need = 1.0 if len(got) <= 100 else 0.99
            assert matched_fraction(*ref, got.boxes, got.scores, got.class_ids) >= need
            assert matched_fraction(got.boxes, got.scores, got.class_ids, *ref) >= need
            total += len(got)
    assert total > 0


@pytest.mark.trt_rtx
def test_end2end_builds_under_tensorrt_for_rtx(end2end_onnx, tmp_path):
    from endoedge.tensorrt.build import build_engine
    from endoedge.tensorrt.plan import BuildRequest

    result = build_engine(end2end_onnx, tmp_path / "e2e.engine",
                          BuildRequest(runtime="rtx", compute_capabilities=("8.6", "8.9")))
    m = result.manifest
    assert [(t.name, t.shape) for t in m.outputs] == [("output0", (1, 300, 6))]
    assert m.spec["end2end"] == "True"
    assert result.engine_path.stat().st_size > 1_000_000
