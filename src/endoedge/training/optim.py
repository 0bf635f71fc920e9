"""Optimizer, warmup + cosine learning-rate schedule, and a weight EMA."""

from __future__ import annotations

import copy
import math
from typing import Any

from endoedge._optional import require
from endoedge.errors import InputError


def _torch() -> Any:
    return require("torch", extra="torch", purpose="training")


def make_optimizer(model: Any, name: str, lr: float, weight_decay: float, momentum: float = 0.9) -> Any:
    """AdamW or SGD (Nesterov) over the trainable parameters; no weight decay on biases and
    normalization parameters (1-D tensors)."""
    torch = _torch()
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    raise InputError(f"unknown optimizer '{name}' (adamw, sgd)")


class WarmupCosine:
    """Learning-rate factor per optimizer step: linear warmup from ``warmup_start`` to 1 over
    ``warmup_steps``, then cosine decay to ``final`` at ``total_steps``."""

    def __init__(self, total_steps: int, warmup_steps: int, final: float = 0.02,
                 warmup_start: float = 0.01) -> None:
        self.total = max(1, total_steps)
        self.warmup = max(0, min(warmup_steps, self.total - 1))
        self.final = final
        self.start = warmup_start

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.start + (1 - self.start) * step / self.warmup
        t = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.final + (1 - self.final) * 0.5 * (1 + math.cos(math.pi * t))


def make_scheduler(optimizer: Any, schedule: WarmupCosine) -> Any:
    """A ``LambdaLR`` stepped once per optimizer step."""
    return _torch().optim.lr_scheduler.LambdaLR(optimizer, schedule)


class ModelEMA:
    """Exponential moving average of a model's weights (floating buffers included).

    The decay ramps up as ``decay * (1 - exp(-updates / tau))`` so early, poor weights fade fast.
    """

    def __init__(self, model: Any, decay: float = 0.999, tau: float = 300.0) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0

    def update(self, model: Any) -> None:
        """Blend the current weights of ``model`` into the average."""
        torch = _torch()
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        with torch.no_grad():
            src = model.state_dict()
            for k, v in self.module.state_dict().items():
                if v.dtype.is_floating_point:
                    v.mul_(d).add_(src[k].detach(), alpha=1 - d)
                else:
                    v.copy_(src[k])

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
