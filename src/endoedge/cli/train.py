"""``endoedge train --data DATA --out DIR``: train an SSD-family registry detector."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from endoedge.cli._common import image_size

if TYPE_CHECKING:
    from endoedge.cli._common import SubParsers
    from endoedge.data.datasets import Dataset
    from endoedge.training.trainer import TrainConfig

logger = logging.getLogger(__name__)

DEFAULT_ARCH = "ssdlite320_efficientnet_lite0"


def add_parser(sub: SubParsers) -> None:
    """Register the ``train`` subcommand."""
    p = sub.add_parser(
        "train",
        help="train a detector (Kvasir-SEG, COCO json or YOLO txt data)",
        description="Train an SSD-family detector with endoscopy augmentations (90-degree "
        "rotations and flips, scale/crop, colour jitter). Writes last.pt / best.pt (endoedge "
        "checkpoints of the EMA weights), train_state.pt (for --resume) and metrics.jsonl "
        "(COCO mAP@0.5 and @0.5:0.95 on the val split) under --out. Polyp-free frame folders "
        "(--negatives) join each epoch with hard-negative mining; --val-negatives reports the share "
        "of held-out polyp-free frames that would show a box.",
    )
    p.add_argument("--data", required=True, help="Kvasir-SEG folder, COCO .json, or YOLO folder (images/, labels/)")
    p.add_argument("--format", default="auto", choices=("auto", "kvasir", "coco", "yolo"), help="dataset layout")
    p.add_argument("--images", help="COCO: folder of the images (default: beside the json)")
    p.add_argument("--classes", help="YOLO: class names, comma-separated (default: classes.txt)")
    p.add_argument("--split", help="folder with one *_train.txt and one *_val.txt (image stems)")
    p.add_argument("--val-count", type=int, default=0,
                   help="without --split: hold out this many random images (seeded; default 12%%)")
    p.add_argument("--arch", default=DEFAULT_ARCH, help=f"architecture (default {DEFAULT_ARCH})")
    p.add_argument("--imgsz", type=image_size, help="square network input in pixels (default: the architecture's, "
                   "320 for the SSDLite family; fixed-size architectures take only theirs)")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--optimizer", default="adamw", choices=("adamw", "sgd"))
    p.add_argument("--lr", type=float, default=1.5e-3, help="peak learning rate")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup-epochs", type=float, default=2.0)
    p.add_argument("--final-lr", type=float, default=0.02, help="final lr as a fraction of --lr (cosine)")
    p.add_argument("--focal", action="store_true",
                   help="focal classification loss instead of hard-negative-mined cross-entropy")
    p.add_argument("--no-pretrained", action="store_true", help="random backbone instead of ImageNet weights")
    p.add_argument("--freeze", type=int, default=0,
                   help="freeze the stem and the first N backbone blocks (saves CPU time)")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--val-every", type=int, default=1, help="validate every N epochs (and at the end)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", required=True, help="output folder (checkpoints, metrics.jsonl)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt if present")
    p.add_argument("--notes", help="free text stored in the checkpoints (data, licence)")
    p.add_argument("--init", help="endoedge checkpoint to start from (fine-tune; same classes)")
    p.add_argument("--negatives", action="append", default=[], metavar="DIR",
                   help="folder of frames without any object (recursive; repeatable), e.g. polyp-free "
                   "colonoscopy sequences: trained on as background")
    p.add_argument("--val-negatives", action="append", default=[], metavar="DIR",
                   help="held-out frames without any object (repeatable): each validation reports the "
                   "share that would show a box (keep whole sequences out, not single frames)")
    p.add_argument("--neg-ratio", type=float, default=0.5,
                   help="negatives drawn per epoch, as a multiple of the boxed train images")
    p.add_argument("--hard-share", type=float, default=0.5,
                   help="share of the negative draws weighted by each frame's current highest score "
                   "(hard-negative mining, re-scored every epoch); the rest uniform")
    p.add_argument("--domain-aug", default="on", choices=("on", "off"),
                   help="white balance, blur, specular highlights, OSD text and FOV masks (default on)")
    p.add_argument("--dye", type=float, default=0.0, metavar="P",
                   help="chance per image (0..1) of a blue-dye tint on a boxed lesion or anywhere, as "
                   "chromoendoscopy or a lifted lesion's blue cushion (with --domain-aug on; default 0 = off)")
    p.add_argument("--zoom", type=float, nargs=2, default=(0.7, 1.5), metavar=("MIN", "MAX"),
                   help="range of the random zoom (relative to a plain resize): > 1 crops in, < 1 zooms out "
                   "onto black, making objects smaller (default 0.7 1.5)")
    p.add_argument("--save-epochs", action="store_true", help="also keep every epoch as epoch_NNN.pt")
    p.add_argument("--endoscopy", metavar="OPTIONS",
                   help="endoscopy frame cleaning applied to every train, val and polyp-free frame as the "
                   "deployed detector applies it, and stored in the checkpoints (e.g. 'all' = field-of-view "
                   "crop + OSD mask; default: frames as read)")
    mt = p.add_argument_group("multi-task architectures (boxes + mask + normal/unclear/polyp triage); their "
                              "--negatives / --val-negatives frames are 'normal' frames with empty masks")
    mt.add_argument("--unclear-ratio", type=float, default=0.25,
                    help="share of samples degraded (blur, smear, exposure, haze, bubbles) and labelled 'unclear'")
    mt.add_argument("--mask-weight", type=float, default=1.0, help="weight of the mask loss (BCE + IoU)")
    mt.add_argument("--frame-weight", type=float, default=0.5, help="weight of the triage cross-entropy")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Parse the data, split it, train."""
    from endoedge.cli._common import endoscopy_option
    from endoedge.data.datasets import load_dataset, load_negatives, random_split, read_split
    from endoedge.errors import InputError
    from endoedge.models.checkpoint import parse_class_names
    from endoedge.models.registry import get_arch
    from endoedge.training.augment import AugmentConfig
    from endoedge.training.domain_augment import DomainAugConfig
    from endoedge.training.trainer import TrainConfig, train

    if not 0.0 <= args.dye <= 1.0:  # also refuses NaN
        raise InputError(f"--dye must be a chance between 0 and 1, got {args.dye}")
    lo, hi = args.zoom
    if not 0.1 <= lo <= hi <= 4.0:  # also refuses NaN
        raise InputError(f"--zoom MIN MAX must satisfy 0.1 <= MIN <= MAX <= 4, got {lo} {hi}")
    if args.dye and args.domain_aug == "off":
        raise InputError("--dye is one of the domain augmentations; drop --domain-aug off or --dye")
    arch = get_arch(args.arch)
    imgsz = args.imgsz or arch.default_input_size[0]
    if not arch.resizable and (imgsz, imgsz) != tuple(arch.default_input_size):
        size = arch.default_input_size
        raise InputError(f"{args.arch} takes only its {size[0]}x{size[1]} input; drop --imgsz or pick a resizable "
                         "architecture (the SSDLite family)")
    names = parse_class_names(args.classes)
    data = load_dataset(args.data, args.format, images_dir=args.images, class_names=names)
    if args.split:
        train_stems, val_stems = read_split(args.split)
    else:
        stems = [s.stem for s in data.samples]
        n_val = args.val_count or max(1, round(0.12 * len(stems)))
        train_stems, val_stems = random_split(stems, n_val, args.seed)
    train_set, val_set = data.subset(train_stems), data.subset(val_stems)
    neg_set = load_negatives(args.negatives, data.class_names) if args.negatives else None
    val_neg_set = load_negatives(args.val_negatives, data.class_names) if args.val_negatives else None
    if neg_set and val_neg_set:
        shared = {s.path.resolve() for s in neg_set.samples} & {s.path.resolve() for s in val_neg_set.samples}
        if shared:
            raise InputError(f"{len(shared)} frames are in both --negatives and --val-negatives")
    notes = args.notes or (
        f"endoedge train {args.arch} on {data.source} ({len(train_stems)} train / {len(val_stems)} "
        "val images); the weights inherit the training data's terms of use"
    )
    cfg = TrainConfig(
        arch=args.arch, out=args.out, imgsz=imgsz, epochs=args.epochs, batch=args.batch,
        optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs, final_lr=args.final_lr, focal=args.focal,
        pretrained=not args.no_pretrained, freeze=args.freeze, ema_decay=args.ema_decay,
        val_every=args.val_every, seed=args.seed, device=args.device, threads=args.threads,
        notes=notes, init=args.init or "", neg_ratio=args.neg_ratio, hard_share=args.hard_share,
        save_epochs=args.save_epochs, endoscopy=endoscopy_option(getattr(args, "endoscopy", None)),
        augment=AugmentConfig(scale=(lo, hi),
                              domain=DomainAugConfig(p_dye=args.dye) if args.domain_aug == "on" else None),
    )
    if "frame_logits" in arch.output_names:
        return _run_multitask(args, cfg, train_set, val_set, neg_set, val_neg_set)
    print(f"training {args.arch} on {data.source}: {len(train_stems)} train / {len(val_stems)} val "
          f"images, classes {', '.join(data.class_names)}, {args.epochs} epochs -> {args.out}", flush=True)
    if neg_set or val_neg_set:
        print(f"negatives: {len(neg_set.samples) if neg_set else 0} frames ({args.neg_ratio:g} x the boxed "
              f"images per epoch), {len(val_neg_set.samples) if val_neg_set else 0} held out", flush=True)
    record = train(cfg, train_set, val_set, resume=args.resume, neg_set=neg_set, val_neg_set=val_neg_set)
    if "map50" in record:
        print(f"final val mAP@0.5 {record['map50']:.4f}, mAP@0.5:0.95 {record['map50_95']:.4f}; "
              f"best mAP@0.5 {record['best_map50']:.4f} at epoch {record['best_epoch']}")
    return 0


def _run_multitask(args: argparse.Namespace, cfg: TrainConfig, train_set: Dataset, val_set: Dataset,
                   normal: Dataset | None, val_normal: Dataset | None) -> int:
    """Train a multi-task architecture (boxes + mask + frame triage); the polyp-free frames
    (``--negatives``) are its ``normal`` frames, used every epoch."""
    from dataclasses import fields

    from endoedge.errors import InputError
    from endoedge.training.multitask import MultiTaskConfig, train_multitask

    if not 0 <= args.unclear_ratio < 1:
        raise InputError(f"--unclear-ratio must be within 0..1, got {args.unclear_ratio}")
    base = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    base["focal"] = True  # the multi-task recipe: focal classification loss
    mcfg = MultiTaskConfig(**base, unclear_ratio=args.unclear_ratio, mask_weight=args.mask_weight,
                           frame_weight=args.frame_weight)
    print(f"training {args.arch}: {len(train_set.samples)} polyp + {len(normal.samples) if normal else 0} "
          f"normal train frames ({args.unclear_ratio:g} of samples degraded to 'unclear'), "
          f"{len(val_set.samples)} val -> {args.out}", flush=True)
    record = train_multitask(mcfg, train_set, val_set, resume=args.resume, normal_set=normal,
                             val_normal_set=val_normal)
    if "map50" in record:
        print(f"final val mAP@0.5 {record['map50']:.4f}, mask Dice {record['dice']:.4f}, "
              f"triage accuracy {record['triage_acc']:.4f}; best mAP@0.5 {record['best_map50']:.4f} "
              f"at epoch {record['best_epoch']}")
    return 0
