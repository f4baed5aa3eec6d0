"""MotionCritic, the critic (scorer): videos -> motion features -> IC/LC logits -> clipped, weighted reward.

METHOD.md step 2: r = logit D(x) ≈ log p_data(x)/p_θ(x) in feature space, clipped to
[r_min, r_max] (the paper's clipping, which the reference code lacks), and
r = (w_ic·r_ic + w_lc·r_lc) / 2. Rewards are computed without gradients from the EMA copy of the
discriminators when one is kept (``use_ema``), so no gradient ever reaches the generator.

The feature extractors (flow estimator, point tracker) are frozen and held outside the module's
state: they are never trained and never saved with the critic (unlike the reference, which saved
SEA-RAFT, with drifted BatchNorm statistics, inside the IC checkpoint). Only ``ic`` and ``lc``
train, by ``CriticTrainer`` (rewards/critic_training.py: optimizer, replay store, Eq. 7 step);
``ema_ic`` / ``ema_lc`` follow them through ``update_ema``, which the trainer calls after each step.

Bad input policy (never a silent NaN reward):
    * ``features`` raises DataError for clips with fewer than 2 frames, a wrong shape, or any
      non-finite pixel (naming the clip indices). Its outputs are always finite (see
      motion/features.py for constant frames and non-finite flow/tracks).
    * ``reward`` on features that contain non-finite values (only possible for features built by
      hand or loaded from elsewhere) gives those clips r_min in the affected branch, the most
      "fake" value, and logs a warning. If the discriminator itself returns a non-finite logit on
      finite features, its weights have diverged: TrainingError.
    * A branch whose weight is 0 is not computed at all; its reward is 0.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from shiftvdm.config import config_from_dict, config_to_dict
from shiftvdm.errors import CheckpointError, ConfigError, DataError, TrainingError
from shiftvdm.motion.base import FlowEstimator, PointTracker, check_queries, get_flow_estimator, get_tracker
from shiftvdm.motion.features import (
    blurred_grays,
    fb_confidence_torch,
    gray_float,
    gray_float_torch,
    ic_maps_torch,
    ic_num_channels,
    resize_video,
    sanitize_tracks,
    track_feature_dim,
    track_features_torch,
)
from shiftvdm.rewards.ic import ICConfig, ICDiscriminator
from shiftvdm.rewards.lc import LCConfig, build_lc_discriminator
from shiftvdm.rewards.protocol import GroupScores
from shiftvdm.utils.checkpoint import load_safetensors, save_json, save_safetensors
from shiftvdm.utils.ema import ema_update_
from shiftvdm.utils.finite import check_loaded_finite
from shiftvdm.utils.seeding import derive_seed, generator_for

logger = logging.getLogger(__name__)

NEURAL_FLOWS = ("raft", "sea-raft")
NEURAL_TRACKERS = ("cotracker3",)
WEIGHTS_NAME = "critic.safetensors"
CONFIG_NAME = "critic_config.json"


@dataclass
class CriticConfig:
    flow: str = "dis"  # flow estimator: dis | farneback | raft | sea-raft (reference: SEA-RAFT-M, 4 iterations)
    flow_preset: str = "medium"  # DIS preset: ultrafast | fast | medium (reference notes: medium, 23 ms/pair at 320×576)
    flow_checkpoint: str | None = None  # local weights file for flow=raft / sea-raft (required for them)
    flow_iters: int | None = None  # refinement iterations of a neural flow (None = its default; SEA-RAFT-M 4)
    flow_confidence: Literal["auto", "fb", "mixture"] = "auto"  # fb = forward-backward; mixture = SEA-RAFT's
    #   uncertainty (the authors'); auto = mixture for sea-raft, fb otherwise
    tracker: str = "lk"  # point tracker: lk | cotracker3 (reference: CoTracker3 offline)
    tracker_checkpoint: str | None = None  # local weights file for tracker=cotracker3 (required for it)
    neural_chunk_size: int = 8  # pairs (flow) / clips (tracks) per neural forward (memory knob)
    tracker_options: dict[str, Any] = field(default_factory=dict)  # extra CoTracker3 architecture args (reduced nets)
    query_sampling: Literal["uniform", "pixels"] = "uniform"  # continuous uniform | distinct integer pixels (authors)
    min_side: int = 64  # DIS/Farnebäck/LK upsample frames whose shorter side is below this (px)
    ic_size: tuple[int, int] | None = None  # (h, w) the IC maps are computed at; None = the video size (reference 320×576)
    residual_mode: Literal["physical", "reference"] = "physical"  # brightness-constancy map; see motion/features.py
    include_flow: bool = False  # add the flow (u, v) as IC channels 2-3 (not in the reference)
    normalize_flow: bool | None = None  # divide the flow by its per-pair RMS (authors: yes); None = only in reference mode
    confidence_scale_px: float | None = None  # forward-backward error scale; None = per-pair median (reference rule)
    num_queries: int = 256  # LC query points per clip (reference 1024)
    query_margin: float = 1.0  # queries stay this many px inside the frame
    query_seed: int = 0  # seed of the queries used when none are given (fixed, so a clip's reward is deterministic)
    corr_scales: tuple[int, ...] = (1, 2)  # appearance-correlation scales in px (reference: 4 pyramid levels)
    corr_radius: int = 1  # correlation map radius: (2r+1)² shifts per scale (reference 7×7 -> r = 3)
    patch_radius: int = 2  # correlation patch radius: (2r+1)² samples
    ic: ICConfig = field(default_factory=ICConfig)  # IC discriminator sizes
    lc: LCConfig = field(default_factory=LCConfig)  # LC discriminator sizes
    w_ic: float = 1.0  # IC reward weight (reference reward_weight 1.0); 0 = IC not computed
    w_lc: float = 1.0  # LC reward weight (reference reward_weight 1.0); 0 = LC not computed
    r_min: float = -10.0  # lower reward clip (paper: clipped; code: none; ±10 is the reference's advantage clip)
    r_max: float = 10.0  # upper reward clip
    ema_decay: float = 0.99  # discriminator EMA decay (reference reward_model_ema_decay 0.99)
    use_ema: bool = True  # score rewards with the EMA weights (reference use_ema_for_diffusion true)
    init_seed: int = 0  # seed of the discriminators' initial weights
    feature_dtype: Literal["float32", "float16"] = "float32"  # storage dtype of cached features (float16 halves buffers)
    score_batch_size: int = 64  # clips per discriminator forward when scoring (memory knob; results do not depend on it)
    workers: int = 1  # threads running the per-clip OpenCV estimators (OpenCV releases the GIL; results do not change)
    lc_token_dim: int = 1110  # lc.kind=tokens: width of CoTracker3's update tokens (released network: 1110)

    def __post_init__(self) -> None:
        if self.r_min >= self.r_max:
            raise ValueError(f"r_min ({self.r_min}) must be below r_max ({self.r_max})")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.w_ic < 0 or self.w_lc < 0 or (self.w_ic == 0 and self.w_lc == 0):
            raise ValueError(f"w_ic and w_lc must be >= 0 and not both 0, got {self.w_ic}, {self.w_lc}")
        if self.num_queries < 1:
            raise ValueError(f"num_queries must be >= 1, got {self.num_queries}")
        if self.score_batch_size < 1 or self.workers < 1:
            raise ValueError(f"score_batch_size and workers must be >= 1, got {self.score_batch_size}, {self.workers}")
        fallback = "or fall back to the weight-free features with critic.flow=dis critic.tracker=lk critic.lc.kind=tracks"
        if self.w_ic > 0 and self.flow in NEURAL_FLOWS and not self.flow_checkpoint:
            raise ConfigError(f"critic.flow={self.flow} needs its weights: set critic.flow_checkpoint=PATH (e.g. "
                              f"Tartan-C-T-TSKH-spring540x960-M.pth for sea-raft) {fallback}")
        if self.w_lc > 0 and self.tracker in NEURAL_TRACKERS and not self.tracker_checkpoint:
            raise ConfigError(f"critic.tracker={self.tracker} needs its weights: set critic.tracker_checkpoint=PATH "
                              f"(e.g. scaled_offline.pth) {fallback}")
        if self.w_lc > 0 and self.lc.kind == "tokens" and self.tracker not in NEURAL_TRACKERS:
            raise ConfigError(f"critic.lc.kind=tokens reads CoTracker3's update tokens: set critic.tracker=cotracker3 "
                              f"and critic.tracker_checkpoint=PATH (tracker is {self.tracker!r}), {fallback}")
        if self.flow_confidence == "mixture" and self.flow != "sea-raft":
            raise ConfigError(f"critic.flow_confidence=mixture needs critic.flow=sea-raft (got {self.flow!r}); use fb")


@dataclass
class MotionFeatures:
    """Cached discriminator inputs of N clips (frozen-extractor output; reusable for refreshes).

    Attributes:
        ic: (N, T−1, C, h, w) IC maps, or None when w_ic = 0.
        lc: (N, Q, T, D) LC track features, or None when w_lc = 0.
    """

    ic: Tensor | None
    lc: Tensor | None

    def __post_init__(self) -> None:
        if self.ic is None and self.lc is None:
            raise DataError("MotionFeatures needs at least one of ic / lc")
        if self.ic is not None and self.lc is not None and len(self.ic) != len(self.lc):
            raise DataError(f"MotionFeatures: ic has {len(self.ic)} clips but lc has {len(self.lc)}")

    def __len__(self) -> int:
        return int(len(self.ic) if self.ic is not None else len(self.lc))  # type: ignore[arg-type]

    def index(self, idx: Tensor | list[int] | slice) -> "MotionFeatures":
        """The clips ``idx`` (slice, list or index tensor)."""
        if not isinstance(idx, slice):
            idx = torch.as_tensor(idx, dtype=torch.long)
        return MotionFeatures(None if self.ic is None else self.ic[idx], None if self.lc is None else self.lc[idx])

    @staticmethod
    def cat(items: list["MotionFeatures"]) -> "MotionFeatures":
        """Concatenate along the clip axis (all items must have the same branches and sizes)."""
        if not items:
            raise DataError("MotionFeatures.cat: empty list")

        def join(name: str) -> Tensor | None:
            parts = [getattr(f, name) for f in items]
            if all(p is None for p in parts):
                return None
            if any(p is None for p in parts):
                raise DataError(f"MotionFeatures.cat: some items lack the {name} branch")
            shapes = {tuple(p.shape[1:]) for p in parts}
            if len(shapes) > 1:
                raise DataError(f"MotionFeatures.cat: {name} features differ in size: {sorted(shapes)}")
            return torch.cat(parts)

        return MotionFeatures(join("ic"), join("lc"))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "MotionFeatures":
        move = (lambda t: None if t is None else t.to(device=device, dtype=dtype))
        return MotionFeatures(move(self.ic), move(self.lc))

    def finite(self) -> Tensor:
        """(N,) True for clips whose features are all finite."""
        ok = torch.ones(len(self), dtype=torch.bool)
        for t in (self.ic, self.lc):
            if t is not None:
                ok &= torch.isfinite(t.float()).flatten(1).all(dim=1).cpu()
        return ok

    def state_dict(self) -> dict[str, Tensor | None]:
        return {"ic": self.ic, "lc": self.lc}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "MotionFeatures":
        return cls(state.get("ic"), state.get("lc"))


@dataclass
class RewardOutput:
    """Per-clip rewards (N,) on CPU, float32: clipped IC and LC logits and their weighted mean."""

    r_ic: Tensor
    r_lc: Tensor
    r: Tensor


class MotionCritic(nn.Module):
    """IC and LC discriminators (+ EMA copies) over frozen weight-free or local-checkpoint extractors."""

    def __init__(self, config: CriticConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or CriticConfig()
        self.ic_channels = ic_num_channels(cfg.include_flow)
        self.lc_dim = cfg.lc_token_dim if cfg.lc.kind == "tokens" else track_feature_dim(cfg.corr_scales, cfg.corr_radius)
        # Initial weights from a fixed seed, without touching the caller's global RNG state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(cfg.init_seed, "critic-init"))
            self.ic = ICDiscriminator(cfg.ic, self.ic_channels)
            self.lc = build_lc_discriminator(cfg.lc, self.lc_dim)
        self.ema_ic = self._frozen_copy(self.ic) if cfg.use_ema else None
        self.ema_lc = self._frozen_copy(self.lc) if cfg.use_ema else None
        # Frozen extractors in a tuple so nn.Module does not register (and save) their weights.
        self._extractors: tuple[FlowEstimator | None, PointTracker | None] | None = None
        self.last_timings: dict[str, float] = {}

    @staticmethod
    def _frozen_copy(module: nn.Module) -> nn.Module:
        ema = copy.deepcopy(module).eval()
        ema.requires_grad_(False)
        return ema

    # ----- frozen feature extractors ------------------------------------------------------------
    def _get_extractors(self) -> tuple[FlowEstimator | None, PointTracker | None]:
        cfg = self.config
        device = self.device
        if self._extractors is None:
            flow = tracker = None
            if cfg.w_ic > 0:
                if cfg.flow == "dis":
                    flow = get_flow_estimator("dis", preset=cfg.flow_preset, min_side=cfg.min_side)
                elif cfg.flow == "farneback":
                    flow = get_flow_estimator("farneback", min_side=cfg.min_side)
                elif cfg.flow == "sea-raft":
                    flow = get_flow_estimator("sea-raft", checkpoint=cfg.flow_checkpoint, iters=cfg.flow_iters,
                                              device=device, chunk_size=cfg.neural_chunk_size)
                else:
                    flow = get_flow_estimator(cfg.flow, checkpoint=cfg.flow_checkpoint)
            if cfg.w_lc > 0:
                if cfg.tracker == "lk":
                    tracker = get_tracker("lk", min_side=cfg.min_side)
                elif cfg.tracker == "cotracker3":
                    # tokens: the authors' SHIFT mode (4 iterations, raw probabilities, update tokens)
                    mode = "shift" if cfg.lc.kind == "tokens" else "predictor"
                    tracker = get_tracker("cotracker3", checkpoint=cfg.tracker_checkpoint, mode=mode, device=device,
                                          chunk_size=cfg.neural_chunk_size, **cfg.tracker_options)
                else:
                    tracker = get_tracker(cfg.tracker, checkpoint=cfg.tracker_checkpoint)
            for extractor in (flow, tracker):
                if isinstance(extractor, nn.Module):
                    extractor.eval().requires_grad_(False)
            if tracker is not None and cfg.lc.kind == "tokens" and getattr(tracker, "token_dim", None) != self.lc_dim:
                raise ConfigError(f"{cfg.tracker_checkpoint}: the tracker's tokens are "
                                  f"{getattr(tracker, 'token_dim', None)} wide but critic.lc_token_dim={self.lc_dim}")
            self._extractors = (flow, tracker)
        for extractor in self._extractors:  # neural extractors follow the critic's device
            if extractor is not None and hasattr(extractor, "to") and getattr(extractor, "device", device) != device:
                extractor.to(device)
        return self._extractors

    def prepare(self) -> "MotionCritic":
        """Build (and load) the frozen extractors now, so a missing checkpoint stops a run before any rollout."""
        self._get_extractors()
        return self

    def sample_queries(self, height: int, width: int, generator: torch.Generator) -> np.ndarray:
        """``num_queries`` query points (x, y), float32 (Q, 2), to share between a real clip and its fakes.

        "uniform": continuous, ``query_margin`` px inside the frame; "pixels": distinct integer pixels of
        the whole frame (the authors' 1024 random first-frame queries).
        """
        if self.config.query_sampling == "pixels":
            if self.config.num_queries > height * width:
                raise ConfigError(f"num_queries {self.config.num_queries} exceeds the {height}x{width} pixels")
            flat = torch.randperm(height * width, generator=generator)[:self.config.num_queries]
            return torch.stack([flat % width, flat // width], dim=1).numpy().astype(np.float32)
        margin = self.config.query_margin
        if width - 1 - 2 * margin < 0 or height - 1 - 2 * margin < 0:
            raise ConfigError(f"query_margin {margin} leaves no room in a {height}x{width} frame")
        u = torch.rand(self.config.num_queries, 2, generator=generator, dtype=torch.float64)
        xs = margin + u[:, 0] * (width - 1 - 2 * margin)
        ys = margin + u[:, 1] * (height - 1 - 2 * margin)
        return torch.stack([xs, ys], dim=1).numpy().astype(np.float32)

    @staticmethod
    def videos_to_uint8(videos: Tensor) -> np.ndarray:
        """(N, F, 3, H, W) in [-1, 1] -> uint8 (N, F, H, W, 3); DataError on bad shape or non-finite pixels."""
        if not isinstance(videos, Tensor) or videos.ndim != 5 or videos.shape[2] != 3:
            shape = tuple(videos.shape) if isinstance(videos, Tensor) else type(videos).__name__
            raise DataError(f"videos must be a (N, F, 3, H, W) tensor in [-1, 1], got {shape}")
        if videos.shape[1] < 2:
            raise DataError(f"videos have {videos.shape[1]} frame(s); motion rewards need at least 2")
        finite = torch.isfinite(videos).flatten(1).all(dim=1)
        if not finite.all():
            bad = torch.nonzero(~finite).flatten().tolist()
            raise DataError(f"videos {bad} contain NaN or infinite pixels; they cannot be scored")
        pixels = ((videos.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return pixels.permute(0, 1, 3, 4, 2).contiguous().numpy()

    @property
    def device(self) -> torch.device:
        """Where the discriminators (and neural extractors) run: moved with ``critic.to(device)``."""
        return next(self.ic.parameters()).device

    def _storage_dtype(self) -> torch.dtype:
        return torch.float16 if self.config.feature_dtype == "float16" else torch.float32

    @torch.no_grad()
    def features(self, videos: Tensor, queries: np.ndarray | None = None) -> MotionFeatures:
        """Frozen-extractor features of N clips, on CPU in ``feature_dtype`` (the form buffers store).

        Args:
            videos: (N, F, 3, H, W) in [-1, 1], F >= 2.
            queries: (Q, 2) shared by all clips, or (N, Q, 2) per clip, (x, y) in video pixels on
                frame 0; None = ``sample_queries`` with the fixed ``query_seed`` (deterministic).
        """
        return self.features_on_device(videos, queries).to("cpu", self._storage_dtype())

    @torch.no_grad()
    def features_on_device(self, videos: Tensor, queries: np.ndarray | None = None) -> MotionFeatures:
        """As ``features``, float32 on ``self.device``: OpenCV estimators per clip, then one batched pass.

        The weight-free estimators (DIS, LK) and the frame resizes run per clip in OpenCV on uint8
        copies; the IC maps (forward-backward confidence, residual) and the LC features (appearance
        correlation) are then computed for all N clips at once in torch, on the critic's device.
        """
        cfg = self.config
        clips = self.videos_to_uint8(videos)  # validates; the OpenCV path's input
        num, _, height, width = clips.shape[:4]
        flow_estimator, tracker = self._get_extractors()
        device = self.device
        timings = {"flow": 0.0, "tracks": 0.0}
        ic_maps = lc_feats = None
        if flow_estimator is not None:
            start = time.perf_counter()
            if hasattr(flow_estimator, "flow_torch"):  # neural: the whole path stays on the device
                ic_maps = self._ic_maps_neural(videos, flow_estimator, device)
            else:
                ic_maps = self._ic_maps(clips, flow_estimator, device)
            timings["flow"] = time.perf_counter() - start
        if tracker is not None:
            start = time.perf_counter()
            per_clip = self._per_clip_queries(queries, num, height, width)
            if cfg.lc.kind == "tokens":
                out = tracker.track(self._pixels_on_device(videos, device), torch.from_numpy(np.stack(per_clip)))
                lc_feats = out.tokens.to(device, torch.float32)  # (N, Q, T, 1110)
            else:
                lc_feats = self._track_features(clips, per_clip, tracker, device)
            timings["tracks"] = time.perf_counter() - start
        self.last_timings = timings
        return MotionFeatures(ic_maps, lc_feats)

    def _ic_maps(self, clips: np.ndarray, estimator: FlowEstimator, device: torch.device) -> Tensor:
        cfg = self.config
        resized = np.stack([resize_video(c, cfg.ic_size) for c in clips])  # (N, T, h, w, 3) uint8
        num, frames, height, width = resized.shape[:4]

        def both_ways(clip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # per pair in OpenCV
            return estimator(clip[:-1], clip[1:]), estimator(clip[1:], clip[:-1])

        flows = self._map_clips(both_ways, list(resized))
        flow_fw = torch.from_numpy(np.concatenate([f for f, _ in flows])).to(device)
        flow_bw = torch.from_numpy(np.concatenate([b for _, b in flows])).to(device)
        confidence = fb_confidence_torch(flow_fw, flow_bw, cfg.confidence_scale_px)
        gray = gray_float_torch(torch.from_numpy(resized).to(device))  # (N, T, h, w)
        return ic_maps_torch(gray, flow_fw.view(num, frames - 1, height, width, 2),
                             confidence.view(num, frames - 1, height, width), cfg.residual_mode, cfg.include_flow,
                             cfg.normalize_flow)

    def _map_clips(self, fn: Any, items: list[Any]) -> list[Any]:
        """``fn`` over the clips, on ``workers`` threads (in order; identical results)."""
        if self.config.workers <= 1 or len(items) < 2:
            return [fn(item) for item in items]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.config.workers) as pool:
            return list(pool.map(fn, items))

    @staticmethod
    def _pixels_on_device(videos: Tensor, device: torch.device) -> Tensor:
        """(N, F, 3, H, W) in [-1, 1] -> float 0-255 on ``device``, rounded like the uint8 path."""
        return ((videos.detach().to(device, torch.float32) + 1.0) * 127.5).round().clamp(0, 255)

    def _ic_maps_neural(self, videos: Tensor, estimator: Any, device: torch.device) -> Tensor:
        """SEA-RAFT path (the authors'): bilinear resize to ``ic_size``, flow and uncertainty of every pair."""
        cfg = self.config
        pixels = self._pixels_on_device(videos, device)  # (N, T, 3, H, W)
        num, frames = pixels.shape[:2]
        if cfg.ic_size is not None and tuple(cfg.ic_size) != tuple(pixels.shape[-2:]):
            pixels = torch.nn.functional.interpolate(pixels.flatten(0, 1), size=tuple(cfg.ic_size), mode="bilinear",
                                                     align_corners=False).unflatten(0, (num, frames))
        height, width = pixels.shape[-2:]
        a, b = pixels[:, :-1].flatten(0, 1), pixels[:, 1:].flatten(0, 1)
        flow, info = estimator.flow_torch(a, b)  # (M, 2, h, w), (M, 4, h, w)
        flow = flow.permute(0, 2, 3, 1)
        mode = cfg.flow_confidence if cfg.flow_confidence != "auto" else ("mixture" if cfg.flow == "sea-raft" else "fb")
        if mode == "mixture":
            confidence = estimator.confidence_torch(info)
        else:
            flow_bw = estimator.flow_torch(b, a)[0].permute(0, 2, 3, 1)
            confidence = fb_confidence_torch(flow, flow_bw, cfg.confidence_scale_px)
        gray = gray_float_torch(pixels.permute(0, 1, 3, 4, 2))
        return ic_maps_torch(gray, flow.reshape(num, frames - 1, height, width, 2),
                             confidence.reshape(num, frames - 1, height, width), cfg.residual_mode, cfg.include_flow,
                             cfg.normalize_flow)

    def _track_features(self, clips: np.ndarray, queries: list[np.ndarray], tracker: PointTracker,
                        device: torch.device) -> Tensor:
        cfg = self.config
        tracks = self._map_clips(lambda cq: sanitize_tracks(tracker(*cq)), list(zip(clips, queries)))  # OpenCV
        gray_np = [gray_float(c) for c in clips]
        blurred = [torch.from_numpy(np.stack(b)).to(device)
                   for b in zip(*(blurred_grays(g, cfg.corr_scales) for g in gray_np))]
        stack = (lambda name: torch.from_numpy(np.stack([getattr(t, name) for t in tracks])).to(device))
        return track_features_torch(torch.from_numpy(np.stack(gray_np)).to(device), blurred, stack("points"),
                                    stack("visible"), stack("confidence"), cfg.corr_scales, cfg.corr_radius,
                                    cfg.patch_radius)

    def _per_clip_queries(self, queries: np.ndarray | None, num: int, height: int, width: int) -> list[np.ndarray]:
        if queries is None:
            queries = self.sample_queries(height, width, generator_for(self.config.query_seed, "queries", height, width))
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim == 2:
            return [check_queries(queries, height, width)] * num
        if queries.ndim == 3 and queries.shape[0] == num:
            return [check_queries(q, height, width) for q in queries]
        raise DataError(f"queries must be (Q, 2) or ({num}, Q, 2) for {num} clips, got shape {queries.shape}")

    # ----- discriminator outputs ----------------------------------------------------------------
    def _device(self) -> torch.device:
        return next(self.ic.parameters()).device

    def _branch_logits(self, module: nn.Module, inputs: Tensor | None, num: int) -> Tensor:
        if inputs is None:
            return torch.zeros(num, device=self._device())
        return module(inputs.to(self._device(), torch.float32))

    def logits(self, features: MotionFeatures) -> tuple[Tensor, Tensor]:
        """(logit_ic (N,), logit_lc (N,)) of the current (trainable) weights, with gradients.

        A branch missing from ``features`` (weight 0) gives zeros.
        """
        self._check_features(features)
        num = len(features)
        return self._branch_logits(self.ic, features.ic, num), self._branch_logits(self.lc, features.lc, num)

    def _check_features(self, features: MotionFeatures) -> None:
        if features.ic is not None and tuple(features.ic.shape[2:3]) != (self.ic_channels,):
            raise DataError(f"IC features have {features.ic.shape[2]} channels; this critic expects {self.ic_channels}")
        if features.lc is not None and features.lc.shape[-1] != self.lc_dim:
            raise DataError(f"LC features have D={features.lc.shape[-1]}; this critic expects {self.lc_dim}")
        if self.config.w_ic > 0 and features.ic is None or self.config.w_lc > 0 and features.lc is None:
            raise DataError("features lack a branch whose reward weight is non-zero (made by a different critic?)")

    def _scoring_nets(self) -> tuple[nn.Module, nn.Module]:
        if self.config.use_ema and self.ema_ic is not None and self.ema_lc is not None:
            return self.ema_ic, self.ema_lc
        return self.ic, self.lc

    @torch.no_grad()
    def scoring_logits(self, features: MotionFeatures) -> tuple[Tensor, Tensor]:
        """Unclipped (logit_ic, logit_lc), each (N,) on CPU, of the weights that score rewards (EMA when used).

        Evaluation mode (no dropout); non-finite feature rows give NaN here (``reward`` maps them to r_min).
        """
        self._check_features(features)
        ic_net, lc_net = self._scoring_nets()
        was_training = (ic_net.training, lc_net.training)
        ic_net.eval()
        lc_net.eval()
        try:
            return (self._branch_logits_eval(ic_net, features.ic, len(features), "IC"),
                    self._branch_logits_eval(lc_net, features.lc, len(features), "LC"))
        finally:
            ic_net.train(was_training[0])
            lc_net.train(was_training[1])

    def _branch_logits_eval(self, module: nn.Module, inputs: Tensor | None, num: int, name: str) -> Tensor:
        if inputs is None:
            return torch.zeros(num)
        step = self.config.score_batch_size
        finite = torch.cat([torch.isfinite(inputs[i:i + step]).flatten(1).all(dim=1).cpu()
                            for i in range(0, num, step)])
        logits = torch.cat([module(torch.nan_to_num(inputs[i:i + step].to(self._device(), torch.float32), nan=0.0,
                                                    posinf=0.0, neginf=0.0)).float().cpu()
                            for i in range(0, num, step)])
        if not torch.isfinite(logits[finite]).all():
            raise TrainingError(f"the {name} discriminator returned non-finite logits on finite features: "
                                "its weights have diverged")
        if not finite.all():
            logger.warning("%s features of clips %s are not finite", name, torch.nonzero(~finite).flatten().tolist())
        return torch.where(finite, logits, torch.full_like(logits, float("nan")))

    @torch.no_grad()
    def reward(self, features_or_videos: MotionFeatures | Tensor, queries: np.ndarray | None = None) -> RewardOutput:
        """Clipped rewards of N clips, from the EMA discriminators when kept and ``use_ema``.

        Accepts precomputed ``MotionFeatures`` or videos (N, F, 3, H, W) in [-1, 1] (then
        ``queries`` is passed to ``features``). See the module docstring for the NaN policy.
        """
        feats = features_or_videos
        if isinstance(feats, Tensor):
            feats = self.features(feats, queries)
        cfg = self.config
        logit_ic, logit_lc = self.scoring_logits(feats)
        r_ic = self._clip_reward(logit_ic, feats.ic is not None)
        r_lc = self._clip_reward(logit_lc, feats.lc is not None)
        r = (cfg.w_ic * r_ic + cfg.w_lc * r_lc) / 2.0
        return RewardOutput(r_ic=r_ic, r_lc=r_lc, r=r)

    @torch.no_grad()
    def score_groups(self, real: Tensor, fakes: Tensor, queries: np.ndarray | None,
                     keep_features: bool = True) -> GroupScores:
        """Rewards of N real clips and their P rollouts each, in one batched feature pass and
        ``score_batch_size``-clip discriminator forwards (equal to scoring each group on its own).

        Args:
            real: (N, F, 3, H, W) in [-1, 1]; fakes: (N, P, F, 3, H, W), on any device.
            queries: (N, Q, 2), conditioning i's set shared by its real clip and its P fakes;
                None = the fixed ``query_seed`` set for all.
            keep_features: also return the features (CPU, ``feature_dtype``) for a later refresh.
        """
        num, group = fakes.shape[:2]
        if real.shape[0] != num:
            raise DataError(f"score_groups: {real.shape[0]} real clips but fakes for {num} conditionings")
        videos = torch.cat([real.to(fakes.device), fakes.flatten(0, 1)])
        per_clip = None
        if queries is not None:
            queries = np.asarray(queries, dtype=np.float32)
            if queries.ndim != 3 or queries.shape[0] != num:
                raise DataError(f"score_groups: queries must be ({num}, Q, 2), got shape {queries.shape}")
            per_clip = np.concatenate([queries, np.repeat(queries, group, axis=0)])
        # Rewards are scored from the stored form (feature_dtype), so a refresh sees what was scored.
        feats = self.features_on_device(videos, per_clip).to(dtype=self._storage_dtype())
        out = self.reward(feats)
        rewards = {"r_real": out.r[:num], "r_ic_real": out.r_ic[:num], "r_lc_real": out.r_lc[:num],
                   "r_fake": out.r[num:].view(num, group), "r_ic_fake": out.r_ic[num:].view(num, group),
                   "r_lc_fake": out.r_lc[num:].view(num, group)}
        if not keep_features:
            return GroupScores(rewards)
        feats = feats.to("cpu")
        return GroupScores(rewards, feats.index(slice(0, num)), feats.index(slice(num, None)))

    @staticmethod
    def features_from_state(state: dict[str, Any]) -> MotionFeatures:
        """Features saved with ``MotionFeatures.state_dict`` (buffer and replay checkpoints)."""
        return MotionFeatures.from_state_dict(state)

    def _clip_reward(self, logits: Tensor, present: bool) -> Tensor:
        """Clip to [r_min, r_max]; NaN (non-finite features) -> r_min; an absent branch stays 0."""
        if not present:
            return logits
        cfg = self.config
        return torch.nan_to_num(logits, nan=cfg.r_min).clamp(cfg.r_min, cfg.r_max)

    # ----- what the trainer trains ---------------------------------------------------------------
    def discriminators(self) -> dict[str, nn.Module]:
        """The two trainable networks by the feature branch they read: {"ic": IC, "lc": LC}, in that order."""
        return {"ic": self.ic, "lc": self.lc}

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters: IC and LC discriminators (not the EMA copies, not the extractors)."""
        return list(self.ic.parameters()) + list(self.lc.parameters())

    @torch.no_grad()
    def update_ema(self, decay: float | None = None) -> None:
        """ema ← decay·ema + (1 − decay)·current, for both discriminators (no-op without EMA)."""
        if self.ema_ic is None or self.ema_lc is None:
            return
        decay = self.config.ema_decay if decay is None else float(decay)
        for ema, live in ((self.ema_ic, self.ic), (self.ema_lc, self.lc)):
            ema_update_(ema.parameters(), live.parameters(), decay)
            for b_ema, b in zip(ema.buffers(), live.buffers()):
                b_ema.copy_(b)

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load weights (and EMA weights); CheckpointError naming the keys when they do not match."""
        try:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        except RuntimeError as exc:
            raise CheckpointError(f"critic weights do not match this critic's config: {exc}") from exc

    def save(self, path: str | Path) -> Path:
        """Write ``path/critic.safetensors`` and ``path/critic_config.json`` (each atomically); returns the folder."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        save_safetensors(self.state_dict(), folder / WEIGHTS_NAME, metadata={"format": "shiftvdm-critic"})
        save_json({"config": config_to_dict(self.config), "ic_channels": self.ic_channels, "lc_dim": self.lc_dim},
                  folder / CONFIG_NAME)
        return folder

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> "MotionCritic":
        """Rebuild a critic saved by ``save`` from its folder (config + weights + EMA)."""
        folder = Path(path)
        config_file = folder / CONFIG_NAME
        if not config_file.is_file():
            raise CheckpointError(f"{folder}: not a critic folder ({CONFIG_NAME} missing; "
                                  "make one with `shiftvdm train-critic`)")
        try:
            data = json.loads(config_file.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{config_file}: invalid JSON ({exc})") from exc
        config = config_from_dict(CriticConfig, data.get("config", {}), str(config_file))
        critic = cls(config)
        weights = load_safetensors(folder / WEIGHTS_NAME)
        check_loaded_finite(weights, folder / WEIGHTS_NAME, "critic weights")
        critic.load_state_dict(weights)
        return critic.to(device).prepare()


__all__ = ["CriticConfig", "MotionCritic", "MotionFeatures", "RewardOutput"]
