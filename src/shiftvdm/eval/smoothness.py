"""Motion smoothness: how well each odd frame is predicted from its two neighbours, scored like VBench.

Reference: Vchitect/VBench ``vbench/motion_smoothness.py`` (@ 00c4b29c): keep frames 0, 2, 4, ...;
interpolate the midpoint of each consecutive kept pair with the AMT-S video-frame-interpolation network
(embt = 0.5, one iteration); compare the prediction with the true odd frame by the mean of
``cv2.absdiff`` (0-255, all channels); score = (255 − mean MAE) / 255. Smooth, linear motion is easy to
interpolate and scores near 1; jerky or flickering motion scores lower.

Differs from the reference: AMT needs downloaded weights, so we interpolate by flow warping instead — a
weight-free stand-in, not VBench's number. For frames I₀ = frame t−1 and I₁ = frame t+1 we estimate the
flows F₀→₁ and F₁→₀ with the given estimator and, assuming linear motion (Super SloMo, Jiang et al. 2018,
Eq. 4 at t = ½), take the flows from the middle frame to its neighbours as
F_½→₀ = −¼ F₀→₁ + ¼ F₁→₀ and F_½→₁ = ¼ F₀→₁ − ¼ F₁→₀; the prediction is the average of I₀ and I₁
backward-warped along them (bilinear, border replicated), rounded to uint8 as AMT's output is.
Occlusions and non-linear motion are not modelled, so absolute values run lower than AMT's on real
footage; compare clips scored by the same stand-in only.
"""

from __future__ import annotations

import numpy as np

from shiftvdm.motion.base import FlowEstimator, check_video, warp_by_flow

PAIRS_PER_BATCH = 8  # interpolations computed at once (bounds the flow held in memory)


def interpolate_midframe(frame_prev: np.ndarray, frame_next: np.ndarray, flow_fw: np.ndarray,
                         flow_bw: np.ndarray) -> np.ndarray:
    """Bidirectional half-flow warp of two uint8 (H, W, 3) frames to their temporal midpoint.

    Args:
        frame_prev, frame_next: the neighbours I₀ and I₁.
        flow_fw: (H, W, 2) flow I₀ → I₁; flow_bw: (H, W, 2) flow I₁ → I₀.

    Returns:
        uint8 (H, W, 3) prediction of the middle frame.
    """
    flow_mid_to_prev = (-0.25 * flow_fw + 0.25 * flow_bw).astype(np.float32)
    flow_mid_to_next = (0.25 * flow_fw - 0.25 * flow_bw).astype(np.float32)
    from_prev = warp_by_flow(frame_prev.astype(np.float32), flow_mid_to_prev)
    from_next = warp_by_flow(frame_next.astype(np.float32), flow_mid_to_next)
    return np.clip(np.rint(0.5 * (from_prev + from_next)), 0, 255).astype(np.uint8)


def interpolation_errors(video: np.ndarray, estimator: FlowEstimator,
                         batch_size: int = PAIRS_PER_BATCH) -> np.ndarray:
    """Mean absolute error (0-255) of each interpolated odd frame 1, 3, 5, ... that has a next frame.

    Args:
        video: uint8 (T, H, W, 3), T >= 3.

    Returns:
        float64 (⌊(T−1)/2⌋,).
    """
    check_video(video, min_frames=3)
    middles = list(range(1, len(video) - 1, 2))
    errors = []
    for start in range(0, len(middles), batch_size):
        batch = middles[start:start + batch_size]
        prev = video[[t - 1 for t in batch]]
        nxt = video[[t + 1 for t in batch]]
        flow_fw = estimator(prev, nxt)
        flow_bw = estimator(nxt, prev)
        for i, t in enumerate(batch):
            predicted = interpolate_midframe(prev[i], nxt[i], flow_fw[i], flow_bw[i])
            errors.append(np.abs(predicted.astype(np.int16) - video[t].astype(np.int16)).mean())
    return np.asarray(errors, dtype=np.float64)


def motion_smoothness(video: np.ndarray, estimator: FlowEstimator) -> float:
    """Flow-warp stand-in for VBench's motion smoothness, (255 − mean MAE) / 255, in [0, 1]; needs T >= 3."""
    return float((255.0 - interpolation_errors(video, estimator).mean()) / 255.0)
