"""The one exponential-moving-average update every averaged copy in shiftvdm uses: the generator's weight EMA
(train/optim.WeightEMA) and the discriminators' EMA that scores rollouts (rewards/critic.MotionCritic)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


@torch.no_grad()
def ema_update_(averaged: Iterable[Tensor], current: Iterable[Tensor], decay: float) -> None:
    """In place: ``averaged ← decay·averaged + (1 − decay)·current``, pairwise (detached)."""
    for a, c in zip(averaged, current, strict=True):
        a.lerp_(c.detach(), 1.0 - decay)


__all__ = ["ema_update_"]
