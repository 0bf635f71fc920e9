"""torchvision's SSD family: ``ssdlite320_mobilenet_v3_large`` and ``ssd300_vgg16``.

Models are built with ``weights=None, weights_backbone=None`` (nothing is downloaded). The
exported network is the backbone + heads only: it maps a normalized batch to
``bbox_regression`` (N x A x 4) and ``cls_logits`` (N x A x C, C includes background at index
0). Anchors are constant for a fixed input size and travel as metadata; decoding and NMS run in
:mod:`endoedge.postprocess.ssd`, matching ``SSD.postprocess_detections``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from endoedge._optional import require
from endoedge.models.registry import Architecture, register_arch
from endoedge.spec import ModelSpec, PreprocessSpec

OUTPUT_NAMES = ("bbox_regression", "cls_logits")
DEFAULT_SCORE_THRESHOLD = 0.25  # deployment default; torchvision's eval default (0.001/0.01) is for mAP


def _tv_detection() -> Any:
    require("torch", extra="torch", purpose="building PyTorch models")
    return require("torchvision.models.detection", extra="torch", purpose="torchvision SSD models")


def build_ssdlite(num_classes: int, input_size: tuple[int, int]) -> Any:
    """SSDLite320-MobileNetV3-Large, randomly initialised, for ``input_size`` (square)."""
    model = _tv_detection().ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=num_classes
    )
    # SSDLite's anchors are relative to the feature maps, so another square size only needs the
    # transform changed (torchvision hard-codes 320 in the constructor).
    model.transform.fixed_size = input_size
    model.transform.min_size = (min(input_size),)
    model.transform.max_size = max(input_size)
    return model


def build_ssd300(num_classes: int, input_size: tuple[int, int]) -> Any:
    """SSD300-VGG16, randomly initialised (its anchor steps fix the input at 300 x 300)."""
    return _tv_detection().ssd300_vgg16(weights=None, weights_backbone=None, num_classes=num_classes)


def _raw_heads_module() -> type:
    torch = require("torch", extra="torch", purpose="PyTorch models")

    class SSDRawHeads(torch.nn.Module):  # type: ignore[name-defined]
        """Backbone + heads of a torchvision SSD: normalized batch -> (bbox_regression, cls_logits)."""

        def __init__(self, ssd: Any) -> None:
            super().__init__()
            self.backbone = ssd.backbone
            self.head = ssd.head

        def forward(self, images: Any) -> tuple[Any, Any]:
            features = self.backbone(images)
            feats = [features] if isinstance(features, torch.Tensor) else list(features.values())
            out = self.head(feats)
            return out["bbox_regression"], out["cls_logits"]

    return SSDRawHeads


def raw_heads(model: Any) -> Any:
    """Wrap a torchvision SSD into its exportable raw-head module (shares the weights)."""
    return _raw_heads_module()(model).eval()


def priors(model: Any) -> np.ndarray:
    """The model's anchors for its fixed input size, ``A x 4`` xyxy in network-input pixels."""
    torch = require("torch", extra="torch", purpose="PyTorch models")
    image_list = require("torchvision.models.detection.image_list", extra="torch", purpose="SSD anchors")
    h, w = model.transform.fixed_size
    was_training = model.training
    model.eval()
    with torch.no_grad():
        x = torch.zeros(1, 3, h, w)
        features = model.backbone(x)
        feats = [features] if isinstance(features, torch.Tensor) else list(features.values())
        anchors = model.anchor_generator(image_list.ImageList(x, [(h, w)]), feats)[0]
    model.train(was_training)
    return anchors.numpy().astype(np.float32)


def make_spec(model: Any, arch_name: str, class_names: tuple[str, ...]) -> ModelSpec:
    """Describe a torchvision SSD: its transform's normalization and fixed size, box coder, anchors."""
    t = model.transform
    h, w = t.fixed_size
    return ModelSpec(
        arch=arch_name,
        class_names=tuple(class_names),
        preprocess=PreprocessSpec(
            input_size=(int(h), int(w)),
            resize="stretch",
            color="RGB",
            mean=tuple(float(v) for v in t.image_mean),  # type: ignore[arg-type]
            std=tuple(float(v) for v in t.image_std),  # type: ignore[arg-type]
        ),
        decoder="ssd",
        decoder_params={
            "priors": priors(model),
            "box_coder_weights": [float(v) for v in model.box_coder.weights],
            "bbox_xform_clip": float(model.box_coder.bbox_xform_clip),
            "topk_candidates": int(model.topk_candidates),
            "box_output": OUTPUT_NAMES[0],
            "logit_output": OUTPUT_NAMES[1],
        },
        score_threshold=DEFAULT_SCORE_THRESHOLD,
        iou_threshold=float(model.nms_thresh),
        max_detections=int(model.detections_per_img),
    )


register_arch(
    Architecture(
        name="ssdlite320_mobilenet_v3_large",
        description="torchvision SSDLite320 with MobileNetV3-Large (fast, CPU/Jetson friendly)",
        default_input_size=(320, 320),
        resizable=True,
        build=build_ssdlite,
        raw_heads=raw_heads,
        output_names=OUTPUT_NAMES,
        make_spec=make_spec,
    )
)
register_arch(
    Architecture(
        name="ssd300_vgg16",
        description="torchvision SSD300 with VGG16 (the original SSD; input fixed at 300 x 300)",
        default_input_size=(300, 300),
        resizable=False,
        build=build_ssd300,
        raw_heads=raw_heads,
        output_names=OUTPUT_NAMES,
        make_spec=make_spec,
    )
)
