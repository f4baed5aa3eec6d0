"""SEA-RAFT optical flow (Wang, Lipson & Deng, ECCV 2024): our implementation of the released network.

SHIFT's IC reward reads SEA-RAFT-M flow and its uncertainty (shift-reference-rewards.md §1.1). This
module rebuilds the network so that the authors' released checkpoints load strictly, with the state-dict
keys and shapes of princeton-vl/SEA-RAFT@f41d0a7e (official-keys/searaft_{M,S}_keys.tsv), and gives the
official ``test_mode`` output (the last iteration's flow and ``info``) for the same weights.

Architecture (official-motion-networks.md §1):
    * ``cnet``: ResNet-FPN on both images stacked (6 channels) -> 2·dim maps at 1/8, ``init_conv`` 3×3,
      split into the update state ``net`` and ``context`` (no tanh/relu, unlike RAFT);
    * the initial flow is regressed by ``flow_head`` from ``net`` before any iteration;
    * ``fnet``: ResNet-FPN (3 channels) on each image -> 2·dim features; the correlation pyramid has 4
      levels, each recomputed against ``fmap2`` halved bilinearly, looked up in a (2r+1)² window whose
      x offset is the slow axis;
    * each iteration: motion encoder (RAFT's) + ``num_blocks`` ConvNeXt refine blocks, ``flow_head`` gives
      Δflow (2), mixture logits (2) and raw log-b (2); ``upsample_weight`` gives the convex 8× masks.

Variants (config/eval/spring-*.json): S = ResNet-18 stages [2, 2, 2]; M = ResNet-34 stages [3, 4, 6]
(what the SHIFT authors use); L = M's weights layout with 12 iterations. All sizes are constructor
arguments (:class:`SEARAFTConfig`), so reduced test configs run the same code path.

Inputs as the official: float RGB in [0, 255], mapped to 2·(x/255) − 1, padded centred (replicate) to a
multiple of 8, BatchNorm always in eval mode. The 4-level pyramid needs the padded frame to be at least
128 px on each side (the coarsest level would be 1 px wide and the official code divides by W − 1 = 0).
Differs from the official, which just breaks there: :class:`SEARAFTFlow` upsamples such pairs
bilinearly to a shorter side of 128 px and rescales the flow (and resizes ``info``) back to the input
grid; :class:`SEARAFT` itself raises a DataError.
"""

from __future__ import annotations

import contextlib
import logging
import math
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shiftvdm.errors import CheckpointError, ConfigError, DataError
from shiftvdm.motion.base import check_pair
from shiftvdm.motion.weights import load_strict, read_folder_config, read_state_dict, register_signature

logger = logging.getLogger(__name__)

NETWORK = "SEA-RAFT"
# Hard-coded in the official model: 4 correlation levels.
CORR_LEVELS = 4
# Smallest padded side the 4-level pyramid accepts (1/8 resolution 16 -> coarsest level 2 px).
MIN_PADDED_SIDE = 128
# Residual blocks per FPN stage for each "pretrain" name of the official configs.
STAGE_BLOCKS = {"resnet18": (2, 2, 2), "resnet34": (3, 4, 6)}
# SHIFT's confidence epsilon (clamp floor and median floor) and RMS-normalisation epsilon.
CONFIDENCE_EPS = 1e-6
RMS_EPS = 1e-6
# Std gains of seeded test weights (× 1/sqrt(fan_in)): 0.5 keeps the activations of the random network
# bounded through the FPN and the iterations; the output head's 10 makes its flow a few pixels (so
# lookups fall between cells and on several pyramid levels) and its info channels of order 1 (so both
# log-b clamps are active).
_WEIGHT_GAIN = 0.5
_HEAD_GAIN = 10.0


@dataclass(frozen=True)
class SEARAFTConfig:
    """Architecture of a SEA-RAFT network; field names are those of the official JSON configs.

    Attributes:
        dim: update-state and context width (128 in S/M/L); features and cnet output are 2·dim.
        initial_dim: channels of the FPN stem (64).
        block_dims: channels of the three FPN stages ([64, 128, 256]).
        pretrain: "resnet34" (stages [3, 4, 6]) or "resnet18" ([2, 2, 2]); only the block counts matter
            here, ImageNet weights are never fetched.
        radius: correlation lookup radius r (4): 4·(2r+1)² correlation channels.
        num_blocks: ConvNeXt refine blocks in the update block (2).
        iters: refinement iterations by default (4 for S and M, 12 for L).
        var_min, var_max: clamp range of the mixture's log-b (0 and 10, `use_var` true).
    """

    dim: int = 128
    initial_dim: int = 64
    block_dims: tuple[int, int, int] = (64, 128, 256)
    pretrain: str = "resnet34"
    radius: int = 4
    num_blocks: int = 2
    iters: int = 4
    var_min: float = 0.0
    var_max: float = 10.0

    def __post_init__(self) -> None:
        problems = []
        if self.pretrain not in STAGE_BLOCKS:
            problems.append(f"pretrain {self.pretrain!r} (expected one of {sorted(STAGE_BLOCKS)})")
        if len(tuple(self.block_dims)) != 3:
            problems.append(f"block_dims {self.block_dims} (expected 3 stage widths)")
        for name in ("dim", "initial_dim", "radius", "num_blocks"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} {getattr(self, name)} (expected >= 1)")
        if int(self.iters) < 0:
            problems.append(f"iters {self.iters} (expected >= 0)")
        if problems:
            raise ConfigError("SEA-RAFT config: invalid " + "; ".join(problems))
        object.__setattr__(self, "block_dims", tuple(int(d) for d in self.block_dims))

    @property
    def corr_channels(self) -> int:
        return CORR_LEVELS * (2 * self.radius + 1) ** 2

    def architecture(self) -> dict[str, Any]:
        """The fields that decide the weights' layout (everything but iters and the clamp range)."""
        return {k: v for k, v in asdict(self).items() if k not in ("iters", "var_min", "var_max")}


VARIANTS: dict[str, SEARAFTConfig] = {
    "S": SEARAFTConfig(pretrain="resnet18"),
    "M": SEARAFTConfig(),
    "L": SEARAFTConfig(iters=12),
}
DEFAULT_VARIANT = "M"


# ---------------------------------------------------------------------------------------------
# building blocks (module and attribute names are the official state-dict names)
# ---------------------------------------------------------------------------------------------

class _ResidualBlock(nn.Module):
    """Two 3×3 conv + BatchNorm + ReLU, identity or 1×1-conv + BatchNorm shortcut (convs have biases)."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_planes != planes:
            # The released weights register this BatchNorm twice, as bn3 and as downsample.1: the
            # same module under two names, hence the aliased keys of the state dict.
            self.bn3 = nn.BatchNorm2d(planes)
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride), self.bn3)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + y)


class _FeatureEncoder(nn.Module):
    """ResNet-FPN to 1/8 resolution: 7×7/2 stem, three stages (strides 1, 2, 2), 1×1 projection."""

    def __init__(self, in_channels: int, out_channels: int, config: SEARAFTConfig) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, config.initial_dim, 7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(config.initial_dim)
        planes = config.initial_dim
        for stage, (width, blocks, stride) in enumerate(
                zip(config.block_dims, STAGE_BLOCKS[config.pretrain], (1, 2, 2)), start=1):
            layers = [_ResidualBlock(planes, width, stride)]
            layers += [_ResidualBlock(width, width, 1) for _ in range(blocks - 1)]
            setattr(self, f"layer{stage}", nn.Sequential(*layers))
            planes = width
        self.final_conv = nn.Conv2d(planes, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.final_conv(x)


class _ConvNeXtBlock(nn.Module):
    """Depthwise 7×7, channels-last LayerNorm, MLP ×(4·out/in) with exact GELU, layer scale, residual, 1×1."""

    def __init__(self, channels: int, out_channels: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.pwconv1 = nn.Linear(channels, 4 * out_channels)
        self.pwconv2 = nn.Linear(4 * out_channels, channels)
        self.gamma = nn.Parameter(torch.full((channels,), 1e-6))
        self.final = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)  # (N, h, w, C)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        y = (self.gamma * y).permute(0, 3, 1, 2)
        return self.final(x + y)


class _MotionEncoder(nn.Module):
    """RAFT's motion encoder: correlation and flow features -> dim channels (dim − 2 maps + the flow)."""

    def __init__(self, corr_channels: int, dim: int) -> None:
        super().__init__()
        self.convc1 = nn.Conv2d(corr_channels, 2 * dim, 1)
        self.convc2 = nn.Conv2d(2 * dim, dim + dim // 2, 3, padding=1)
        self.convf1 = nn.Conv2d(2, dim, 7, padding=3)
        self.convf2 = nn.Conv2d(dim, dim // 2, 3, padding=1)
        self.conv = nn.Conv2d(2 * dim, dim - 2, 3, padding=1)

    def forward(self, flow: Tensor, corr: Tensor) -> Tensor:
        c = F.relu(self.convc2(F.relu(self.convc1(corr))))
        f = F.relu(self.convf2(F.relu(self.convf1(flow))))
        return torch.cat([F.relu(self.conv(torch.cat([c, f], dim=1))), flow], dim=1)


class _UpdateBlock(nn.Module):
    def __init__(self, config: SEARAFTConfig) -> None:
        super().__init__()
        dim = config.dim
        self.encoder = _MotionEncoder(config.corr_channels, dim)
        self.refine = nn.ModuleList(_ConvNeXtBlock(3 * dim, dim) for _ in range(config.num_blocks))

    def forward(self, net: Tensor, context: Tensor, corr: Tensor, flow: Tensor) -> Tensor:
        inp = torch.cat([context, self.encoder(flow, corr)], dim=1)
        for block in self.refine:
            net = block(torch.cat([net, inp], dim=1))
        return net


# ---------------------------------------------------------------------------------------------
# correlation, upsampling, padding (fp32 whatever the autocast state)
# ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _full_precision(device: torch.device) -> Iterator[None]:
    # Correlation dot products over 2·dim channels and the convex-combination softmax lose too much
    # in bf16/fp16; they run in fp32 even inside an autocast region.
    with torch.autocast(device_type=device.type, enabled=False):
        yield


def correlation_pyramid(fmap1: Tensor, fmap2: Tensor, levels: int = CORR_LEVELS) -> list[Tensor]:
    """All-pairs correlation of fmap1 with fmap2 halved i times (bilinear), scaled by 1/sqrt(C).

    Args:
        fmap1, fmap2: (N, C, h, w) features.

    Returns:
        ``levels`` tensors of shape (N·h·w, 1, h_i, w_i). Unlike RAFT the volume is not pooled: each
        level correlates with a bilinearly downsampled fmap2 (scale 0.5, align_corners=False).
    """
    with _full_precision(fmap1.device):
        fmap1, fmap2 = fmap1.float(), fmap2.float()
        n, c, h, w = fmap1.shape
        left = fmap1.flatten(2).transpose(1, 2)  # (N, h·w, C)
        pyramid = []
        for level in range(levels):
            if level > 0:
                # The official code also computes one more halving after the last level; it is unused.
                fmap2 = F.interpolate(fmap2, scale_factor=0.5, mode="bilinear", align_corners=False)
            h2, w2 = fmap2.shape[-2:]
            corr = torch.bmm(left, fmap2.flatten(2)) / math.sqrt(c)  # (N, h·w, h2·w2)
            pyramid.append(corr.reshape(n * h * w, 1, h2, w2))
    return pyramid


def lookup_correlation(pyramid: list[Tensor], coords: Tensor, radius: int) -> Tensor:
    """Bilinear (2r+1)² windows around ``coords`` at every level: (N, 2, h, w) -> (N, L·(2r+1)², h, w).

    Window order as the official: index a·(2r+1) + b holds offset (x = a − r, y = b − r), i.e. the x
    offset is the slow axis. Sampling is grid_sample(align_corners=True) with zeros outside.
    """
    n, _, h, w = coords.shape
    with _full_precision(coords.device):
        offsets = torch.arange(-radius, radius + 1, device=coords.device, dtype=torch.float32)
        off_x, off_y = torch.meshgrid(offsets, offsets, indexing="ij")
        window = torch.stack([off_x, off_y], dim=-1)  # (2r+1, 2r+1, 2) as (x, y)
        centre = coords.float().permute(0, 2, 3, 1).reshape(n * h * w, 1, 1, 2)
        out = []
        for level, corr in enumerate(pyramid):
            points = centre / 2 ** level + window  # (N·h·w, 2r+1, 2r+1, 2) in level pixels
            h2, w2 = corr.shape[-2:]
            grid = torch.cat([2 * points[..., :1] / (w2 - 1) - 1, 2 * points[..., 1:] / (h2 - 1) - 1], dim=-1)
            sampled = F.grid_sample(corr, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
            out.append(sampled.view(n, h, w, -1))
        return torch.cat(out, dim=-1).permute(0, 3, 1, 2).contiguous()


def convex_upsample(values: Tensor, mask: Tensor, factor: int = 8) -> Tensor:
    """Upsample (N, C, h, w) by ``factor`` as convex combinations of each 3×3 neighbourhood.

    ``mask`` (N, 9·factor², h, w) holds logits, channel k·factor² + i·factor + j weighting neighbour k
    for output pixel (factor·y + i, factor·x + j); softmax over the 9 neighbours.
    """
    n, c, h, w = values.shape
    with _full_precision(values.device):
        weights = mask.float().view(n, 1, 9, factor, factor, h, w).softmax(dim=2)
        patches = F.unfold(values.float(), kernel_size=3, padding=1).view(n, c, 9, 1, 1, h, w)
        up = (weights * patches).sum(dim=2)  # (N, C, factor, factor, h, w)
        return up.permute(0, 1, 4, 2, 5, 3).reshape(n, c, factor * h, factor * w)


def centred_padding(height: int, width: int, multiple: int = 8) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) replicate padding to a multiple, the extra pixel at the right/bottom."""
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    return pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2


def _coords_grid(n: int, h: int, w: int, device: torch.device) -> Tensor:
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    return torch.stack([xs, ys])[None].expand(n, 2, h, w)


# ---------------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------------

class SEARAFT(nn.Module):
    """The SEA-RAFT network with the official state-dict layout.

    Always in eval mode: ``train()`` is a no-op, so BatchNorm statistics never drift (the reference's
    IC pre-training put SEA-RAFT's BatchNorm in train mode after each validation; we do not).
    """

    def __init__(self, config: SEARAFTConfig | None = None) -> None:
        super().__init__()
        self.config = config or VARIANTS[DEFAULT_VARIANT]
        dim = self.config.dim
        self.cnet = _FeatureEncoder(6, 2 * dim, self.config)
        self.init_conv = nn.Conv2d(2 * dim, 2 * dim, 3, padding=1)
        self.upsample_weight = nn.Sequential(
            nn.Conv2d(dim, 2 * dim, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(2 * dim, 64 * 9, 1))
        # flow (2) + mixture logits (2) + raw log-b (2)
        self.flow_head = nn.Sequential(
            nn.Conv2d(dim, 2 * dim, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(2 * dim, 6, 3, padding=1))
        self.fnet = _FeatureEncoder(3, 2 * dim, self.config)
        self.update_block = _UpdateBlock(self.config)
        super().train(False)

    def train(self, mode: bool = True) -> SEARAFT:  # noqa: ARG002 - frozen network, see class docstring
        return super().train(False)

    def forward(self, image1: Tensor, image2: Tensor, iters: int | None = None) -> tuple[Tensor, Tensor]:
        """Flow image1 -> image2 as the official ``test_mode`` last entry.

        Args:
            image1, image2: float (N, 3, H, W) RGB in [0, 255]; padded (centred, replicate) H, W must be
                >= 128 (use :class:`SEARAFTFlow` for smaller frames).
            iters: refinement iterations; None = ``config.iters``. 0 gives the directly regressed flow.

        Returns:
            flow (N, 2, H, W) in pixels (dx, dy) and info (N, 4, H, W): mixture logits (2), raw log-b (2),
            both at the input resolution (convex-upsampled, unpadded), fp32.
        """
        iters = self.config.iters if iters is None else int(iters)
        n, _, height, width = image1.shape
        left, right, top, bottom = centred_padding(height, width)
        if height + top + bottom < MIN_PADDED_SIDE or width + left + right < MIN_PADDED_SIDE:
            raise DataError(f"SEA-RAFT: frames of {height}x{width} pad to less than {MIN_PADDED_SIDE} px on a "
                            "side, which the 4-level correlation pyramid cannot take; upsample them first "
                            "(SEARAFTFlow does)")
        image1 = F.pad(2 * (image1 / 255.0) - 1, (left, right, top, bottom), mode="replicate")
        image2 = F.pad(2 * (image2 / 255.0) - 1, (left, right, top, bottom), mode="replicate")
        dim = self.config.dim

        net, context = self.init_conv(self.cnet(torch.cat([image1, image2], dim=1))).split([dim, dim], dim=1)
        head = self.flow_head(net)
        flow_8x, info_8x = head[:, :2].float(), head[:, 2:]
        if iters > 0:
            pyramid = correlation_pyramid(self.fnet(image1), self.fnet(image2))
            grid = _coords_grid(n, *flow_8x.shape[-2:], device=flow_8x.device)
            for _ in range(iters):
                corr = lookup_correlation(pyramid, grid + flow_8x, self.config.radius)
                net = self.update_block(net, context, corr, flow_8x)
                head = self.flow_head(net)
                flow_8x, info_8x = flow_8x + head[:, :2].float(), head[:, 2:]
        mask = 0.25 * self.upsample_weight(net)
        flow = convex_upsample(8 * flow_8x, mask)
        info = convex_upsample(info_8x, mask)
        rows, cols = slice(top, top + height), slice(left, left + width)
        return flow[..., rows, cols], info[..., rows, cols]


def count_parameters(module: nn.Module) -> int:
    """Number of distinct parameters (aliased BatchNorm counted once)."""
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------
# SHIFT's confidence and flow normalisation (pure torch, used by the IC feature builder)
# ---------------------------------------------------------------------------------------------

def mixture_uncertainty(info: Tensor, var_min: float = 0.0, var_max: float = 10.0) -> Tensor:
    """Expected |error| of SEA-RAFT's two-component Laplace mixture: (N, 4, H, W) -> (N, H, W).

    log b0 = clamp(raw0, 0, var_max) (the large-scale component), log b1 = clamp(raw1, var_min, 0)
    (with the default var_min = 0, b1 = 1); π = softmax(logits); unc = Σ_k π_k · b_k.
    Defaults are the spring-M config's (use_var, var_min 0, var_max 10).
    """
    if info.ndim != 4 or info.shape[1] != 4:
        raise DataError(f"SEA-RAFT info must be (N, 4, H, W), got shape {tuple(info.shape)}")
    info = info.float()
    log_b = torch.stack([info[:, 2].clamp(0.0, var_max), info[:, 3].clamp(var_min, 0.0)], dim=1)
    return (info[:, :2].softmax(dim=1) * log_b.exp()).sum(dim=1)


def flow_confidence(info: Tensor, var_min: float = 0.0, var_max: float = 10.0,
                    eps: float = CONFIDENCE_EPS) -> Tensor:
    """SHIFT's confidence map C = clamp(exp(−unc / s), eps, 1) in (0, 1]: (N, 4, H, W) -> (N, H, W).

    ``unc`` is :func:`mixture_uncertainty`; s = the per-sample median of unc (torch.median: the lower
    of the two middle values for an even count, as the authors' code), floored at eps. The median
    pixel gets 1/e. Defaults: var_min 0, var_max 10, eps 1e-6 (shift-reference-rewards.md §1.1).
    """
    unc = mixture_uncertainty(info, var_min, var_max)
    scale = unc.flatten(1).median(dim=1).values.clamp_min(eps)[:, None, None]
    return torch.exp(-unc / scale).clamp(eps, 1.0)


def rms_normalise_flow(flow: Tensor, eps: float = RMS_EPS) -> Tensor:
    """SHIFT's per-pair RMS normalisation f / (sqrt(mean_pixels |f|²) + eps): (N, 2, H, W) -> same.

    Default eps 1e-6 px (the authors' IC input); a zero flow stays zero.
    """
    if flow.ndim != 4 or flow.shape[1] != 2:
        raise DataError(f"flow must be (N, 2, H, W), got shape {tuple(flow.shape)}")
    rms = flow.float().pow(2).sum(dim=1).mean(dim=(1, 2)).sqrt()[:, None, None, None]
    return flow / (rms + eps)


# ---------------------------------------------------------------------------------------------
# checkpoints: variant from the keys or config.json, aliases, strict load
# ---------------------------------------------------------------------------------------------

def looks_like_sea_raft(keys: set[str]) -> bool:
    """Key signature: a context net, SEA-RAFT's init_conv and its ConvNeXt refine blocks."""
    return ("cnet.conv1.weight" in keys and "init_conv.weight" in keys
            and any(k.startswith("update_block.refine.") for k in keys))


register_signature(NETWORK, looks_like_sea_raft)

_BN_ALIAS = (".bn3.", ".downsample.1.")


def restore_aliases(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Add the aliased BatchNorm keys a deduplicating save (safetensors, the hub copy) dropped.

    ``*.bn3.*`` and ``*.downsample.1.*`` name the same module; whichever is missing is copied from
    the other. Keys present under both names are left as they are.
    """
    state = dict(state)
    for key in list(state):
        for a, b in (_BN_ALIAS, _BN_ALIAS[::-1]):
            if a in key:
                alias = key.replace(a, b, 1)
                if alias not in state:
                    state[alias] = state[key]
    return state


def infer_config(state: Mapping[str, Tensor]) -> SEARAFTConfig | None:
    """The architecture a SEA-RAFT state dict was saved from, read off its key shapes (None if not SEA-RAFT).

    iters and the clamp range are not stored in the weights: they take M's values (4, 0, 10).
    """
    keys = set(state)
    if not looks_like_sea_raft(keys):
        return None
    try:
        dim = int(state["flow_head.0.weight"].shape[1])
        initial_dim = int(state["cnet.conv1.weight"].shape[0])
        block_dims = tuple(int(state[f"cnet.layer{i}.0.conv1.weight"].shape[0]) for i in (1, 2, 3))
        blocks = tuple(len({k.split(".")[2] for k in keys if k.startswith(f"cnet.layer{i}.")}) for i in (1, 2, 3))
        corr_channels = int(state["update_block.encoder.convc1.weight"].shape[1])
        num_blocks = len({k.split(".")[2] for k in keys if k.startswith("update_block.refine.")})
    except (KeyError, IndexError):
        return None
    pretrain = next((name for name, layout in STAGE_BLOCKS.items() if layout == blocks), None)
    radius = (math.isqrt(corr_channels // CORR_LEVELS) - 1) // 2
    if pretrain is None or CORR_LEVELS * (2 * radius + 1) ** 2 != corr_channels:
        return None
    return SEARAFTConfig(dim=dim, initial_dim=initial_dim, block_dims=block_dims, pretrain=pretrain,
                         radius=radius, num_blocks=num_blocks)


def variant_name(config: SEARAFTConfig) -> str:
    """"S", "M" or "L" when the architecture (and iters) is a released variant's, else "custom"."""
    for name, variant in VARIANTS.items():
        if variant == config:
            return name
    for name, variant in VARIANTS.items():
        if variant.architecture() == config.architecture():
            return name
    return "custom"


def _config_from_json(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    # The official JSON configs hold these fields among training ones (lr, gpus, ...); a hub
    # PyTorchModelHubMixin dump may nest them under "args" or "config".
    for nest in ("args", "config"):
        if isinstance(data.get(nest), Mapping):
            data = data[nest]
    known = {f.name for f in fields(SEARAFTConfig)}
    values = {k: data[k] for k in known if k in data}
    if "block_dims" in values:
        if not isinstance(values["block_dims"], (list, tuple)):
            raise CheckpointError(f"{source}: field 'block_dims' must be a list of 3 ints, "
                                  f"got {values['block_dims']!r}")
        values["block_dims"] = tuple(values["block_dims"])
    for key in ("dim", "initial_dim", "radius", "num_blocks", "iters"):
        if key in values and (not isinstance(values[key], int) or isinstance(values[key], bool)):
            raise CheckpointError(f"{source}: field {key!r} must be an integer, got {values[key]!r}")
    return values


def _config_for(source: Path, state: Mapping[str, Tensor], folder_config: dict[str, Any] | None,
                variant: str | None) -> SEARAFTConfig:
    if variant is not None:
        return VARIANTS[variant]
    if folder_config is not None:
        fields_found = _config_from_json(folder_config, str(source / "config.json"))
        name = folder_config.get("variant")
        base = VARIANTS.get(name) if isinstance(name, str) else None
        base = base or infer_config(state) or VARIANTS[DEFAULT_VARIANT]
        try:
            return replace(base, **fields_found)
        except (ConfigError, TypeError) as exc:
            raise CheckpointError(f"{source / 'config.json'}: {exc}") from exc
    # A file that is not SEA-RAFT at all builds M, whose strict load then says what the file looks like.
    return infer_config(state) or VARIANTS[DEFAULT_VARIANT]


def load_sea_raft(checkpoint: str | Path, variant: str | None = None) -> SEARAFT:
    """Build SEA-RAFT and load a released checkpoint strictly.

    Args:
        checkpoint: the release ``.pth`` (a plain state dict, possibly under "model"/"state_dict"), a
            ``.safetensors`` file, or a hub-layout folder (``config.json`` + ``model.safetensors``, whose
            aliased ``*.downsample.1.*`` keys are restored from ``*.bn3.*``).
        variant: "S", "M" or "L"; None reads it from the folder's config.json, else from the key shapes
            (a ResNet-34 file is M; L has M's weights and 12 iterations, so ask for it explicitly).

    Raises:
        CheckpointError: unreadable file, or keys/shapes that are not the chosen variant's (naming the
            file, the first keys and, for another network's file, which network it looks like).
    """
    if variant is not None and variant not in VARIANTS:
        raise ConfigError(f"sea-raft: unknown variant {variant!r}; expected one of {sorted(VARIANTS)}")
    path = Path(checkpoint)
    state = restore_aliases(read_state_dict(path, what="SEA-RAFT checkpoint"))
    config = _config_for(path, state, read_folder_config(path), variant)
    model = SEARAFT(config)
    source = str(path)
    try:
        load_strict(model, state, source, f"{NETWORK}-{variant_name(config)}")
    except CheckpointError as exc:
        inferred = infer_config(state)
        if inferred is None:
            raise
        # A SEA-RAFT file after all: drop "looks like a SEA-RAFT checkpoint" and say which variant it is.
        message = str(exc).replace(f"; the file looks like a {NETWORK} checkpoint", "")
        if inferred.architecture() != config.architecture():
            message += (f"; its key shapes are SEA-RAFT-{variant_name(inferred)}'s ({inferred.architecture()})"
                        + (f", not variant {variant!r} as requested" if variant is not None else ""))
        raise CheckpointError(message) from exc
    return model


def save_hub_folder(model: SEARAFT, folder: str | Path) -> Path:
    """Write ``config.json`` + ``model.safetensors`` like the hub copy (aliased keys dropped, fields as JSON)."""
    import json

    from shiftvdm.utils.atomic import write_text
    from shiftvdm.utils.checkpoint import save_safetensors

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if _BN_ALIAS[1] not in k}
    save_safetensors(state, folder / "model.safetensors")
    config = {"variant": variant_name(model.config), **asdict(model.config)}
    config["block_dims"] = list(config["block_dims"])
    write_text(folder / "config.json", json.dumps(config, indent=2) + "\n")
    return folder


def seeded_state_dict(config: SEARAFTConfig, seed: int = 0) -> dict[str, Tensor]:
    """Deterministic random weights in the official layout, for tests and dry runs without a download.

    Each tensor comes from its own generator seeded with (seed, crc32(key)), so a key's values do not
    depend on the others; aliased keys are drawn under their bn3 name and are identical. Convolution and
    linear weights ~ N(0, (0.5/sqrt(fan_in))²) (the flow head's last conv: 10/sqrt(fan_in)), biases
    ~ N(0, 0.02²), BatchNorm/LayerNorm scale 1 ± 0.1 and shift ± 0.1, running mean ~ N(0, 0.1²),
    running var ~ U(0.5, 1.5), layer scale ~ U(0.1, 0.5).
    """
    template = SEARAFT(config).state_dict()
    state: dict[str, Tensor] = {}
    for key, ref in template.items():
        canonical = key.replace(_BN_ALIAS[1], _BN_ALIAS[0])
        gen = torch.Generator().manual_seed((int(seed) << 32) + zlib.crc32(canonical.encode()))
        leaf = key.rsplit(".", 1)[-1]
        shape = ref.shape
        if leaf == "num_batches_tracked":
            value = torch.zeros((), dtype=torch.int64)
        elif leaf == "running_mean":
            value = 0.1 * torch.randn(shape, generator=gen)
        elif leaf == "running_var":
            value = 0.5 + torch.rand(shape, generator=gen)
        elif leaf == "gamma":
            value = 0.1 + 0.4 * torch.rand(shape, generator=gen)
        elif ref.ndim == 1 and leaf == "weight":  # BatchNorm / LayerNorm scale
            value = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        elif ref.ndim == 1 and (".bn" in key or ".norm." in key or "downsample.1" in key):
            value = 0.1 * torch.randn(shape, generator=gen)
        elif leaf == "bias":
            value = 0.02 * torch.randn(shape, generator=gen)
        else:
            fan_in = int(np.prod(shape[1:]))
            gain = _HEAD_GAIN if key == "flow_head.2.weight" else _WEIGHT_GAIN
            value = gain * torch.randn(shape, generator=gen) / math.sqrt(fan_in)
        state[key] = value.to(ref.dtype)
    return state


# ---------------------------------------------------------------------------------------------
# the estimator: numpy FlowEstimator + batched torch path on the module's device
# ---------------------------------------------------------------------------------------------

class SEARAFTFlow:
    """SEA-RAFT behind the FlowEstimator protocol, plus a batched torch path on the module's device.

    Args:
        checkpoint: path to the release .pth, a .safetensors file or a hub folder (required; nothing
            is downloaded).
        variant: "S", "M" or "L"; None = from config.json or the key shapes (M for the authors' file).
        iters: refinement iterations; None = the variant's (4 for S/M, 12 for L). SHIFT uses 4.
        device: "cpu", "cuda", "cuda:1"... None = CUDA when available.
        chunk_size: pairs per forward pass (bounds memory: the fp32 correlation pyramid is about 45 MB
            per 320×576 pair and 210 MB per 480×832 pair, plus activations).
        autocast_dtype: None (fp32), "bfloat16" or "float16" for the convolutions; correlation,
            lookup and upsampling stay fp32. The weights themselves stay fp32: keep the network out of
            any module that is cast with ``.to(bfloat16)`` (a cast network is refused, not run).

    The network is frozen (eval mode, no parameter requires grad) and is not an ``nn.Module`` child
    of anything trainable, so DDP/FSDP never wrap or shard it: each rank builds its own on its device.
        model: an already built :class:`SEARAFT` (then ``checkpoint`` may be None), for tests.
    """

    name = "sea-raft"

    def __init__(self, checkpoint: str | Path | None = None, variant: str | None = None, iters: int | None = None,
                 device: str | torch.device | None = None, chunk_size: int = 8,
                 autocast_dtype: str | None = None, model: SEARAFT | None = None) -> None:
        if model is None:
            if checkpoint is None:
                raise ConfigError("sea-raft: a checkpoint path is required (checkpoint=PATH to the release .pth, "
                                  "e.g. Tartan-C-T-TSKH-spring540x960-M.pth, or a hub folder); nothing is downloaded")
            model = load_sea_raft(checkpoint, variant)
        if int(chunk_size) < 1:
            raise ConfigError(f"sea-raft: chunk_size must be >= 1, got {chunk_size}")
        if iters is not None and int(iters) < 0:
            raise ConfigError(f"sea-raft: iters must be >= 0, got {iters}")
        dtypes = {None: None, "bfloat16": torch.bfloat16, "float16": torch.float16}
        if autocast_dtype not in dtypes:
            raise ConfigError(f"sea-raft: autocast_dtype {autocast_dtype!r}; expected one of "
                              f"{[k for k in dtypes if k]} or None")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.iters = model.config.iters if iters is None else int(iters)
        self.chunk_size = int(chunk_size)
        self.autocast_dtype = dtypes[autocast_dtype]

    @property
    def config(self) -> SEARAFTConfig:
        return self.model.config

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _pair_chunk(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        height, width = a.shape[-2:]
        left, right, top, bottom = centred_padding(height, width)
        if min(height + top + bottom, width + left + right) >= MIN_PADDED_SIDE:
            with self._autocast():
                return self.model(a, b, self.iters)
        # Differs from the official (which breaks): run at a shorter side of 128 px and map back.
        scale = MIN_PADDED_SIDE / min(height, width)
        size = (max(MIN_PADDED_SIDE, round(height * scale)), max(MIN_PADDED_SIDE, round(width * scale)))
        a_up = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
        b_up = F.interpolate(b, size=size, mode="bilinear", align_corners=False)
        with self._autocast():
            flow, info = self.model(a_up, b_up, self.iters)
        flow = F.interpolate(flow, size=(height, width), mode="bilinear", align_corners=False)
        flow = flow * torch.tensor([width / size[1], height / size[0]], device=flow.device).view(1, 2, 1, 1)
        info = F.interpolate(info, size=(height, width), mode="bilinear", align_corners=False)
        return flow, info

    def flow_torch(self, frames_a: Tensor, frames_b: Tensor) -> tuple[Tensor, Tensor]:
        """Flow and raw uncertainty for a batch of pairs, on the module's device, no gradient.

        Args:
            frames_a, frames_b: float (N, 3, H, W) RGB in [0, 255] (any device; moved to the module's).

        Returns:
            flow float32 (N, 2, H, W) in pixels of the input grid, and info float32 (N, 4, H, W) (mixture
            logits, raw log-b; see :func:`flow_confidence`), on the module's device. Pairs run
            ``chunk_size`` at a time; frames whose padded side is below 128 px are upsampled first.
        """
        if frames_a.ndim != 4 or frames_a.shape[1] != 3 or frames_a.shape != frames_b.shape:
            raise DataError(f"sea-raft: expected two float (N, 3, H, W) batches of the same shape, got "
                            f"{tuple(frames_a.shape)} and {tuple(frames_b.shape)}")
        if frames_a.shape[0] == 0:
            raise DataError("sea-raft: empty batch (N = 0)")
        weight_dtype = self.model.init_conv.weight.dtype
        if weight_dtype != torch.float32:
            raise ConfigError(f"sea-raft: the network's weights were cast to {weight_dtype}; keep them fp32 and "
                              "ask for reduced precision with autocast_dtype='bfloat16' or 'float16'")
        flows, infos = [], []
        with torch.no_grad():
            for start in range(0, frames_a.shape[0], self.chunk_size):
                a = frames_a[start:start + self.chunk_size].to(self.device, torch.float32)
                b = frames_b[start:start + self.chunk_size].to(self.device, torch.float32)
                flow, info = self._pair_chunk(a, b)
                flows.append(flow.float())
                infos.append(info.float())
        return torch.cat(flows), torch.cat(infos)

    def confidence_torch(self, info: Tensor) -> Tensor:
        """SHIFT's confidence (N, H, W) from ``info`` with this network's clamp range."""
        return flow_confidence(info, self.config.var_min, self.config.var_max)

    def __call__(self, frames_a: np.ndarray, frames_b: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) RGB or (N, H, W) gray, twice -> float32 (N, H, W, 2) flow a -> b in pixels."""
        check_pair(frames_a, frames_b)

        def to_tensor(frames: np.ndarray) -> Tensor:
            if frames.ndim == 3:
                frames = np.repeat(frames[..., None], 3, axis=-1)
            return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()

        flow, _ = self.flow_torch(to_tensor(frames_a), to_tensor(frames_b))
        return flow.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)
