"""The multi-task loss of :mod:`endoedge.models.multitask_ssd`: boxes, mask and frame triage.

``total = box + cls + mask_weight * (weighted BCE + weighted IoU) + frame_weight * CE``:

* boxes: :func:`~endoedge.training.loss.ssd_loss` (smooth-L1 regression; focal or hard-negative
  mined classification), normalized by the matched anchors;
* mask: the "structure loss" of F3Net/PraNet on the stride-4 logits against the area-downsampled
  ground-truth mask (soft targets in 0..1): binary cross-entropy and soft IoU, both weighted per
  pixel by ``1 + 5 |avgpool31(mask) - mask|`` so boundaries count most. A polyp-free frame has an
  all-zero target (its IoU term is smoothed: an empty prediction costs nothing);
* frame: cross-entropy over ``normal / unclear / polyp`` with label smoothing 0.05.
"""

from __future__ import annotations

from typing import Any

from endoedge._optional import require
from endoedge.training.loss import ssd_loss


def _torch() -> Any:
    return require("torch", extra="torch", purpose="training")


def structure_loss(logits: Any, target: Any, *, kernel: int = 31) -> tuple[Any, Any]:
    """Boundary-weighted BCE and soft-IoU terms (batch means).

    Args:
        logits: ``N x 1 x h x w`` mask logits.
        target: ``N x 1 x h x w`` float targets in 0..1 at the same resolution.
        kernel: the boundary window in target pixels (31 at stride 4 = 124 input pixels at 320 px
            is F3Net's 31 at its 352-px stride 1 scaled down, clipped to the map size).
    """
    torch = _torch()
    functional = torch.nn.functional
    k = min(kernel, (min(target.shape[-2:]) // 2) * 2 - 1)
    weight = 1 + 5 * torch.abs(functional.avg_pool2d(target, k, 1, k // 2, count_include_pad=False) - target)
    bce = functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    wbce = (weight * bce).sum((2, 3)) / weight.sum((2, 3))
    prob = torch.sigmoid(logits)
    inter = (prob * target * weight).sum((2, 3))
    union = ((prob + target) * weight).sum((2, 3))
    wiou = 1 - (inter + 1) / (union - inter + 1)
    return wbce.mean(), wiou.mean()


def multitask_loss(
    model: Any,
    head_outputs: dict[str, Any],
    mask_logits: Any,
    frame_logits: Any,
    anchors: Any,
    targets: list[dict[str, Any]],
    *,
    focal: bool = True,
    mask_weight: float = 1.0,
    frame_weight: float = 0.5,
) -> dict[str, Any]:
    """All loss terms of a batch and their weighted ``total``.

    Args:
        head_outputs: the SSD head's ``bbox_regression`` and ``cls_logits``.
        mask_logits: ``N x 1 x h x w`` (stride 4 of the input).
        frame_logits: ``N x K``.
        targets: per image ``boxes`` / ``labels`` (as :func:`ssd_loss`), ``mask`` (``H x W``
            float 0..1 at the network input size) and ``frame`` (int64 scalar class index).
    """
    torch = _torch()
    functional = torch.nn.functional
    terms = ssd_loss(model, head_outputs, anchors, targets, focal=focal)
    masks = torch.stack([t["mask"] for t in targets])[:, None]
    small = functional.adaptive_avg_pool2d(masks, mask_logits.shape[-2:])
    bce, iou = structure_loss(mask_logits, small)
    frames = torch.stack([t["frame"] for t in targets])
    ce = functional.cross_entropy(frame_logits, frames, label_smoothing=0.05)
    total = (terms["bbox_regression"] + terms["classification"] + mask_weight * (bce + iou)
             + frame_weight * ce)
    return {"total": total, "box": terms["bbox_regression"], "cls": terms["classification"],
            "mask_bce": bce, "mask_iou": iou, "frame": ce}
