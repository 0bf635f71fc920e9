"""The untrained demo detector used until a trained checkpoint ships, and by the tests.

Randomly initialised torchvision weights give degenerate outputs (every score 1/C), because
untrained BatchNorm statistics squash the features. :func:`calibrate_batchnorm` re-estimates
those statistics on real-looking frames, and :func:`shape_scores` scales the classification
logits so that, as in a trained detector, most anchors are background and a few percent score
above 0.3 without saturating at 1.0. Pre-/post-processing, export and the oracles are thereby
exercised on realistic score distributions. The weights detect nothing meaningful: they are NOT
a trained model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from endoedge._optional import require
from endoedge.models.checkpoint import LoadedModel, build_model

DEMO_ARCH = "ssdlite320_mobilenet_v3_large"
DEMO_CLASSES = ("normal", "unclear", "tumor")  # the classes of the colonoscopy SSD study
DEMO_SCORE_THRESHOLD = 0.5  # untrained scores spread widely; keep the overlay readable
DEMO_NOTES = (
    "UNTRAINED demo weights: random initialisation (seeded) with BatchNorm statistics "
    "re-estimated on the bundled HoloHub frames. Detections are meaningless."
)


def calibrate_batchnorm(loaded: LoadedModel, batch: Any) -> None:
    """Re-estimate every BatchNorm's running mean/var from one normalized batch (no gradients)."""
    torch = require("torch", extra="torch", purpose="BatchNorm calibration")
    module = loaded.raw_heads()
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batch
    module.train()
    with torch.no_grad():
        module(torch.as_tensor(batch))
    module.eval()
    loaded.model.eval()


def shape_scores(
    loaded: LoadedModel, batch: Any, *, logit_std: float = 1.5, foreground_rate: float = 0.03
) -> None:
    """Rescale an SSD's classification logits (std ``logit_std``) and bias the background so that
    about ``foreground_rate`` of the anchors have a foreground score above 0.3 on ``batch``."""
    torch = require("torch", extra="torch", purpose="demo model")
    head = loaded.model.head.classification_head
    num_classes = int(head.num_columns)
    last = [m if isinstance(m, torch.nn.Conv2d) else m[-1] for m in head.module_list]
    with torch.no_grad():
        logits = loaded.raw_heads()(torch.as_tensor(batch))[1]
        scale = logit_std / float(logits.std())
        logits = logits * scale
        best_offset, best_err = 0.0, float("inf")
        for offset in torch.linspace(0.0, 8.0, 81).tolist():
            shifted = logits.clone()
            shifted[..., 0] += offset
            rate = float((shifted.softmax(-1)[..., 1:].amax(-1) > 0.3).float().mean())
            if abs(rate - foreground_rate) < best_err:
                best_offset, best_err = offset, abs(rate - foreground_rate)
        for conv in last:
            conv.weight.mul_(scale)
            conv.bias.mul_(scale)
            conv.bias[0::num_classes] += best_offset  # channel a * C + 0 is anchor a's background


def make_demo_model(
    arch: str = DEMO_ARCH,
    class_names: Sequence[str] = DEMO_CLASSES,
    *,
    seed: int = 0,
    input_size: tuple[int, int] | None = None,
) -> LoadedModel:
    """Build the seeded, BatchNorm-calibrated, untrained demo detector (see module docstring)."""
    torch = require("torch", extra="torch", purpose="building the demo model")
    from endoedge.preprocess import real_looking_batch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        loaded = build_model(arch, tuple(class_names), input_size)
    batch = real_looking_batch(loaded.spec, 8)
    calibrate_batchnorm(loaded, batch)
    shape_scores(loaded, batch)
    loaded.notes = DEMO_NOTES
    loaded.spec = loaded.spec.with_thresholds(score_threshold=DEMO_SCORE_THRESHOLD)
    return loaded
