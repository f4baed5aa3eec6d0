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

from shiftvdm.errors import ConfigError, DataError
from shiftvdm.motion.base import (
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


def _sanitize_tracks(tracks: Tracks) -> Tracks:
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
    tracks = _sanitize_tracks(tracks)
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
