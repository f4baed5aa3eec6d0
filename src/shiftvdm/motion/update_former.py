"""CoTracker3's update transformer: attention over time per track, and over tracks through virtual tracks.

Shared by two networks with the same building blocks (official-motion-networks.md §2):

* the tracker (``motion/cotracker3.py``), whose ``updateformer`` adds a flow head and a
  visibility/confidence head on top of :class:`VirtualTrackTransformer`;
* the authors' LC discriminator, "TrackFormer" (``rewards/lc.py``), which reads CoTracker's own
  update tokens through the same trunk and replaces the heads by a pooled classifier.

Layout (parameter names follow the released checkpoints, including the ``virual_tracks`` spelling):
``input_transform`` (D_in → hidden), ``virual_tracks`` (1, V, 1, hidden) learned tokens appended to the
points, then for each of ``time_depth`` layers a pre-LN self-attention block over time (every track
and virtual track on its own), and on every ``time_depth // space_depth``-th layer a space step per
frame: virtual ← points cross-attention, virtual self-attention, points ← virtual cross-attention.
The virtual tokens are dropped at the end. Point mixing through V virtual tracks costs O(N·V), not
O(N²), and is permutation-equivariant over points.

Block details that change numbers: LayerNorms without affine parameters and eps 1e-6, except the
context norm of a cross-attention block (affine, eps 1e-5); tanh-approximate GELU in the MLPs;
attention scale 1/sqrt(hidden / heads); query, key/value (one fused Linear, keys first) and output
projections all with bias.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shiftvdm.errors import ConfigError


class Mlp(nn.Module):
    """fc1 → activation → fc2 (keys ``fc1``, ``fc2``)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int,
                 activation: Callable[[], nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.act = activation()
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _tanh_gelu() -> nn.Module:
    return nn.GELU(approximate="tanh")


class Attention(nn.Module):
    """Multi-head attention of ``x`` over ``context`` (itself when None): keys ``to_q``, ``to_kv``, ``to_out``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"update transformer: hidden size {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(dim, 2 * dim)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        context = x if context is None else context
        batch, len_q, dim = x.shape
        head_dim = dim // self.heads
        q = self.to_q(x).reshape(batch, len_q, self.heads, head_dim).transpose(1, 2)
        k, v = self.to_kv(context).chunk(2, dim=-1)
        k = k.reshape(batch, context.shape[1], self.heads, head_dim).transpose(1, 2)
        v = v.reshape(batch, context.shape[1], self.heads, head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q kᵀ / sqrt(head_dim)) v
        return self.to_out(out.transpose(1, 2).reshape(batch, len_q, dim))


class AttnBlock(nn.Module):
    """Pre-LN self-attention block: x + attn(LN(x)), then x + MLP(LN(x)) (keys ``attn``, ``mlp``)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dim, _tanh_gelu)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CrossAttnBlock(nn.Module):
    """Pre-LN cross-attention block: x + attn(LN(x), LN_affine(context)), then the MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.norm_context = nn.LayerNorm(dim)  # affine, default eps 1e-5 (as released)
        self.cross_attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dim, _tanh_gelu)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        x = x + self.cross_attn(self.norm1(x), self.norm_context(context))
        return x + self.mlp(self.norm2(x))


class VirtualTrackTransformer(nn.Module):
    """tokens (B, N, T, in_dim) → point tokens (B, N, T, hidden) after time and virtual-track space attention."""

    def __init__(self, in_dim: int, hidden: int = 384, heads: int = 8, time_depth: int = 3, space_depth: int = 3,
                 num_virtual_tracks: int = 64, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if space_depth < 1 or time_depth < space_depth or time_depth % space_depth:
            raise ConfigError(f"update transformer: time_depth ({time_depth}) must be a positive multiple of "
                              f"space_depth ({space_depth})")
        if num_virtual_tracks < 1:
            raise ConfigError(f"update transformer: num_virtual_tracks must be >= 1, got {num_virtual_tracks}")
        self.hidden = hidden
        self.num_virtual_tracks = num_virtual_tracks
        self.space_every = time_depth // space_depth
        self.input_transform = nn.Linear(in_dim, hidden)
        self.virual_tracks = nn.Parameter(torch.randn(1, num_virtual_tracks, 1, hidden))  # (sic) released name
        self.time_blocks = nn.ModuleList(AttnBlock(hidden, heads, mlp_ratio) for _ in range(time_depth))
        self.space_virtual_blocks = nn.ModuleList(AttnBlock(hidden, heads, mlp_ratio) for _ in range(space_depth))
        self.space_point2virtual_blocks = nn.ModuleList(CrossAttnBlock(hidden, heads, mlp_ratio)
                                                        for _ in range(space_depth))
        self.space_virtual2point_blocks = nn.ModuleList(CrossAttnBlock(hidden, heads, mlp_ratio)
                                                        for _ in range(space_depth))

    def trunk(self, tokens: Tensor) -> Tensor:
        """(B, N, T, in_dim) → (B, N, T, hidden) point tokens (virtual tracks dropped)."""
        x = self.input_transform(tokens)
        batch, points, frames, dim = x.shape
        virtual = self.virual_tracks.to(x.dtype).expand(batch, -1, frames, -1)
        x = torch.cat([x, virtual], dim=1)
        total = points + self.num_virtual_tracks
        space = 0
        for layer, time_block in enumerate(self.time_blocks):
            x = time_block(x.reshape(batch * total, frames, dim)).reshape(batch, total, frames, dim)
            if layer % self.space_every == 0:
                per_frame = x.transpose(1, 2).reshape(batch * frames, total, dim)
                point_tok, virtual_tok = per_frame[:, :points], per_frame[:, points:]
                virtual_tok = self.space_virtual2point_blocks[space](virtual_tok, point_tok)
                virtual_tok = self.space_virtual_blocks[space](virtual_tok)
                point_tok = self.space_point2virtual_blocks[space](point_tok, virtual_tok)
                per_frame = torch.cat([point_tok, virtual_tok], dim=1)
                x = per_frame.reshape(batch, frames, total, dim).transpose(1, 2)
                space += 1
        return x[:, :points]
