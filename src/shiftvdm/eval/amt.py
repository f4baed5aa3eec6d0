"""AMT-S frame interpolation and VBench's motion smoothness, from the released ``amt-s.pth`` read as data.

The network is AMT-S of MCG-NKU/AMT (``networks/AMT-S.py``: corr_radius 3, 4 correlation levels, 3 flows,
channels 20/32/44/56, skip 20), with the same module names so the released state dict (``{"state_dict":
...}``) loads strictly. ``AMTS.forward(img0, img1)`` interpolates the middle frame (embt = 1/2) of two
(B, 3, H, W) images in [0, 1] with H, W multiples of 16, as AMT's ``eval=True`` path at scale 1.

VBench's motion smoothness (``vbench/motion_smoothness.py``), per clip:

1. keep the even frames 0, 2, 4, …; pad them (replicate) to multiples of 16, centred (AMT's ``InputPadder``);
2. interpolate the middle of every consecutive pair of kept frames, unpad, and quantise as ``tensor2img``
   does (×255, clip, truncate to uint8);
3. score = mean over the odd positions of |original odd frame − interpolated frame| (uint8 absolute
   difference, mean over pixels and channels, then over frames); the value is (255 − score)/255.

VBench scales frames down before AMT only when a GPU's memory is too small for them (its "anchor" rule); on
the CPU and on any GPU with the memory for the clip the scale is 1, the only scale used here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shiftvdm.errors import DataError
from shiftvdm.eval.dimensions import DimensionSpec, WeightFile
from shiftvdm.motion.weights import load_strict, read_state_dict, register_signature

AMT_FILE = WeightFile("amt-s.pth", "MCG-NKU/AMT release (AMT-S, Vimeo90K; the file VBench downloads as "
                                   "pretrained/amt_model/amt-s.pth)")
PAD_DIVISOR = 16
MIN_PADDED_SIDE = 128


def _resize(x: Tensor, factor: float) -> Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


def warp(image: Tensor, flow: Tensor) -> Tensor:
    """Backward-warp ``image`` by ``flow`` (pixels), bilinear, border padding (AMT's ``utils.flow_utils.warp``)."""
    b, _, h, w = flow.shape
    xx = torch.linspace(-1.0, 1.0, w).view(1, 1, 1, w).expand(b, -1, h, -1)
    yy = torch.linspace(-1.0, 1.0, h).view(1, 1, h, 1).expand(b, -1, -1, w)
    grid = torch.cat([xx, yy], 1).to(image)
    scaled = torch.cat([flow[:, 0:1] / ((w - 1.0) / 2.0), flow[:, 1:2] / ((h - 1.0) / 2.0)], 1)
    return F.grid_sample(image, (grid + scaled).permute(0, 2, 3, 1), mode="bilinear", padding_mode="border",
                         align_corners=True)


def _conv_prelu(inputs: int, outputs: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inputs, outputs, kernel, stride, padding), nn.PReLU(outputs))


class _Bottleneck(nn.Module):
    """RAFT's bottleneck residual block with instance norm (no affine parameters)."""

    def __init__(self, inputs: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, planes // 4, 1)
        self.conv2 = nn.Conv2d(planes // 4, planes // 4, 3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(planes // 4, planes, 1)
        self.norm1, self.norm2 = nn.InstanceNorm2d(planes // 4), nn.InstanceNorm2d(planes // 4)
        self.norm3 = nn.InstanceNorm2d(planes)
        self.downsample = (nn.Sequential(nn.Conv2d(inputs, planes, 1, stride=stride), nn.InstanceNorm2d(planes))
                           if stride != 1 else None)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        y = F.relu(self.norm3(self.conv3(y)))
        return F.relu((self.downsample(x) if self.downsample is not None else x) + y)


class _SmallEncoder(nn.Module):
    """Features at 1/8 resolution for the correlation volume (84 channels)."""

    def __init__(self, output_dim: int = 84) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 7, stride=2, padding=3)
        self.norm1 = nn.InstanceNorm2d(32)
        self.layer1 = nn.Sequential(_Bottleneck(32, 32, 1), _Bottleneck(32, 32, 1))
        self.layer2 = nn.Sequential(_Bottleneck(32, 64, 2), _Bottleneck(64, 64, 1))
        self.layer3 = nn.Sequential(_Bottleneck(64, 96, 2), _Bottleneck(96, 96, 1))
        self.conv2 = nn.Conv2d(96, output_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.norm1(self.conv1(x)))
        return self.conv2(self.layer3(self.layer2(self.layer1(x))))


class _ResBlock(nn.Module):
    """IFRNet's residual block that convolves its last ``side`` channels separately."""

    def __init__(self, channels: int, side: int) -> None:
        super().__init__()
        self.side = side
        self.conv1 = _conv_prelu(channels, channels)
        self.conv2 = _conv_prelu(side, side)
        self.conv3 = _conv_prelu(channels, channels)
        self.conv4 = _conv_prelu(side, side)
        self.conv5 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.prelu = nn.PReLU(channels)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        out = self.conv3(torch.cat([out[:, :-self.side], self.conv2(out[:, -self.side:])], 1))
        out = self.conv5(torch.cat([out[:, :-self.side], self.conv4(out[:, -self.side:])], 1))
        return self.prelu(x + out)


class _Encoder(nn.Module):
    def __init__(self, channels: tuple[int, ...]) -> None:
        super().__init__()
        previous = 3
        for index, width in enumerate(channels, 1):
            self.add_module(f"pyramid{index}", nn.Sequential(_conv_prelu(previous, width, 3, 2, 1),
                                                             _conv_prelu(width, width)))
            previous = width
        self.levels = len(channels)

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for index in range(1, self.levels + 1):
            x = getattr(self, f"pyramid{index}")(x)
            features.append(x)
        return features


class _InitDecoder(nn.Module):
    def __init__(self, inputs: int, outputs: int, skip: int) -> None:
        super().__init__()
        self.convblock = nn.Sequential(_conv_prelu(inputs * 2 + 1, inputs * 2), _ResBlock(inputs * 2, skip),
                                       nn.ConvTranspose2d(inputs * 2, outputs + 4, 4, 2, 1))

    def forward(self, f0: Tensor, f1: Tensor, embt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.convblock(torch.cat([f0, f1, embt.repeat(1, 1, *f0.shape[2:])], 1))
        flow0, flow1 = torch.chunk(out[:, :4], 2, 1)
        return flow0, flow1, out[:, 4:]


class _IntermediateDecoder(nn.Module):
    def __init__(self, inputs: int, outputs: int, skip: int) -> None:
        super().__init__()
        self.convblock = nn.Sequential(_conv_prelu(inputs * 3 + 4, inputs * 3), _ResBlock(inputs * 3, skip),
                                       nn.ConvTranspose2d(inputs * 3, outputs + 4, 4, 2, 1))

    def forward(self, ft: Tensor, f0: Tensor, f1: Tensor, flow0: Tensor,
                flow1: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.convblock(torch.cat([ft, warp(f0, flow0), warp(f1, flow1), flow0, flow1], 1))
        delta0, delta1 = torch.chunk(out[:, :4], 2, 1)
        return delta0 + 2.0 * _resize(flow0, 2.0), delta1 + 2.0 * _resize(flow1, 2.0), out[:, 4:]


class _MultiFlowDecoder(nn.Module):
    def __init__(self, inputs: int, skip: int, flows: int) -> None:
        super().__init__()
        self.flows = flows
        self.convblock = nn.Sequential(_conv_prelu(inputs * 3 + 4, inputs * 3), _ResBlock(inputs * 3, skip),
                                       nn.ConvTranspose2d(inputs * 3, 8 * flows, 4, 2, 1))

    def forward(self, ft: Tensor, f0: Tensor, f1: Tensor, flow0: Tensor,
                flow1: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        n = self.flows
        out = self.convblock(torch.cat([ft, warp(f0, flow0), warp(f1, flow1), flow0, flow1], 1))
        delta0, delta1, mask, residual = torch.split(out, [2 * n, 2 * n, n, 3 * n], 1)
        flow0 = delta0 + 2.0 * _resize(flow0, 2.0).repeat(1, n, 1, 1)
        flow1 = delta1 + 2.0 * _resize(flow1, 2.0).repeat(1, n, 1, 1)
        return flow0, flow1, torch.sigmoid(mask), residual


class _UpdateBlock(nn.Module):
    """RAFT-style small update: correlation + flow -> residual feature and flow (at 1/scale when given)."""

    def __init__(self, cdim: int, scale: int | None, levels: int = 4, radius: int = 3) -> None:
        super().__init__()
        planes = levels * (2 * radius + 1) ** 2
        hidden, flow_dim, corr_dim, fc_dim = 76, 20, 64, 68
        self.scale = scale
        self.convc1 = nn.Conv2d(2 * planes, corr_dim, 1)
        self.convf1 = nn.Conv2d(4, flow_dim * 2, 7, padding=3)
        self.convf2 = nn.Conv2d(flow_dim * 2, flow_dim, 3, padding=1)
        self.conv = nn.Conv2d(corr_dim + flow_dim, fc_dim, 3, padding=1)
        self.gru = nn.Sequential(nn.Conv2d(fc_dim + 4 + cdim, hidden, 3, padding=1), nn.LeakyReLU(0.1),
                                 nn.Conv2d(hidden, hidden, 3, padding=1))
        self.feat_head = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1), nn.LeakyReLU(0.1),
                                       nn.Conv2d(hidden, cdim, 3, padding=1))
        self.flow_head = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1), nn.LeakyReLU(0.1),
                                       nn.Conv2d(hidden, 4, 3, padding=1))

    def forward(self, net: Tensor, flow: Tensor, corr: Tensor) -> tuple[Tensor, Tensor]:
        if self.scale is not None:
            net = _resize(net, 1 / self.scale)
        cor = F.leaky_relu(self.convc1(corr), 0.1)
        flo = F.leaky_relu(self.convf2(F.leaky_relu(self.convf1(flow), 0.1)), 0.1)
        inp = F.leaky_relu(self.conv(torch.cat([cor, flo], 1)), 0.1)
        out = self.gru(torch.cat([inp, flow, net], 1))
        delta_net, delta_flow = self.feat_head(out), self.flow_head(out)
        if self.scale is not None:
            delta_net = _resize(delta_net, self.scale)
            delta_flow = self.scale * _resize(delta_flow, self.scale)
        return delta_net, delta_flow


def _bilinear_sampler(image: Tensor, coords: Tensor) -> Tensor:
    h, w = image.shape[-2:]
    x, y = coords.split([1, 1], dim=-1)
    grid = torch.cat([2 * x / (w - 1) - 1, 2 * y / (h - 1) - 1], dim=-1)
    return F.grid_sample(image, grid, align_corners=True)


class _BidirCorrelation:
    """All-pairs correlation of the two feature maps and its transpose, pooled into ``levels`` levels."""

    def __init__(self, fmap0: Tensor, fmap1: Tensor, levels: int, radius: int) -> None:
        self.levels, self.radius = levels, radius
        b, dim, h, w = fmap0.shape
        corr = torch.matmul(fmap0.view(b, dim, h * w).transpose(1, 2), fmap1.view(b, dim, h * w))
        corr = corr.view(b, h, w, 1, h, w) / torch.sqrt(torch.tensor(dim).float())
        corr_t = corr.permute(0, 4, 5, 3, 1, 2).reshape(b * h * w, 1, h, w)
        corr = corr.reshape(b * h * w, 1, h, w)
        self.pyramid, self.pyramid_t = [corr], [corr_t]
        for _ in range(levels - 1):
            corr, corr_t = F.avg_pool2d(corr, 2, stride=2), F.avg_pool2d(corr_t, 2, stride=2)
            self.pyramid.append(corr)
            self.pyramid_t.append(corr_t)

    def __call__(self, coords0: Tensor, coords1: Tensor) -> tuple[Tensor, Tensor]:
        r = self.radius
        coords0, coords1 = coords0.permute(0, 2, 3, 1), coords1.permute(0, 2, 3, 1)
        b, h, w, _ = coords0.shape
        d = torch.linspace(-r, r, 2 * r + 1, device=coords0.device)
        delta = torch.stack(torch.meshgrid(d, d, indexing="ij"), dim=-1).view(1, 2 * r + 1, 2 * r + 1, 2)
        out, out_t = [], []
        for level in range(self.levels):
            centre0 = coords0.reshape(b * h * w, 1, 1, 2) / 2 ** level
            centre1 = coords1.reshape(b * h * w, 1, 1, 2) / 2 ** level
            out.append(_bilinear_sampler(self.pyramid[level], centre0 + delta).view(b, h, w, -1))
            out_t.append(_bilinear_sampler(self.pyramid_t[level], centre1 + delta).view(b, h, w, -1))
        return (torch.cat(out, -1).permute(0, 3, 1, 2).contiguous().float(),
                torch.cat(out_t, -1).permute(0, 3, 1, 2).contiguous().float())


def _coords_grid(batch: int, h: int, w: int, device: torch.device) -> Tensor:
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([xs, ys], dim=0).float()[None].repeat(batch, 1, 1, 1)


class AMTS(nn.Module):
    """AMT-S with MCG-NKU/AMT's module names; ``forward`` interpolates the middle frame."""

    def __init__(self, radius: int = 3, levels: int = 4, flows: int = 3,
                 channels: tuple[int, ...] = (20, 32, 44, 56), skip: int = 20) -> None:
        super().__init__()
        self.radius, self.levels, self.flows = radius, levels, flows
        self.feat_encoder = _SmallEncoder(84)
        self.encoder = _Encoder(channels)
        self.decoder4 = _InitDecoder(channels[3], channels[2], skip)
        self.decoder3 = _IntermediateDecoder(channels[2], channels[1], skip)
        self.decoder2 = _IntermediateDecoder(channels[1], channels[0], skip)
        self.decoder1 = _MultiFlowDecoder(channels[0], skip, flows)
        self.update4 = _UpdateBlock(44, None, levels, radius)
        self.update3 = _UpdateBlock(32, 2, levels, radius)
        self.update2 = _UpdateBlock(20, 4, levels, radius)
        self.comb_block = nn.Sequential(nn.Conv2d(3 * flows, 6 * flows, 3, 1, 1), nn.PReLU(6 * flows),
                                        nn.Conv2d(6 * flows, 3, 3, 1, 1))

    @staticmethod
    def _lookup(corr_fn: _BidirCorrelation, coord: Tensor, flow0: Tensor, flow1: Tensor, embt: Tensor,
                downsample: int) -> tuple[Tensor, Tensor]:
        if downsample != 1:  # the flows to the middle frame, at the correlation's 1/8 resolution
            flow0, flow1 = _resize(flow0, 1 / downsample) / downsample, _resize(flow1, 1 / downsample) / downsample
        corr0, corr1 = corr_fn(coord + flow1 / embt, coord + flow0 / (1.0 - embt))
        return torch.cat([corr0, corr1], 1), torch.cat([flow0, flow1], 1)

    def _refine(self, update: _UpdateBlock, corr_fn, coord, flow0, flow1, ft, embt, downsample):
        corr, flow = self._lookup(corr_fn, coord, flow0, flow1, embt, downsample)
        delta_ft, delta_flow = update(ft, flow, corr)
        delta0, delta1 = torch.chunk(delta_flow, 2, 1)
        return flow0 + delta0, flow1 + delta1, ft + delta_ft

    def forward(self, img0: Tensor, img1: Tensor, embt: float = 0.5) -> Tensor:
        """(B, 3, H, W) frames in [0, 1], H and W multiples of 16 -> the frame at time ``embt``, in [0, 1]."""
        if img0.shape[-2] % PAD_DIVISOR or img0.shape[-1] % PAD_DIVISOR:
            raise DataError(f"AMT-S needs frames padded to multiples of {PAD_DIVISOR}, got {tuple(img0.shape[-2:])}")
        t = torch.full((img0.shape[0], 1, 1, 1), embt, dtype=img0.dtype, device=img0.device)
        mean = torch.cat([img0, img1], 2).mean(1, keepdim=True).mean(2, keepdim=True).mean(3, keepdim=True)
        img0, img1 = img0 - mean, img1 - mean
        b, _, h, w = img0.shape
        coord = _coords_grid(b, h // 8, w // 8, img0.device)
        fmap0, fmap1 = torch.split(self.feat_encoder(torch.cat([img0, img1], 0)), [b, b], 0)
        corr_fn = _BidirCorrelation(fmap0, fmap1, self.levels, self.radius)
        f0_1, f0_2, f0_3, f0_4 = self.encoder(img0)
        f1_1, f1_2, f1_3, f1_4 = self.encoder(img1)
        flow0, flow1, ft = self.decoder4(f0_4, f1_4, t)
        flow0, flow1, ft = self._refine(self.update4, corr_fn, coord, flow0, flow1, ft, t, 1)
        flow0, flow1, ft = self.decoder3(ft, f0_3, f1_3, flow0, flow1)
        flow0, flow1, ft = self._refine(self.update3, corr_fn, coord, flow0, flow1, ft, t, 2)
        flow0, flow1, ft = self.decoder2(ft, f0_2, f1_2, flow0, flow1)
        flow0, flow1, ft = self._refine(self.update2, corr_fn, coord, flow0, flow1, ft, t, 4)
        flow0, flow1, mask, residual = self.decoder1(ft, f0_1, f1_1, flow0, flow1)
        return torch.clamp(self._combine(img0, img1, flow0, flow1, mask, residual, mean), 0, 1)

    def _combine(self, img0, img1, flow0, flow1, mask, residual, mean) -> Tensor:
        """Warp both frames by each of the ``flows`` flow pairs, blend by the masks, fuse (multi_flow_combine)."""
        b, c, h, w = flow0.shape
        n = c // 2
        flow0, flow1 = flow0.reshape(b * n, 2, h, w), flow1.reshape(b * n, 2, h, w)
        mask, residual = mask.reshape(b * n, 1, h, w), residual.reshape(b * n, 3, h, w)
        img0 = torch.stack([img0] * n, 1).reshape(-1, 3, h, w)
        img1 = torch.stack([img1] * n, 1).reshape(-1, 3, h, w)
        mean = torch.stack([mean] * n, 1).reshape(-1, 1, 1, 1)
        warps = mask * warp(img0, flow0) + (1 - mask) * warp(img1, flow1) + mean + residual
        warps = warps.reshape(b, n, 3, h, w)
        return warps.mean(1) + self.comb_block(warps.view(b, -1, h, w))


register_signature("AMT-S", lambda keys: "comb_block.0.weight" in keys and "update4.convc1.weight" in keys)


def load_amt(path: str | Path, device: str | torch.device = "cpu") -> AMTS:
    """AMT-S with the weights of ``path`` (``amt-s.pth``: {"state_dict": ...}, read as data, strict)."""
    model = AMTS()
    load_strict(model, read_state_dict(path, "AMT-S checkpoint"), str(path), "AMT-S")
    return model.eval().to(device)


def _pad(frames: Tensor) -> tuple[Tensor, list[int]]:
    h, w = frames.shape[-2:]
    ph, pw = (-h) % PAD_DIVISOR, (-w) % PAD_DIVISOR
    pad = [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2]
    return F.pad(frames, pad, mode="replicate"), pad


def interpolate_even_frames(model: AMTS, frames: np.ndarray, *, chunk: int = 4) -> np.ndarray:
    """The frames AMT-S puts between consecutive even frames of a uint8 (T, H, W, 3) clip, uint8
    (⌈T/2⌉ − 1, H, W, 3), quantised as VBench's ``tensor2img`` (×255, clip, truncate)."""
    device = next(model.parameters()).device
    even = torch.from_numpy(np.ascontiguousarray(frames[::2])).permute(0, 3, 1, 2).float() / 255.0
    if len(even) < 2:
        raise DataError(f"motion smoothness needs at least 3 frames, got {len(frames)}")
    padded, pad = _pad(even)
    h, w = padded.shape[-2:]
    if min(h, w) < MIN_PADDED_SIDE:  # the coarsest of 4 correlation levels (1/64) needs 2 cells a side
        raise DataError(f"motion smoothness (AMT-S) needs frames of at least {MIN_PADDED_SIDE}x{MIN_PADDED_SIDE} "
                        f"pixels (padded to multiples of {PAD_DIVISOR}), got {frames.shape[1]}x{frames.shape[2]}")
    out = []
    with torch.no_grad():
        for start in range(0, len(even) - 1, chunk):
            stop = min(start + chunk, len(even) - 1)
            middle = model(padded[start:stop].to(device), padded[start + 1:stop + 1].to(device))
            out.append(middle[:, :, pad[2]:h - pad[3], pad[0]:w - pad[1]].cpu())
    middle = torch.cat(out)
    return (middle * 255.0).permute(0, 2, 3, 1).numpy().clip(0, 255).astype(np.uint8)


def smoothness_from_interpolated(frames: np.ndarray, interpolated: np.ndarray) -> float:
    """VBench's rule: (255 − mean over the odd frames of mean |odd frame − its interpolation|)/255, uint8 inputs;
    interpolated[i] stands for frame 2i+1 (a trailing odd frame without an interpolation is not compared)."""
    odd = frames[1::2][:len(interpolated)]
    if len(odd) == 0:
        raise DataError(f"motion smoothness needs at least 3 frames, got {len(frames)}")
    diffs = [np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() for a, b in zip(odd, interpolated)]
    return float((255.0 - float(np.mean(diffs))) / 255.0)


def vbench_motion_smoothness(model: AMTS, frames: np.ndarray, *, chunk: int = 4) -> float:
    """VBench's motion smoothness of a uint8 (T, H, W, 3) clip with AMT-S interpolating the odd frames."""
    return smoothness_from_interpolated(frames, interpolate_even_frames(model, frames, chunk=chunk))


def seeded_amt_state_dict(seed: int, gain: float = 0.5) -> dict[str, Tensor]:
    """Random AMT-S weights from ``seed`` (convolutions N(0, gain²/fan_in), biases N(0, 0.01²), PReLU 0.25)
    whose flows stay small, so the interpolated frame is a plausible blend of its neighbours (parity tests)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in AMTS().state_dict().items():
        if key.endswith("weight") and value.ndim == 4:
            fan_in = value[0].numel() if "convblock.2" not in key else value.shape[0] * value[0, 0].numel()
            state[key] = torch.randn(value.shape, generator=generator) * gain / math.sqrt(fan_in)
        elif key.endswith("bias"):
            state[key] = torch.randn(value.shape, generator=generator) * 0.01
        else:  # PReLU slopes
            state[key] = torch.full(value.shape, 0.25)
    return state


class MotionSmoothnessScorer:
    """The ``ClipScorer`` of motion_smoothness: AMT-S on the device, a chunk of frame pairs per pass."""

    def __init__(self, model: AMTS, chunk: int = 4) -> None:
        self.model, self.chunk = model, chunk

    def score(self, frames: np.ndarray, image: np.ndarray | None = None) -> float:
        return vbench_motion_smoothness(self.model, frames, chunk=self.chunk)


def _build(files: Mapping[str, Path], device: torch.device) -> MotionSmoothnessScorer:
    return MotionSmoothnessScorer(load_amt(files[AMT_FILE.name], device))


MOTION_SMOOTHNESS = DimensionSpec("motion_smoothness", (AMT_FILE,), False, _build)

__all__ = ["AMTS", "AMT_FILE", "MOTION_SMOOTHNESS", "interpolate_even_frames", "load_amt",
           "seeded_amt_state_dict", "smoothness_from_interpolated", "vbench_motion_smoothness", "warp"]
