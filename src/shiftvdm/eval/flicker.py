"""Temporal flicker score, VBench's ``temporal_flickering`` formula.

Reference: Vchitect/VBench ``vbench/temporal_flickering.py``: the mean absolute difference of every
consecutive frame pair over all pixels and channels (0-255), averaged over the pairs, and the score
(255 - mean) / 255. A perfectly static clip scores 1.

Differs from VBench: VBench scores this dimension only on videos it first filtered as static; we score
every clip and leave the reading to the user (on a moving clip the number mixes motion with flicker).
"""

from __future__ import annotations

import numpy as np

from shiftvdm.motion.base import check_video


def frame_difference_mae(video: np.ndarray) -> np.ndarray:
    """Mean |frame_{t+1} - frame_t| per consecutive pair, over pixels and channels, in 0-255 units.

    Args:
        video: uint8 (T, H, W, 3) with T >= 2.

    Returns:
        float64 (T-1,).
    """
    check_video(video, min_frames=2)
    maes = np.empty(video.shape[0] - 1, dtype=np.float64)
    for t in range(video.shape[0] - 1):  # pair by pair: a (T, H, W, 3) int16 copy of a long clip is large
        maes[t] = np.abs(video[t + 1].astype(np.int16) - video[t].astype(np.int16)).mean()
    return maes


def temporal_flicker(video: np.ndarray) -> float:
    """VBench temporal flickering score (255 - mean consecutive-frame MAE) / 255, in [0, 1]; 1 = no change."""
    return float((255.0 - frame_difference_mae(video).mean()) / 255.0)
