"""Every kind of ONNX endoedge writes builds under TensorRT for RTX for 8.6 and 8.9 (real builds).

The shipped SSD (FP32/FP16/INT8) is in ``test_rtx_build.py``; here: Ultralytics YOLOv8n and
YOLO11n exports (dynamic batch) in FP32 and as endoedge's FP16 and Q/DQ INT8 copies, and a frame
classifier (torchvision MobileNetV3-Small, random weights) exported by ``export_classifier``.
Each build's I/O must be what the real parser reads from the ONNX. YOLO26/YOLOv10 end-to-end
exports: ``tests/postprocess/test_ultralytics_end2end.py``.
"""

from __future__ import annotations

import pytest

from endoedge.tensorrt.build import build_engine
from endoedge.tensorrt.plan import BuildRequest
from tests.tensorrt.test_rtx_build import FRAMES, parsed_io

pytestmark = pytest.mark.trt_rtx

TARGETS = ("8.6", "8.9")


def _build(src, out):
    result = build_engine(src, out, BuildRequest(runtime="rtx", compute_capabilities=TARGETS))
    m = result.manifest
    assert m.flavour == "rtx"
    assert m.compute_capabilities == TARGETS
    assert [(t.name, t.mode, t.dtype, t.shape) for t in m.io] == parsed_io(src)
    assert result.engine_path.stat().st_size > 1_000_000
    return m


def _int8(src, out):
    from endoedge.calibration import load_calibration_data
    from endoedge.calibration.quantize import quantize_int8
    from endoedge.spec import ModelSpec, read_onnx_metadata

    spec = ModelSpec.from_metadata(read_onnx_metadata(src))
    data = load_calibration_data(FRAMES, spec, num_images=2, batch_size=1)
    return quantize_int8(src, out, data, method="minmax").path


@pytest.mark.ultralytics
@pytest.mark.parametrize(("family", "scale"), [("v8/yolov8.yaml", "yolov8n.yaml"), ("11/yolo11.yaml", "yolo11n.yaml")],
                         ids=["yolov8n", "yolo11n"])
def test_ultralytics_yolo_fp32_fp16_int8_build(tmp_path, frames, monkeypatch, family, scale):
    pytest.importorskip("ultralytics")
    from tests.postprocess.test_ultralytics import build_ultralytics_onnx

    monkeypatch.chdir(tmp_path)  # Ultralytics writes next to the current directory
    fp32 = build_ultralytics_onnx(family, scale, tmp_path, frames, dynamic=True)
    m = _build(fp32, tmp_path / "fp32.engine")
    assert m.precision == "fp32"
    assert m.profiles[0]["images"].max[0] == 8  # dynamic batch: the default 1:1:8 profile
    from endoedge.calibration.quantize import convert_fp16

    assert _build(convert_fp16(fp32, tmp_path / "fp16.onnx").path, tmp_path / "fp16.engine").precision == "fp16"
    m8 = _build(_int8(fp32, tmp_path / "int8.onnx"), tmp_path / "int8.engine")
    assert m8.precision == "int8"
    assert m8.int8_source == "qdq"


def test_classifier_builds(tmp_path):
    torch = pytest.importorskip("torch")
    from torchvision.models import mobilenet_v3_small

    from endoedge.export import export_classifier

    torch.manual_seed(0)
    model = mobilenet_v3_small(num_classes=8).eval()
    export_classifier(model, tmp_path / "clf.onnx", [f"c{i}" for i in range(8)], input_size=(224, 224))
    m = _build(tmp_path / "clf.onnx", tmp_path / "clf.engine")
    assert m.spec["endoedge.decoder"] == "classify"
    assert [t.name for t in m.outputs] == ["logits"]
