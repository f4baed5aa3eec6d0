"""MUSIQ (Ke et al., ICCV 2021) as VBench's imaging quality runs it: pyiqa's PyTorch port with the SPAQ
checkpoint ``musiq_spaq_ckpt-358bb6af.pth``, read as data and loaded strictly under the released key names.

Facts from chaofengc/IQA-PyTorch@01ae427 (pyiqa/archs/musiq_arch.py, pyiqa/data/multiscale_trans_util.py,
pyiqa/matlab_utils/padding.py), which VBench's vbench/imaging_quality.py builds as
``MUSIQ(pretrained_model_path=...)`` (one output, patch 32, hidden 384, 14 blocks, 6 heads, MLP 1152,
hash grid 10, scales [224, 384] plus the original resolution with all its patches):

* input in [0, 1] -> 2x - 1; for each longer side in (224, 384): bicubic resize (align_corners False, no
  antialias) to round(h·r) x round(w·r), TF-"SAME" zero padding to whole 32 px patches, patches unfolded
  channel-major, padded with zero patches (mask 0) to ceil(L/32)² tokens; then the original image's patches,
  unpadded. Each token carries its hashed grid position (nearest of arange(10) over the patch rows and
  columns: row·10 + col), its scale index and its mask.
* each 32 px patch: weight-standardised 7x7/2 conv (std unbiased, +1e-5; TF "SAME" padding), GroupNorm(32,
  eps 1e-6), ReLU, SAME-padded 3x3/2 max pool, one BiT bottleneck 64->256 (GroupNorm eps 1e-4, projection
  shortcut), flattened channels-last (8·8·256) and embedded by a Linear to 384.
* + hashed position and scale embeddings, a CLS token in front, 14 pre-LN blocks (LayerNorm eps 1e-6,
  attention scores of masked pairs set to -1000 before the softmax, exact GELU), final LayerNorm, head on
  the CLS token: the score (SPAQ: 0-100).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shiftvdm.errors import CheckpointError
from shiftvdm.motion.weights import load_strict, read_state_dict


@dataclass(frozen=True)
class MusiqShape:
    hidden: int = 384
    mlp: int = 1152
    heads: int = 6
    layers: int = 14
    patch: int = 32
    hash_grid: int = 10
    scales: tuple[int, ...] = (224, 384)


MUSIQ_SPAQ = MusiqShape()
_TOKEN_CHANNELS = 64  # pyiqa's resnet_token_dim


def same_padding(x: Tensor, kernel: int, stride: int) -> Tensor:
    """TensorFlow "SAME" zero padding (the extra pixel of an odd total goes right / bottom)."""
    height, width = x.shape[-2:]
    pad_h = max((math.ceil(height / stride) - 1) * stride + kernel - height, 0)
    pad_w = max((math.ceil(width / stride) - 1) * stride + kernel - width, 0)
    return F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


class StdConv(nn.Conv2d):
    """Weight-standardised convolution with "SAME" padding (BiT)."""

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight - self.weight.mean((1, 2, 3), keepdim=True)
        weight = weight / (weight.std((1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(same_padding(x, self.kernel_size[0], self.stride[0]), weight, self.bias, self.stride)


class Bottleneck(nn.Module):
    def __init__(self, inplanes: int, outplanes: int) -> None:
        super().__init__()
        self.conv1 = StdConv(inplanes, inplanes, 1, bias=False)
        self.gn1 = nn.GroupNorm(32, inplanes, eps=1e-4)
        self.conv2 = StdConv(inplanes, inplanes, 3, bias=False)
        self.gn2 = nn.GroupNorm(32, inplanes, eps=1e-4)
        self.conv3 = StdConv(inplanes, outplanes, 1, bias=False)
        self.gn3 = nn.GroupNorm(32, outplanes, eps=1e-4)
        self.conv_proj = StdConv(inplanes, outplanes, 1, bias=False)
        self.gn_proj = nn.GroupNorm(32, outplanes, eps=1e-4)

    def forward(self, x: Tensor) -> Tensor:
        identity = self.gn_proj(self.conv_proj(x))
        x = F.relu(self.gn1(self.conv1(x)))
        x = F.relu(self.gn2(self.conv2(x)))
        return F.relu(self.gn3(self.conv3(x)) + identity)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, n, c = x.shape

        def split(t: Tensor) -> Tensor:
            return t.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = (q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5
        pair = mask[:, None, :, None] & mask[:, None, None, :]
        scores = scores.masked_fill(~pair, -1e3)  # the port's value (not -inf): a padded query stays finite
        return self.out((scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, shape: MusiqShape) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(shape.hidden, eps=1e-6)
        self.attention = _Attention(shape.hidden, shape.heads)
        self.norm2 = nn.LayerNorm(shape.hidden, eps=1e-6)
        self.mlp = _Mlp(shape.hidden, shape.mlp)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.attention(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class _PositionEmbedding(nn.Module):
    def __init__(self, grid: int, dim: int) -> None:
        super().__init__()
        self.position_emb = nn.Parameter(torch.zeros(1, grid * grid, dim))


class _ScaleEmbedding(nn.Module):
    def __init__(self, scales: int, dim: int) -> None:
        super().__init__()
        self.scale_emb = nn.Parameter(torch.zeros(scales, dim))


class _Encoder(nn.Module):
    def __init__(self, shape: MusiqShape) -> None:
        super().__init__()
        self.posembed_input = _PositionEmbedding(shape.hash_grid, shape.hidden)
        self.scaleembed_input = _ScaleEmbedding(len(shape.scales) + 1, shape.hidden)
        self.cls = nn.Parameter(torch.zeros(1, 1, shape.hidden))
        self.encoder_norm = nn.LayerNorm(shape.hidden, eps=1e-6)
        self.transformer = nn.ModuleDict({f"encoderblock_{i}": _Block(shape) for i in range(shape.layers)})

    def forward(self, x: Tensor, positions: Tensor, scales: Tensor, mask: Tensor) -> Tensor:
        x = x + self.posembed_input.position_emb[0][positions] + self.scaleembed_input.scale_emb[scales]
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        for block in self.transformer.values():
            x = block(x, mask)
        return self.encoder_norm(x)


class Musiq(nn.Module):
    """MUSIQ: (B, 3, H, W) images in [0, 1] -> (B,) quality scores (the head's single output)."""

    def __init__(self, shape: MusiqShape = MUSIQ_SPAQ) -> None:
        super().__init__()
        self.shape = shape
        self.conv_root = StdConv(3, _TOKEN_CHANNELS, 7, 2, bias=False)
        self.gn_root = nn.GroupNorm(32, _TOKEN_CHANNELS, eps=1e-6)
        self.block1 = Bottleneck(_TOKEN_CHANNELS, 4 * _TOKEN_CHANNELS)
        self.embedding = nn.Linear(4 * _TOKEN_CHANNELS * (shape.patch // 4) ** 2, shape.hidden)
        self.transformer_encoder = _Encoder(shape)
        self.head = nn.Linear(shape.hidden, 1)
        self.eval()

    def forward(self, images: Tensor) -> Tensor:
        patches, positions, scales, mask = multiscale_patches(images * 2 - 1, self.shape)
        b, n = patches.shape[:2]
        x = patches.reshape(b * n, 3, self.shape.patch, self.shape.patch)
        x = self.gn_root(self.conv_root(x))
        x = F.max_pool2d(same_padding(F.relu(x), 3, 2), 3, 2)
        x = self.block1(x).permute(0, 2, 3, 1).reshape(b, n, -1)  # channels-last, as the TF original
        x = self.transformer_encoder(self.embedding(x), positions, scales, mask)
        return self.head(x[:, 0]).squeeze(-1)


def _hashed_positions(grid: int, rows: int, cols: int) -> Tensor:
    """Each patch's cell in the grid x grid hash table: nearest-neighbour stretch of arange(grid)."""
    table = torch.arange(grid, dtype=torch.float32).reshape(1, 1, grid)
    col = F.interpolate(table, cols, mode="nearest").reshape(1, cols).expand(rows, cols)
    row = F.interpolate(table, rows, mode="nearest").reshape(rows, 1).expand(rows, cols)
    return (row * grid + col).reshape(-1).long()


def _patches(image: Tensor, shape: MusiqShape, scale_id: int, length: int | None
             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    b, _, height, width = image.shape
    p = shape.patch
    tokens = F.unfold(same_padding(image, p, p), p, stride=p).transpose(1, 2)  # (B, L, 3·p·p), channel-major
    positions = _hashed_positions(shape.hash_grid, math.ceil(height / p), math.ceil(width / p))
    count = tokens.shape[1]
    positions = positions.expand(b, count)
    scales = torch.full_like(positions, scale_id)
    mask = torch.ones(b, count, dtype=torch.bool)
    if length is not None:  # padded with zero patches at position 0, scale 0, masked out (or cut)
        extra = max(length - count, 0)
        tokens = F.pad(tokens, (0, 0, 0, extra))[:, :length]
        positions, scales, mask = (F.pad(t, (0, extra))[:, :length] for t in (positions, scales, mask))
    device = image.device
    return tokens, positions.to(device), scales.to(device), mask.to(device)


def multiscale_patches(image: Tensor, shape: MusiqShape) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """MUSIQ's multi-scale input of images in [-1, 1]: tokens (B, N, 3·p·p), hashed positions, scale ids
    and mask (B, N), over the resized scales and then the original resolution."""
    height, width = image.shape[-2:]
    parts = []
    for scale_id, longer in enumerate(sorted(shape.scales)):
        ratio = longer / max(height, width)
        size = (round(height * ratio), round(width * ratio))
        resized = F.interpolate(image, size, mode="bicubic", align_corners=False)
        parts.append(_patches(resized, shape, scale_id, math.ceil(longer / shape.patch) ** 2))
    parts.append(_patches(image, shape, len(shape.scales), None))
    return tuple(torch.cat(items, dim=1) for items in zip(*parts))  # type: ignore[return-value]


def musiq_official_keys(shape: MusiqShape = MUSIQ_SPAQ) -> dict[str, tuple[int, ...]]:
    """Key -> shape of pyiqa's MUSIQ state dict (one output), in its order."""
    c, h = _TOKEN_CHANNELS, shape.hidden
    keys: dict[str, tuple[int, ...]] = {"conv_root.weight": (c, 3, 7, 7), "gn_root.weight": (c,),
                                        "gn_root.bias": (c,)}
    for name, out_ch, in_ch, k in (("1", c, c, 1), ("2", c, c, 3), ("3", 4 * c, c, 1)):
        keys.update({f"block1.conv{name}.weight": (out_ch, in_ch, k, k), f"block1.gn{name}.weight": (out_ch,),
                     f"block1.gn{name}.bias": (out_ch,)})
    keys.update({"block1.conv_proj.weight": (4 * c, c, 1, 1), "block1.gn_proj.weight": (4 * c,),
                 "block1.gn_proj.bias": (4 * c,), "embedding.weight": (h, 4 * c * (shape.patch // 4) ** 2),
                 "embedding.bias": (h,), "transformer_encoder.cls": (1, 1, h),
                 "transformer_encoder.posembed_input.position_emb": (1, shape.hash_grid ** 2, h),
                 "transformer_encoder.scaleembed_input.scale_emb": (len(shape.scales) + 1, h),
                 "transformer_encoder.encoder_norm.weight": (h,), "transformer_encoder.encoder_norm.bias": (h,)})
    for i in range(shape.layers):
        b = f"transformer_encoder.transformer.encoderblock_{i}."
        keys.update({b + "norm1.weight": (h,), b + "norm1.bias": (h,)})
        for name in ("query", "key", "value", "out"):
            keys.update({f"{b}attention.{name}.weight": (h, h), f"{b}attention.{name}.bias": (h,)})
        keys.update({b + "norm2.weight": (h,), b + "norm2.bias": (h,), b + "mlp.fc1.weight": (shape.mlp, h),
                     b + "mlp.fc1.bias": (shape.mlp,), b + "mlp.fc2.weight": (h, shape.mlp),
                     b + "mlp.fc2.bias": (h,)})
    keys.update({"head.weight": (1, h), "head.bias": (1,)})
    return keys


def load_musiq(path: str | Path, shape: MusiqShape = MUSIQ_SPAQ) -> Musiq:
    """MUSIQ from pyiqa's released checkpoint (a plain state dict; ``module.`` prefixes removed), strictly."""
    state = read_state_dict(path, "MUSIQ checkpoint")
    head = state.get("head.weight")
    if head is not None and head.shape[0] != 1:
        raise CheckpointError(f"{path}: a MUSIQ checkpoint with {head.shape[0]} outputs (the AVA variant scores a "
                              "10-bin distribution); imaging_quality needs the SPAQ one, musiq_spaq_ckpt-358bb6af.pth")
    model = Musiq(shape)
    load_strict(model, state, str(path), "MUSIQ")
    return model


def seeded_musiq_state(shape: MusiqShape, seed: int, centre: float = 60.0, spread: float = 10.0
                       ) -> dict[str, Tensor]:
    """A pyiqa-format state dict drawn from ``seed``: linear weights ~ N(0, 1/fan_in), norms near 1, and a
    head that scores images around ``centre`` ± ``spread`` (SPAQ's 0-100 range)."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, Tensor] = {}
    for key, dims in musiq_official_keys(shape).items():
        noise = torch.randn(dims, generator=generator)
        leaf = key.rsplit(".", 1)[-1]
        if key == "head.weight":
            state[key] = noise * spread / math.sqrt(dims[1])
        elif key == "head.bias":
            state[key] = torch.full(dims, centre)
        elif ("gn" in key or "norm" in key) and leaf == "weight":
            state[key] = 1.0 + 0.1 * noise
        elif leaf == "bias":
            state[key] = 0.05 * noise
        elif leaf == "weight":
            state[key] = noise / math.sqrt(math.prod(dims[1:]))
        else:  # cls, position and scale embeddings
            state[key] = 0.5 * noise
    return state


def vbench_longer_side(x: Tensor, limit: int = 512) -> Tensor:
    """VBench imaging_quality's default preprocessing ('longer'): frames (T, 3, H, W) in 0..255 whose longer
    side exceeds ``limit`` are resized (bilinear, no antialias) to (int(s·H), int(s·W)), s = limit / max(H, W);
    then /255."""
    height, width = x.shape[-2:]
    if max(height, width) > limit:
        s = limit / max(height, width)
        size = (int(s * height), int(s * width))
        if size != (height, width):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
    return x / 255.0


def musiq_frame_scores(model: Musiq, frames: Tensor, device: torch.device, batch: int = 8) -> Sequence[float]:
    """MUSIQ score of every frame (T, 3, H, W) in 0..255, after VBench's preprocessing, batched."""
    x = vbench_longer_side(frames)
    with torch.inference_mode():
        scores = [model(x[i:i + batch].to(device)).float().cpu() for i in range(0, x.shape[0], batch)]
    return torch.cat(scores).double().tolist()


__all__ = ["MUSIQ_SPAQ", "Musiq", "MusiqShape", "load_musiq", "multiscale_patches", "musiq_frame_scores",
           "musiq_official_keys", "seeded_musiq_state", "vbench_longer_side"]
