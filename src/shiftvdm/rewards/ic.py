"""IC discriminator: instantaneous motion, one logit per clip from per-pair brightness-constancy maps.

METHOD.md step 2 / shift-reference-rewards.md §1: every consecutive-pair map (residual, confidence,
optionally flow) goes through the same encoder, the pair embeddings are averaged over time, and a
linear layer gives the logit. Two encoders, both trained from scratch (the reference used timm's
ViT-B/16; we write a small ViT here, no timm), with CPU-sized defaults:

* ``vit``: patch embedding, a CLS token, learned position embeddings (bilinearly resized when the
  map size differs from ``image_size``, like timm's ``dynamic_img_size``), pre-LN blocks; CLS output;
* ``cnn``: strided 3×3 convolutions with GroupNorm + SiLU and global average pooling. GroupNorm, not
  BatchNorm: normalisation statistics must not drift while the features' distribution is shifting
  (the reference's frozen-BatchNorm drift, §8.2, cannot happen).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shiftvdm.errors import ConfigError, DataError


@dataclass
class ICConfig:
    encoder: Literal["vit", "cnn"] = "vit"  # per-pair encoder (reference: ViT-B/16; CNN = its ResNet option)
    image_size: tuple[int, int] = (32, 32)  # (h, w) the position embeddings are made for; other sizes are resized
    patch_size: int = 4  # ViT patch side in map pixels (reference 16 at 320×576)
    dim: int = 64  # embedding width (reference 768)
    depth: int = 2  # ViT blocks (reference 12)
    heads: int = 4  # attention heads (reference 12)
    mlp_ratio: float = 4.0  # MLP hidden width / dim (reference 4)
    dropout: float = 0.0  # dropout inside the blocks (reference vit drop_rate 0.1; 0 here: costly on CPU)
    head_dropout: float = 0.1  # dropout before the linear head
    cnn_channels: tuple[int, ...] = (32, 64, 128)  # CNN widths, one stride-2 stage each
    residual_scale: float = 10.0  # the residual channel is multiplied by this (grey in [0,1] -> O(1) values)
    flow_scale: float = 0.25  # optional flow channels (px) are multiplied by this


def _dropout(p: float) -> nn.Module:
    """Dropout, or Identity when p = 0 (skips the CPU-costly mask draw)."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


class _Block(nn.Module):
    """Pre-LN transformer block: x + MHSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=0.0, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), _dropout(dropout), nn.Linear(hidden, dim),
                                 _dropout(dropout))
        self.drop = _dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.attn(h, h, h, need_weights=False)[0])
        return x + self.mlp(self.norm2(x))


class ViTEncoder(nn.Module):
    """(B, C, h, w) maps -> (B, dim) CLS embeddings."""

    def __init__(self, cfg: ICConfig, in_channels: int) -> None:
        super().__init__()
        if cfg.dim % cfg.heads:
            raise ConfigError(f"ic.dim ({cfg.dim}) must be divisible by ic.heads ({cfg.heads})")
        self.patch_size = cfg.patch_size
        self.grid = (math.ceil(cfg.image_size[0] / cfg.patch_size), math.ceil(cfg.image_size[1] / cfg.patch_size))
        self.patch_embed = nn.Conv2d(in_channels, cfg.dim, cfg.patch_size, stride=cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1] + 1, cfg.dim))
        self.pos_drop = _dropout(cfg.dropout)
        self.blocks = nn.ModuleList(_Block(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def _pos_embed(self, grid: tuple[int, int]) -> Tensor:
        if grid == self.grid:
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        dim = patch_pos.shape[-1]
        patch_pos = patch_pos.reshape(1, *self.grid, dim).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=grid, mode="bilinear", align_corners=False)
        return torch.cat([cls_pos, patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)

    def forward(self, maps: Tensor) -> Tensor:
        height, width = maps.shape[-2:]
        pad_h, pad_w = (-height) % self.patch_size, (-width) % self.patch_size
        if pad_h or pad_w:
            maps = F.pad(maps, (0, pad_w, 0, pad_h))
        tokens = self.patch_embed(maps)  # (B, dim, gh, gw)
        grid = (tokens.shape[-2], tokens.shape[-1])
        tokens = tokens.flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)
        tokens = self.pos_drop(tokens + self._pos_embed(grid))
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens[:, 0])


class CNNEncoder(nn.Module):
    """(B, C, h, w) maps -> (B, dim): stride-2 conv stages (GroupNorm, SiLU), global average pool, linear."""

    def __init__(self, cfg: ICConfig, in_channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for width in cfg.cnn_channels:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.GroupNorm(min(8, width), width),
                       nn.SiLU(), nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(min(8, width), width), nn.SiLU()]
            channels = width
        self.features = nn.Sequential(*layers)
        self.proj = nn.Linear(channels, cfg.dim)

    def forward(self, maps: Tensor) -> Tensor:
        return self.proj(self.features(maps).mean(dim=(-2, -1)))


class ICDiscriminator(nn.Module):
    """Per-pair maps (B, T−1, C, h, w) -> one logit per clip (B,)."""

    def __init__(self, cfg: ICConfig, in_channels: int = 2) -> None:
        super().__init__()
        if in_channels not in (2, 4):
            raise ConfigError(f"IC maps have 2 channels (residual, confidence) or 4 (+ flow), got {in_channels}")
        self.in_channels = in_channels
        scale = [cfg.residual_scale, 1.0] + [cfg.flow_scale] * (in_channels - 2)
        self.register_buffer("channel_scale", torch.tensor(scale, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.encoder = ViTEncoder(cfg, in_channels) if cfg.encoder == "vit" else CNNEncoder(cfg, in_channels)
        self.head_drop = nn.Dropout(cfg.head_dropout)
        self.head = nn.Linear(cfg.dim, 1)
        self.apply(_init_weights)
        # Reference: tiny classifier init (std 0.001) so that every clip starts at logit ≈ 0.
        nn.init.trunc_normal_(self.head.weight, std=0.001)
        nn.init.zeros_(self.head.bias)

    def forward(self, maps: Tensor) -> Tensor:
        if maps.ndim != 5 or maps.shape[2] != self.in_channels:
            raise DataError(f"IC input must be (B, T-1, {self.in_channels}, h, w), got {tuple(maps.shape)}")
        batch, pairs = maps.shape[:2]
        x = maps.flatten(0, 1) * self.channel_scale
        emb = self.encoder(x).view(batch, pairs, -1).mean(dim=1)  # mean over the T−1 pairs
        return self.head(self.head_drop(emb)).squeeze(-1)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
