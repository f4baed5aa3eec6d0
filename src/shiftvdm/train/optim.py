"""The generator's and discriminators' optimizers, the learning-rate schedule and the EMA of the trained weights."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from shiftvdm.train.config import TrainConfig
from shiftvdm.utils.ema import ema_update_


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    """Linear warm-up then constant or cosine. Warm-up starts at 1/warmup (the reference starts at 0,
    which wastes its first update)."""
    o, total = cfg.optim, max(1, cfg.run.max_steps)

    def factor(step: int) -> float:
        if o.warmup_steps > 0 and step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        if o.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - o.warmup_steps) / max(1, total - o.warmup_steps))
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def build_generator_optimizer(cfg: TrainConfig, params: list[nn.Parameter]
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW + schedule for the generator (the critic's optimizer is its trainer's, rewards/critic_training.py)."""
    o = cfg.optim
    optimizer = torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay, eps=o.eps)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))


class WeightEMA:
    """Exponential moving average of the trainable weights (``optim.ema_decay``), swapped in for sampling,
    evaluation and the saved weights. ``shadow`` is what a checkpoint stores."""

    def __init__(self, params: list[nn.Parameter], decay: float) -> None:
        self.decay = decay
        self.shadow: list[Tensor] = [p.detach().clone() for p in params]

    def update(self, params: list[nn.Parameter], step: int) -> None:
        """Fold in the weights after optimizer step ``step`` (counted from 1)."""
        decay = min(self.decay, (1 + step) / (10 + step))  # warm-up: early weights are not worth keeping
        ema_update_(self.shadow, params, decay)

    @contextlib.contextmanager
    def swapped_in(self, params: list[nn.Parameter]) -> Iterator[None]:
        """Temporarily copy the averaged weights into ``params`` (the trained ones come back after)."""
        backup = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, e in zip(params, self.shadow):
                p.copy_(e)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, b in zip(params, backup):
                    p.copy_(b)


__all__ = ["WeightEMA", "build_generator_optimizer", "lr_lambda"]
