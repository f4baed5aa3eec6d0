"""Optional neural optical flow: a RAFT-small network (Teed & Deng 2020), loaded ONLY from a local file.

The reference uses SEA-RAFT-M (shift-reference-rewards.md §1.1); no flow weights can be downloaded
here, so this module provides the RAFT family's small model written in plain torch, and never
fetches anything. ``get_flow_estimator("raft", checkpoint=PATH)``.

Architecture (RAFT-small): two encoders at 1/8 resolution (feature net ``fnet`` → 128 channels,
instance norm; context net ``cnet`` → 96 hidden + 64 context channels, no norm), each a 7×7
stride-2 conv (32) and three stages of two bottleneck residual blocks (32, 64 stride 2, 96 stride 2)
and a 1×1 conv; an all-pairs correlation volume pooled to 4 levels, looked up within radius 3
(4·7² = 196 channels); a small update block (motion encoder, 3×3 ConvGRU with 96 hidden channels,
flow head) iterated ``iters`` times (default 12); the 1/8 flow is bilinearly upsampled ×8.
Images are mapped to [−1, 1] and padded (replicate) to a multiple of 8.

Checkpoint format: a ``.safetensors`` file, or a ``.pt/.pth`` state dict read with
``torch.load(weights_only=True)`` (optionally nested under ``"state_dict"`` or ``"model"``; a
``module.`` prefix from DataParallel is stripped). Keys and shapes are those of
``RAFTSmall().state_dict()``, e.g. ``fnet.conv1.weight`` (32, 3, 7, 7), ``fnet.layer2.0.downsample.0.weight``
(64, 32, 1, 1), ``fnet.conv2.weight`` (128, 96, 1, 1), ``cnet.conv2.weight`` (160, 96, 1, 1),
``update_block.encoder.convc1.weight`` (96, 196, 1, 1), ``update_block.gru.convz.weight``
(96, 242, 3, 3), ``update_block.flow_head.conv2.weight`` (2, 128, 3, 3); ``RAFTSmall.expected_keys()``
lists them all. The names follow the public RAFT-small layout, so the authors' ``raft-small.pth`` is
meant to load as is, but that file could not be obtained here to check it. Loading is strict: a
missing or unexpected key, or a wrong shape, is a CheckpointError naming them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shiftvdm.errors import CheckpointError, ConfigError
from shiftvdm.motion.base import check_pair
from shiftvdm.utils.checkpoint import load_safetensors, load_torch

logger = logging.getLogger(__name__)

CORR_LEVELS, CORR_RADIUS = 4, 3
HIDDEN_DIM, CONTEXT_DIM = 96, 64


class _Bottleneck(nn.Module):
    def __init__(self, in_planes: int, planes: int, norm: bool, stride: int = 1) -> None:
        super().__init__()
        mid = planes // 4
        self.conv1 = nn.Conv2d(in_planes, mid, 1)
        self.conv2 = nn.Conv2d(mid, mid, 3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(mid, planes, 1)
        make = (lambda c: nn.InstanceNorm2d(c)) if norm else (lambda c: nn.Identity())
        self.norm1, self.norm2, self.norm3 = make(mid), make(mid), make(planes)
        self.downsample = None if stride == 1 else nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride),
                                                                 make(planes))

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        y = F.relu(self.norm3(self.conv3(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return F.relu(x + y)


class _SmallEncoder(nn.Module):
    def __init__(self, output_dim: int, norm: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 7, stride=2, padding=3)
        self.norm1 = nn.InstanceNorm2d(32) if norm else nn.Identity()
        self.layer1 = nn.Sequential(_Bottleneck(32, 32, norm), _Bottleneck(32, 32, norm))
        self.layer2 = nn.Sequential(_Bottleneck(32, 64, norm, 2), _Bottleneck(64, 64, norm))
        self.layer3 = nn.Sequential(_Bottleneck(64, 96, norm, 2), _Bottleneck(96, 96, norm))
        self.conv2 = nn.Conv2d(96, output_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.norm1(self.conv1(x)))
        return self.conv2(self.layer3(self.layer2(self.layer1(x))))


class _MotionEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        planes = CORR_LEVELS * (2 * CORR_RADIUS + 1) ** 2
        self.convc1 = nn.Conv2d(planes, 96, 1)
        self.convf1 = nn.Conv2d(2, 64, 7, padding=3)
        self.convf2 = nn.Conv2d(64, 32, 3, padding=1)
        self.conv = nn.Conv2d(128, 80, 3, padding=1)

    def forward(self, flow: Tensor, corr: Tensor) -> Tensor:
        cor = F.relu(self.convc1(corr))
        flo = F.relu(self.convf2(F.relu(self.convf1(flow))))
        return torch.cat([F.relu(self.conv(torch.cat([cor, flo], dim=1))), flow], dim=1)  # 82 channels


class _ConvGRU(nn.Module):
    def __init__(self, hidden: int, inputs: int) -> None:
        super().__init__()
        self.convz = nn.Conv2d(hidden + inputs, hidden, 3, padding=1)
        self.convr = nn.Conv2d(hidden + inputs, hidden, 3, padding=1)
        self.convq = nn.Conv2d(hidden + inputs, hidden, 3, padding=1)

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        hx = torch.cat([h, x], dim=1)
        z, r = torch.sigmoid(self.convz(hx)), torch.sigmoid(self.convr(hx))
        q = torch.tanh(self.convq(torch.cat([r * h, x], dim=1)))
        return (1 - z) * h + z * q


class _FlowHead(nn.Module):
    def __init__(self, inputs: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, 2, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(F.relu(self.conv1(x)))


class _UpdateBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = _MotionEncoder()
        self.gru = _ConvGRU(HIDDEN_DIM, 82 + CONTEXT_DIM)
        self.flow_head = _FlowHead(HIDDEN_DIM, 128)

    def forward(self, net: Tensor, inp: Tensor, corr: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
        net = self.gru(net, torch.cat([inp, self.encoder(flow, corr)], dim=1))
        return net, self.flow_head(net)


def _coords_grid(batch: int, height: int, width: int, device: torch.device) -> Tensor:
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32),
                            torch.arange(width, device=device, dtype=torch.float32), indexing="ij")
    return torch.stack([xs, ys])[None].expand(batch, -1, -1, -1)


class RAFTSmall(nn.Module):
    """RAFT-small: (B, 3, H, W) pairs of images in [0, 255] -> (B, 2, H, W) flow in pixels."""

    def __init__(self, iters: int = 12) -> None:
        super().__init__()
        self.iters = iters
        self.fnet = _SmallEncoder(128, norm=True)
        self.cnet = _SmallEncoder(HIDDEN_DIM + CONTEXT_DIM, norm=False)
        self.update_block = _UpdateBlock()

    @classmethod
    def expected_keys(cls) -> dict[str, tuple[int, ...]]:
        """Every state-dict key with its shape (the checkpoint format)."""
        return {k: tuple(v.shape) for k, v in cls().state_dict().items()}

    @staticmethod
    def _lookup(pyramid: list[Tensor], coords: Tensor) -> Tensor:
        batch, _, height, width = coords.shape
        r = CORR_RADIUS
        offsets = torch.linspace(-r, r, 2 * r + 1, device=coords.device)
        dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
        delta = torch.stack([dx, dy], dim=-1).view(1, 2 * r + 1, 2 * r + 1, 2)
        centre = coords.permute(0, 2, 3, 1).reshape(batch * height * width, 1, 1, 2)
        out = []
        for level, corr in enumerate(pyramid):
            pts = centre / 2 ** level + delta
            h, w = corr.shape[-2:]
            grid = torch.stack([2 * pts[..., 0] / max(w - 1, 1) - 1, 2 * pts[..., 1] / max(h - 1, 1) - 1], dim=-1)
            sampled = F.grid_sample(corr, grid, align_corners=True)  # (BHW, 1, 2r+1, 2r+1)
            out.append(sampled.view(batch, height, width, -1))
        return torch.cat(out, dim=-1).permute(0, 3, 1, 2).contiguous()

    def forward(self, image_a: Tensor, image_b: Tensor) -> Tensor:
        height, width = image_a.shape[-2:]
        pad_h, pad_w = (-height) % 8, (-width) % 8
        a = F.pad(2 * (image_a / 255.0) - 1, (0, pad_w, 0, pad_h), mode="replicate")
        b = F.pad(2 * (image_b / 255.0) - 1, (0, pad_w, 0, pad_h), mode="replicate")
        fmap_a, fmap_b = self.fnet(torch.cat([a, b])).float().chunk(2)
        batch, dim, h8, w8 = fmap_a.shape
        corr = torch.einsum("bdi,bdj->bij", fmap_a.flatten(2), fmap_b.flatten(2)) / dim ** 0.5
        pyramid = [corr.reshape(batch * h8 * w8, 1, h8, w8)]
        for _ in range(CORR_LEVELS - 1):
            pyramid.append(F.avg_pool2d(pyramid[-1], 2, stride=2, ceil_mode=True))
        net, inp = self.cnet(a).split([HIDDEN_DIM, CONTEXT_DIM], dim=1)
        net, inp = torch.tanh(net), F.relu(inp)
        coords0 = _coords_grid(batch, h8, w8, a.device)
        coords1 = coords0.clone()
        for _ in range(self.iters):
            net, delta = self.update_block(net, inp, self._lookup(pyramid, coords1), coords1 - coords0)
            coords1 = coords1 + delta
        flow = 8 * F.interpolate(coords1 - coords0, scale_factor=8, mode="bilinear", align_corners=True)
        return flow[..., :height, :width]


def load_raft_state(path: str | Path) -> dict[str, Tensor]:
    """Read a RAFT-small state dict from a local .safetensors or .pt/.pth file (never unpickles objects)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: RAFT checkpoint not found (a local file is required; nothing is downloaded)")
    state = load_safetensors(path) if path.suffix == ".safetensors" else load_torch(path)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def check_state_dict(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """CheckpointError naming missing/unexpected keys and wrong shapes."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (e.g. {unexpected[:3]})")
        if wrong:
            parts.append("wrong shapes: " + ", ".join(f"{k} {tuple(state[k].shape)} != {expected[k]}" for k in wrong[:3]))
        raise CheckpointError(f"{source}: not a {type(model).__name__} checkpoint: " + "; ".join(parts))


class RAFTFlow:
    """FlowEstimator over a frozen RAFT-small loaded from ``checkpoint`` (name "raft").

    Args:
        checkpoint: local .safetensors / .pt / .pth file (see the module docstring for the format).
        iters: refinement iterations (RAFT default 12).
        device: where the network runs (default: cuda when available).
        batch_size: frame pairs per forward pass.
    """

    name = "raft"

    def __init__(self, checkpoint: str | Path | None = None, iters: int = 12, device: str | None = None,
                 batch_size: int = 8) -> None:
        if checkpoint is None:
            raise ConfigError("flow estimator 'raft' needs a local checkpoint path (critic.flow_checkpoint=PATH); "
                              "no weights are downloaded")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = RAFTSmall(iters=iters)
        state = load_raft_state(checkpoint)
        check_state_dict(self.model, state, str(checkpoint))
        self.model.load_state_dict(state)
        self.model.eval().requires_grad_(False).to(self.device)
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, frames_a: np.ndarray, frames_b: np.ndarray) -> np.ndarray:
        check_pair(frames_a, frames_b)
        if frames_a.ndim == 3:  # grey -> 3 identical channels
            frames_a, frames_b = np.repeat(frames_a[..., None], 3, -1), np.repeat(frames_b[..., None], 3, -1)
        out = []
        for start in range(0, len(frames_a), self.batch_size):
            a = torch.from_numpy(frames_a[start:start + self.batch_size]).permute(0, 3, 1, 2).float().to(self.device)
            b = torch.from_numpy(frames_b[start:start + self.batch_size]).permute(0, 3, 1, 2).float().to(self.device)
            out.append(self.model(a, b).permute(0, 2, 3, 1).cpu().numpy())
        return np.concatenate(out).astype(np.float32)
