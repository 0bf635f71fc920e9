"""The training loop for the SSD-family registry detectors.

Images are decoded and resized once into RAM (:func:`~endoedge.data.datasets.load_cache`);
each step augments a batch on the main thread (cheap next to the network on a CPU), runs
backbone + head, and applies :func:`~endoedge.training.loss.ssd_loss`. Every epoch writes
``last.pt`` (an endoedge checkpoint of the EMA weights), ``best.pt`` (best val mAP@0.5),
``train_state.pt`` (everything needed to resume: weights, EMA, optimizer, schedule, epoch, RNG)
and a line of ``metrics.jsonl``.

Polyp-free frames (``neg_set``) join each epoch as ``neg_ratio`` x the boxed images, drawn with
replacement: a share ``hard_share`` of the draws is weighted by each frame's current highest
score (hard-negative mining, re-scored with the EMA weights before every epoch), the rest
uniformly. With ``val_neg_set`` each validation also reports the share of polyp-free frames on
which a box would show (``neg_fa`` at score 0.25, ``neg_fa50`` at 0.5).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from endoedge._optional import require
from endoedge.data.datasets import CachedImages, Dataset, FrameTransform, load_cache
from endoedge.endoscopy import EndoscopyConfig, FrameCleaner
from endoedge.errors import InputError, ModelFormatError
from endoedge.evaluation.coco import evaluate, max_scores, predict
from endoedge.models.checkpoint import LoadedModel, load_checkpoint, save_checkpoint
from endoedge.models.registry import get_arch
from endoedge.spec.device import parse_device
from endoedge.training.augment import AugmentConfig, augment
from endoedge.training.loss import init_focal_bias, ssd_loss
from endoedge.training.optim import ModelEMA, WarmupCosine, make_optimizer, make_scheduler

logger = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"


@dataclass
class TrainConfig:
    """Training settings (the CLI's flags). Sizes in pixels, learning rates per optimizer step.

    ``init``: an endoedge checkpoint whose weights start the run (fine-tuning; same classes).
    ``neg_ratio``: polyp-free frames drawn per epoch, as a multiple of the boxed images.
    ``hard_share``: share of those draws weighted by the frame's current highest score.
    ``save_epochs``: also keep every epoch's EMA weights as ``epoch_NNN.pt``.
    ``endoscopy``: frame cleaning (field-of-view crop, OSD mask) applied to every train, val and
    polyp-free frame before caching, as the deployed detector applies it; stored in the
    checkpoints so that ``detect``/``run``/``export`` apply it too. ``None``: frames as read.
    """

    arch: str
    out: str
    imgsz: int = 320
    epochs: int = 50
    batch: int = 16
    optimizer: str = "adamw"
    lr: float = 1.5e-3
    weight_decay: float = 0.01
    warmup_epochs: float = 2.0
    final_lr: float = 0.02
    focal: bool = False
    pretrained: bool = True
    freeze: int = 0
    ema_decay: float = 0.999
    val_every: int = 1
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    cache_scale: float = 1.2
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    notes: str = ""
    init: str = ""
    neg_ratio: float = 0.5
    hard_share: float = 0.5
    save_epochs: bool = False
    endoscopy: EndoscopyConfig | None = None

    def __post_init__(self) -> None:
        """Refuse settings no run can use, before any image is read.

        Raises:
            InputError: one line naming the flag, its value and the allowed range.
        """
        whole = (("--imgsz", self.imgsz, 32), ("--epochs", self.epochs, 1), ("--batch", self.batch, 1),
                 ("--freeze", self.freeze, 0), ("--val-every", self.val_every, 1), ("--threads", self.threads, 0))
        for flag, value, least in whole:
            if value < least:
                raise InputError(f"{flag} must be at least {least}, got {value}")
        ranges = (("--lr", self.lr, 0.0, None, False), ("--weight-decay", self.weight_decay, 0.0, None, True),
                  ("--warmup-epochs", self.warmup_epochs, 0.0, None, True),
                  ("--final-lr", self.final_lr, 0.0, 1.0, True), ("--ema-decay", self.ema_decay, 0.0, 1.0, True),
                  ("--neg-ratio", self.neg_ratio, 0.0, None, True), ("--hard-share", self.hard_share, 0.0, 1.0, True))
        for flag, number, low, high, low_ok in ranges:
            if not (number >= low if low_ok else number > low) or (high is not None and number > high) \
                    or number != number:  # NaN
                bound = f"{'>=' if low_ok else '>'} {low:g}" + (f" and <= {high:g}" if high is not None else "")
                raise InputError(f"{flag} must be {bound}, got {number:g}")
        if self.optimizer not in ("adamw", "sgd"):
            raise InputError(f"--optimizer must be adamw or sgd, got '{self.optimizer}'")
        out = Path(self.out)
        if out.exists() and not out.is_dir():
            raise InputError(f"--out '{out}' exists and is not a folder; pick another --out")


class Progress:
    """One status line: per-step updates on a terminal, a line every ``every`` steps otherwise."""

    def __init__(self, every: int = 10) -> None:
        self.tty = sys.stdout.isatty()
        self.every = every

    def update(self, step: int, steps: int, text: str) -> None:
        if self.tty:
            print("\r" + text, end="", flush=True)
        elif step % self.every == 0 or step == steps:
            print(text, flush=True)

    def done(self) -> None:
        if self.tty:
            print(flush=True)


def _fmt_time(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Trainer:
    """Train one model on a train/val pair of datasets; see :func:`train`."""

    def __init__(self, cfg: TrainConfig, train_set: Dataset, val_set: Dataset,
                 neg_set: Dataset | None = None, val_neg_set: Dataset | None = None) -> None:
        self.torch = require("torch", extra="torch", purpose="training")
        torch = self.torch
        self.cfg = cfg
        self.out = Path(cfg.out)
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"cannot create --out '{cfg.out}': {err.strerror}; pick another --out") from err
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        dev = parse_device(cfg.device)
        if dev.kind == "tensorrt":
            raise InputError(f"--device {cfg.device}: training runs on cpu or cuda[:N]")
        use_cuda = dev.kind in ("auto", "cuda") and torch.cuda.is_available()
        if dev.kind == "cuda" and not use_cuda:
            raise InputError(f"--device {cfg.device}: no CUDA GPU is available")
        if use_cuda and dev.ordinal >= torch.cuda.device_count():
            raise InputError(f"--device {cfg.device}: only {torch.cuda.device_count()} CUDA GPU(s) here")
        self.device = torch.device(f"cuda:{dev.ordinal}" if use_cuda else "cpu")
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.arch = get_arch(cfg.arch)
        self.class_names = train_set.class_names
        self.train_set, self.val_set = train_set, val_set
        num_classes = len(self.class_names) + 1
        size = (cfg.imgsz, cfg.imgsz)
        if cfg.pretrained and self.arch.build_pretrained is not None:
            model: Any = self.arch.build_pretrained(num_classes, size)
        else:
            if cfg.pretrained:
                logger.warning("%s has no pretrained backbone here; training from scratch", cfg.arch)
            model = self.arch.build(num_classes, size)
        if not hasattr(model, "anchor_generator") or not hasattr(model, "proposal_matcher"):
            raise ModelFormatError(f"endoedge train supports the SSD family; {cfg.arch} is not one")
        if cfg.init:
            init = load_checkpoint(cfg.init)
            if tuple(init.spec.class_names) != tuple(self.class_names):
                raise ModelFormatError(f"--init {cfg.init} detects {init.spec.class_names}, the data "
                                       f"{self.class_names}")
            _load_init(model, init.model.state_dict(), str(cfg.init), init.arch.name, cfg.arch)
        elif cfg.focal:
            init_focal_bias(model)
        self.model: Any = model.to(self.device)
        self._freeze()
        from endoedge.models.torchvision_ssd import priors

        self.anchors = torch.from_numpy(priors(self.model.cpu())).to(self.device)
        self.model.to(self.device)
        self.mean = torch.tensor(list(model.transform.image_mean), device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(list(model.transform.image_std), device=self.device).view(1, 3, 1, 1)
        self.neg_set = neg_set if neg_set is not None and neg_set.samples else None
        self.val_neg_set = val_neg_set if val_neg_set is not None and val_neg_set.samples else None
        n_pos = len(train_set.samples)
        self.n_neg = int(round(cfg.neg_ratio * n_pos)) if self.neg_set is not None else 0
        self.steps_per_epoch = max(1, (n_pos + self.n_neg) // cfg.batch)
        total = self.steps_per_epoch * cfg.epochs
        self.optimizer = make_optimizer(self.model, cfg.optimizer, cfg.lr, cfg.weight_decay)
        self.scheduler = make_scheduler(
            self.optimizer,
            WarmupCosine(total, int(cfg.warmup_epochs * self.steps_per_epoch), cfg.final_lr),
        )
        self.ema = ModelEMA(self.model, cfg.ema_decay)
        self.epoch = 0  # completed epochs
        self.best = -1.0
        self.best_epoch = 0
        self.train_cache: CachedImages | None = None
        self.val_cache: CachedImages | None = None
        self.neg_cache: CachedImages | None = None
        self.val_neg_cache: CachedImages | None = None

    # ---- set-up -------------------------------------------------------------------------
    def _freeze(self) -> None:
        if self.cfg.freeze and self.arch.freeze_early is not None:
            self.arch.freeze_early(self.model, self.cfg.freeze)
        elif self.cfg.freeze:
            logger.warning("%s cannot freeze early layers; --freeze ignored", self.cfg.arch)

    def load_data(self) -> None:
        """Decode and resize every image once (train at ``cache_scale x imgsz``, val at imgsz),
        after the configured endoscopy frame cleaning."""
        t0 = time.perf_counter()
        clean = _cleaning(self.cfg.endoscopy)
        self.train_cache = load_cache(self.train_set, int(round(self.cfg.imgsz * self.cfg.cache_scale)), clean)
        self.val_cache = load_cache(self.val_set, self.cfg.imgsz, clean)
        if self.neg_set is not None:
            self.neg_cache = load_cache(self.neg_set, self.cfg.imgsz, clean)
        if self.val_neg_set is not None:
            self.val_neg_cache = load_cache(self.val_neg_set, self.cfg.imgsz, clean)
        logger.info("cached %d train + %d val images in %.1f s%s", len(self.train_set.samples),
                    len(self.val_set.samples), time.perf_counter() - t0,
                    " (endoscopy cleaning on)" if clean is not None else "")

    def _to_tensor(self, images: np.ndarray) -> Any:
        x = self.torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2).float().div_(255)
        return ((x - self.mean) / self.std).contiguous()

    def _batch(self, idx: np.ndarray) -> tuple[Any, list[dict[str, Any]]]:
        assert self.train_cache is not None
        torch, n_pos = self.torch, len(self.train_cache.images)
        imgs, targets = [], []
        for j in idx:
            # indices past the boxed images address the negatives
            c, i = (self.train_cache, j) if j < n_pos else (self.neg_cache, j - n_pos)
            assert c is not None
            img, boxes, labels = augment(c.images[i], c.boxes[i], c.labels[i], self.cfg.imgsz,
                                         self.rng, self.cfg.augment)
            imgs.append(img)
            targets.append({"boxes": torch.from_numpy(boxes).to(self.device),
                            "labels": torch.from_numpy(labels + 1).to(self.device)})
        return self._to_tensor(np.stack(imgs)), targets

    # ---- loop ---------------------------------------------------------------------------
    def train_step(self, x: Any, targets: list[dict[str, Any]]) -> dict[str, float]:
        """One optimizer step; returns the loss terms."""
        feats = list(self.model.backbone(x).values())
        head = self.model.head(feats)
        losses = ssd_loss(self.model, head, self.anchors, targets, focal=self.cfg.focal)
        loss = losses["bbox_regression"] + losses["classification"]
        self.optimize(loss)
        return {"loss": loss.item(), "box": losses["bbox_regression"].item(),
                "cls": losses["classification"].item()}

    def optimize(self, loss: Any) -> None:
        """Backward, clip the gradient norm at 10, optimizer + schedule step, EMA update.

        Raises:
            FloatingPointError: the loss is not finite.
        """
        torch = self.torch
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at epoch {self.epoch + 1}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 10.0)
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update(self.model)

    def run_epoch(self, progress: Progress, run_start: float, start_epoch: int) -> dict[str, float]:
        """Train one epoch; returns mean losses, lr and time."""
        cfg = self.cfg
        self.model.train()
        self._freeze()
        n_pos = len(self.train_set.samples)
        order = np.concatenate([np.arange(n_pos), n_pos + self._draw_negatives()])
        order = self.rng.permutation(order)
        sums = {"loss": 0.0, "box": 0.0, "cls": 0.0}
        t0 = time.perf_counter()
        n = self.steps_per_epoch
        for step in range(1, n + 1):
            x, targets = self._batch(order[(step - 1) * cfg.batch: step * cfg.batch])
            terms = self.train_step(x, targets)
            for k in sums:
                sums[k] += terms[k]
            elapsed = time.perf_counter() - t0
            per_step = elapsed / step
            done_steps = (self.epoch - start_epoch) * n + step
            run_rate = (time.perf_counter() - run_start) / done_steps
            eta = run_rate * ((cfg.epochs - self.epoch) * n - step)
            progress.update(step, n, (
                f"epoch {self.epoch + 1}/{cfg.epochs} {step}/{n} loss {sums['loss'] / step:.3f} "
                f"(box {sums['box'] / step:.3f} cls {sums['cls'] / step:.3f}) "
                f"lr {self.optimizer.param_groups[0]['lr']:.2e} {per_step:.2f} s/it ETA {_fmt_time(eta)}"
            ))
        progress.done()
        return {**{k: v / n for k, v in sums.items()}, "lr": float(self.optimizer.param_groups[0]["lr"]),
                "epoch_s": time.perf_counter() - t0}

    def _batches(self, imgs: np.ndarray, size: int = 16) -> Any:
        return (self._to_tensor(imgs[i: i + size]) for i in range(0, len(imgs), size))

    def _draw_negatives(self) -> np.ndarray:
        """This epoch's negatives (indices into the negative cache): ``hard_share`` of them drawn
        in proportion to each frame's highest score under the current EMA weights."""
        if self.neg_cache is None or not self.n_neg:
            return np.zeros(0, np.int64)
        import cv2

        size = self.cfg.imgsz
        small = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in self.neg_cache.images])
        scores = max_scores(self.ema.module, self._batches(small)).astype(np.float64)
        n = len(scores)
        p = (1.0 - self.cfg.hard_share) / n + self.cfg.hard_share * scores / max(scores.sum(), 1e-12)
        p /= p.sum()
        logger.info("negatives: mean max score %.3f, %.1f%% >= 0.25", scores.mean(), 100 * (scores >= 0.25).mean())
        return self.rng.choice(n, self.n_neg, replace=True, p=p).astype(np.int64)

    def validate_negatives(self, model: Any | None = None) -> dict[str, float]:
        """Share of held-out polyp-free frames whose highest score reaches 0.25 / 0.5."""
        if self.val_neg_cache is None:
            return {}
        scores = max_scores(model or self.ema.module, self._batches(self.val_neg_cache.images))
        return {"neg_fa": float((scores >= 0.25).mean()), "neg_fa50": float((scores >= 0.5).mean())}

    def validate(self, model: Any | None = None) -> dict[str, float]:
        """COCO mAP etc. of ``model`` (default: the EMA weights) on the val cache."""
        assert self.val_cache is not None
        model = model or self.ema.module
        dets = predict(model, self._batches(self.val_cache.images), self.anchors)
        return evaluate(dets, self.val_set, self.val_cache.sizes, (self.cfg.imgsz, self.cfg.imgsz))

    def fit(self, until: int | None = None) -> dict[str, Any]:
        """Train until ``cfg.epochs`` (or stop early after epoch ``until``), continuing a resumed
        state; returns the last epoch's metrics."""
        if self.train_cache is None:
            self.load_data()
        progress = Progress()
        run_start, start_epoch = time.perf_counter(), self.epoch
        record: dict[str, Any] = {}
        stop = min(self.cfg.epochs, until) if until is not None else self.cfg.epochs
        while self.epoch < stop:
            stats = self.run_epoch(progress, run_start, start_epoch)
            self.epoch += 1
            record = {"epoch": self.epoch, **stats}
            last = self.epoch == self.cfg.epochs
            if self.val_set.samples and (self.epoch % self.cfg.val_every == 0 or last):
                t0 = time.perf_counter()
                record.update(self.validate())
                record.update(self.validate_negatives())
                record["val_s"] = time.perf_counter() - t0
                if record["map50"] > self.best:
                    self.best, self.best_epoch = record["map50"], self.epoch
                    self.save_weights(self.out / "best.pt")
            record["best_map50"], record["best_epoch"] = self.best, self.best_epoch
            self.save_weights(self.out / "last.pt")
            if self.cfg.save_epochs:
                self.save_weights(self.out / f"epoch_{self.epoch:03d}.pt")
            self.save_state()
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps({k: (round(v, 6) if isinstance(v, float) else v)
                                    for k, v in record.items()}) + "\n")
            print(_summary(record), flush=True)
        return record

    # ---- checkpoints --------------------------------------------------------------------
    def save_weights(self, path: Path) -> Path:
        """The EMA weights as an endoedge checkpoint (CPU tensors)."""
        import copy

        model = copy.deepcopy(self.ema.module).cpu().eval()
        spec = self.arch.make_spec(model, self.arch.name, self.class_names)
        if self.cfg.endoscopy is not None and self.cfg.endoscopy.active:
            spec = replace(spec, endoscopy=self.cfg.endoscopy.to_dict())
        return save_checkpoint(path, LoadedModel(arch=self.arch, model=model, spec=spec),
                               notes=self.cfg.notes)

    def save_state(self) -> Path:
        """Everything needed to resume, written atomically to ``train_state.pt``."""
        torch = self.torch
        state = {
            "epoch": self.epoch,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng_numpy": self.rng.bit_generator.state,
            "rng_torch": torch.get_rng_state(),
            "config": json.dumps(asdict(self.cfg)),
            "class_names": list(self.class_names),
        }
        path = self.out / STATE_FILE
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        tmp.replace(path)
        return path

    def resume_fit(self, resume: bool) -> dict[str, Any]:
        """:meth:`fit`, first resuming from ``out/train_state.pt`` if ``resume`` and it exists."""
        state = self.out / STATE_FILE
        if resume and state.is_file():
            self.load_state(state)
        elif resume:
            logger.info("no %s yet; starting a new run", state)
        return self.fit()

    def load_state(self, path: Path) -> None:
        """Resume from ``train_state.pt``: weights, EMA, optimizer, schedule, epoch, RNG."""
        torch = self.torch
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as err:  # noqa: BLE001 - any failure means an unusable state file
            first = str(err).strip().splitlines()[0] if str(err).strip() else "unreadable"
            raise ModelFormatError(f"cannot resume from {path}: {type(err).__name__}: {first}") from err
        if tuple(state["class_names"]) != tuple(self.class_names):
            raise ModelFormatError(f"{path} was trained on classes {state['class_names']}, not {self.class_names}")
        saved = json.loads(state["config"])
        if saved.get("arch") != self.cfg.arch:
            raise ModelFormatError(f"{path} is a {saved.get('arch')} run, not {self.cfg.arch}")
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.rng.bit_generator.state = state["rng_numpy"]
        torch.set_rng_state(state["rng_torch"].cpu())
        self.epoch, self.best, self.best_epoch = int(state["epoch"]), float(state["best"]), int(state["best_epoch"])
        logger.info("resumed %s at epoch %d (best mAP@0.5 %.4f at epoch %d)", path, self.epoch,
                    self.best, self.best_epoch)


def _cleaning(config: EndoscopyConfig | None) -> FrameTransform | None:
    """A per-image :class:`FrameCleaner` call (the field of view re-found on every image: the
    images are unrelated stills), or ``None`` when no cleaning is configured."""
    if config is None or not config.active:
        return None
    cleaner = FrameCleaner(config)

    def clean(bgr: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        cleaner.reset()
        return cleaner(bgr)

    return clean


def _summary(r: dict[str, Any]) -> str:
    text = f"epoch {r['epoch']} done in {r['epoch_s']:.0f} s: loss {r['loss']:.3f} lr {r['lr']:.2e}"
    if "map50" in r:
        text += (f" | val mAP@0.5 {r['map50']:.4f} mAP@0.5:0.95 {r['map50_95']:.4f} "
                 f"P {r['precision']:.3f} R {r['recall']:.3f} F1 {r['f1']:.3f}")
    if "neg_fa" in r:
        text += f" | negatives with a box: {100 * r['neg_fa']:.1f}% (0.25) {100 * r['neg_fa50']:.1f}% (0.5)"
    return text + f" | best mAP@0.5 {r['best_map50']:.4f} (epoch {r['best_epoch']})"


def train(cfg: TrainConfig, train_set: Dataset, val_set: Dataset, *, resume: bool = False,
          neg_set: Dataset | None = None, val_neg_set: Dataset | None = None) -> dict[str, Any]:
    """Train (or resume from ``cfg.out/train_state.pt`` if ``resume`` and it exists)."""
    return Trainer(cfg, train_set, val_set, neg_set, val_neg_set).resume_fit(resume)


def _load_init(model: Any, state: dict[str, Any], path: str, init_arch: str, arch: str) -> None:
    """Load ``--init`` weights into ``model``: the same architecture loads whole; a different one
    (e.g. the box-only SSD into its multi-task extension) loads when every one of its tensors has
    the same name and shape in ``model``, the rest of ``model`` keeping its fresh initialisation."""
    if init_arch == arch:
        model.load_state_dict(state)
        logger.info("fine-tuning from %s", path)
        return
    own = model.state_dict()
    misfit = [k for k, v in state.items() if k not in own or tuple(own[k].shape) != tuple(v.shape)]
    if misfit:
        raise ModelFormatError(f"--init {path} is a {init_arch} whose weights do not fit {arch} "
                               f"({len(misfit)} tensors differ, e.g. {misfit[0]}); use a checkpoint of "
                               f"{arch} or of an architecture it extends")
    model.load_state_dict(state, strict=False)
    logger.info("initialised %d of %d tensors of %s from %s (a %s); the other %d start fresh",
                len(state), len(own), arch, path, init_arch, len(own) - len(state))
