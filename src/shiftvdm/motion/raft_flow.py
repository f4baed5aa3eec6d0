"""RAFT optical flow (Teed & Deng, ECCV 2020), large and small, loading the released checkpoints.

``get_flow_estimator("raft", checkpoint=PATH)`` loads ``raft-things.pth`` (large: what VBench's dynamic
degree uses) or ``raft-small.pth``; the variant is read from the file's keys. Nothing is downloaded.

The network, as released (princeton-vl/RAFT ``core/``; facts in reference/official-motion-networks.md §3):

* feature encoder ``fnet`` (instance norm, no parameters) and context encoder ``cnet`` (large: BatchNorm,
  small: no norm) at 1/8 resolution; large: residual blocks 64/96/128 → 256 channels, small: bottleneck
  blocks 32/64/96 → 128 (fnet) / 160 (cnet); ``cnet`` splits into a tanh hidden state and a ReLU context;
* an all-pairs correlation volume fmap1ᵀ·fmap2 / sqrt(C), average-pooled by 2 (floor) to 4 levels, read in
  a (2r+1)² window around the current match (r = 4 large, 3 small); the window's x-offset is the SLOW axis
  (the first motion-encoder conv is trained on that order);
* an update block iterated ``iters`` times: motion encoder, GRU (large: separable 1×5 then 5×1, small:
  3×3), flow head; large predicts a convex 8× upsampling mask (×0.25), small upsamples bilinearly;
* inputs are RGB floats in [0, 255], mapped to [−1, 1]; the network itself does not pad: its callers pad
  with ``InputPadder`` (replicate, centred, to a multiple of 8), as we do here.

A stride-2 block's third norm is registered twice (as ``norm3``/``norm4`` and inside ``downsample``),
so the state dict holds both names, as the released files do. Padded frames below 128 px make the
coarsest correlation level one pixel wide (the official code divides by zero there); smaller clips are
therefore upsampled by an integer factor first and the flow is averaged back (not the official output).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shiftvdm.errors import CheckpointError, ConfigError
from shiftvdm.motion.base import check_pair
from shiftvdm.motion.weights import identify_network, load_strict, read_state_dict, register_signature

CORR_LEVELS = 4
MIN_PADDED_SIDE = 128  # 128 / 8 / 2³ = 2: the coarsest correlation level keeps two cells
VBENCH_ITERS = 20  # VBench dynamic_degree: model(image1, image2, iters=20, test_mode=True)


@dataclass(frozen=True)
class RAFTVariant:
    """Sizes of one released RAFT model."""

    name: str
    small: bool
    hidden_dim: int
    context_dim: int
    corr_radius: int
    feature_dim: int


VARIANTS = {
    "large": RAFTVariant("RAFT", small=False, hidden_dim=128, context_dim=128, corr_radius=4, feature_dim=256),
    "small": RAFTVariant("RAFT-small", small=True, hidden_dim=96, context_dim=64, corr_radius=3, feature_dim=128),
}


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels)  # affine=False: no parameters, as released
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


class _ResidualBlock(nn.Module):
    """Two 3×3 convs (large encoders)."""

    def __init__(self, in_planes: int, planes: int, norm: str, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1)
        self.norm1, self.norm2 = _norm(norm, planes), _norm(norm, planes)
        self.downsample = None
        if stride != 1:
            self.norm3 = _norm(norm, planes)  # also downsample.1: the released key layout names it twice
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride), self.norm3)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        return F.relu((x if self.downsample is None else self.downsample(x)) + y)


class _BottleneckBlock(nn.Module):
    """1×1 → 3×3 → 1×1 convs at a quarter of the width (small encoders)."""

    def __init__(self, in_planes: int, planes: int, norm: str, stride: int) -> None:
        super().__init__()
        mid = planes // 4
        self.conv1 = nn.Conv2d(in_planes, mid, 1)
        self.conv2 = nn.Conv2d(mid, mid, 3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(mid, planes, 1)
        self.norm1, self.norm2, self.norm3 = _norm(norm, mid), _norm(norm, mid), _norm(norm, planes)
        self.downsample = None
        if stride != 1:
            self.norm4 = _norm(norm, planes)
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride), self.norm4)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        y = F.relu(self.norm3(self.conv3(y)))
        return F.relu((x if self.downsample is None else self.downsample(x)) + y)


class _Encoder(nn.Module):
    """7×7 stride-2 stem and three stages of two blocks (strides 1, 2, 2): 1/8 resolution."""

    def __init__(self, output_dim: int, norm: str, small: bool) -> None:
        super().__init__()
        widths = (32, 64, 96) if small else (64, 96, 128)
        block = _BottleneckBlock if small else _ResidualBlock
        self.norm1 = _norm(norm, widths[0])
        self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3)
        stages, in_planes = [], widths[0]
        for width, stride in zip(widths, (1, 2, 2)):
            stages.append(nn.Sequential(block(in_planes, width, norm, stride), block(width, width, norm, 1)))
            in_planes = width
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = nn.Conv2d(widths[-1], output_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.norm1(self.conv1(x)))
        return self.conv2(self.layer3(self.layer2(self.layer1(x))))


class _MotionEncoder(nn.Module):
    """Correlation and current flow → motion features (+ the flow itself, 2 channels)."""

    def __init__(self, corr_planes: int, small: bool) -> None:
        super().__init__()
        self.small = small
        if small:
            self.convc1 = nn.Conv2d(corr_planes, 96, 1)
            self.convf1 = nn.Conv2d(2, 64, 7, padding=3)
            self.convf2 = nn.Conv2d(64, 32, 3, padding=1)
            self.conv = nn.Conv2d(128, 80, 3, padding=1)
        else:
            self.convc1 = nn.Conv2d(corr_planes, 256, 1)
            self.convc2 = nn.Conv2d(256, 192, 3, padding=1)
            self.convf1 = nn.Conv2d(2, 128, 7, padding=3)
            self.convf2 = nn.Conv2d(128, 64, 3, padding=1)
            self.conv = nn.Conv2d(256, 126, 3, padding=1)

    def forward(self, flow: Tensor, corr: Tensor) -> Tensor:
        cor = F.relu(self.convc1(corr))
        if not self.small:
            cor = F.relu(self.convc2(cor))
        flo = F.relu(self.convf2(F.relu(self.convf1(flow))))
        return torch.cat([F.relu(self.conv(torch.cat([cor, flo], dim=1))), flow], dim=1)


def _gru_step(convz: nn.Conv2d, convr: nn.Conv2d, convq: nn.Conv2d, h: Tensor, x: Tensor) -> Tensor:
    hx = torch.cat([h, x], dim=1)
    z, r = torch.sigmoid(convz(hx)), torch.sigmoid(convr(hx))
    q = torch.tanh(convq(torch.cat([r * h, x], dim=1)))
    return (1 - z) * h + z * q


class _ConvGRU(nn.Module):
    """3×3 convolutional GRU (small)."""

    def __init__(self, hidden: int, inputs: int) -> None:
        super().__init__()
        self.convz, self.convr, self.convq = (nn.Conv2d(hidden + inputs, hidden, 3, padding=1) for _ in range(3))

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        return _gru_step(self.convz, self.convr, self.convq, h, x)


class _SepConvGRU(nn.Module):
    """Separable GRU (large): a horizontal 1×5 step, then a vertical 5×1 step."""

    def __init__(self, hidden: int, inputs: int) -> None:
        super().__init__()
        self.convz1, self.convr1, self.convq1 = (nn.Conv2d(hidden + inputs, hidden, (1, 5), padding=(0, 2))
                                                 for _ in range(3))
        self.convz2, self.convr2, self.convq2 = (nn.Conv2d(hidden + inputs, hidden, (5, 1), padding=(2, 0))
                                                 for _ in range(3))

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        h = _gru_step(self.convz1, self.convr1, self.convq1, h, x)
        return _gru_step(self.convz2, self.convr2, self.convq2, h, x)


class _FlowHead(nn.Module):
    def __init__(self, inputs: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, 2, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(F.relu(self.conv1(x)))


class _UpdateBlock(nn.Module):
    def __init__(self, variant: RAFTVariant) -> None:
        super().__init__()
        corr_planes = CORR_LEVELS * (2 * variant.corr_radius + 1) ** 2
        hidden = variant.hidden_dim
        self.encoder = _MotionEncoder(corr_planes, variant.small)
        motion_dim = 82 if variant.small else 128
        gru = _ConvGRU if variant.small else _SepConvGRU
        self.gru = gru(hidden, motion_dim + variant.context_dim)
        self.flow_head = _FlowHead(hidden, 128 if variant.small else 256)
        if not variant.small:  # convex upsampling weights: 9 neighbours × 8×8 sub-pixels
            self.mask = nn.Sequential(nn.Conv2d(hidden, 256, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(256, 64 * 9, 1))

    def forward(self, net: Tensor, inp: Tensor, corr: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
        net = self.gru(net, torch.cat([inp, self.encoder(flow, corr)], dim=1))
        return net, self.flow_head(net)

    def upsample_mask(self, net: Tensor) -> Tensor | None:
        # ×0.25 as released ("to balance gradients"); only the large model has a mask
        return 0.25 * self.mask(net) if hasattr(self, "mask") else None


def _pixel_grid(batch: int, height: int, width: int, device: torch.device) -> Tensor:
    """(B, 2, H, W) float coordinates (x, y) of every cell."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return torch.stack([xs, ys]).float()[None].repeat(batch, 1, 1, 1)


class CorrelationPyramid:
    """All-pairs correlation of two (B, C, h, w) feature maps, pooled to ``levels`` levels (floor mode)."""

    def __init__(self, fmap1: Tensor, fmap2: Tensor, radius: int, levels: int = CORR_LEVELS) -> None:
        batch, dim, height, width = fmap1.shape
        corr = torch.matmul(fmap1.view(batch, dim, height * width).transpose(1, 2),
                            fmap2.view(batch, dim, height * width))
        corr = (corr / math.sqrt(dim)).reshape(batch * height * width, 1, height, width)
        self.levels = [corr]
        for _ in range(levels - 1):
            self.levels.append(F.avg_pool2d(self.levels[-1], 2, stride=2))  # floor: odd sizes drop a row
        self.radius = radius
        steps = torch.linspace(-radius, radius, 2 * radius + 1, device=fmap1.device)
        slow, fast = torch.meshgrid(steps, steps, indexing="ij")
        # offsets (Δx, Δy) = (slow, fast): the x-offset varies along the first window axis
        self.window = torch.stack([slow, fast], dim=-1).view(1, 2 * radius + 1, 2 * radius + 1, 2)

    def __call__(self, coords: Tensor) -> Tensor:
        """Windows around ``coords`` (B, 2, h, w) → (B, levels·(2r+1)², h, w)."""
        batch, _, height, width = coords.shape
        centre = coords.permute(0, 2, 3, 1).reshape(batch * height * width, 1, 1, 2)
        out = []
        for i, corr in enumerate(self.levels):
            points = centre / 2 ** i + self.window
            h, w = corr.shape[-2:]
            # pixel → [-1, 1] with align_corners=True (pixel centres at the ends); zero outside
            grid = torch.cat([2 * points[..., :1] / (w - 1) - 1, 2 * points[..., 1:] / (h - 1) - 1], dim=-1)
            out.append(F.grid_sample(corr, grid, align_corners=True).view(batch, height, width, -1))
        return torch.cat(out, dim=-1).permute(0, 3, 1, 2).contiguous().float()


def convex_upsample(flow: Tensor, mask: Tensor) -> Tensor:
    """(B, 2, h, w) flow at 1/8 → (B, 2, 8h, 8w): each pixel a softmax-weighted mix of its 3×3 coarse cells."""
    batch, _, height, width = flow.shape
    weights = torch.softmax(mask.view(batch, 1, 9, 8, 8, height, width), dim=2)
    neighbours = F.unfold(8 * flow, [3, 3], padding=1).view(batch, 2, 9, 1, 1, height, width)
    up = torch.sum(weights * neighbours, dim=2)  # (B, 2, 8, 8, h, w)
    return up.permute(0, 1, 4, 2, 5, 3).reshape(batch, 2, 8 * height, 8 * width)


class RAFT(nn.Module):
    """RAFT as released: ``variant`` "large" (raft-things/sintel/kitti/chairs) or "small" (raft-small).

    ``forward(image1, image2, iters)`` takes (B, 3, H, W) RGB in [0, 255] with H, W multiples of 8 (pad
    with :class:`InputPadder`) and returns, as the official ``test_mode=True``, ``(flow_low, flow_up)``:
    the 1/8-resolution flow and the 8× upsampled one, in pixels, (B, 2, ·, ·). With ``test_mode=False``
    it returns the upsampled flow of every iteration (a list).
    """

    def __init__(self, variant: str = "large") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ConfigError(f"RAFT variant {variant!r}: expected one of {sorted(VARIANTS)}")
        self.variant = VARIANTS[variant]
        v = self.variant
        self.fnet = _Encoder(v.feature_dim, "instance", v.small)
        self.cnet = _Encoder(v.hidden_dim + v.context_dim, "none" if v.small else "batch", v.small)
        self.update_block = _UpdateBlock(v)

    @classmethod
    def expected_keys(cls, variant: str = "large") -> dict[str, tuple[int, ...]]:
        """Every state-dict key (without ``module.``) with its shape, in the released order."""
        with torch.device("meta"):
            model = cls(variant)
        return {k: tuple(t.shape) for k, t in model.state_dict().items()}

    def _upsample(self, flow: Tensor, net: Tensor) -> Tensor:
        mask = self.update_block.upsample_mask(net)
        if mask is None:  # small: bilinear ×8 (align_corners=True), as released
            return 8 * F.interpolate(flow, size=(8 * flow.shape[2], 8 * flow.shape[3]), mode="bilinear",
                                     align_corners=True)
        return convex_upsample(flow, mask)

    def forward(self, image1: Tensor, image2: Tensor, iters: int = 12, flow_init: Tensor | None = None,
                test_mode: bool = True) -> tuple[Tensor, Tensor] | list[Tensor]:
        v = self.variant
        image1 = (2 * (image1 / 255.0) - 1.0).contiguous()
        image2 = (2 * (image2 / 255.0) - 1.0).contiguous()
        fmap1, fmap2 = self.fnet(torch.cat([image1, image2])).float().chunk(2)
        corr = CorrelationPyramid(fmap1, fmap2, v.corr_radius)
        net, inp = self.cnet(image1).split([v.hidden_dim, v.context_dim], dim=1)
        net, inp = torch.tanh(net), torch.relu(inp)
        batch, _, height, width = image1.shape
        coords0 = _pixel_grid(batch, height // 8, width // 8, image1.device)
        coords1 = coords0.clone() if flow_init is None else coords0 + flow_init
        predictions = []
        for step in range(iters):
            coords1 = coords1.detach()
            net, delta = self.update_block(net, inp, corr(coords1), coords1 - coords0)
            coords1 = coords1 + delta
            if not test_mode or step == iters - 1:  # test mode: only the last upsampling is used
                predictions.append(self._upsample(coords1 - coords0, net))
        if test_mode:
            return coords1 - coords0, predictions[-1]
        return predictions


class RAFTSmall(RAFT):
    """RAFT-small (``raft-small.pth``)."""

    def __init__(self) -> None:
        super().__init__("small")

    @classmethod
    def expected_keys(cls, variant: str = "small") -> dict[str, tuple[int, ...]]:
        return RAFT.expected_keys(variant)


class InputPadder:
    """Replicate-pad (B, C, H, W) images to multiples of 8, centred (the official ``sintel`` mode)."""

    def __init__(self, height: int, width: int, multiple: int = 8) -> None:
        pad_h, pad_w = (-height) % multiple, (-width) % multiple
        self.pad = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)  # left, right, top, bottom
        self.height, self.width = height, width

    def __call__(self, *images: Tensor) -> list[Tensor]:
        return [F.pad(x, self.pad, mode="replicate") for x in images]

    def unpad(self, x: Tensor) -> Tensor:
        left, _, top, _ = self.pad
        return x[..., top:top + self.height, left:left + self.width]


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------

def _is_raft(keys: set[str], small: bool) -> bool:
    gru = "update_block.gru.convz.weight" if small else "update_block.gru.convz1.weight"
    return gru in keys and "fnet.conv1.weight" in keys and "cnet.conv2.weight" in keys and "init_conv.weight" not in keys


register_signature("RAFT", lambda keys: _is_raft(keys, small=False))
register_signature("RAFT-small", lambda keys: _is_raft(keys, small=True))
register_signature("torchvision RAFT (other key names; not the released princeton-vl layout)",
                   lambda keys: any(k.startswith("feature_encoder.") for k in keys)
                   and any(k.startswith("update_block.motion_encoder.") for k in keys))


def variant_of(state: dict[str, Tensor]) -> str | None:
    """"large" or "small" from a state dict's keys (``module.`` already removed), or None."""
    keys = set(state)
    if "update_block.gru.convz1.weight" in keys or "update_block.mask.0.weight" in keys:
        return "large"
    if "update_block.gru.convz.weight" in keys:
        return "small"
    return None


def load_raft(checkpoint: str | Path, variant: str | None = None) -> RAFT:
    """A RAFT loaded strictly from a local file; the variant is read from its keys unless given.

    Raises:
        CheckpointError: missing/unreadable file, another network, a missing/unexpected key or wrong shape.
    """
    state = read_state_dict(checkpoint, "RAFT checkpoint")
    found = variant_of(state)
    if variant is not None and found is not None and found != variant:
        raise CheckpointError(f"{checkpoint}: holds a RAFT-{found} checkpoint but variant={variant!r} was asked for")
    chosen = variant or found
    if chosen is None:
        other = identify_network(set(state))
        hint = f"; it looks like a {other} checkpoint" if other else ""
        first = ", ".join(sorted(state)[:3])
        raise CheckpointError(f"{checkpoint}: not a RAFT checkpoint (no update_block.gru keys; first keys: "
                              f"{first}){hint}")
    model = RAFT(chosen)
    load_strict(model, state, str(checkpoint), model.variant.name)
    return model


def load_raft_state(path: str | Path) -> dict[str, Tensor]:
    """A state dict read as data (``module.`` removed); kept for callers of the earlier module."""
    return read_state_dict(path, "checkpoint")


def check_state_dict(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Strict key/shape check (and load) of ``state`` into ``model``; CheckpointError naming the keys."""
    load_strict(model, state, source, type(model).__name__)


def seeded_state_dict(model: nn.Module, seed: int, prefix: str = "") -> dict[str, Tensor]:
    """Deterministic random weights for ``model``'s keys (for parity tests and smoke runs, never training).

    Each tensor comes from its own generator seeded by (seed, crc32(key)), so a key's values do not depend
    on the other keys. Conv/linear weights ~ N(0, 1/fan_in); biases ~ N(0, 0.1²); BatchNorm: weight
    1 + N(0, 0.1²), bias N(0, 0.1²), running mean N(0, 0.1²), running var U(0.5, 1.5).
    """
    state = {}
    for key, ref in model.state_dict().items():
        gen = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(key.encode())) % 2 ** 63)
        shape, name = tuple(ref.shape), key.rsplit(".", 1)[-1]
        if name == "num_batches_tracked":
            value = torch.zeros(shape, dtype=ref.dtype)
        elif name == "running_var":
            value = 0.5 + torch.rand(shape, generator=gen)
        elif len(shape) > 1:
            value = torch.randn(shape, generator=gen) / math.sqrt(int(np.prod(shape[1:])))
        elif name == "weight":  # a 1-d weight is a norm's scale
            value = 1 + 0.1 * torch.randn(shape, generator=gen)
        else:
            value = 0.1 * torch.randn(shape, generator=gen)
        state[prefix + key] = value
    return state


# ---------------------------------------------------------------------------------------------
# the estimator
# ---------------------------------------------------------------------------------------------

@dataclass
class PaddedFlow:
    """Flow at the resolution the network saw, as VBench reads it (before un-padding).

    Attributes:
        flow: float32 (N, Hp, Wp, 2) in pixels.
        pad: (left, right, top, bottom) replicate padding added around the frames.
        native: False when the frames were upsampled first (too small for RAFT); then ``flow`` is the
            un-padded flow of the original frames and ``pad`` is zero.
    """

    flow: np.ndarray
    pad: tuple[int, int, int, int]
    native: bool

    def cropped(self) -> np.ndarray:
        left, right, top, bottom = self.pad
        return self.flow[:, top:self.flow.shape[1] - bottom, left:self.flow.shape[2] - right]


class RAFTFlow:
    """FlowEstimator over a frozen released RAFT (name "raft").

    Args:
        checkpoint: local ``raft-things.pth`` / ``raft-small.pth`` (``module.``-prefixed or not), or a
            safetensors / hub-layout copy of the same keys; the variant is read from the keys.
        iters: refinement iterations (official default 12; VBench's dynamic degree uses 20).
        device: where the network runs (default: cuda when available).
        chunk_size: frame pairs per forward pass (memory: the correlation volume is (H·W/64)² floats a pair).
        variant: "large" or "small" to insist on one (default: whatever the file holds).

    ``__call__`` is the numpy interface (uint8 frames → float32 (N, H, W, 2)); ``flow_torch`` runs on
    tensors already on the device. Both pad as the official callers do and return un-padded flow.
    """

    name = "raft"

    def __init__(self, checkpoint: str | Path | None = None, iters: int = 12, device: str | None = None,
                 chunk_size: int = 8, variant: str | None = None, batch_size: int | None = None) -> None:
        if checkpoint is None:
            raise ConfigError("flow estimator 'raft' needs a local checkpoint path (e.g. --flow-checkpoint "
                              "raft-things.pth or critic.flow_checkpoint=PATH); no weights are downloaded")
        if iters < 1:
            raise ConfigError(f"flow estimator 'raft': iters must be at least 1, got {iters}")
        chunk_size = batch_size if batch_size is not None else chunk_size  # earlier keyword
        if chunk_size < 1:
            raise ConfigError(f"flow estimator 'raft': chunk_size must be at least 1, got {chunk_size}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = load_raft(checkpoint, variant).eval().requires_grad_(False).to(self.device)
        self.iters, self.chunk_size, self.checkpoint = int(iters), int(chunk_size), str(checkpoint)

    @property
    def variant(self) -> str:
        return "small" if self.model.variant.small else "large"

    @property
    def vbench_exact(self) -> bool:
        """True when this is VBench's flow: RAFT large at 20 iterations (VBench loads raft-things.pth)."""
        return self.variant == "large" and self.iters == VBENCH_ITERS

    def describe(self) -> str:
        return f"{self.model.variant.name}, {self.iters} iterations, {Path(self.checkpoint).name}"

    @staticmethod
    def upsampling(height: int, width: int) -> int:
        """Integer factor applied to frames whose padded short side is below 128 px (1 otherwise)."""
        padded = min(height + (-height) % 8, width + (-width) % 8)
        return 1 if padded >= MIN_PADDED_SIDE else -(-MIN_PADDED_SIDE // min(height, width))

    def _chunks(self, a: Tensor, b: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
        for start in range(0, a.shape[0], self.chunk_size):
            yield a[start:start + self.chunk_size], b[start:start + self.chunk_size]

    @torch.no_grad()
    def _forward(self, a: Tensor, b: Tensor, keep_padding: bool) -> tuple[Tensor, tuple[int, int, int, int], bool]:
        if a.shape != b.shape or a.ndim != 4 or a.shape[1] != 3:
            raise ConfigError(f"RAFT flow_torch: expected two (N, 3, H, W) batches of one shape, got "
                              f"{tuple(a.shape)} and {tuple(b.shape)}")
        height, width = a.shape[-2:]
        scale = self.upsampling(height, width)
        a = a.to(self.device, torch.float32)
        b = b.to(self.device, torch.float32)
        if scale > 1:
            size = (height * scale, width * scale)
            a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
            b = F.interpolate(b, size=size, mode="bilinear", align_corners=False)
        padder = InputPadder(*a.shape[-2:])
        out = []
        for chunk_a, chunk_b in self._chunks(a, b):
            _, flow_up = self.model(*padder(chunk_a, chunk_b), iters=self.iters, test_mode=True)
            if scale > 1:  # back to the original grid: mean over each s×s block, displacements / s
                flow_up = F.avg_pool2d(padder.unpad(flow_up), scale) / scale
            elif not keep_padding:
                flow_up = padder.unpad(flow_up)
            out.append(flow_up)
        native = scale == 1
        return torch.cat(out), (padder.pad if native and keep_padding else (0, 0, 0, 0)), native

    def flow_torch(self, frames_a: Tensor, frames_b: Tensor) -> Tensor:
        """Flow a → b of float RGB (N, 3, H, W) in [0, 255] on any device → (N, 2, H, W) on the model's device."""
        return self._forward(frames_a, frames_b, keep_padding=False)[0]

    @staticmethod
    def _to_tensor(frames: np.ndarray) -> Tensor:
        if frames.ndim == 3:  # grey → three identical channels
            frames = np.repeat(frames[..., None], 3, axis=-1)
        return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)

    def __call__(self, frames_a: np.ndarray, frames_b: np.ndarray) -> np.ndarray:
        check_pair(frames_a, frames_b)
        flow = self.flow_torch(self._to_tensor(frames_a), self._to_tensor(frames_b))
        return flow.permute(0, 2, 3, 1).float().cpu().numpy()

    def padded_flow(self, frames_a: np.ndarray, frames_b: np.ndarray) -> PaddedFlow:
        """The flow VBench reads: at the padded resolution (see :class:`PaddedFlow`)."""
        check_pair(frames_a, frames_b)
        flow, pad, native = self._forward(self._to_tensor(frames_a), self._to_tensor(frames_b), keep_padding=True)
        return PaddedFlow(flow=flow.permute(0, 2, 3, 1).float().cpu().numpy(), pad=pad, native=native)
