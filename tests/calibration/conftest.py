"""Fixtures of the quantization tests: labelled / calibration / black frame sets, calibration
data and one INT8 model of the demo SSDLite (built once per session), and a fast layer ranking."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest


@pytest.fixture(scope="session")
def sets(tmp_path_factory, ssdlite, sample_paths):
    """A pseudo-labelled COCO set (the FP32 model's top-3 boxes per frame as ground truth, so
    FP32 scores well), mirrored frames for calibration (disjoint from it), and black frames."""
    import endoedge
    from endoedge.data.imageio import read_image

    root = tmp_path_factory.mktemp("qsets")
    for d in ("data", "calib", "black"):
        (root / d).mkdir()
    images, anns = [], []
    with endoedge.load(ssdlite[2]) as det:
        names = det.spec.class_names
        for i, p in enumerate(sample_paths):
            img = cv2.resize(read_image(p), (480, 270), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(root / "data" / f"f{i}.png"), img)
            cv2.imwrite(str(root / "calib" / f"c{i}.png"), np.ascontiguousarray(img[:, ::-1]))
            cv2.imwrite(str(root / "black" / f"b{i}.png"), np.zeros_like(img))
            r = det.detect(img)
            images.append({"id": i + 1, "file_name": f"f{i}.png", "height": 270, "width": 480})
            for b, c in zip(r.boxes[:3].tolist(), r.class_ids[:3].tolist(), strict=True):
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": c + 1, "iscrowd": 0,
                             "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])})
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(names)]
    (root / "data" / "ann.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


@pytest.fixture(scope="session")
def calib(ssdlite, sets):
    from endoedge.calibration import load_calibration_data

    return load_calibration_data(sets / "calib", ssdlite[0].spec, num_images=8, batch_size=2)


@pytest.fixture(scope="session")
def int8(ssdlite, calib, tmp_path_factory):
    from endoedge.calibration.quantize import quantize_int8

    out = tmp_path_factory.mktemp("int8") / "model.int8.onnx"
    # the ranges are kept beside it (``ranges.json``): tests that re-quantize reuse them
    return quantize_int8(ssdlite[2], out, calib, method="minmax", cache_path=out.parent / "ranges.json")


@pytest.fixture
def cut_ranking(monkeypatch):
    """``cut_ranking(n)``: the float fallback's layer ranking measures only the first ``n``
    quantized nodes, all counted as gaining (fast; for tests of the workflow, not the ranking)."""
    import dataclasses

    import onnx

    from endoedge.calibration import sensitivity

    real = sensitivity.rank_layers

    def cut(n: int) -> None:
        def few_layers(fp32, int8_path, data, **kw):
            names = [name for name, _ in sensitivity.quantized_nodes(onnx.load(str(int8_path)))][:n]
            ranking = real(fp32, int8_path, data, nodes=names, **kw)
            return dataclasses.replace(ranking, layers=[dataclasses.replace(x, gain=abs(x.gain) + 1e-6)
                                                        for x in ranking.layers])

        monkeypatch.setattr(sensitivity, "rank_layers", few_layers)

    return cut
