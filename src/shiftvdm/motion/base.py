"""The motion contract: optical-flow estimators and point trackers behind two small Protocols.

Everything downstream (IC/LC features, rewards, evaluation metrics) calls only what is defined here,
so the weight-free OpenCV defaults and the optional neural estimators are interchangeable.

Conventions:
    * frames are uint8 numpy arrays, RGB (N, H, W, 3) or grayscale (N, H, W);
    * a flow field is float32 (N, H, W, 2) holding (dx, dy) in pixels of the ORIGINAL frames, such
      that pixel (x, y) of ``frames_a`` moves to (x + dx, y + dy) in ``frames_b``;
    * points are (x, y) in pixels, pixel centres at integer coordinates (OpenCV convention).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from shiftvdm.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

# Floor on the median forward-backward error used to scale the confidence, in pixels. It keeps
# exp(-e / median(e)) finite when a pair's flow is exactly consistent (e.g. constant frames).
MIN_CONFIDENCE_SCALE_PX = 1e-3
# Lower bound of the confidence map, so it stays in (0, 1] as documented (reference: clamp(eps, 1)).
MIN_CONFIDENCE = 1e-6


@runtime_checkable
class FlowEstimator(Protocol):
    """Dense optical flow between two aligned batches of frames."""

    name: str

    def __call__(self, frames_a: np.ndarray, frames_b: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) RGB or (N, H, W) gray, twice -> float32 (N, H, W, 2) flow a -> b in pixels."""
        ...


@dataclass
class Tracks:
    """Point tracks of N query points over T frames.

    Attributes:
        points: float32 (T, N, 2) position (x, y) of each point in each frame, in pixels.
        visible: bool (T, N) whether the tracker vouches for the point in that frame.
        confidence: float32 (T, N) in [0, 1], how much the tracker trusts the position.
    """

    points: np.ndarray
    visible: np.ndarray
    confidence: np.ndarray

    def __post_init__(self) -> None:
        if self.points.ndim != 3 or self.points.shape[-1] != 2:
            raise DataError(f"Tracks.points must be (T, N, 2), got shape {self.points.shape}")
        expected = self.points.shape[:2]
        if self.visible.shape != expected or self.confidence.shape != expected:
            raise DataError(f"Tracks.visible/confidence must be {expected}, got {self.visible.shape} "
                            f"and {self.confidence.shape}")

    @property
    def num_frames(self) -> int:
        return int(self.points.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.points.shape[1])


@runtime_checkable
class PointTracker(Protocol):
    """Tracks query points given on frame 0 through a whole clip."""

    name: str

    def __call__(self, video: np.ndarray, queries: np.ndarray) -> Tracks:
        """video uint8 (T, H, W, 3); queries float (N, 2) (x, y) on frame 0 -> Tracks over T frames."""
        ...


# ---------------------------------------------------------------------------------------------
# input checks and conversions shared by the estimators
# ---------------------------------------------------------------------------------------------

def check_frames(frames: np.ndarray, name: str = "frames") -> np.ndarray:
    """Validate a uint8 batch of frames, (N, H, W, 3) or (N, H, W); returns it unchanged."""
    if not isinstance(frames, np.ndarray):
        raise DataError(f"{name}: expected a numpy uint8 array, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise DataError(f"{name}: expected dtype uint8 (0-255), got {frames.dtype}")
    if frames.ndim not in (3, 4) or (frames.ndim == 4 and frames.shape[-1] != 3):
        raise DataError(f"{name}: expected shape (N, H, W, 3) or (N, H, W), got {frames.shape}")
    if frames.shape[0] == 0:
        raise DataError(f"{name}: empty batch (N = 0)")
    if frames.shape[1] < 2 or frames.shape[2] < 2:
        raise DataError(f"{name}: frames of {frames.shape[1]}x{frames.shape[2]} pixels are too small")
    return frames


def check_pair(frames_a: np.ndarray, frames_b: np.ndarray) -> None:
    """Validate two frame batches that are compared pixel by pixel."""
    check_frames(frames_a, "frames_a")
    check_frames(frames_b, "frames_b")
    if frames_a.shape != frames_b.shape:
        raise DataError(f"frames_a and frames_b differ in shape: {frames_a.shape} vs {frames_b.shape}")


def check_video(video: np.ndarray, min_frames: int = 2) -> np.ndarray:
    """Validate a uint8 clip (T, H, W, 3) or (T, H, W) with at least ``min_frames`` frames."""
    check_frames(video, "video")
    if video.shape[0] < min_frames:
        raise DataError(f"video has {video.shape[0]} frame(s); motion needs at least {min_frames}")
    return video


def to_gray(frames: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) RGB or (N, H, W) -> uint8 (N, H, W) luma (ITU-R 601 weights, as cv2)."""
    if frames.ndim == 3:
        return frames
    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])


def upsample_factor(height: int, width: int, min_side: int) -> int:
    """Integer factor s so that the shorter side times s reaches ``min_side`` (1 if it already does).

    DIS cannot run below about 10 px and, like LK, its coarsest pyramid level is bounded by its
    patch size, so motions of a few pixels on 16-32 px frames are missed. Working on frames
    upsampled by s (bicubic) and dividing the displacements by s recovers them.
    """
    if min_side <= 0:
        return 1
    return max(1, -(-int(min_side) // min(int(height), int(width))))


# ---------------------------------------------------------------------------------------------
# flow helpers
# ---------------------------------------------------------------------------------------------

def video_flow(video: np.ndarray, estimator: FlowEstimator) -> np.ndarray:
    """Flow of every consecutive pair of a clip: uint8 (T, H, W, 3) -> float32 (T-1, H, W, 2)."""
    check_video(video)
    return estimator(video[:-1], video[1:])


def warp_by_flow(field: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample ``field`` (H, W, C) at x + flow(x) with bilinear interpolation (border replicated)."""
    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    map_x = grid_x + flow[..., 0]
    map_y = grid_y + flow[..., 1]
    return cv2.remap(field, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def forward_backward_error(flow_fw: np.ndarray, flow_bw: np.ndarray) -> np.ndarray:
    """|f_fw(x) + f_bw(x + f_fw(x))| per pixel: (N, H, W, 2) twice -> (N, H, W), in pixels."""
    errors = np.empty(flow_fw.shape[:3], dtype=np.float32)
    for i in range(flow_fw.shape[0]):
        bw_at_target = warp_by_flow(np.ascontiguousarray(flow_bw[i]), flow_fw[i])
        errors[i] = np.linalg.norm(flow_fw[i] + bw_at_target, axis=-1)
    return errors


def confidence_from_error(errors: np.ndarray, scale_px: float | None = None) -> np.ndarray:
    """Confidence exp(-e / s) in (0, 1] from a per-pixel error map (N, H, W).

    ``s`` is the per-pair median error (reference: median-scaled SEA-RAFT uncertainty, so the median
    pixel gets 1/e), floored at ``MIN_CONFIDENCE_SCALE_PX``; or a fixed ``scale_px`` when given.
    """
    if scale_px is None:
        scale = np.median(errors.reshape(errors.shape[0], -1), axis=1)
        scale = np.maximum(scale, MIN_CONFIDENCE_SCALE_PX)[:, None, None]
    else:
        scale = float(scale_px)
    conf = np.exp(-errors / scale)
    return np.clip(conf, MIN_CONFIDENCE, 1.0).astype(np.float32)


def flow_with_confidence(frames_a: np.ndarray, frames_b: np.ndarray, estimator: FlowEstimator,
                         scale_px: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Forward flow a -> b and a forward-backward consistency confidence.

    Args:
        frames_a, frames_b: uint8 (N, H, W, 3) or (N, H, W).
        estimator: any FlowEstimator (called twice: a -> b and b -> a).
        scale_px: fixed error scale in pixels; None = per-pair median (see ``confidence_from_error``).

    Returns:
        flow float32 (N, H, W, 2) and confidence float32 (N, H, W) in (0, 1].
    """
    check_pair(frames_a, frames_b)
    flow_fw = estimator(frames_a, frames_b)
    flow_bw = estimator(frames_b, frames_a)
    errors = forward_backward_error(flow_fw, flow_bw)
    return flow_fw, confidence_from_error(errors, scale_px)


# ---------------------------------------------------------------------------------------------
# query points
# ---------------------------------------------------------------------------------------------

def random_queries(num: int, height: int, width: int, generator: np.random.Generator,
                   margin: int = 0) -> np.ndarray:
    """``num`` query points (x, y) uniform over the frame, ``margin`` px from every border.

    Returns float32 (num, 2). Points are continuous (not snapped to pixel centres); pass the same
    array to a real clip and to its generated clips so that they are compared point by point.
    """
    if num <= 0:
        raise ConfigError(f"random_queries: num must be positive, got {num}")
    if width - 1 - 2 * margin < 0 or height - 1 - 2 * margin < 0:
        raise ConfigError(f"random_queries: margin {margin} leaves no room in a {height}x{width} frame")
    xs = generator.uniform(margin, width - 1 - margin, size=num)
    ys = generator.uniform(margin, height - 1 - margin, size=num)
    return np.stack([xs, ys], axis=1).astype(np.float32)


def grid_queries(n_per_side: int, height: int, width: int, margin: float) -> np.ndarray:
    """A regular n×n grid of query points (x, y), ``margin`` px inside the borders: float32 (n², 2)."""
    if n_per_side <= 0:
        raise ConfigError(f"grid_queries: n_per_side must be positive, got {n_per_side}")
    if width - 1 - 2 * margin < 0 or height - 1 - 2 * margin < 0:
        raise ConfigError(f"grid_queries: margin {margin} leaves no room in a {height}x{width} frame")
    xs = np.linspace(margin, width - 1 - margin, n_per_side, dtype=np.float32)
    ys = np.linspace(margin, height - 1 - margin, n_per_side, dtype=np.float32)
    grid_x, grid_y = np.meshgrid(xs, ys)
    return np.stack([grid_x.ravel(), grid_y.ravel()], axis=1).astype(np.float32)


def check_queries(queries: np.ndarray, height: int, width: int) -> np.ndarray:
    """Validate (N, 2) query points inside a height×width frame; returns float32."""
    queries = np.asarray(queries)
    if queries.ndim != 2 or queries.shape[1] != 2 or queries.shape[0] == 0:
        raise DataError(f"queries must be a non-empty (N, 2) array of (x, y), got shape {queries.shape}")
    if not np.all(np.isfinite(queries)):
        raise DataError("queries contain NaN or infinite coordinates")
    if (queries[:, 0].min() < 0 or queries[:, 1].min() < 0 or queries[:, 0].max() > width - 1
            or queries[:, 1].max() > height - 1):
        raise DataError(f"queries fall outside the {height}x{width} frame (x in [0, {width - 1}], "
                        f"y in [0, {height - 1}] expected)")
    return queries.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# registries (lazy: a neural estimator's module is imported only when asked for)
# ---------------------------------------------------------------------------------------------

FLOW_ESTIMATORS: dict[str, str] = {
    "dis": "shiftvdm.motion.opencv_flow:DISFlow",
    "farneback": "shiftvdm.motion.opencv_flow:FarnebackFlow",
    "raft": "shiftvdm.motion.raft_flow:RAFTFlow",
    "sea-raft": "shiftvdm.motion.sea_raft:SEARAFTFlow",
}
TRACKERS: dict[str, str] = {
    "lk": "shiftvdm.motion.opencv_tracks:LucasKanadeTracker",
    "cotracker3": "shiftvdm.motion.cotracker3:CoTracker3Tracker",
}


def _resolve(registry: dict[str, str], kind: str, name: str) -> Callable[..., Any]:
    if name not in registry:
        raise ConfigError(f"unknown {kind} {name!r}; expected one of {sorted(registry)}")
    module_name, attr = registry[name].split(":")
    return getattr(importlib.import_module(module_name), attr)


def _build(factory: Callable[..., Any], kind: str, name: str, kwargs: dict[str, Any]) -> Any:
    try:
        return factory(**kwargs)
    except TypeError as exc:  # an unknown or missing keyword: a config problem, not a crash
        raise ConfigError(f"{kind} {name!r}: bad options {sorted(kwargs)} ({exc})") from exc


def get_flow_estimator(name: str = "dis", **kwargs: Any) -> FlowEstimator:
    """A flow estimator by short name: "dis" (default), "farneback", "raft" or "sea-raft" (``checkpoint=PATH``)."""
    return _build(_resolve(FLOW_ESTIMATORS, "flow estimator", name), "flow estimator", name, kwargs)


def get_tracker(name: str = "lk", **kwargs: Any) -> PointTracker:
    """A point tracker by short name: "lk" (default) or "cotracker3" (``checkpoint=PATH``)."""
    return _build(_resolve(TRACKERS, "point tracker", name), "point tracker", name, kwargs)
