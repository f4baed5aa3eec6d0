"""CoTracker3 offline, written here, loading the released ``scaled_offline.pth`` strictly.

Architecture (official-motion-networks.md §2; sizes are constructor arguments so a reduced network
runs through the same code in tests; the defaults are the released model, 25,385,700 parameters):

* ``fnet``: a stride-4 CNN on 2·(v/255)−1 (7×7/2 conv, four stages of two residual blocks, 64/96/128/128
  channels for latent 128, instance norm without parameters). Every stage is resized to H/4×W/4
  (bilinear, align_corners=True), the 416 channels are fused by a 3×3 then a 1×1 conv to 128.
  Features are L2-normalised per pixel and average-pooled 2× three times: a 4-level pyramid.
* For each query, a 7×7 (radius 3) patch of features around it on its query frame, per level.
  Every iteration, the 7×7 window around the current estimate in every frame is correlated with that
  patch: a 49×49 = 2401 volume per level, embedded by ``corr_mlp`` (2401 → 384 → 256, exact GELU).
  In both windows the x offset is the slow axis. Sampling is bilinear, align_corners=True, border padding.
* Token per point and frame (1110 = 1 + 1 + 4·256 + 84): running visibility and confidence logits,
  the four correlation embeddings, and [d, sin(2^k d), sin(2^k d + π/2)], k = 0..9 (scale-major) of the
  forward and backward displacement d (stride-4 units divided by model_resolution / 4); plus ``time_emb``
  (a (1, 60, 1110) sin/cos buffer, linearly interpolated to T frames when T ≠ 60).
* ``updateformer`` (motion/update_former.py, 3+3 layers, 384 wide, 8 heads, 64 virtual tracks) gives
  Δx, Δy, Δvis, Δconf for every point and frame; these accumulate over the iterations. The output
  coordinates are ×4, visibility and confidence are sigmoids. The whole clip is processed at once.

Two ways to call it (:class:`CoTracker3Tracker`, ``get_tracker("cotracker3", checkpoint=PATH)``):

* ``mode="predictor"`` (default) gives what the official ``CoTrackerPredictor`` gives for frame-0
  queries: the clip resized to the model resolution (384×512, bilinear, align_corners=True), queries
  scaled by ((W'−1)/(W−1), (H'−1)/(H−1)), a 6×6 support grid of frame-0 points (margin W'/64) appended
  then dropped, 6 iterations, visible = p_vis > 0.9, frame-0 points set to the queries (and visible),
  tracks scaled back to the input resolution. The confidence, which the official predictor drops, is
  kept in ``Tracks.confidence``.
* ``mode="shift"`` gives what the SHIFT authors' patched predictor gives their LC discriminator
  (shift-reference-rewards.md §2.1-2.2): support grid always, 4 iterations, raw visibility and
  confidence probabilities (no threshold, no overwrite), tracks at the model resolution (the authors
  never scale them back), and the update-transformer input token of the last iteration, (N, T, 1110)
  including ``time_emb``: the network's state after iters−1 updates, not the final tracks.

The torch path (:meth:`CoTracker3Tracker.track`) runs on the model's device, under no_grad, on a batch
of B clips (a conditioning's real clip and its P rollouts share the queries), ``chunk_size`` clips
per forward. The numpy ``PointTracker`` interface is the same computation for one clip.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shiftvdm.errors import ConfigError, DataError
from shiftvdm.motion.base import Tracks, check_queries, check_video
from shiftvdm.motion.update_former import Mlp, VirtualTrackTransformer
from shiftvdm.motion.weights import load_strict, read_state_dict, register_signature

logger = logging.getLogger(__name__)

NETWORK = "CoTracker3 offline"
NUM_PARAMETERS = 25_385_700  # the released network (time_emb is a buffer, not counted)


def _looks_like_cotracker3(keys: set[str]) -> bool:
    return {"updateformer.virual_tracks", "fnet.conv1.weight", "corr_mlp.fc1.weight", "time_emb"} <= keys


register_signature(NETWORK, _looks_like_cotracker3)


# ---------------------------------------------------------------------------------------------
# feature network
# ---------------------------------------------------------------------------------------------

class ResidualBlock(nn.Module):
    """Two 3×3 convs with instance norm and ReLU, plus a (strided 1×1 conv) shortcut."""

    def __init__(self, in_dim: int, out_dim: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_dim, out_dim, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(out_dim, out_dim, 3, padding=1)
        self.norm1 = nn.InstanceNorm2d(out_dim)
        self.norm2 = nn.InstanceNorm2d(out_dim)
        self.downsample = (nn.Sequential(nn.Conv2d(in_dim, out_dim, 1, stride=stride), nn.InstanceNorm2d(out_dim))
                           if stride != 1 else None)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return F.relu(x + y)


class BasicEncoder(nn.Module):
    """(M, 3, H, W) in [-1, 1] → (M, latent_dim, H/stride, W/stride) features (keys ``fnet.*``)."""

    def __init__(self, latent_dim: int = 128, stride: int = 4) -> None:
        super().__init__()
        self.stride = stride
        widths = (latent_dim // 2, latent_dim // 4 * 3, latent_dim, latent_dim)
        self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3)
        self.norm1 = nn.InstanceNorm2d(widths[0])
        dims = (widths[0],) + widths
        for i, stage_stride in enumerate((1, 2, 2, 2)):
            stage = nn.Sequential(ResidualBlock(dims[i], dims[i + 1], stage_stride),
                                  ResidualBlock(dims[i + 1], dims[i + 1]))
            self.add_module(f"layer{i + 1}", stage)
        self.conv2 = nn.Conv2d(sum(widths), 2 * latent_dim, 3, padding=1)
        self.norm2 = nn.InstanceNorm2d(2 * latent_dim)
        self.conv3 = nn.Conv2d(2 * latent_dim, latent_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        size = (x.shape[-2] // self.stride, x.shape[-1] // self.stride)
        x = F.relu(self.norm1(self.conv1(x)))
        stages = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            stages.append(F.interpolate(x, size, mode="bilinear", align_corners=True))
        x = F.relu(self.norm2(self.conv2(torch.cat(stages, dim=1))))
        return self.conv3(x)


class UpdateFormer(VirtualTrackTransformer):
    """Tokens (B, N, T, D) → (B, N, T, 4): Δx, Δy (``flow_head``), Δvis, Δconf (``vis_conf_head``)."""

    def __init__(self, in_dim: int, hidden: int, heads: int, time_depth: int, space_depth: int,
                 num_virtual_tracks: int, mlp_ratio: float) -> None:
        super().__init__(in_dim, hidden, heads, time_depth, space_depth, num_virtual_tracks, mlp_ratio)
        self.flow_head = nn.Linear(hidden, 2)
        self.vis_conf_head = nn.Linear(hidden, 2)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.trunk(tokens)
        return torch.cat([self.flow_head(x), self.vis_conf_head(x)], dim=-1)


def sincos_time_embedding(num_frames: int, dim: int) -> Tensor:
    """(1, num_frames, dim) embedding [sin(t·ω_k), cos(t·ω_k)], ω_k = 10000^(−k/(dim/2)) (in float64, then float32)."""
    if dim % 2:
        raise ConfigError(f"cotracker3: token width {dim} must be even for the time embedding")
    omega = 1.0 / 10000.0 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    angles = torch.arange(num_frames, dtype=torch.float64)[:, None] * omega[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)[None].float()


def displacement_encoding(d: Tensor, octaves: int) -> Tensor:
    """[d, sin(2^k d), sin(2^k d + π/2)] for k < octaves, scale-major: (..., C) → (..., C·(1 + 2·octaves))."""
    scales = 2.0 ** torch.arange(octaves, dtype=d.dtype, device=d.device)
    angles = (d[..., None, :] * scales[:, None]).flatten(-2)
    return torch.cat([d, torch.sin(torch.cat([angles, angles + 0.5 * math.pi], dim=-1))], dim=-1)


def _normalise(coords: Tensor, sizes: tuple[int, ...]) -> Tensor:
    """Pixel coordinates (last axis ordered like ``sizes``, i.e. x, y[, t]) → grid_sample's [-1, 1] (align_corners)."""
    scale = torch.tensor([2.0 / max(s - 1, 1) for s in sizes], dtype=coords.dtype, device=coords.device)
    return coords * scale - 1


# ---------------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------------

class CoTracker3(nn.Module):
    """CoTracker3 offline: video (B, T, 3, H, W) in [0, 255] at the model resolution, queries (B, N, 3) (t, x, y).

    ``forward`` returns tracks (B, T, N, 2) in input pixels, visibility and confidence probabilities
    (B, T, N), and, when ``return_tokens``, the last iteration's update-transformer input (B, N, T, D).
    """

    def __init__(self, stride: int = 4, corr_radius: int = 3, corr_levels: int = 4, num_virtual_tracks: int = 64,
                 model_resolution: tuple[int, int] = (384, 512), latent_dim: int = 128, corr_hidden: int = 384,
                 corr_dim: int = 256, hidden: int = 384, heads: int = 8, time_depth: int = 3, space_depth: int = 3,
                 mlp_ratio: float = 4.0, window_len: int = 60, octaves: int = 10) -> None:
        super().__init__()
        height, width = (int(s) for s in model_resolution)
        if height % stride or width % stride or height < 2 * stride or width < 2 * stride:
            raise ConfigError(f"cotracker3: model_resolution {model_resolution} must be multiples of the stride "
                              f"{stride} (and at least {2 * stride})")
        self.stride = stride
        self.corr_radius = corr_radius
        self.corr_levels = corr_levels
        self.model_resolution = (height, width)
        self.octaves = octaves
        self.input_dim = 2 + corr_levels * corr_dim + 4 * (1 + 2 * octaves)
        self.register_buffer("time_emb", sincos_time_embedding(window_len, self.input_dim))
        self.fnet = BasicEncoder(latent_dim, stride)
        self.updateformer = UpdateFormer(self.input_dim, hidden, heads, time_depth, space_depth,
                                         num_virtual_tracks, mlp_ratio)
        side = 2 * corr_radius + 1
        self.corr_mlp = Mlp(side ** 4, corr_hidden, corr_dim)
        offsets = torch.arange(-corr_radius, corr_radius + 1, dtype=torch.float32)
        # 7×7 window offsets (dx, dy), dx the slow axis, as the released corr_mlp expects.
        window = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij"), dim=-1).reshape(-1, 2)
        self.register_buffer("window", window, persistent=False)

    def time_embedding(self, num_frames: int) -> Tensor:
        """``time_emb`` at ``num_frames`` frames: linear interpolation (align_corners=False) when it differs."""
        if num_frames == self.time_emb.shape[1]:
            return self.time_emb
        emb = F.interpolate(self.time_emb.float().transpose(1, 2), size=num_frames, mode="linear")
        return emb.transpose(1, 2)

    def features(self, video: Tensor) -> list[Tensor]:
        """(B, T, 3, H, W) in [0, 255] → pyramid of L2-normalised features, each (B, T, C, h_i, w_i)."""
        batch, frames = video.shape[:2]
        fmaps = self.fnet((2 * (video / 255.0) - 1.0).flatten(0, 1))
        fmaps = fmaps / torch.sqrt(torch.clamp(fmaps.square().sum(dim=1, keepdim=True), min=1e-12))
        pyramid = [fmaps]
        for _ in range(self.corr_levels - 1):
            pyramid.append(F.avg_pool2d(pyramid[-1], 2, stride=2))
        return [f.reshape(batch, frames, *f.shape[1:]) for f in pyramid]

    def _query_patches(self, fmap: Tensor, frames: Tensor, centres: Tensor) -> Tensor:
        """Features of the 7×7 patch around each query on its query frame: (B, N, 49, C)."""
        batch, num_frames, _, height, width = fmap.shape
        points = centres[:, :, None] + self.window  # (B, N, 49, 2) x, y
        t = frames[:, :, None, None].to(points.dtype).expand(-1, -1, points.shape[2], 1)
        grid = _normalise(torch.cat([points, t], dim=-1), (width, height, num_frames))
        sampled = F.grid_sample(fmap.transpose(1, 2), grid[:, :, :, None], mode="bilinear",
                                padding_mode="border", align_corners=True)  # (B, C, N, 49, 1)
        return sampled[..., 0].permute(0, 2, 3, 1)

    def _windows(self, fmap: Tensor, centres: Tensor) -> Tensor:
        """Features of the 7×7 window around each current estimate in every frame: (B, T, N, 49, C)."""
        batch, frames, channels, height, width = fmap.shape
        points = (centres[:, :, :, None] + self.window).flatten(0, 1)  # (B·T, N, 49, 2)
        sampled = F.grid_sample(fmap.flatten(0, 1), _normalise(points, (width, height)), mode="bilinear",
                                padding_mode="border", align_corners=True)  # (B·T, C, N, 49)
        return sampled.permute(0, 2, 3, 1).reshape(batch, frames, *sampled.shape[2:4], channels)

    def forward(self, video: Tensor, queries: Tensor, iters: int = 4,
                return_tokens: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        batch, frames, _, height, width = video.shape
        if height % self.stride or width % self.stride:
            raise DataError(f"cotracker3: frames of {height}x{width} are not multiples of the stride {self.stride}")
        num = queries.shape[1]
        pyramid = self.features(video.float())
        query_frames = queries[..., 0].long()
        query_coords = queries[..., 1:3].float() / self.stride
        patches = [self._query_patches(pyramid[i], query_frames, query_coords / 2 ** i)
                   for i in range(self.corr_levels)]
        coords = query_coords[:, None].expand(batch, frames, num, 2)
        vis = torch.zeros(batch, frames, num, device=video.device)
        conf = torch.zeros_like(vis)
        scale = torch.tensor([self.model_resolution[1], self.model_resolution[0]], dtype=torch.float32,
                             device=video.device) / self.stride
        time_emb = self.time_embedding(frames)
        tokens = None
        for _ in range(iters):
            corr = []
            for level in range(self.corr_levels):
                windows = self._windows(pyramid[level], coords / 2 ** level)  # (B, T, N, 49, C)
                volume = torch.einsum("btnkc,bnlc->btnkl", windows, patches[level])  # window-major 49×49
                corr.append(self.corr_mlp(volume.flatten(-2)))
            forward_d = F.pad(coords[:, :-1] - coords[:, 1:], (0, 0, 0, 0, 0, 1))
            backward_d = F.pad(coords[:, 1:] - coords[:, :-1], (0, 0, 0, 0, 1, 0))
            motion = displacement_encoding(torch.cat([forward_d / scale, backward_d / scale], dim=-1), self.octaves)
            tokens = torch.cat([vis[..., None], conf[..., None], *corr, motion], dim=-1).transpose(1, 2)
            tokens = tokens + time_emb[:, None]  # (B, N, T, D)
            delta = self.updateformer(tokens)
            coords = coords + delta[..., :2].transpose(1, 2)
            vis = vis + delta[..., 2].transpose(1, 2)
            conf = conf + delta[..., 3].transpose(1, 2)
        return (coords * self.stride, torch.sigmoid(vis), torch.sigmoid(conf),
                tokens if return_tokens else None)


# ---------------------------------------------------------------------------------------------
# the tracker: predictor conventions, batched torch path, numpy PointTracker interface
# ---------------------------------------------------------------------------------------------

MODES: dict[str, dict[str, Any]] = {
    # official CoTrackerPredictor, first-frame queries
    "predictor": {"iters": 6, "rescale": True, "overwrite_queries": True, "return_tokens": False},
    # the SHIFT authors' patched predictor (what their LC discriminator reads)
    "shift": {"iters": 4, "rescale": False, "overwrite_queries": False, "return_tokens": True},
}


@dataclass
class CoTracker3Output:
    """Tracks of N frame-0 queries in B clips (torch, on the model's device).

    Attributes:
        tracks: (B, T, N, 2) positions (x, y) in pixels of ``size`` (the input clips in predictor mode,
            the model resolution in shift mode).
        visibility: (B, T, N) raw visibility probabilities.
        confidence: (B, T, N) raw confidence probabilities.
        visible: (B, T, N) bool, visibility > threshold (predictor mode: query frame forced True).
        tokens: (B, N, T, D) last-iteration update-transformer input, or None.
        size: (height, width) of the pixel grid of ``tracks``.
    """

    tracks: Tensor
    visibility: Tensor
    confidence: Tensor
    visible: Tensor
    tokens: Tensor | None
    size: tuple[int, int]


def support_grid(size: int, height: int, width: int, device: torch.device | None = None) -> Tensor:
    """size×size points (x, y), row-major, margin width/64 from the borders: (size², 2) (the predictor's grid)."""
    margin = width / 64
    ys = torch.linspace(margin, height - margin, size, device=device)
    xs = torch.linspace(margin, width - margin, size, device=device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1).reshape(-1, 2)


class CoTracker3Tracker:
    """Frozen CoTracker3 offline from a local checkpoint (name "cotracker3").

    Args:
        checkpoint: ``scaled_offline.pth`` (a state dict, or one under "model"/"state_dict") or a
            ``.safetensors``/hub folder; loaded strictly (CheckpointError naming the keys).
        mode: "predictor" (the official predictor's output) or "shift" (the SHIFT authors' LC inputs).
        iters: refinement iterations; None = the mode's (6 / 4).
        support_grid_size: side of the frame-0 support grid added to the queries (0 = none; 6 as released).
        visibility_threshold: ``visible`` = visibility > this (0.9 as released).
        chunk_size: clips per forward in :meth:`track` (memory ∝ chunk_size · T · N).
        device: where the network runs; None = CUDA when available, else CPU.
        **architecture: CoTracker3 sizes (defaults: the released network).
    """

    name = "cotracker3"

    def __init__(self, checkpoint: str | Path | None = None, mode: Literal["predictor", "shift"] = "predictor",
                 iters: int | None = None, support_grid_size: int = 6, visibility_threshold: float = 0.9,
                 chunk_size: int = 4, device: str | torch.device | None = None, **architecture: Any) -> None:
        if checkpoint is None:
            raise ConfigError("point tracker 'cotracker3' needs a local checkpoint path, e.g. scaled_offline.pth "
                              "(critic.tracker_checkpoint=PATH); no weights are downloaded")
        model = CoTracker3(**architecture)
        state = read_state_dict(checkpoint, f"{NETWORK} checkpoint")
        load_strict(model, state, str(checkpoint), NETWORK)
        self._setup(model, mode, iters, support_grid_size, visibility_threshold, chunk_size, device)

    @classmethod
    def from_model(cls, model: CoTracker3, mode: Literal["predictor", "shift"] = "predictor", iters: int | None = None,
                   support_grid_size: int = 6, visibility_threshold: float = 0.9, chunk_size: int = 4,
                   device: str | torch.device | None = None) -> "CoTracker3Tracker":
        """A tracker around an already built (and loaded) network."""
        tracker = cls.__new__(cls)
        tracker._setup(model, mode, iters, support_grid_size, visibility_threshold, chunk_size, device)
        return tracker

    def _setup(self, model: CoTracker3, mode: str, iters: int | None, support_grid_size: int,
               visibility_threshold: float, chunk_size: int, device: str | torch.device | None) -> None:
        if mode not in MODES:
            raise ConfigError(f"cotracker3: mode must be one of {sorted(MODES)}, got {mode!r}")
        options = dict(MODES[mode])
        if iters is not None:
            options["iters"] = int(iters)
        if options["iters"] < 1 or chunk_size < 1 or support_grid_size < 0:
            raise ConfigError(f"cotracker3: iters ({options['iters']}) and chunk_size ({chunk_size}) must be >= 1 "
                              f"and support_grid_size ({support_grid_size}) >= 0")
        self.mode = mode
        self.options = options
        self.support_grid_size = int(support_grid_size)
        self.visibility_threshold = float(visibility_threshold)
        self.chunk_size = int(chunk_size)
        self.device = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.eval().requires_grad_(False).to(self.device)

    @property
    def token_dim(self) -> int:
        """Width D of the update tokens (1110 for the released network)."""
        return self.model.input_dim

    def to(self, device: str | torch.device) -> "CoTracker3Tracker":
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    # ----- torch path ---------------------------------------------------------------------------
    @torch.no_grad()
    def track(self, videos: Tensor, queries: Tensor | np.ndarray,
              value_range: tuple[float, float] = (0.0, 255.0)) -> CoTracker3Output:
        """Track frame-0 queries through B clips.

        Args:
            videos: (B, T, 3, H, W), uint8 or float with pixel values in ``value_range``
                ((0, 255) default; (-1, 1) for decoded rollouts, (0, 1) as the authors' wrapper).
            queries: (N, 2) shared by all clips, or (B, N, 2), as (x, y) in input pixels on frame 0.
            value_range: the pixel range of ``videos``, mapped linearly onto [0, 255].
        """
        videos, queries = self._check_inputs(videos, queries)
        low, high = (float(v) for v in value_range)
        if not high > low:
            raise DataError(f"cotracker3: value_range must be (low, high) with high > low, got {value_range}")
        # float32 whatever the caller's autocast (a bf16 training step must not change the features)
        with torch.autocast(self.device.type, enabled=False):
            outputs = [self._track_chunk(videos[i:i + self.chunk_size], queries[i:i + self.chunk_size], low, high)
                       for i in range(0, len(videos), self.chunk_size)]
        joined = [torch.cat(parts) if parts[0] is not None else None for parts in zip(*outputs)]
        size = tuple(videos.shape[-2:]) if self.options["rescale"] else self.model.model_resolution
        return CoTracker3Output(*joined, size=size)  # type: ignore[arg-type]

    def _check_inputs(self, videos: Tensor, queries: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
        if not isinstance(videos, Tensor) or videos.ndim != 5 or videos.shape[2] != 3:
            shape = tuple(videos.shape) if isinstance(videos, Tensor) else type(videos).__name__
            raise DataError(f"cotracker3: videos must be a (B, T, 3, H, W) tensor, got {shape}")
        batch, frames, _, height, width = videos.shape
        if batch == 0 or frames == 0 or height < 2 or width < 2:
            raise DataError(f"cotracker3: videos of shape {tuple(videos.shape)} are empty or too small")
        queries = torch.as_tensor(queries, dtype=torch.float32)
        if queries.ndim == 2:
            queries = queries[None].expand(batch, -1, -1)
        if queries.ndim != 3 or queries.shape[0] != batch or queries.shape[-1] != 2 or queries.shape[1] == 0:
            raise DataError(f"cotracker3: queries must be (N, 2) or ({batch}, N, 2) (x, y), got {tuple(queries.shape)}")
        if not torch.isfinite(queries).all():
            raise DataError("cotracker3: queries contain NaN or infinite coordinates")
        upper = torch.tensor([width - 1, height - 1], dtype=torch.float32)
        if (queries < 0).any() or (queries.cpu() > upper).any():
            raise DataError(f"cotracker3: queries fall outside the {height}x{width} frame (x in [0, {width - 1}], "
                            f"y in [0, {height - 1}] expected)")
        return videos, queries

    def _track_chunk(self, videos: Tensor, queries: Tensor, low: float,
                     high: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
        device = self.device
        batch, frames, _, height, width = videos.shape
        res_h, res_w = self.model.model_resolution
        pixels = videos.to(device=device, dtype=torch.float32)
        if (low, high) != (0.0, 255.0):
            pixels = (pixels - low) * (255.0 / (high - low))
        pixels = F.interpolate(pixels.flatten(0, 1), (res_h, res_w), mode="bilinear", align_corners=True)
        pixels = pixels.reshape(batch, frames, 3, res_h, res_w)
        to_model = torch.tensor([(res_w - 1) / (width - 1), (res_h - 1) / (height - 1)], device=device)
        scaled = queries.to(device) * to_model
        num = scaled.shape[1]
        points = scaled
        if self.support_grid_size:
            grid = support_grid(self.support_grid_size, res_h, res_w, device)
            points = torch.cat([scaled, grid[None].expand(batch, -1, -1)], dim=1)
        model_queries = torch.cat([torch.zeros_like(points[..., :1]), points], dim=-1)  # (t = 0, x, y)
        tracks, visibility, confidence, tokens = self.model(pixels, model_queries, iters=self.options["iters"],
                                                            return_tokens=self.options["return_tokens"])
        tracks, visibility, confidence = tracks[:, :, :num], visibility[:, :, :num], confidence[:, :, :num]
        tokens = tokens[:, :num] if tokens is not None else None
        visible = visibility > self.visibility_threshold
        if self.options["overwrite_queries"]:
            # The predictor puts frame 0 at the queries themselves, visible.
            tracks = tracks.clone()
            tracks[:, 0] = scaled
            visible[:, 0] = True
        if self.options["rescale"]:
            tracks = tracks * torch.tensor([(width - 1) / (res_w - 1), (height - 1) / (res_h - 1)], device=device)
        return tracks, visibility, confidence, visible, tokens

    # ----- numpy path ---------------------------------------------------------------------------
    def _numpy_inputs(self, video: np.ndarray, queries: np.ndarray) -> tuple[Tensor, np.ndarray]:
        check_video(video, min_frames=1)
        queries = check_queries(queries, *video.shape[1:3])
        if video.ndim == 3:
            video = np.repeat(video[..., None], 3, axis=-1)
        return torch.from_numpy(np.ascontiguousarray(video)).permute(0, 3, 1, 2)[None], queries

    def features(self, video: np.ndarray, queries: np.ndarray) -> dict[str, np.ndarray]:
        """One clip through :meth:`track`, as numpy: tracks (T, N, 2), visibility, confidence, visible (T, N),
        and tokens (N, T, D) when the mode returns them."""
        clip, queries = self._numpy_inputs(video, queries)
        out = self.track(clip, queries)
        result = {"tracks": out.tracks[0], "visibility": out.visibility[0], "confidence": out.confidence[0],
                  "visible": out.visible[0]}
        if out.tokens is not None:
            result["tokens"] = out.tokens[0]
        return {k: v.cpu().numpy() for k, v in result.items()}

    def __call__(self, video: np.ndarray, queries: np.ndarray) -> Tracks:
        """uint8 (T, H, W, 3) or (T, H, W) and (N, 2) frame-0 queries → Tracks in input pixels.

        In shift mode the tracks are scaled back from the model resolution here (``Tracks`` are always
        in input pixels); :meth:`track` keeps the authors' model-resolution tracks.
        """
        clip, queries = self._numpy_inputs(video, queries)
        out = self.track(clip, queries)
        height, width = video.shape[1:3]
        points = out.tracks[0]
        if out.size != (height, width):
            res_h, res_w = out.size
            points = points * torch.tensor([(width - 1) / (res_w - 1), (height - 1) / (res_h - 1)],
                                           device=points.device)
        return Tracks(points=points.cpu().numpy().astype(np.float32), visible=out.visible[0].cpu().numpy(),
                      confidence=out.confidence[0].cpu().numpy().astype(np.float32))


__all__ = ["CoTracker3", "CoTracker3Output", "CoTracker3Tracker", "MODES", "NETWORK", "NUM_PARAMETERS",
           "support_grid"]
