"""endoedge: deploy trained PyTorch endoscopy detectors to the edge.

``endoedge.load(path)`` returns a :class:`Detector` over ONNX Runtime or PyTorch. Importing this
package imports numpy only: no torch, CUDA, TensorRT or GStreamer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from endoedge._version import __version__
from endoedge.errors import EndoedgeError

if TYPE_CHECKING:
    from endoedge.classifier import Classification, Classifier, load_classifier
    from endoedge.detector import Detections, Detector, load

__all__ = ["Classification", "Classifier", "Detections", "Detector", "EndoedgeError", "__version__",
           "load", "load_classifier"]


def __getattr__(name: str) -> Any:
    # The detector module pulls in OpenCV; load it on first use so `import endoedge` stays light.
    if name in ("Detections", "Detector", "load"):
        from endoedge import detector

        return getattr(detector, name)
    if name in ("Classification", "Classifier", "load_classifier"):
        from endoedge import classifier

        return getattr(classifier, name)
    raise AttributeError(f"module 'endoedge' has no attribute {name!r}")
