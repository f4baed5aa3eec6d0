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


class FlickerStream:
    """``temporal_flicker`` of frames given one at a time (holds the previous frame only)."""

    def __init__(self) -> None:
        self._previous: np.ndarray | None = None
        self._maes: list[float] = []

    def add(self, frame: np.ndarray) -> None:
        if self._previous is not None:
            self._maes.append(np.abs(frame.astype(np.int16) - self._previous.astype(np.int16)).mean())
        self._previous = frame

    def maes(self) -> np.ndarray:
        if not self._maes:
            raise ValueError("FlickerStream: fewer than 2 frames given")
        return np.asarray(self._maes, dtype=np.float64)

    def result(self) -> float:
        return float((255.0 - self.maes().mean()) / 255.0)


def frame_difference_mae(video: np.ndarray) -> np.ndarray:
    """Mean |frame_{t+1} - frame_t| per consecutive pair, over pixels and channels, in 0-255 units.

    Args:
        video: uint8 (T, H, W, 3) with T >= 2.

    Returns:
        float64 (T-1,).
    """
    check_video(video, min_frames=2)
    stream = FlickerStream()  # pair by pair: a (T, H, W, 3) int16 copy of a long clip is large
    for frame in video:
        stream.add(frame)
    return stream.maes()


def temporal_flicker(video: np.ndarray) -> float:
    """VBench temporal flickering score (255 - mean consecutive-frame MAE) / 255, in [0, 1]; 1 = no change."""
    return float((255.0 - frame_difference_mae(video).mean()) / 255.0)
