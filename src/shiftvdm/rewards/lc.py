"""LC discriminator: long-term motion, one logit per clip from per-point per-frame track features.

METHOD.md step 2 / shift-reference-rewards.md §2.3 ("TrackFormer"): a linear embedding of each
(point, frame) feature vector plus a sinusoidal time embedding, then blocks that alternate
self-attention over time (within each track) and self-attention over points (within each frame),
a LayerNorm, the mean over frames and points, and an MLP to one logit.

Differs from the reference: the reference's point mixing goes through 64 learned "virtual tracks"
(cross-attention), to afford 1024 points on GPU; with the CPU default of a few hundred points full
self-attention over points is affordable and has no extra parameters. Both mixings are permutation
equivariant over points, and the mean makes the logit independent of the order of the queries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from shiftvdm.errors import ConfigError, DataError
from shiftvdm.rewards.ic import _Block, _init_weights


@dataclass
class LCConfig:
    dim: int = 64  # token width (reference 384)
    depth: int = 2  # (time, points) attention pairs (reference 3)
    heads: int = 4  # attention heads (reference 8)
    mlp_ratio: float = 4.0  # MLP hidden width / dim (reference 4)
    dropout: float = 0.0  # dropout inside the blocks (reference none; costly on CPU)
    head_dropout: float = 0.1  # dropout in the head MLP (reference ClassifierHead 0.1)


def sinusoidal_time_embedding(num_frames: int, dim: int, device: torch.device | None = None) -> Tensor:
    """(num_frames, dim) sin/cos embedding of the frame index (transformer-style frequencies)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=device) / max(half, 1))
    angles = torch.arange(num_frames, dtype=torch.float32, device=device)[:, None] * freqs[None]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros(num_frames, 1, device=device)], dim=1)
    return emb


class LCDiscriminator(nn.Module):
    """Track features (B, N, T, D) -> one logit per clip (B,)."""

    def __init__(self, cfg: LCConfig, in_dim: int) -> None:
        super().__init__()
        if cfg.dim % cfg.heads:
            raise ConfigError(f"lc.dim ({cfg.dim}) must be divisible by lc.heads ({cfg.heads})")
        self.in_dim = in_dim
        self.embed = nn.Linear(in_dim, cfg.dim)
        self.time_blocks = nn.ModuleList(_Block(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.depth))
        self.point_blocks = nn.ModuleList(_Block(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        hidden = max(cfg.dim // 2, 1)
        self.head = nn.Sequential(nn.Linear(cfg.dim, hidden), nn.GELU(), nn.Dropout(cfg.head_dropout),
                                  nn.Linear(hidden, 1))
        self.apply(_init_weights)
        # Reference: the classifier layers start at std 0.001, so every clip starts at logit ≈ 0.
        for layer in (self.head[0], self.head[3]):
            nn.init.trunc_normal_(layer.weight, std=0.001)

    def forward(self, features: Tensor) -> Tensor:
        if features.ndim != 4 or features.shape[-1] != self.in_dim:
            raise DataError(f"LC input must be (B, N, T, {self.in_dim}), got {tuple(features.shape)}")
        batch, points, frames, _ = features.shape
        x = self.embed(features) + sinusoidal_time_embedding(frames, self.embed.out_features, features.device)
        for time_block, point_block in zip(self.time_blocks, self.point_blocks):
            x = time_block(x.reshape(batch * points, frames, -1)).reshape(batch, points, frames, -1)
            x = x.transpose(1, 2).reshape(batch * frames, points, -1)
            x = point_block(x).reshape(batch, frames, points, -1).transpose(1, 2)
        pooled = self.norm(x).mean(dim=(1, 2))  # mean over points and frames
        return self.head(pooled).squeeze(-1)
