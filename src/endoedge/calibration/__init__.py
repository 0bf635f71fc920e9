"""Calibration data for INT8 quantization: image folders, globs, videos, labelled datasets.

Example::

    from endoedge.calibration import load_calibration_data
    from endoedge.spec import ModelSpec, read_onnx_metadata

    spec = ModelSpec.from_metadata(read_onnx_metadata("polyp.onnx"))
    data = load_calibration_data("../shared/data/kvasir-seg", spec, num_images=500,
                                 split="data/splits/kvasir_seg_train.txt")
    for feed in data:                  # {"images": 1 x 3 x 320 x 320 float32}
        ...
    print(data.content_hash)           # sha256 of exactly those tensors

The images are chosen to cover the source (:func:`~endoedge.calibration.sources.select`) and
pre-processed by the runtime's own :class:`~endoedge.preprocess.Preprocessor` (and the model's
endoscopy frame cleaning), so calibration sees what deployment sees.
"""

from __future__ import annotations

from endoedge.calibration.data import CalibrationData, load_calibration_data
from endoedge.calibration.sources import Item, discover, select

__all__ = ["CalibrationData", "Item", "discover", "load_calibration_data", "select"]
