"""Training the multi-task SSD (boxes + polyp mask + normal / unclear / polyp frame triage).

:class:`MultiTaskTrainer` is the SSD :class:`~endoedge.training.trainer.Trainer` with masks and
frame labels added to every sample:

* boxed images (Kvasir-SEG: ``images/`` with ``masks/`` beside it, same file names, binary JPEG
  masks thresholded at > 127) are ``polyp`` frames with their mask;
* polyp-free frames (``normal_set``: ``endoedge train --negatives``, e.g. the PolypGen negative
  sequences) are ``normal`` frames with an empty mask and no box, all of them every epoch (the
  SSD trainer's hard-negative draw is not used);
* each augmented sample is, with probability ``unclear_ratio``, degraded by
  :func:`~endoedge.training.degrade.degrade` and labelled ``unclear`` (its boxes and mask stay:
  the detector should still find what it can, the triage says the view is unreadable).

The mask travels through the same geometric augmentation as the image (as a 4th channel).
Validation adds mask Dice / IoU and triage accuracy (each val frame clean, and degraded with a
fixed seed) to the COCO box metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from endoedge.data.datasets import Dataset, Sample
from endoedge.data.masks import mask_path
from endoedge.errors import InputError, ModelFormatError
from endoedge.evaluation.multitask import mask_overlap, mask_summary
from endoedge.models.multitask_ssd import FRAME_CLASSES
from endoedge.training.augment import color_jitter, dihedral, random_scale_crop
from endoedge.training.degrade import degrade
from endoedge.training.domain_augment import domain_augment
from endoedge.training.multitask_loss import multitask_loss
from endoedge.training.trainer import TrainConfig, Trainer

logger = logging.getLogger(__name__)

NORMAL, UNCLEAR, POLYP = (FRAME_CLASSES.index(c) for c in ("normal", "unclear", "polyp"))


@dataclass
class MultiTaskConfig(TrainConfig):
    """:class:`TrainConfig` plus the multi-task weights and the share of degraded samples."""

    unclear_ratio: float = 0.25
    mask_weight: float = 1.0
    frame_weight: float = 0.5
    focal: bool = True


def load_masks(samples: list[Sample], size: int, *, required: int,
               crops: Sequence[tuple[int, int, int, int]] | None = None) -> np.ndarray:
    """``N x size x size`` uint8 masks (0 / 1) stretched like the images; samples from index
    ``required`` on are polyp-free (empty masks). ``crops``: per sample, the source rectangle
    ``(x0, y0, x1, y1)`` its cached image shows (:attr:`CachedImages.crops`); the mask is cut
    the same way before resizing.

    Raises:
        InputError: a boxed image has no mask file (``masks/`` beside ``images/``).
    """
    import cv2

    out = np.zeros((len(samples), size, size), np.uint8)
    for i, s in enumerate(samples[:required]):
        p = mask_path(s)
        m = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) if p is not None else None
        if m is None:
            raise InputError(f"no readable mask for {s.path} (expected {s.path.parent.parent / 'masks' / s.path.name}); "
                             "multi-task training needs Kvasir-SEG style masks/ beside images/")
        if crops is not None:
            x0, y0, x1, y1 = crops[i]
            m = m[y0:y1, x0:x1]
        out[i] = cv2.resize(m, (size, size), interpolation=cv2.INTER_AREA) > 127
    return out


def _with_normals(boxed: Dataset, normals: Dataset | None) -> Dataset:
    if normals is None or not normals.samples:
        return boxed
    if any(len(s.boxes) for s in normals.samples):
        raise InputError("the normal (polyp-free) frames must not carry boxes")
    return Dataset(boxed.samples + normals.samples, boxed.class_names, boxed.source, dict(boxed.meta))


class MultiTaskTrainer(Trainer):
    """The SSD trainer with masks, frame labels and the multi-task loss; see the module doc."""

    def __init__(self, cfg: MultiTaskConfig, train_set: Dataset, val_set: Dataset,
                 normal_set: Dataset | None = None, val_normal_set: Dataset | None = None) -> None:
        self.n_boxed = len(train_set.samples)
        self.n_val_boxed = len(val_set.samples)
        super().__init__(cfg, _with_normals(train_set, normal_set), _with_normals(val_set, val_normal_set))
        self.mt_cfg = cfg
        if not hasattr(self.model.backbone, "forward_all"):
            raise ModelFormatError(f"{cfg.arch} is not a multi-task architecture (no mask / frame outputs)")
        self.train_masks: np.ndarray | None = None
        self.val_masks: np.ndarray | None = None

    def load_data(self) -> None:
        """Images (as the SSD trainer) plus masks at the same sizes."""
        super().load_data()
        assert self.train_cache is not None
        assert self.val_cache is not None
        self.train_masks = load_masks(self.train_set.samples, self.train_cache.images.shape[1],
                                      required=self.n_boxed, crops=self.train_cache.crops)
        self.val_masks = load_masks(self.val_set.samples, self.val_cache.images.shape[1],
                                    required=self.n_val_boxed, crops=self.val_cache.crops)

    def _batch(self, idx: np.ndarray) -> tuple[Any, list[dict[str, Any]]]:
        assert self.train_cache is not None
        assert self.train_masks is not None
        torch, c, cfg = self.torch, self.train_cache, self.mt_cfg
        aug = cfg.augment
        imgs, targets = [], []
        for i in idx:
            rgbm = np.concatenate([c.images[i], self.train_masks[i][..., None] * 255], 2)
            boxes = c.boxes[i]
            if aug.dihedral:
                rgbm, boxes = dihedral(rgbm, boxes, int(self.rng.integers(4)), bool(self.rng.integers(2)))
            rgbm, boxes, labels = random_scale_crop(rgbm, boxes, c.labels[i], cfg.imgsz, self.rng, aug)
            img = color_jitter(np.ascontiguousarray(rgbm[..., :3]), self.rng, aug)
            if aug.domain is not None:
                img = domain_augment(img, self.rng, aug.domain, boxes)
            frame = POLYP if len(boxes) else NORMAL
            if self.rng.random() < cfg.unclear_ratio:
                img, frame = degrade(img, self.rng), UNCLEAR
            imgs.append(img)
            targets.append({
                "boxes": torch.from_numpy(boxes).to(self.device),
                "labels": torch.from_numpy(labels + 1).to(self.device),
                "mask": torch.from_numpy(rgbm[..., 3].astype(np.float32) / 255).to(self.device),
                "frame": torch.tensor(frame, dtype=torch.int64, device=self.device),
            })
        return self._to_tensor(np.stack(imgs)), targets

    def train_step(self, x: Any, targets: list[dict[str, Any]]) -> dict[str, float]:
        """One optimizer step of the multi-task loss; returns ``loss``, ``box``, ``cls`` and the
        mask / frame terms."""
        cfg = self.mt_cfg
        feats, mask_logits, frame_logits = self.model.backbone.forward_all(x)
        head = self.model.head(list(feats.values()))
        terms = multitask_loss(self.model, head, mask_logits, frame_logits, self.anchors, targets,
                               focal=cfg.focal, mask_weight=cfg.mask_weight, frame_weight=cfg.frame_weight)
        loss = terms["total"]
        self.optimize(loss)
        return {"loss": loss.item(), **{k: v.item() for k, v in terms.items() if k != "total"}}

    def validate(self, model: Any | None = None) -> dict[str, float]:
        """COCO box metrics plus ``dice`` / ``iou`` (masks at 0.5, on the boxed val images,
        per-image means) and ``triage_acc`` (clean val frames + degraded copies)."""
        assert self.val_cache is not None
        assert self.val_masks is not None
        model = model or self.ema.module
        record = super().validate(model)
        torch = self.torch
        imgs = self.val_cache.images
        rng = np.random.default_rng(12345)
        degraded = np.stack([degrade(im, rng) for im in imgs])
        truth = np.array([POLYP if len(b) else NORMAL for b in self.val_cache.boxes] + [UNCLEAR] * len(imgs))
        probs, frames = [], []
        model.eval()
        with torch.no_grad():
            for batch in (imgs, degraded):
                for x in self._batches(batch):
                    _, mask_logits, frame_logits = model.backbone.forward_all(x)
                    if batch is imgs:
                        up = torch.nn.functional.interpolate(mask_logits, size=x.shape[-2:], mode="bilinear",
                                                             align_corners=False)
                        probs.append(torch.sigmoid(up)[:, 0].cpu().numpy())
                    frames.append(frame_logits.argmax(1).cpu().numpy())
        pred = np.concatenate(probs)[: self.n_val_boxed] > 0.5
        gt = self.val_masks[: self.n_val_boxed].astype(bool)
        masks = mask_summary([mask_overlap(p, g) for p, g in zip(pred, gt, strict=True)])
        record["dice"], record["iou"] = masks["dice"] or 0.0, masks["iou"] or 0.0
        record["triage_acc"] = float((np.concatenate(frames) == truth).mean())
        return record


def train_multitask(cfg: MultiTaskConfig, train_set: Dataset, val_set: Dataset, *, resume: bool = False,
                    normal_set: Dataset | None = None, val_normal_set: Dataset | None = None) -> dict[str, Any]:
    """Train (or resume from ``cfg.out/train_state.pt``) the multi-task SSD."""
    return MultiTaskTrainer(cfg, train_set, val_set, normal_set, val_normal_set).resume_fit(resume)
