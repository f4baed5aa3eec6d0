"""Optional neural point tracker in the CoTracker3 style, loaded ONLY from a local file.

The reference tracks with CoTracker3 offline (shift-reference-rewards.md §2). Its weights cannot be
downloaded here and its code is not ours to copy, so this module defines a compact tracker of the
same family, written here: iterative refinement of all tracks jointly, from local correlation
features, by a transformer that alternates attention over time and over tracks. It is NOT weight-
compatible with the official ``scaled_offline.pth``; a checkpoint must have been trained in this
format. ``get_tracker("cotracker", checkpoint=PATH)``.

Network (``TrackRefiner``): a stride-4 CNN (3→32→64→``feature_dim``, instance norm) gives per-frame
features; each query's feature is sampled on frame 0 at the query. Every iteration, for every
frame, the query feature is correlated with the 7×7 neighbourhood (radius 3) of the current
estimate at two scales (stride 4 and 8): 98 values; with the estimate's displacement to the
previous and next frame (4 values, in units of the stride-4 grid) and the running visibility and
confidence logits, a linear layer makes a token (``hidden_dim``) plus a sinusoidal time embedding;
``depth`` pairs of pre-LN blocks attend over time (per track) and over tracks (per frame); a linear
head gives Δx, Δy, Δvisibility, Δconfidence. Frame-0 positions stay at the queries.

Checkpoint format: ``.safetensors`` or a ``.pt/.pth`` state dict (``torch.load(weights_only=True)``;
nesting under ``"state_dict"``/``"model"`` and a ``module.`` prefix are accepted) with exactly the
keys and shapes of ``TrackRefiner(feature_dim, hidden_dim, depth, heads).state_dict()`` for the
sizes given to ``CoTrackerTracker`` (defaults 64, 128, 2, 4); e.g. ``encoder.0.weight`` (32, 3, 3, 3),
``embed.weight`` (128, 104), ``head.weight`` (4, 128). Loading is strict (CheckpointError naming keys).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shiftvdm.errors import ConfigError
from shiftvdm.motion.base import Tracks, check_queries, check_video
from shiftvdm.motion.raft_flow import check_state_dict, load_raft_state
from shiftvdm.rewards.ic import _Block
from shiftvdm.rewards.lc import sinusoidal_time_embedding

logger = logging.getLogger(__name__)

RADIUS = 3
NUM_SCALES = 2
STRIDE = 4


class TrackRefiner(nn.Module):
    """video (T, 3, H, W) in [0, 255] and queries (N, 2) -> points (T, N, 2), vis/conf logits (T, N)."""

    def __init__(self, feature_dim: int = 64, hidden_dim: int = 128, depth: int = 2, heads: int = 4,
                 iters: int = 4) -> None:
        super().__init__()
        if hidden_dim % heads:
            raise ConfigError(f"cotracker: hidden_dim {hidden_dim} must be divisible by heads {heads}")
        self.iters = iters
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.InstanceNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.InstanceNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, feature_dim, 3, padding=1))
        token_in = NUM_SCALES * (2 * RADIUS + 1) ** 2 + 4 + 2
        self.embed = nn.Linear(token_in, hidden_dim)
        self.time_blocks = nn.ModuleList(_Block(hidden_dim, heads, 4.0, 0.0) for _ in range(depth))
        self.track_blocks = nn.ModuleList(_Block(hidden_dim, heads, 4.0, 0.0) for _ in range(depth))
        self.norm = nn.LayerNorm(hidden_dim)
        self.head = nn.Linear(hidden_dim, 4)

    @staticmethod
    def _sample(fmap: Tensor, points: Tensor) -> Tensor:
        """fmap (T, C, h, w), points (T, M, 2) in fmap pixels -> (T, M, C), bilinear, zero outside."""
        h, w = fmap.shape[-2:]
        grid = torch.stack([2 * points[..., 0] / max(w - 1, 1) - 1, 2 * points[..., 1] / max(h - 1, 1) - 1], -1)
        return F.grid_sample(fmap, grid[:, :, None], align_corners=True)[..., 0].transpose(1, 2)

    def forward(self, video: Tensor, queries: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        frames, num = video.shape[0], queries.shape[0]
        fmaps = [self.encoder(2 * (video / 255.0) - 1)]
        fmaps.append(F.avg_pool2d(fmaps[0], 2, stride=2, ceil_mode=True))
        query_feat = self._sample(fmaps[0][:1], (queries / STRIDE)[None])[0]  # (N, C)
        offsets = torch.arange(-RADIUS, RADIUS + 1, dtype=torch.float32, device=video.device)
        dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
        window = torch.stack([dx, dy], -1).reshape(-1, 2)  # (49, 2)
        points = queries[None].expand(frames, -1, -1).clone()
        vis = torch.zeros(frames, num, device=video.device)
        conf = torch.zeros(frames, num, device=video.device)
        time_emb = sinusoidal_time_embedding(frames, self.embed.out_features, video.device)[:, None]
        for _ in range(self.iters):
            corr = []
            for level, fmap in enumerate(fmaps):
                centre = points / (STRIDE * 2 ** level)
                around = (centre[:, :, None] + window[None, None]).reshape(frames, -1, 2)
                feats = self._sample(fmap, around).reshape(frames, num, window.shape[0], -1)
                corr.append(torch.einsum("tnkc,nc->tnk", feats, query_feat) / feats.shape[-1] ** 0.5)
            grid_pts = points / STRIDE
            fwd = torch.zeros_like(grid_pts)
            fwd[:-1] = grid_pts[1:] - grid_pts[:-1]
            bwd = torch.zeros_like(grid_pts)
            bwd[1:] = grid_pts[:-1] - grid_pts[1:]
            tokens = torch.cat(corr + [fwd, bwd, vis[..., None], conf[..., None]], dim=-1)  # (T, N, D)
            x = self.embed(tokens) + time_emb
            for time_block, track_block in zip(self.time_blocks, self.track_blocks):
                x = time_block(x.transpose(0, 1)).transpose(0, 1)  # over time, per track
                x = track_block(x)  # over tracks, per frame
            delta = self.head(self.norm(x))
            step = delta[..., :2] * STRIDE
            step[0] = 0  # frame 0 holds the queries
            points = points + step
            vis = vis + delta[..., 2]
            conf = conf + delta[..., 3]
        return points, vis, conf


class CoTrackerTracker:
    """PointTracker over a frozen ``TrackRefiner`` loaded from ``checkpoint`` (name "cotracker")."""

    name = "cotracker"

    def __init__(self, checkpoint: str | Path | None = None, feature_dim: int = 64, hidden_dim: int = 128,
                 depth: int = 2, heads: int = 4, iters: int = 4, device: str | None = None) -> None:
        if checkpoint is None:
            raise ConfigError("point tracker 'cotracker' needs a local checkpoint path "
                              "(critic.tracker_checkpoint=PATH); no weights are downloaded")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = TrackRefiner(feature_dim, hidden_dim, depth, heads, iters)
        state = load_raft_state(checkpoint)
        check_state_dict(self.model, state, str(checkpoint))
        self.model.load_state_dict(state)
        self.model.eval().requires_grad_(False).to(self.device)

    @torch.no_grad()
    def __call__(self, video: np.ndarray, queries: np.ndarray) -> Tracks:
        check_video(video, min_frames=1)
        height, width = video.shape[1:3]
        queries = check_queries(queries, height, width)
        if video.ndim == 3:
            video = np.repeat(video[..., None], 3, -1)
        frames = torch.from_numpy(video).permute(0, 3, 1, 2).float().to(self.device)
        points, vis, conf = self.model(frames, torch.from_numpy(queries).to(self.device))
        upper = torch.tensor([width - 1, height - 1], dtype=torch.float32, device=self.device)
        inside = ((points >= 0) & (points <= upper)).all(-1)
        points = torch.minimum(points.clamp(min=0), upper)
        visible = (torch.sigmoid(vis) > 0.5) & inside
        visible[0] = True
        confidence = torch.sigmoid(conf)
        confidence[0] = 1.0
        return Tracks(points=points.cpu().numpy().astype(np.float32), visible=visible.cpu().numpy(),
                      confidence=confidence.cpu().numpy().astype(np.float32))
