"""LC discriminator: long-term motion, one logit per clip from per-point per-frame track features.

METHOD.md step 2 / shift-reference-rewards.md §2.3 ("TrackFormer"): a linear embedding of each
(point, frame) feature vector plus a sinusoidal time embedding, then blocks that alternate
self-attention over time (within each track) and self-attention over points (within each frame),
a LayerNorm, the mean over frames and points, and an MLP to one logit.

Differs from the reference: the reference's point mixing goes through 64 learned "virtual tracks"
(cross-attention), to afford 1024 points on GPU; with the CPU default of a few hundred points full
self-attention over points is affordable and has no extra parameters. Both mixings are permutation
equivariant over points, and the mean makes the logit independent of the order of the queries.

Two kinds of input (``LCConfig.kind``), built by :func:`build_lc_discriminator`:

* ``"tracks"`` (default, CPU): :class:`LCDiscriminator` above, over the hand-made per-point features
  of motion/features.py (any tracker, e.g. the weight-free Lucas–Kanade).
* ``"tokens"``: :class:`TrackFormerHead`, the authors' layout over CoTracker3's own update tokens
  (``CoTracker3Tracker(mode="shift").track(...).tokens``, (B, N, T, 1110), time embedding included):
  ``input_transform`` 1110 → 384, 64 virtual tracks, 3 time + 3 space layers of CoTracker3's update
  transformer (motion/update_former.py), then LayerNorm(384) → mean over T → mean over N →
  Linear 384→192 → GELU → Dropout 0.1 → Linear 192→1 (:data:`TRACKFORMER`, 21,805,825 parameters).
  Parameter names are the authors' (``virual_tracks``, ``classfier_head``), so their LC checkpoint
  (a TrackFormer state dict) loads strictly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor, nn

from shiftvdm.errors import ConfigError, DataError
from shiftvdm.motion.update_former import VirtualTrackTransformer
from shiftvdm.rewards.ic import _Block, _init_weights


@dataclass
class LCConfig:
    kind: Literal["tracks", "tokens"] = "tracks"  # input: hand-made track features | CoTracker3 update tokens (reference)
    dim: int = 64  # token width (reference 384)
    depth: int = 2  # (time, points) attention pairs (reference 3)
    heads: int = 4  # attention heads (reference 8)
    mlp_ratio: float = 4.0  # MLP hidden width / dim (reference 4)
    dropout: float = 0.0  # dropout inside the blocks (reference none; costly on CPU)
    head_dropout: float = 0.1  # dropout in the head MLP (reference ClassifierHead 0.1)
    num_virtual_tracks: int = 64  # kind "tokens": learned virtual tracks mixing the points (reference 64)


# The authors' TrackFormer sizes (shift-reference-rewards.md §2.3): 3 time + 3 space layers, 384 wide,
# 8 heads, MLP ×4, 64 virtual tracks, classifier dropout 0.1, over CoTracker3's 1110-d tokens.
TRACKFORMER = LCConfig(kind="tokens", dim=384, depth=3, heads=8, mlp_ratio=4.0, dropout=0.0, head_dropout=0.1,
                       num_virtual_tracks=64)


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
        if cfg.kind != "tracks":
            raise ConfigError(f"LCDiscriminator reads hand-made track features (lc.kind 'tracks'), got lc.kind "
                              f"{cfg.kind!r}; build the LC head with build_lc_discriminator(cfg, in_dim)")
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


class _ClassifierHead(nn.Module):
    """(B, N, T, C) → (B,): LayerNorm, mean over T, mean over N, Linear C→C/2, GELU, Dropout, Linear → 1."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Sequential(nn.Linear(dim, dim // 2), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim // 2, 1))

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.norm(x).mean(dim=2).mean(dim=1)
        return self.classifier(pooled).squeeze(-1)


class TrackFormerHead(VirtualTrackTransformer):
    """CoTracker3 update tokens (B, N, T, in_dim) → one logit per clip (B,): the authors' "TrackFormer".

    The trunk is CoTracker3's update transformer (time attention per track, space attention through
    ``num_virtual_tracks`` virtual tracks), trained from scratch; the tracker itself stays frozen.
    Init as the reference: Xavier-uniform Linears with zero bias, the two classifier Linears
    trunc-normal std 0.001 (every clip starts at logit ≈ 0), virtual tracks standard normal.
    """

    def __init__(self, in_dim: int = 1110, dim: int = 384, heads: int = 8, time_depth: int = 3,
                 space_depth: int = 3, num_virtual_tracks: int = 64, mlp_ratio: float = 4.0,
                 head_dropout: float = 0.1) -> None:
        super().__init__(in_dim, dim, heads, time_depth, space_depth, num_virtual_tracks, mlp_ratio)
        self.in_dim = in_dim
        self.classfier_head = _ClassifierHead(dim, head_dropout)  # (sic) the authors' checkpoint key
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for layer in (self.classfier_head.classifier[0], self.classfier_head.classifier[3]):
            nn.init.trunc_normal_(layer.weight, std=0.001)

    @classmethod
    def from_config(cls, cfg: LCConfig, in_dim: int) -> "TrackFormerHead":
        """The head sized by ``cfg`` (``depth`` time layers and as many space layers)."""
        if cfg.dim % cfg.heads:
            raise ConfigError(f"lc.dim ({cfg.dim}) must be divisible by lc.heads ({cfg.heads})")
        return cls(in_dim, cfg.dim, cfg.heads, cfg.depth, cfg.depth, cfg.num_virtual_tracks, cfg.mlp_ratio,
                   cfg.head_dropout)

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.ndim != 4 or tokens.shape[-1] != self.in_dim:
            raise DataError(f"LC token input must be (B, N, T, {self.in_dim}), got {tuple(tokens.shape)}")
        tokens = tokens.to(self.input_transform.weight.dtype)
        return self.classfier_head(self.trunk(tokens))


def build_lc_discriminator(cfg: LCConfig, in_dim: int) -> nn.Module:
    """The LC head for ``cfg.kind``: ``LCDiscriminator`` ("tracks") or ``TrackFormerHead`` ("tokens")."""
    if cfg.kind == "tracks":
        return LCDiscriminator(cfg, in_dim)
    if cfg.kind == "tokens":
        return TrackFormerHead.from_config(cfg, in_dim)
    raise ConfigError(f"lc.kind must be 'tracks' or 'tokens', got {cfg.kind!r}")


def trackformer_config(**overrides: object) -> LCConfig:
    """:data:`TRACKFORMER` with some fields changed (e.g. a reduced width for tests)."""
    return replace(TRACKFORMER, **overrides)  # type: ignore[arg-type]
