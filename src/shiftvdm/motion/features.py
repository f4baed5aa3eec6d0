"""Motion features read by the IC and LC discriminators (pure functions on numpy arrays).

IC (instantaneous motion), per consecutive frame pair, two maps (METHOD.md step 2):
    channel 0: brightness-constancy residual  I_x·u + I_y·v + I_t
    channel 1: flow confidence in (0, 1] from forward–backward consistency

``residual_mode="physical"`` (default) is the first-order brightness-constancy error of the flow in
intensity units: grey levels in [0, 1], gradients as true central differences ((I[x+1]-I[x-1]) / 2,
averaged over the two frames of the pair so the linearisation sits at the middle of the motion),
flow in pixels per frame. It is ≈ 0 wherever the flow explains the change between the frames and
is large where it cannot (flicker, morphing, appearing/vanishing texture), whatever the speed.
``residual_mode="reference"`` reproduces the authors' map (shift-reference-rewards.md §1.1, §8.5):
0-255 grey, un-halved differences of the first frame, flow divided by its per-pair RMS magnitude.
That map is ∇I·f·(2/m − 1) for true motion of RMS m, i.e. zero only at m ≈ 2 px/frame; it leaks
the motion magnitude into the map, which can help a discriminator spot damped motion but is not a
brightness-constancy residual. The physical map is the default because its meaning does not depend
on the clip's speed; ``include_flow=True`` adds the flow itself (u, v) as two extra channels when a
discriminator should also see the magnitude explicitly.

LC (long-term motion), per query point and frame, D = 7 + len(corr_scales)·(2·corr_radius+1)² values:
    0-1  velocity (x_t − x_{t−1}, y_t − y_{t−1}), 0 at t = 0
    2    speed |velocity|
    3-4  displacement from the query (x_t − x_0, y_t − y_0)
    5    visibility (0/1)
    6    tracker confidence in [0, 1]
    7-   local appearance correlation: for each scale s, the normalised cross-correlation between
         the frame-0 patch at the query and the frame-t patch at the tracked point moved by
         s·(dx, dy), dx, dy in [−corr_radius, corr_radius] (the 3×3 map centre is the plain
         point correlation). Patches are (2·patch_radius+1)² samples spaced s px apart on the
         grey frame blurred with σ = s/2. Zero-mean normalised: blind to brightness and contrast
         changes (fading), 0 where either patch is flat.
Lengths (velocity, speed, displacement) are in units of ``min(H, W) / 32`` pixels, so the numbers
are comparable across resolutions (1 unit = 1 px on 32-px frames, 10 px on 320×576).

Bad input: clips with fewer than 2 frames raise DataError. Constant frames give a zero residual,
confidence 1 and zero correlation (all defined). Non-finite flow values (possible with neural
estimators) are replaced by 0 with confidence 0; non-finite track points are held at the last
finite position and marked invisible with confidence 0. The outputs are therefore always finite.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from shiftvdm.errors import ConfigError, DataError
from shiftvdm.motion.base import (
    MIN_CONFIDENCE,
    MIN_CONFIDENCE_SCALE_PX,
    FlowEstimator,
    Tracks,
    check_video,
    confidence_from_error,
    forward_backward_error,
)

logger = logging.getLogger(__name__)

RESIDUAL_MODES = ("physical", "reference")
# RMS-normalisation epsilon of the reference (px).
_REFERENCE_RMS_EPS = 1e-6
# Patches whose grey-level variance is below this (in [0, 1] units) count as flat: correlation 0.
_FLAT_VARIANCE = 1e-8
TRACK_BASE_DIM = 7


def resize_video(video: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Resize a uint8 clip (T, H, W[, 3]) to ``size`` = (h, w) (area when shrinking, cubic when growing)."""
    if size is None or tuple(size) == tuple(video.shape[1:3]):
        return video
    height, width = int(size[0]), int(size[1])
    if height < 2 or width < 2:
        raise ConfigError(f"resize size {size} is too small (need at least 2x2)")
    shrink = height * width < video.shape[1] * video.shape[2]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (width, height), interpolation=interp) for f in video])


def gray_float(frames: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) RGB or (N, H, W) -> float32 grey in [0, 1] (0.2989 R + 0.587 G + 0.114 B)."""
    if frames.ndim == 3:
        return frames.astype(np.float32) / 255.0
    weights = np.array([0.2989, 0.587, 0.114], dtype=np.float32)
    return (frames.astype(np.float32) @ weights) / 255.0


def _central_differences(gray: np.ndarray, halved: bool) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) -> I_x, I_y with [-1, 0, 1] (divided by 2 when ``halved``); 1-px border set to 0."""
    grad_x = np.zeros_like(gray)
    grad_y = np.zeros_like(gray)
    grad_x[:, :, 1:-1] = gray[:, :, 2:] - gray[:, :, :-2]
    grad_y[:, 1:-1, :] = gray[:, 2:, :] - gray[:, :-2, :]
    if halved:
        grad_x *= 0.5
        grad_y *= 0.5
    return grad_x, grad_y


def _zero_border(maps: np.ndarray) -> np.ndarray:
    maps[:, 0, :] = 0
    maps[:, -1, :] = 0
    maps[:, :, 0] = 0
    maps[:, :, -1] = 0
    return maps


def brightness_constancy_residual(gray_a: np.ndarray, gray_b: np.ndarray, flow: np.ndarray,
                                  mode: str = "physical") -> np.ndarray:
    """I_x·u + I_y·v + I_t per pixel: grey (N, H, W) in [0, 1] twice, flow (N, H, W, 2) -> (N, H, W).

    See the module docstring for the two modes. The 1-pixel border, where central differences are
    undefined, is 0 in both modes.
    """
    if mode not in RESIDUAL_MODES:
        raise ConfigError(f"residual mode {mode!r} unknown; expected one of {RESIDUAL_MODES}")
    if gray_a.shape != gray_b.shape or flow.shape != gray_a.shape + (2,):
        raise DataError(f"residual inputs disagree in shape: {gray_a.shape}, {gray_b.shape}, flow {flow.shape}")
    if mode == "reference":
        a, b = gray_a * 255.0, gray_b * 255.0
        grad_x, grad_y = _central_differences(a, halved=False)
        rms = np.sqrt(np.mean(np.sum(flow ** 2, axis=-1), axis=(1, 2)))[:, None, None, None]
        flow = flow / (rms + _REFERENCE_RMS_EPS)
        residual = grad_x * flow[..., 0] + grad_y * flow[..., 1] + (b - a)
    else:
        gx_a, gy_a = _central_differences(gray_a, halved=True)
        gx_b, gy_b = _central_differences(gray_b, halved=True)
        grad_x, grad_y = 0.5 * (gx_a + gx_b), 0.5 * (gy_a + gy_b)
        residual = grad_x * flow[..., 0] + grad_y * flow[..., 1] + (gray_b - gray_a)
    return _zero_border(residual.astype(np.float32))


def _sanitize_flow(flow: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Replace non-finite flow vectors by 0; returns (flow, mask of pixels that were bad)."""
    bad = ~np.all(np.isfinite(flow), axis=-1)
    if bad.any():
        logger.warning("%s: %d non-finite flow vectors set to 0 with confidence 0", what, int(bad.sum()))
        flow = np.where(bad[..., None], 0.0, flow).astype(np.float32)
    return flow, bad


def ic_features(video: np.ndarray, estimator: FlowEstimator, size: tuple[int, int] | None = None,
                residual_mode: str = "physical", include_flow: bool = False,
                confidence_scale_px: float | None = None) -> np.ndarray:
    """IC input maps for one clip: uint8 (T, H, W, 3) -> float32 (T−1, C, h, w).

    Args:
        video: the clip; at least 2 frames.
        estimator: flow estimator, called forward and backward for every consecutive pair.
        size: (h, w) working resolution (the reference resizes to 320×576); None keeps (H, W).
        residual_mode: "physical" (default) or "reference"; see the module docstring.
        include_flow: append the flow (u, v) in pixels as channels 2-3 (C = 4 instead of 2).
        confidence_scale_px: fixed forward–backward error scale; None = per-pair median.
    """
    check_video(video, min_frames=2)
    video = resize_video(video, size)
    frames_a, frames_b = video[:-1], video[1:]
    flow_fw, bad_fw = _sanitize_flow(estimator(frames_a, frames_b), "forward flow")
    flow_bw, bad_bw = _sanitize_flow(estimator(frames_b, frames_a), "backward flow")
    confidence = confidence_from_error(forward_backward_error(flow_fw, flow_bw), confidence_scale_px)
    confidence[bad_fw | bad_bw] = 0.0
    gray = gray_float(video)
    residual = brightness_constancy_residual(gray[:-1], gray[1:], flow_fw, residual_mode)
    channels = [residual, confidence]
    if include_flow:
        channels += [flow_fw[..., 0], flow_fw[..., 1]]
    return np.stack(channels, axis=1).astype(np.float32)


def ic_num_channels(include_flow: bool = False) -> int:
    """Number of IC map channels (2, or 4 with the flow)."""
    return 4 if include_flow else 2


def track_feature_dim(corr_scales: Sequence[int] = (1, 2), corr_radius: int = 1) -> int:
    """D of ``track_features`` for the given correlation settings."""
    return TRACK_BASE_DIM + len(corr_scales) * (2 * corr_radius + 1) ** 2


def sanitize_tracks(tracks: Tracks) -> Tracks:
    """Hold non-finite points at their last finite position (query if none) and mark them invisible."""
    points = tracks.points.astype(np.float32).copy()
    visible = tracks.visible.astype(bool).copy()
    confidence = np.nan_to_num(tracks.confidence.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    bad = ~np.all(np.isfinite(points), axis=-1)
    if bad[0].any():
        raise DataError("tracks: frame-0 positions (the queries) must be finite")
    if bad.any():
        logger.warning("tracks: %d non-finite positions held at the last finite one, marked invisible",
                       int(bad.sum()))
        for t in range(1, points.shape[0]):
            points[t] = np.where(bad[t][:, None], points[t - 1], points[t])
        visible &= ~bad
        confidence[bad] = 0.0
    return Tracks(points=points, visible=visible, confidence=np.clip(confidence, 0.0, 1.0))


def _sample_patches(image: np.ndarray, centres: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``image`` (H, W) at centres (M, 2) + offsets (K, 2) -> (M, K), border replicated."""
    coords = centres[:, None, :] + offsets[None, :, :]
    map_x = np.ascontiguousarray(coords[..., 0], dtype=np.float32)
    map_y = np.ascontiguousarray(coords[..., 1], dtype=np.float32)
    return cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _normalise_patches(patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero-mean, unit-norm patches along the last axis, and a mask of non-flat ones."""
    centred = patches - patches.mean(axis=-1, keepdims=True)
    energy = np.sum(centred ** 2, axis=-1, keepdims=True)
    textured = energy[..., 0] > _FLAT_VARIANCE * patches.shape[-1]
    return centred / np.sqrt(np.maximum(energy, 1e-12)), textured


def appearance_correlation(gray: np.ndarray, points: np.ndarray, scales: Sequence[int] = (1, 2),
                           corr_radius: int = 1, patch_radius: int = 2) -> np.ndarray:
    """Local correlation maps between each query's frame-0 patch and its tracked patch in every frame.

    Args:
        gray: float32 (T, H, W) grey frames in [0, 1].
        points: float32 (T, N, 2) tracked (x, y); points[0] are the queries.
        scales, corr_radius, patch_radius: see the module docstring.

    Returns:
        float32 (N, T, len(scales)·(2·corr_radius+1)²) in [−1, 1].
    """
    num_frames, num_points = points.shape[:2]
    patch = np.arange(-patch_radius, patch_radius + 1, dtype=np.float32)
    patch_offsets = np.stack(np.meshgrid(patch, patch), axis=-1).reshape(-1, 2)
    shift = np.arange(-corr_radius, corr_radius + 1, dtype=np.float32)
    shift_offsets = np.stack(np.meshgrid(shift, shift), axis=-1).reshape(-1, 2)
    num_shifts = shift_offsets.shape[0]
    out = np.zeros((num_points, num_frames, len(scales) * num_shifts), dtype=np.float32)
    for k, scale in enumerate(scales):
        if scale < 1:
            raise ConfigError(f"correlation scales must be >= 1 px, got {scale}")
        sigma = 0.5 * scale
        blurred = gray if scale == 1 else np.stack([cv2.GaussianBlur(g, (0, 0), sigma) for g in gray])
        offsets = patch_offsets * scale
        ref, ref_ok = _normalise_patches(_sample_patches(blurred[0], points[0], offsets))  # (N, P)
        for t in range(num_frames):
            centres = (points[t][:, None, :] + shift_offsets[None] * scale).reshape(-1, 2)
            cur, cur_ok = _normalise_patches(_sample_patches(blurred[t], centres, offsets))
            cur = cur.reshape(num_points, num_shifts, -1)
            corr = np.einsum("np,nkp->nk", ref, cur)
            valid = ref_ok[:, None] & cur_ok.reshape(num_points, num_shifts)
            out[:, t, k * num_shifts:(k + 1) * num_shifts] = np.where(valid, np.clip(corr, -1.0, 1.0), 0.0)
    return out


def track_features(video: np.ndarray, tracks: Tracks, corr_scales: Sequence[int] = (1, 2),
                   corr_radius: int = 1, patch_radius: int = 2) -> np.ndarray:
    """LC input for one clip: per point and frame features, float32 (N, T, D) (layout in the module docstring).

    Args:
        video: uint8 (T, H, W, 3) clip the tracks were computed on (same size).
        tracks: Tracks over the same T frames.
    """
    check_video(video, min_frames=2)
    if tracks.num_frames != video.shape[0]:
        raise DataError(f"tracks cover {tracks.num_frames} frames but the video has {video.shape[0]}")
    tracks = sanitize_tracks(tracks)
    height, width = video.shape[1:3]
    unit = min(height, width) / 32.0
    points = tracks.points  # (T, N, 2)
    velocity = np.zeros_like(points)
    velocity[1:] = points[1:] - points[:-1]
    displacement = points - points[:1]
    speed = np.linalg.norm(velocity, axis=-1, keepdims=True)
    base = np.concatenate([velocity / unit, speed / unit, displacement / unit,
                           tracks.visible[..., None].astype(np.float32), tracks.confidence[..., None]], axis=-1)
    correlation = appearance_correlation(gray_float(video), points, corr_scales, corr_radius, patch_radius)
    features = np.concatenate([base.transpose(1, 0, 2), correlation], axis=-1)
    return np.ascontiguousarray(features, dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Batched torch stages (any device). The OpenCV estimators run per clip; everything after them
# runs here on whole batches of clips. Sampling is cv2.remap's (bilinear, each neighbour index
# clamped = replicated border; on multi-channel images OpenCV first rounds the coordinates to
# 1/32 px, its fixed-point table, measured), so the numpy functions above and these agree to
# float rounding (tests/rewards/test_reward_batching.py).
# ---------------------------------------------------------------------------------------------


def remap_bilinear(image: torch.Tensor, x: torch.Tensor, y: torch.Tensor, fixed_point: bool = False) -> torch.Tensor:
    """Sample ``image`` (B, C, H, W) at (x, y) (B, M) like cv2.remap (linear, replicated border) -> (B, C, M).

    ``fixed_point`` rounds the coordinates to 1/32 px first, as cv2.remap does on multi-channel images.
    (grid_sample with align_corners=True and border padding is bilinear with clamped neighbours.)
    """
    height, width = image.shape[-2:]
    if fixed_point:
        x, y = torch.round(x * 32) / 32, torch.round(y * 32) / 32
    grid = torch.stack([x * (2.0 / max(width - 1, 1)) - 1.0, y * (2.0 / max(height - 1, 1)) - 1.0], dim=-1)
    out = torch.nn.functional.grid_sample(image, grid[:, None].to(image.dtype), mode="bilinear",
                                          padding_mode="border", align_corners=True)
    return out[:, :, 0]


def gray_float_torch(frames: torch.Tensor) -> torch.Tensor:
    """uint8-valued (..., H, W, 3) RGB -> float32 grey in [0, 1] (the weights of ``gray_float``)."""
    weights = torch.tensor([0.2989, 0.587, 0.114], dtype=torch.float32, device=frames.device)
    return (frames.to(torch.float32) @ weights) / 255.0


def forward_backward_error_torch(flow_fw: torch.Tensor, flow_bw: torch.Tensor) -> torch.Tensor:
    """|f_fw(x) + f_bw(x + f_fw(x))|: flows (B, H, W, 2) -> (B, H, W) px (``forward_backward_error``, batched)."""
    batch, height, width = flow_fw.shape[:3]
    grid_y, grid_x = torch.meshgrid(torch.arange(height, dtype=flow_fw.dtype, device=flow_fw.device),
                                    torch.arange(width, dtype=flow_fw.dtype, device=flow_fw.device), indexing="ij")
    x = (grid_x + flow_fw[..., 0]).reshape(batch, -1)
    y = (grid_y + flow_fw[..., 1]).reshape(batch, -1)
    bw_at_target = remap_bilinear(flow_bw.permute(0, 3, 1, 2).contiguous(), x, y, fixed_point=True)  # (B, 2, H*W)
    return torch.linalg.vector_norm(flow_fw.reshape(batch, -1, 2) + bw_at_target.transpose(1, 2), dim=-1).view(
        batch, height, width)


def _median_per_item(values: torch.Tensor) -> torch.Tensor:
    """numpy-style median over all but the first axis (mean of the two middle values for even counts)."""
    flat = values.reshape(values.shape[0], -1)
    n = flat.shape[1]
    ordered = torch.sort(flat, dim=1).values
    return 0.5 * (ordered[:, (n - 1) // 2] + ordered[:, n // 2])


def confidence_from_error_torch(errors: torch.Tensor, scale_px: float | None = None) -> torch.Tensor:
    """exp(−e / s) in (0, 1] per pixel of (B, H, W) errors (``motion.base.confidence_from_error``, batched)."""
    if scale_px is None:
        scale = _median_per_item(errors).clamp_min(MIN_CONFIDENCE_SCALE_PX)[:, None, None]
    else:
        scale = float(scale_px)
    return torch.exp(-errors / scale).clamp(MIN_CONFIDENCE, 1.0)


def mixture_confidence(info: torch.Tensor, var_min: float = 0.0, var_max: float = 10.0) -> torch.Tensor:
    """SHIFT's IC confidence from SEA-RAFT's 4 uncertainty channels: info (B, 4, H, W) -> (B, H, W) in (0, 1].

    Channels 0-1: the two Laplace components' mixture logits; 2-3: their raw log-scales. The large
    component's log b is clamped to [0, var_max] and the small one's to [var_min, 0] (SEA-RAFT-M:
    var_min 0, var_max 10, so b_small = 1); the expected |ε| is unc = Σ π_k b_k, and the confidence
    is exp(−unc / median(unc)) per pair, clamped to [1e-6, 1] (1/e at the median uncertainty).
    """
    if info.ndim != 4 or info.shape[1] != 4:
        raise DataError(f"SEA-RAFT info must be (B, 4, H, W), got {tuple(info.shape)}")
    weights = torch.softmax(info[:, :2].float(), dim=1)
    log_b = torch.stack([info[:, 2].float().clamp(0.0, var_max), info[:, 3].float().clamp(var_min, 0.0)], dim=1)
    unc = (weights * torch.exp(log_b)).sum(dim=1)
    return torch.exp(-unc / _median_per_item(unc)[:, None, None]).clamp(MIN_CONFIDENCE, 1.0)


def rms_normalize_flow(flow: torch.Tensor) -> torch.Tensor:
    """flow (B, H, W, 2) divided by its per-pair RMS magnitude + 1e-6 (the authors' IC flow; unit RMS)."""
    rms = torch.sqrt(flow.pow(2).sum(dim=-1).mean(dim=(1, 2)))[:, None, None, None]
    return flow / (rms + _REFERENCE_RMS_EPS)


def _central_differences_torch(gray: torch.Tensor, halved: bool) -> tuple[torch.Tensor, torch.Tensor]:
    grad_x = torch.zeros_like(gray)
    grad_y = torch.zeros_like(gray)
    grad_x[..., :, 1:-1] = gray[..., :, 2:] - gray[..., :, :-2]
    grad_y[..., 1:-1, :] = gray[..., 2:, :] - gray[..., :-2, :]
    if halved:
        grad_x, grad_y = grad_x * 0.5, grad_y * 0.5
    return grad_x, grad_y


def brightness_constancy_residual_torch(gray_a: torch.Tensor, gray_b: torch.Tensor, flow: torch.Tensor,
                                        mode: str = "physical", normalize_flow: bool | None = None) -> torch.Tensor:
    """``brightness_constancy_residual`` on (B, H, W) greys and (B, H, W, 2) flow, batched, 1-px border 0.

    ``normalize_flow`` (None = only in "reference" mode, as the authors) divides the flow by its
    per-pair RMS magnitude first.
    """
    if mode not in RESIDUAL_MODES:
        raise ConfigError(f"residual mode {mode!r} unknown; expected one of {RESIDUAL_MODES}")
    if normalize_flow is None:
        normalize_flow = mode == "reference"
    if normalize_flow:
        flow = rms_normalize_flow(flow)
    if mode == "reference":
        a, b = gray_a * 255.0, gray_b * 255.0
        grad_x, grad_y = _central_differences_torch(a, halved=False)
        residual = grad_x * flow[..., 0] + grad_y * flow[..., 1] + (b - a)
    else:
        gx_a, gy_a = _central_differences_torch(gray_a, halved=True)
        gx_b, gy_b = _central_differences_torch(gray_b, halved=True)
        residual = 0.5 * (gx_a + gx_b) * flow[..., 0] + 0.5 * (gy_a + gy_b) * flow[..., 1] + (gray_b - gray_a)
    residual = residual.clone()
    residual[..., 0, :] = 0
    residual[..., -1, :] = 0
    residual[..., :, 0] = 0
    residual[..., :, -1] = 0
    return residual


def sanitize_flow_torch(flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-finite flow vectors -> 0; returns (flow, mask of bad pixels (B, H, W))."""
    bad = ~torch.isfinite(flow).all(dim=-1)
    return torch.where(bad[..., None], torch.zeros_like(flow), flow), bad


def ic_maps_torch(gray: torch.Tensor, flow: torch.Tensor, confidence: torch.Tensor, residual_mode: str = "physical",
                  include_flow: bool = False, normalize_flow: bool | None = None) -> torch.Tensor:
    """IC maps of B clips from their flow and confidence: -> (B, T−1, C, h, w) float32.

    Args:
        gray: (B, T, h, w) grey in [0, 1] at the IC size.
        flow: (B, T−1, h, w, 2) forward flow of every consecutive pair, px (non-finite vectors -> 0).
        confidence: (B, T−1, h, w) in [0, 1] (0 where the flow was not finite).
        residual_mode, include_flow: as ``ic_features``; normalize_flow: as
            ``brightness_constancy_residual_torch``; it also applies to the optional flow channels.
    """
    batch, pairs, height, width = confidence.shape
    flow, bad = sanitize_flow_torch(flow.reshape(batch * pairs, height, width, 2))
    conf = torch.where(bad, torch.zeros_like(bad, dtype=confidence.dtype), confidence.reshape(batch * pairs, height, width))
    residual = brightness_constancy_residual_torch(gray[:, :-1].reshape(-1, height, width),
                                                   gray[:, 1:].reshape(-1, height, width), flow, residual_mode,
                                                   normalize_flow)
    channels = [residual, conf]
    if include_flow:
        shown = rms_normalize_flow(flow) if normalize_flow else flow
        channels += [shown[..., 0], shown[..., 1]]
    return torch.stack(channels, dim=1).view(batch, pairs, len(channels), height, width).float()


def fb_confidence_torch(flow_fw: torch.Tensor, flow_bw: torch.Tensor, scale_px: float | None = None) -> torch.Tensor:
    """Forward-backward confidence of (B, H, W, 2) flow pairs (non-finite vectors: confidence 0)."""
    flow_fw, bad_fw = sanitize_flow_torch(flow_fw)
    flow_bw, bad_bw = sanitize_flow_torch(flow_bw)
    conf = confidence_from_error_torch(forward_backward_error_torch(flow_fw, flow_bw), scale_px)
    return torch.where(bad_fw | bad_bw, torch.zeros_like(conf), conf)


def _normalise_patches_torch(patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    centred = patches - patches.mean(dim=-1, keepdim=True)
    energy = centred.pow(2).sum(dim=-1, keepdim=True)
    textured = energy[..., 0] > _FLAT_VARIANCE * patches.shape[-1]
    return centred / torch.sqrt(energy.clamp_min(1e-12)), textured


def _box_sums(windows: torch.Tensor, patch_side: int) -> torch.Tensor:
    """Sums over every patch_side² sub-square of (..., S, S) windows -> (..., S−p+1, S−p+1), rows then columns."""
    return windows.unfold(-1, patch_side, 1).sum(dim=-1).unfold(-2, patch_side, 1).sum(dim=-1)


def _shifted_patch_correlation(samples: torch.Tensor, ref: torch.Tensor, pick: torch.Tensor, reach: int,
                               patch_radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised correlation of each point's frame-0 patch with its K shifted patches in every frame.

    samples (B, T, N, S²) window taps (row-major, S = 2·reach+1); ref (B, N, P) zero-mean unit-norm
    patches; pick (K, P) the window taps of each shifted patch. Returns corr (B, N, T, K) float32 and
    the mask of textured (non-flat) shifted patches (B, N, T, K).

    Equal to normalising each gathered (B, T, N, K, P) patch, without building that tensor (it is
    (2r+1)²·(2p+1)² / (2(r+p)+1)² ≈ 4.6× the windows for r = 1, p = 2): with m_k, E_k the mean and
    centred energy of patch k, Σ ref·(cur_k − m_k)/√E_k = (Σ ref·cur_k − m_k·Σ ref)/√E_k, where
    Σ ref·cur_k is one product of the window with ref scattered to patch k's taps, and m_k, E_k come
    from box sums of the window and its square. Why float64 here: E_k = Σ cur² − P·m_k² cancels
    (grey levels ~0.5, the flat-patch threshold 1e-8·P); in float64 the error (~1e-15) is far below
    it, so flat patches stay flat, and the result is as close to the exact value as the gathered
    float32 form or closer (tests/rewards/test_reward_batching.py compares both).
    """
    batch, frames, num, taps = samples.shape
    side = 2 * reach + 1
    patch_side = 2 * patch_radius + 1
    num_shifts, num_patch = pick.shape
    windows = samples.to(torch.float64)
    grid = windows.view(batch, frames, num, side, side)
    mean = (_box_sums(grid, patch_side) / num_patch).reshape(batch, frames, num, num_shifts)
    energy = _box_sums(grid * grid, patch_side).reshape(batch, frames, num, num_shifts) - num_patch * mean * mean
    ref64 = ref.to(torch.float64)
    weights = ref64.new_zeros(batch, num, num_shifts, taps)
    weights.scatter_(3, pick.expand(batch, num, num_shifts, num_patch),
                     ref64[:, :, None, :].expand(batch, num, num_shifts, num_patch))
    dot = torch.matmul(windows.permute(0, 2, 1, 3), weights.transpose(2, 3))  # (B, N, T, K)
    mean, energy = mean.permute(0, 2, 1, 3), energy.permute(0, 2, 1, 3)
    corr = (dot - mean * ref64.sum(dim=-1)[:, :, None, None]) / torch.sqrt(energy.clamp_min(1e-12))
    return corr.to(torch.float32), energy > _FLAT_VARIANCE * num_patch


def appearance_correlation_torch(blurred: Sequence[torch.Tensor], points: torch.Tensor, scales: Sequence[int] = (1, 2),
                                 corr_radius: int = 1, patch_radius: int = 2) -> torch.Tensor:
    """``appearance_correlation`` for B clips: blurred[k] (B, T, H, W) grey at scale k, points (B, T, N, 2)
    -> (B, N, T, len(scales)·(2r+1)²)."""
    batch, frames, num = points.shape[:3]
    device, dtype = points.device, torch.float32
    patch = torch.arange(-patch_radius, patch_radius + 1, dtype=dtype, device=device)
    py, px = torch.meshgrid(patch, patch, indexing="ij")
    patch_offsets = torch.stack([px.reshape(-1), py.reshape(-1)], dim=1)  # (P, 2), x fastest (np.meshgrid order)
    shift = torch.arange(-corr_radius, corr_radius + 1, dtype=dtype, device=device)
    sy, sx = torch.meshgrid(shift, shift, indexing="ij")
    shift_offsets = torch.stack([sx.reshape(-1), sy.reshape(-1)], dim=1)  # (K, 2)
    # Every shifted patch's taps lie on one (2(r+p)+1)² window around the point (offsets are integer
    # multiples of the scale), so each window is sampled once and the K patches are picked from it.
    reach = corr_radius + patch_radius
    side = 2 * reach + 1
    wy, wx = torch.meshgrid(torch.arange(-reach, reach + 1, dtype=dtype, device=device),
                            torch.arange(-reach, reach + 1, dtype=dtype, device=device), indexing="ij")
    window = torch.stack([wx.reshape(-1), wy.reshape(-1)], dim=1)  # (W, 2)
    pick = ((shift_offsets[:, None, 1] + patch_offsets[None, :, 1] + reach) * side
            + shift_offsets[:, None, 0] + patch_offsets[None, :, 0] + reach).long()  # (K, P) into the window
    centre_taps = ((patch_offsets[:, 1] + reach) * side + patch_offsets[:, 0] + reach).long()  # shift (0, 0)
    out = []
    for scale, image in zip(scales, blurred):
        if scale < 1:
            raise ConfigError(f"correlation scales must be >= 1 px, got {scale}")
        height, width = image.shape[-2:]
        taps = points[:, :, :, None, :] + window * scale  # (B, T, N, W, 2)
        samples = remap_bilinear(image.reshape(batch * frames, 1, height, width),
                                 taps[..., 0].reshape(batch * frames, -1), taps[..., 1].reshape(batch * frames, -1))
        samples = samples.view(batch, frames, num, side * side)
        ref, ref_ok = _normalise_patches_torch(samples[:, 0][..., centre_taps])  # frame-0 patch at the query
        corr, cur_ok = _shifted_patch_correlation(samples, ref, pick, reach, patch_radius)  # (B, N, T, K)
        valid = ref_ok[:, :, None, None] & cur_ok
        out.append(torch.where(valid, corr.clamp(-1.0, 1.0), torch.zeros_like(corr)))
    return torch.cat(out, dim=-1)


def track_features_torch(gray: torch.Tensor, blurred: Sequence[torch.Tensor], points: torch.Tensor,
                         visible: torch.Tensor, confidence: torch.Tensor, corr_scales: Sequence[int] = (1, 2),
                         corr_radius: int = 1, patch_radius: int = 2) -> torch.Tensor:
    """``track_features`` for B clips of sanitised tracks: points (B, T, N, 2), visible/confidence (B, T, N),
    gray (B, T, H, W), blurred[k] for each scale -> (B, N, T, D) float32."""
    height, width = gray.shape[-2:]
    unit = min(height, width) / 32.0
    velocity = torch.zeros_like(points)
    velocity[:, 1:] = points[:, 1:] - points[:, :-1]
    displacement = points - points[:, :1]
    speed = torch.linalg.vector_norm(velocity, dim=-1, keepdim=True)
    base = torch.cat([velocity / unit, speed / unit, displacement / unit, visible[..., None].to(torch.float32),
                      confidence[..., None].to(torch.float32)], dim=-1)
    correlation = appearance_correlation_torch(blurred, points, corr_scales, corr_radius, patch_radius)
    return torch.cat([base.transpose(1, 2), correlation], dim=-1).float()


def blurred_grays(gray: np.ndarray, scales: Sequence[int]) -> list[np.ndarray]:
    """Per correlation scale s, the grey frames (T, H, W) blurred with σ = s/2 (scale 1: unblurred)."""
    return [gray if s == 1 else np.stack([cv2.GaussianBlur(g, (0, 0), 0.5 * s) for g in gray]) for s in scales]
