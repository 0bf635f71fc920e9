"""Write the seed corpora of the fuzz targets to ``benchmarks/fuzz/seeds/<target>/`` (small,
synthetic, committed): ``python benchmarks/fuzz/make_seeds.py``. Needs onnx and OpenCV, no torch."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from targets import metadata_table  # noqa: E402

SEEDS = HERE / "seeds"


def _onnx_bytes(props: dict[str, str]) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    graph = helper.make_graph(
        [helper.make_node("Add", ["images", "w"], ["out"])], "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [3, 4])], [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    ext = model.graph.initializer[0]
    ext.ClearField("raw_data")
    ext.data_location = onnx.TensorProto.EXTERNAL
    ext.external_data.add(key="location", value="weights/model.data")
    return model.SerializeToString()


def main() -> None:
    from endoedge.spec import spec_for_foreign_yolo
    from endoedge.tensorrt.gpu_info import GpuInfo
    from endoedge.tensorrt.manifest import MachineInfo, ShapeRange, TensorIO, make_manifest

    endoedge_meta = spec_for_foreign_yolo("yolov8", ("polyp", "adenoma"), (320, 320)).to_metadata()
    ultralytics_meta = {
        "description": "Ultralytics YOLOv8n model trained on polyps.yaml", "author": "Ultralytics",
        "task": "detect", "stride": "32", "batch": "1", "imgsz": "[320, 320]",
        "names": "{0: 'polyp', 1: 'adenoma'}", "version": "8.3.0", "args": "{'batch': 1, 'half': False}",
    }
    import base64

    priors = np.array([[0.1, 0.1, 0.2, 0.2], [0.5, 0.5, 0.3, 0.6]], "<f4")
    ssd_meta = {**endoedge_meta, "endoedge.arch": "ssdlite320_mobilenet_v3_large", "endoedge.decoder": "ssd",
                "endoedge.decoder_params": json.dumps({
                    "box_coder_weights": [10.0, 10.0, 5.0, 5.0], "bbox_xform_clip": 4.135, "topk_candidates": 300,
                    "box_output": "bbox_regression", "logit_output": "cls_logits",
                    "priors_b64": base64.b64encode(priors.tobytes()).decode(), "priors_shape": [2, 4]})}
    from endoedge.spec.endoscopy import EndoscopyConfig
    from endoedge.spec.stabilize import StabilizeConfig

    ssd_meta["endoedge.endoscopy"] = json.dumps(EndoscopyConfig.parse("all").to_dict())
    ssd_meta["endoedge.stabilize"] = json.dumps(StabilizeConfig().to_dict())
    seeds: dict[str, dict[str, bytes]] = {
        "onnx_metadata": {
            "ssd.tsv": metadata_table(ssd_meta),
            "endoedge.tsv": metadata_table(endoedge_meta),
            "ultralytics.tsv": metadata_table(ultralytics_meta),
            "endoedge.onnx": _onnx_bytes(endoedge_meta),
            "ultralytics.onnx": _onnx_bytes(ultralytics_meta),
        },
    }
    gpu = GpuInfo("Orin", "8.7", 16)
    manifest = make_manifest(
        onnx_path="/models/polyp.onnx", onnx_sha256="a" * 64,
        machine=MachineInfo("10.3.0.30", gpu, jetpack="6.1", l4t="36.4.0"), precision="int8",
        int8_source="qdq", calibration_hash="b" * 64,
        profiles=[{"images": ShapeRange((1, 3, 320, 320), (1, 3, 320, 320), (8, 3, 320, 320))}],
        io=[TensorIO("images", "input", "float32", (-1, 3, 320, 320)),
            TensorIO("out", "output", "float32", (-1, 6, 2100))],
        version_compatible=False, hardware_compatibility="none", dla_core=None, spec=endoedge_meta)
    seeds["engine_manifest"] = {"manifest.json": json.dumps(manifest.to_dict(), indent=1).encode()}
    rec = {"path": "a/img_001.jpg", "frame": None, "width": 640, "height": 480, "models": {"m": {"detections": []}}}
    lines = [json.dumps({**rec, "path": f"a/img_{i:03d}.jpg"}) for i in range(3)]
    video = json.dumps({**rec, "path": "clip.mp4", "frame": 7})
    seeds["batch_jsonl"] = {
        "complete.jsonl": ("\n".join([*lines, video]) + "\n").encode(),
        "torn.jsonl": ("\n".join(lines) + "\n" + lines[0][:25]).encode(),
    }
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (12, 16, 3), np.uint8)
    seeds["image_decode"] = {
        f"img{ext}": cv2.imencode(ext, image)[1].tobytes() for ext in (".jpg", ".png", ".bmp", ".tiff", ".webp")
    }
    seeds["image_decode"]["grey16.png"] = cv2.imencode(".png", (image[..., 0].astype(np.uint16) * 257))[1].tobytes()
    seeds["list_file"] = {
        "list.txt": b"# study 12\nimg_001.jpg\n./img_002.jpg\nsub//img_003.png\n\n/abs/img_004.jpg\nimg_001.jpg\n",
        "list.csv": b'path,score\n"img_001.jpg",0.5\nsub/img_002.jpg,1\n',
        "split.txt": b"cju0qkwl35piu0993l0dewei2  # polyp\ncju0s690hkp960855tjuaqvv0\n",
    }
    for target, files in seeds.items():
        folder = SEEDS / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)
        print(f"{target}: {len(files)} seeds, {sum(map(len, files.values()))} bytes")


if __name__ == "__main__":
    main()
