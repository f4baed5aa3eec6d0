"""Motion score: mean optical-flow magnitude in pixels per frame (EvalCrafter's ``flow_score`` / SVD's motion score).

Reference: EvalCrafter ``metrics/RAFT/optical_flow_scores.py`` averages the per-pixel RAFT flow magnitude
over all consecutive pairs; SVD's "motion bucket" conditioning is the same kind of number. We use the
estimator we are given (DIS by default).

A flow in pixels grows with the frame size, so the score is also reported at a reference resolution:
the same flow rescaled to a 256-px short side (× 256 / min(H, W)). This rescales the flow measured at
native resolution; it does not recompute flow on resized frames.

Flow is computed a few pairs at a time and reduced at once to per-pair statistics
(``flow_pair_statistics``), so a long HD clip never holds its whole (T-1, H, W, 2) flow in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shiftvdm.motion.base import FlowEstimator, check_video

REFERENCE_SHORT_SIDE = 256  # short side, in pixels, of the reference resolution
TOP_FRACTION = 0.05  # VBench dynamic degree: share of pixels whose magnitudes are averaged per pair
PAIRS_PER_BATCH = 8  # flow pairs computed (and held) at once


def flow_magnitude(flow: np.ndarray) -> np.ndarray:
    """Per-pixel magnitude of a (..., 2) flow, float32 (...)."""
    return np.sqrt(np.square(flow[..., 0]) + np.square(flow[..., 1]))


def top_magnitude_mean(flow: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """Mean of the largest ``fraction`` of the per-pixel magnitudes of one (H, W, 2) flow (at least 1 pixel).

    VBench uses ``int(H·W·0.05)`` pixels; on frames so small that this is 0 we take the single largest.
    """
    magnitude = flow_magnitude(flow).ravel().astype(np.float64)
    count = max(1, int(magnitude.size * fraction))
    return float(np.partition(magnitude, magnitude.size - count)[magnitude.size - count:].mean())


@dataclass
class FlowPairStatistics:
    """Per consecutive pair statistics of a clip's flow.

    Attributes:
        mean_magnitude: float64 (P,) mean flow magnitude of each pair, in pixels.
        top_magnitude: float64 (P,) mean of the top 5 % magnitudes of each pair (VBench's pair score).
        height, width: frame size the flow was measured at.
    """

    mean_magnitude: np.ndarray
    top_magnitude: np.ndarray
    height: int
    width: int


def flow_pair_statistics(video: np.ndarray, estimator: FlowEstimator,
                         batch_size: int = PAIRS_PER_BATCH) -> FlowPairStatistics:
    """Flow of every consecutive pair of a uint8 (T, H, W, 3) clip (T >= 2), reduced pair by pair."""
    check_video(video, min_frames=2)
    means, tops = [], []
    for start in range(0, len(video) - 1, batch_size):
        stop = min(start + batch_size, len(video) - 1)
        flow = estimator(video[start:stop], video[start + 1:stop + 1])
        for pair in flow:
            means.append(flow_magnitude(pair).mean(dtype=np.float64))
            tops.append(top_magnitude_mean(pair))
    return FlowPairStatistics(mean_magnitude=np.asarray(means), top_magnitude=np.asarray(tops),
                              height=int(video.shape[1]), width=int(video.shape[2]))


def motion_score_from_statistics(stats: FlowPairStatistics) -> dict[str, float]:
    """Motion scores of one clip from its consecutive-pair statistics.

    Returns:
        {"motion_score": mean magnitude in px/frame at native size,
         "motion_score_256": the same rescaled to a 256-px short side}.
    """
    mean = float(stats.mean_magnitude.mean())
    return {"motion_score": mean, "motion_score_256": mean * REFERENCE_SHORT_SIDE / min(stats.height, stats.width)}


def motion_score(video: np.ndarray, estimator: FlowEstimator) -> dict[str, float]:
    """Motion scores of a uint8 (T, H, W, 3) clip (T >= 2); see ``motion_score_from_statistics``."""
    return motion_score_from_statistics(flow_pair_statistics(video, estimator))
