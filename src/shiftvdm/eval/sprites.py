"""Sprite-tracking metrics for synthetic clips whose sprites are known to be bright (or of a known colour).

Optical flow on tiny, possibly noisy generated clips measures the noise (toy-feasibility.md: DIS reported
3× more motion in noisy samples whose sprites hardly moved). When the sprites are known to stand out
from a dark background, following their centroid is a far more robust motion measure. Definitions follow
the CPU prototypes (toy-feasibility.md, "Motion metrics"); gray = mean over RGB in [0, 1]:

* Tracked centroid: pixels with gray > ``threshold`` (0.4: real sprites are >= 0.665, the background
  <= 0.2), weighted by (gray − threshold). A frame with no such pixel is *lost*.
  Colour mode (``sprite_colors`` given): pixels whose RGB distance to the clip's sprite colour is below
  ``color_tolerance``, weighted by (tolerance − distance).
* speed: mean per-frame centroid step of a clip (px/frame), averaged over clips with no lost frame;
  displacement: |c_{T−1} − c_0| (clips tracked in both frames); static_fraction: share of those with
  displacement < ``static_px`` (2 px); lost_fraction: share of clips with at least one lost frame;
  frames_tracked: share of frames 1..T−1 tracked.
* Mass tracker (copes with faint or blurred sprites): weight = max(0, gray − median gray of frame 0 −
  ``mass_offset``) (colour mode: the colour weight); mass_speed and mass_displacement from its centroid,
  and mass_ratio = mean mass of frames 1..T−1 / mass of frame 0 (1.0 for real clips; < 1 when the
  sprite fades, > 1 when it grows into a blob).
* area: mean number of tracked pixels per frame; max_intensity: mean per-frame maximum gray;
  bg_flicker: mean |gray change| of consecutive frames on background pixels (farther than 3 px from
  any tracked pixel in both frames; 0 for a clean synthetic clip).
* speed_w1 (with ``reference``): 1-D Wasserstein distance between the per-frame centroid steps of the
  clips and of the reference clips.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.stats import wasserstein_distance

from shiftvdm.errors import DataError

SPRITE_THRESHOLD = 0.4  # gray level above which a pixel belongs to a sprite (toy-feasibility.md)
STATIC_PX = 2.0  # displacement below which a clip counts as static
MASS_OFFSET = 0.1  # margin above the frame-0 median background of the mass tracker
COLOR_TOLERANCE = 0.25  # RGB distance (0-1 units, max √3) within which a pixel matches the sprite colour
BACKGROUND_MARGIN_PX = 3  # background pixels for bg_flicker lie farther than this from the sprite


@dataclass
class SpriteMetrics:
    """Sprite metrics of a set of clips.

    Attributes:
        aggregate: set-level values (see the module docstring for names and definitions).
        per_clip: name -> (N,) float array of per-clip values (NaN where undefined, e.g. speed of a clip
            with a lost frame).
        centroids: float64 (N, T, 2) tracked (x, y) centroid per frame, NaN where lost.
        lost: bool (N, T) lost frames.
    """

    aggregate: dict[str, float]
    per_clip: dict[str, np.ndarray]
    centroids: np.ndarray
    lost: np.ndarray
    notes: list[str] = field(default_factory=list)

    def clip_dicts(self) -> list[dict[str, float | None]]:
        """Per-clip values as one dict per clip (None for NaN), for JSON."""
        count = self.centroids.shape[0]
        return [{f"sprite_{k}": (None if not np.isfinite(v[i]) else float(v[i])) for k, v in self.per_clip.items()}
                for i in range(count)]


def _as_clips(videos: np.ndarray | list[np.ndarray], name: str) -> np.ndarray:
    if isinstance(videos, list):
        if not videos:
            raise DataError(f"{name}: no clips")
        shapes = {v.shape for v in videos}
        if len(shapes) != 1:
            raise DataError(f"{name}: sprite metrics need clips of one shape, got {sorted(shapes)}")
        videos = np.stack(videos)
    videos = np.asarray(videos)
    if videos.dtype != np.uint8 or videos.ndim != 5 or videos.shape[-1] != 3 or videos.shape[0] == 0:
        raise DataError(f"{name}: expected uint8 clips (N, T, H, W, 3), got {videos.dtype} {videos.shape}")
    if videos.shape[1] < 2:
        raise DataError(f"{name}: clips need at least 2 frames, got {videos.shape[1]}")
    return videos


def _weighted_centroids(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, T, H, W) non-negative weights -> centroids (N, T, 2) (x, y) (NaN where the mass is 0), mass (N, T)."""
    height, width = weights.shape[2:]
    mass = weights.sum(axis=(2, 3), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (weights.sum(axis=2, dtype=np.float64) * np.arange(width)).sum(axis=-1) / mass
        cy = (weights.sum(axis=3, dtype=np.float64) * np.arange(height)).sum(axis=-1) / mass
    centroids = np.stack([cx, cy], axis=-1)
    centroids[mass <= 0] = np.nan
    return centroids, mass


def _steps(centroids: np.ndarray) -> np.ndarray:
    """(N, T, 2) -> (N, T-1) per-frame centroid step length (NaN where either frame is lost)."""
    return np.linalg.norm(np.diff(centroids, axis=1), axis=-1)


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _sprite_weights(clips: np.ndarray, gray: np.ndarray, threshold: float, sprite_colors: np.ndarray | None,
                    color_tolerance: float, mass_offset: float) -> tuple[np.ndarray, np.ndarray]:
    """Tracked weights and mass weights, both (N, T, H, W) float32."""
    if sprite_colors is None:
        tracked = np.clip(gray - threshold, 0.0, None)
        background = np.median(gray[:, 0].reshape(gray.shape[0], -1), axis=1)[:, None, None, None]
        mass = np.clip(gray - background - mass_offset, 0.0, None)
        return tracked, mass
    colors = np.asarray(sprite_colors, dtype=np.float32)
    if colors.ndim == 1:
        colors = np.broadcast_to(colors, (clips.shape[0], 3))
    if colors.shape != (clips.shape[0], 3):
        raise DataError(f"sprite_colors: expected (3,) or (N={clips.shape[0]}, 3), got {colors.shape}")
    if colors.max() > 1.0:  # given as 0-255
        colors = colors / 255.0
    rgb = clips.astype(np.float32) / 255.0
    distance = np.linalg.norm(rgb - colors[:, None, None, None, :], axis=-1)
    tracked = np.clip(color_tolerance - distance, 0.0, None)
    return tracked, tracked


def _background_flicker(gray: np.ndarray, tracked: np.ndarray) -> np.ndarray:
    """(N,) mean |gray change| between consecutive frames on pixels far from any tracked pixel."""
    size = 2 * BACKGROUND_MARGIN_PX + 1
    kernel = np.ones((size, size), np.uint8)
    near = np.empty(tracked.shape, dtype=bool)
    for n in range(tracked.shape[0]):
        for t in range(tracked.shape[1]):
            near[n, t] = cv2.dilate((tracked[n, t] > 0).astype(np.uint8), kernel) > 0
    background = ~(near[:, 1:] | near[:, :-1])
    change = np.abs(np.diff(gray, axis=1))
    counts = background.sum(axis=(1, 2, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, (change * background).sum(axis=(1, 2, 3)) / counts, np.nan)


def sprite_motion_metrics(videos: np.ndarray | list[np.ndarray], *,
                          reference: np.ndarray | list[np.ndarray] | None = None,
                          reference_sprite_colors: np.ndarray | None = None,
                          threshold: float = SPRITE_THRESHOLD, sprite_colors: np.ndarray | None = None,
                          color_tolerance: float = COLOR_TOLERANCE, static_px: float = STATIC_PX,
                          mass_offset: float = MASS_OFFSET) -> SpriteMetrics:
    """Sprite-centroid motion metrics of synthetic clips (see the module docstring for definitions).

    Args:
        videos: uint8 (N, T, H, W, 3), or a list of same-shape (T, H, W, 3) clips.
        reference: optional clips (e.g. the real ones) for ``speed_w1``; scored with the same settings.
        reference_sprite_colors: the reference's sprite colours in colour mode (default: ``sprite_colors``
            when that is a single colour).
        threshold: gray level (0-1) separating sprites from background.
        sprite_colors: optional known sprite colour per clip (N, 3) or for all clips (3,), in 0-1 or
            0-255; switches from brightness to colour segmentation.
        color_tolerance: colour-mode RGB distance (0-1 units).
        static_px: displacement (px) below which a clip is static.
        mass_offset: mass tracker's margin above the frame-0 median background.

    Returns:
        SpriteMetrics with aggregate values: speed, displacement, static_fraction, lost_fraction,
        frames_tracked, mass_speed, mass_displacement, mass_ratio, area, max_intensity, bg_flicker
        (and speed_w1 with a reference).
    """
    clips = _as_clips(videos, "videos")
    gray = clips.astype(np.float32).mean(axis=-1) / 255.0
    tracked_w, mass_w = _sprite_weights(clips, gray, threshold, sprite_colors, color_tolerance, mass_offset)
    centroids, tracked_mass = _weighted_centroids(tracked_w)
    lost = tracked_mass <= 0
    mass_centroids, mass = _weighted_centroids(mass_w)

    steps = _steps(centroids)
    any_lost = lost.any(axis=1)
    speed = np.where(any_lost, np.nan, steps.mean(axis=1))
    displacement = np.linalg.norm(centroids[:, -1] - centroids[:, 0], axis=-1)
    mass_steps = _steps(mass_centroids)
    with np.errstate(invalid="ignore", divide="ignore"):
        mass_speed = np.array([_nanmean(row) for row in mass_steps])
        mass_displacement = np.linalg.norm(mass_centroids[:, -1] - mass_centroids[:, 0], axis=-1)
        mass_ratio = np.where(mass[:, 0] > 0, mass[:, 1:].mean(axis=1) / mass[:, 0], np.nan)
    area = (tracked_w > 0).sum(axis=(2, 3)).mean(axis=1).astype(np.float64)
    max_intensity = gray.max(axis=(2, 3)).mean(axis=1).astype(np.float64)
    bg_flicker = _background_flicker(gray, tracked_w)

    per_clip = {
        "speed": speed, "displacement": displacement, "lost": any_lost.astype(np.float64),
        "frames_tracked": (~lost[:, 1:]).mean(axis=1), "mass_speed": mass_speed,
        "mass_displacement": mass_displacement, "mass_ratio": mass_ratio, "area": area,
        "max_intensity": max_intensity, "bg_flicker": bg_flicker,
    }
    defined_disp = displacement[np.isfinite(displacement)]
    aggregate = {
        "speed": _nanmean(speed),
        "displacement": _nanmean(displacement),
        "static_fraction": float((defined_disp < static_px).mean()) if defined_disp.size else float("nan"),
        "lost_fraction": float(any_lost.mean()),
        "frames_tracked": float(per_clip["frames_tracked"].mean()),
        "mass_speed": _nanmean(mass_speed),
        "mass_displacement": _nanmean(mass_displacement),
        "mass_ratio": _nanmean(mass_ratio),
        "area": float(area.mean()),
        "max_intensity": float(max_intensity.mean()),
        "bg_flicker": _nanmean(bg_flicker),
    }
    notes = []
    if any_lost.all():
        notes.append("sprite speed: every clip loses its sprite in some frame, so speed is undefined")
    if reference is not None:
        if reference_sprite_colors is None and sprite_colors is not None:
            if np.ndim(sprite_colors) != 1:
                raise DataError("sprite_motion_metrics: per-clip sprite_colors need reference_sprite_colors "
                                "for the reference clips")
            reference_sprite_colors = sprite_colors
        ref = sprite_motion_metrics(reference, threshold=threshold, sprite_colors=reference_sprite_colors,
                                    color_tolerance=color_tolerance, static_px=static_px, mass_offset=mass_offset)
        ours_steps, ref_steps = steps[np.isfinite(steps)], _steps(ref.centroids)
        ref_steps = ref_steps[np.isfinite(ref_steps)]
        if ours_steps.size and ref_steps.size:
            aggregate["speed_w1"] = float(wasserstein_distance(ours_steps, ref_steps))
        else:
            aggregate["speed_w1"] = float("nan")
            notes.append("sprite speed_w1: no tracked frame pair in one of the sets")
    return SpriteMetrics(aggregate=aggregate, per_clip=per_clip, centroids=centroids, lost=lost, notes=notes)
