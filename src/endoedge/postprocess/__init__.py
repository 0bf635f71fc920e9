"""Decoders: raw network outputs -> boxes (network-input pixels, xyxy), scores, class ids.

Each decoder is built once from a :class:`~endoedge.spec.ModelSpec` and called per image with
that image's slice of the output tensors. All work is vectorized numpy; NMS is OpenCV's C++
``cv2.dnn.NMSBoxesBatched`` (per class, greedy, IoU > threshold suppresses, same rule and order
as ``torchvision.ops.batched_nms``).
"""

from __future__ import annotations

from endoedge.postprocess.base import Decoder, RawDetections
from endoedge.postprocess.registry import DECODERS, decoder_names, make_decoder

__all__ = ["DECODERS", "Decoder", "RawDetections", "decoder_names", "make_decoder"]
