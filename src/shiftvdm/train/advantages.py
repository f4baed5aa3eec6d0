"""Group-relative advantages (METHOD.md step 3) and every baseline variant, as one pure function.

Recentring only is the default: dividing by the group std would blow up the weights of groups whose
rewards barely differ (the "difficulty bias" the paper avoids; trl's ``scale_rewards="none"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor


@dataclass
class AdvantageConfig:
    center: Literal["group", "none"] = "group"  # group: Ã = r̃ − r̄ (SHIFT); none: Ã = r̃ (Lee et al. 2023 RWR)
    scale: Literal["none", "group_std"] = "none"  # group_std: divide by the group's std (GRPO-style baseline)
    clip: float = 10.0  # A_max: advantages clipped to ±A_max (adv_clip_max 10 in the authors' configs)
    positive_weight: float = 1.0  # multiplies positive fake advantages (pos_adv_lambda, 1.0 = off)
    std_eps: float = 1e-8  # added to the std in group_std mode (the reference's constant)

    def __post_init__(self) -> None:
        if self.clip <= 0:
            raise ValueError(f"advantage.clip must be > 0 (it is A_max), got {self.clip}")


def group_advantages(r_fake: Tensor, r_real: Tensor | None, cfg: AdvantageConfig) -> tuple[Tensor, Tensor | None]:
    """Advantages of P fakes per conditioning and of the real clip.

    Args:
        r_fake: (B, P) rewards of the P rollouts of each conditioning.
        r_real: (B,) rewards of the real clips, or None.
        cfg: centring, scaling and clipping settings.

    Returns:
        adv_fake (B, P) = clip((r̃ − r̄)/s, ±A_max) with r̄ the group mean (0 when ``center="none"``) and
        s the group std (1 unless ``scale="group_std"``); adv_real (B,) = clip((r − r̄)/s, ±A_max), or None.
        A zero-variance group gets all-zero centred advantages; the std mode never divides by zero.
    """
    if r_fake.ndim != 2:
        raise ValueError(f"r_fake must be (B, P), got shape {tuple(r_fake.shape)}")
    r_fake = r_fake.float()
    r_bar = r_fake.mean(dim=1, keepdim=True) if cfg.center == "group" else torch.zeros_like(r_fake[:, :1])
    if cfg.scale == "group_std":
        # population std over the group, as the reference; eps keeps zero-variance groups finite (all zeros)
        s = r_fake.std(dim=1, unbiased=False, keepdim=True) + cfg.std_eps
    else:
        s = torch.ones_like(r_bar)
    adv_fake = ((r_fake - r_bar) / s).clamp(-cfg.clip, cfg.clip)
    if cfg.positive_weight != 1.0:
        adv_fake = torch.where(adv_fake > 0, cfg.positive_weight * adv_fake, adv_fake)
    adv_real = None
    if r_real is not None:
        adv_real = ((r_real.float()[:, None] - r_bar) / s).clamp(-cfg.clip, cfg.clip)[:, 0]
    return adv_fake, adv_real
