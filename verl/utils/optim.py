"""AdamW and the learning-rate schedule of the actor (and of any other trained model).

The schedule is a multiplier on the configured lr, applied with LambdaLR and stepped once per training step:
a linear warmup from 0 to 1 over `warmup_steps`, then either constant 1 or a cosine decay from 1 down to
`min_lr_ratio` at `total_steps`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

LR_SCHEDULERS = ("constant", "cosine")


def build_adamw(
    params: Iterable[torch.nn.Parameter],
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.01,
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters (those with requires_grad)."""
    trainable = [p for p in params if p.requires_grad]
    if not trainable:
        raise ValueError("build_adamw: the model has no trainable parameters")
    return torch.optim.AdamW(trainable, lr=lr, betas=tuple(betas), weight_decay=weight_decay, eps=eps)


def resolve_warmup_steps(warmup_steps: int | None, warmup_steps_ratio: float, total_steps: int) -> int:
    """An explicit warmup_steps (>= 0) wins; otherwise int(warmup_steps_ratio * total_steps)."""
    if warmup_steps is not None and warmup_steps >= 0:
        return warmup_steps
    return int(warmup_steps_ratio * total_steps)


class WarmupSchedule:
    """lr multiplier at step s. A class rather than a closure so LambdaLR's state_dict can carry it."""

    def __init__(
        self, warmup_steps: int, total_steps: int, kind: str = "constant", min_lr_ratio: float = 0.0
    ):
        if kind not in LR_SCHEDULERS:
            raise ValueError(
                f"optim.lr_scheduler: unknown schedule {kind!r}; valid: {', '.join(LR_SCHEDULERS)}"
            )
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"optim.min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
        if warmup_steps < 0:
            raise ValueError(f"optim.lr_warmup_steps must be >= 0, got {warmup_steps}")
        if kind == "cosine" and total_steps <= 0:
            raise ValueError(f"a cosine schedule needs total_training_steps > 0, got {total_steps}")
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.kind = kind
        self.min_lr_ratio = min_lr_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            # step 0 trains at lr / warmup_steps rather than 0, so no step is wasted.
            return (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int | None = None,
    warmup_steps_ratio: float = 0.0,
    kind: str = "constant",
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """LambdaLR with `WarmupSchedule`; call `.step()` once per training step (after the optimizer step)."""
    warmup = resolve_warmup_steps(warmup_steps, warmup_steps_ratio, total_steps)
    return LambdaLR(optimizer, WarmupSchedule(warmup, total_steps, kind, min_lr_ratio))


def build_optimizer(
    params: Iterable[torch.nn.Parameter], optim, total_steps: int | None = None
) -> tuple[torch.optim.AdamW, LambdaLR]:
    """AdamW and its schedule from an optim config section (`actor.optim`, `critic.optim`, the SFT `optim`):
    lr, betas, weight_decay, eps, lr_warmup_steps, lr_warmup_steps_ratio, lr_scheduler, min_lr_ratio, and
    total_training_steps unless `total_steps` is given."""
    optimizer = build_adamw(params, optim.lr, optim.betas, optim.weight_decay, optim.eps)
    scheduler = build_lr_scheduler(
        optimizer,
        optim.total_training_steps if total_steps is None else total_steps,
        optim.lr_warmup_steps,
        optim.lr_warmup_steps_ratio,
        optim.lr_scheduler,
        optim.min_lr_ratio,
    )
    return optimizer, scheduler
