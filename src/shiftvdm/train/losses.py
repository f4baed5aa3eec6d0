"""Loss weights of the hybrid objective (METHOD.md step 4, paper Eq. 12), as pure functions.

J(θ) = mean_b w_real,b · L(x_b) + λ_aw · mean_p mean_b Ã_{p,b} · L(x̃_{p,b})
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class LossConfig:
    lambda_sft: float = 1.0  # λ_sft, weight of the denoising loss on real clips (min_sft_loss_lambda 1.0)
    lambda_aw: float = 0.001  # λ_aw, weight of the advantage-weighted term (0.001 SVD / 0.01 Wan; 0 = SFT)
    lambda_aw_ramp_steps: int = 0  # λ_aw grows linearly from 0 over this many generator steps (0 = no ramp)
    asymmetric: bool = False  # real-clip weight λ_sft + max(0, A_real) (asymmetric_grpo; off in the authors' configs)
    match_noise: bool = True  # real and fake terms share ε, noise level and dropout draws (match_sigmas)

    def __post_init__(self) -> None:
        if self.lambda_sft < 0 or self.lambda_aw < 0:
            raise ValueError(f"loss.lambda_sft and loss.lambda_aw must be >= 0, got {self.lambda_sft}, {self.lambda_aw}")
        if self.lambda_aw_ramp_steps < 0:
            raise ValueError(f"loss.lambda_aw_ramp_steps must be >= 0, got {self.lambda_aw_ramp_steps}")


def aw_weight(cfg: LossConfig, step: int) -> float:
    """λ_aw at generator step ``step`` (0-based), with the optional linear ramp from 0."""
    if cfg.lambda_aw_ramp_steps <= 0:
        return cfg.lambda_aw
    return cfg.lambda_aw * min(1.0, step / cfg.lambda_aw_ramp_steps)


def real_weight(cfg: LossConfig, adv_real: Tensor | None, batch_size: int) -> Tensor:
    """Per-sample weight of the real-clip term, (B,): λ_sft, plus max(0, A_real) when asymmetric."""
    w = torch.full((batch_size,), float(cfg.lambda_sft))
    if cfg.asymmetric:
        if adv_real is None:
            raise ValueError("loss.asymmetric needs real-clip advantages, but the buffer has none")
        w = w + adv_real.float().clamp(min=0).to(w.device)
    return w


def needs_rollouts(cfg: LossConfig) -> bool:
    """SFT (λ_aw = 0, no asymmetric term) needs neither rollouts nor rewards."""
    return cfg.lambda_aw > 0 or cfg.asymmetric
