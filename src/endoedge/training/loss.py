"""SSD training loss on raw head outputs: anchor matching, box regression, classification.

Matching and box encoding are torchvision's own (the model's ``proposal_matcher`` and
``box_coder``), so what is learnt is what :class:`~torchvision.models.detection.ssd.SSD` and
endoedge's SSD decoder decode. Classification is either torchvision's softmax cross-entropy with
3:1 hard-negative mining, or a focal loss. The deployed decoder takes a softmax over the classes
(background at 0), so the focal loss is the softmax form ``-alpha_t (1 - p_t)^gamma log p_t``;
with one foreground class it equals the sigmoid focal loss on the logit difference
``fg - background``, i.e. on the very score the decoder outputs.
"""

from __future__ import annotations

from typing import Any

from endoedge._optional import require


def _torch() -> Any:
    return require("torch", extra="torch", purpose="training")


def match_targets(model: Any, anchors: Any, targets: list[dict[str, Any]]) -> tuple[Any, Any]:
    """Per-anchor targets for a batch.

    Args:
        model: the torchvision SSD (its ``proposal_matcher`` and ``box_coder`` are used).
        anchors: ``A x 4`` xyxy anchors in network-input pixels.
        targets: per image ``{"boxes": n x 4 xyxy input pixels, "labels": n int64 1-based}``.

    Returns:
        ``(cls_targets N x A int64 with 0 = background, box_targets N x A x 4 encoded)``.
    """
    torch = _torch()
    box_ops = require("torchvision.ops", extra="torch", purpose="training")
    cls_t, box_t = [], []
    for t in targets:
        boxes, labels = t["boxes"], t["labels"]
        if boxes.numel() == 0:
            cls_t.append(torch.zeros(len(anchors), dtype=torch.int64, device=anchors.device))
            box_t.append(torch.zeros_like(anchors))
            continue
        matched = model.proposal_matcher(box_ops.box_iou(boxes, anchors))  # -1: below threshold
        fg = matched >= 0
        idx = matched.clamp(min=0)
        cls_t.append(torch.where(fg, labels[idx], torch.zeros_like(labels[idx])))
        box_t.append(model.box_coder.encode_single(boxes[idx], anchors))
    return torch.stack(cls_t), torch.stack(box_t)


def ssd_loss(
    model: Any,
    head_outputs: dict[str, Any],
    anchors: Any,
    targets: list[dict[str, Any]],
    *,
    focal: bool = False,
    gamma: float = 2.0,
    alpha: float = 0.25,
    neg_to_pos: int = 3,
) -> dict[str, Any]:
    """The SSD loss of a batch, normalized by the number of matched (foreground) anchors.

    Args:
        head_outputs: ``{"bbox_regression": N x A x 4, "cls_logits": N x A x C}``.
        anchors: ``A x 4`` xyxy (the same for every image of a fixed-size batch).
        focal: focal classification loss over all anchors instead of hard-negative-mined CE.
        gamma, alpha: focal parameters (``alpha`` weights foreground anchors, ``1 - alpha``
            background ones, as in RetinaNet).
        neg_to_pos: hard negatives kept per positive (CE only); an image without boxes keeps
            ``neg_to_pos`` x the batch's mean positives per boxed image.

    Returns:
        ``{"bbox_regression": scalar, "classification": scalar}``.
    """
    torch = _torch()
    functional = torch.nn.functional
    cls_t, box_t = match_targets(model, anchors, targets)
    bbox, logits = head_outputs["bbox_regression"], head_outputs["cls_logits"]
    fg = cls_t > 0
    n_fg = fg.sum().clamp(min=1).float()
    box_loss = functional.smooth_l1_loss(bbox[fg], box_t[fg], reduction="sum") / n_fg
    num_classes = logits.shape[-1]
    ce = functional.cross_entropy(logits.reshape(-1, num_classes), cls_t.reshape(-1), reduction="none")
    ce = ce.view(cls_t.shape)
    if focal:
        p_t = torch.exp(-ce)
        weight = torch.where(fg, alpha, 1.0 - alpha) * (1.0 - p_t) ** gamma
        cls_loss = (weight * ce).sum() / n_fg
    else:
        # torchvision's hard negative mining: per image, the neg_to_pos * positives
        # highest-loss background anchors. A polyp-free image has no positive; it keeps as many
        # hard negatives as an average boxed image of the batch (torchvision would keep none, so
        # negative frames would teach nothing).
        n_pos = fg.sum(1, keepdim=True)
        with_fg = n_pos > 0
        mean_pos = (n_pos.sum() / with_fg.sum().clamp(min=1)).round().clamp(min=1).long()
        num_neg = neg_to_pos * torch.where(with_fg, n_pos, mean_pos)
        neg_loss = ce.clone()
        neg_loss[fg] = -float("inf")
        _, idx = neg_loss.sort(1, descending=True)
        _, order = idx.sort(1)
        hard_neg = order < num_neg
        cls_loss = (ce[fg].sum() + ce[hard_neg].sum()) / n_fg
    return {"bbox_regression": box_loss, "classification": cls_loss}


def init_focal_bias(model: Any, prior: float = 0.01) -> None:
    """Start the background logit at ``log((C - 1)(1 - prior) / prior)`` above the foreground
    ones, so every class starts at score ~``prior`` (RetinaNet's init for focal loss)."""
    torch = _torch()
    import math

    head = model.head.classification_head
    num_classes = head.num_columns
    bias_bg = math.log((num_classes - 1) * (1 - prior) / prior)
    with torch.no_grad():
        for layer in head.module_list:
            conv = layer[-1] if isinstance(layer, torch.nn.Sequential) else layer
            b = conv.bias.view(-1, num_classes)
            b.zero_()
            b[:, 0] = bias_bg
