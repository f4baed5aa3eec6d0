"""Dynamic degree by VBench's rule: is a clip dynamic, and the fraction of dynamic clips.

Reference: Vchitect/VBench ``vbench/dynamic_degree.py`` (@ 11abda97). Per clip:

1. frames at native resolution, sub-sampled to about 8 fps: keep every ``interval = max(1, round(fps/8))``-th
   frame starting with frame 0;
2. optical flow of each consecutive pair of kept frames; the pair's score is the mean of the top 5 % of
   the per-pixel flow magnitudes (``int(H·W·0.05)`` pixels);
3. threshold = max(1, 8/fps) · 6 · min(H, W)/256 pixels; the clip is dynamic when at least
   ``round(4·N/16)`` pairs score strictly above it, N being the number of kept frames (Python's
   ``round``, i.e. half to even, like the reference);
4. the dimension score is the fraction of dynamic clips.

Differs from the reference: VBench measures flow with RAFT (things weights, 20 iterations); we use the
estimator we are given (weight-free DIS by default), so our verdicts are VBench's rule applied to another
flow. Results name the estimator. On frames so small that 5 % is under one pixel we average the single
largest magnitude (the reference would average an empty set).

Not what we do: CIntellifusion/VideoDPO's copy (``OmniScore/vbench/dynamic_degree.py``) returns a continuous
rate and drops the max(1, 8/fps) factor, so its numbers are not comparable with VBench's or ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shiftvdm.eval.motion_score import FlowPairStatistics, flow_pair_statistics
from shiftvdm.motion.base import FlowEstimator, check_video

VBENCH_TARGET_FPS = 8.0  # VBench sub-samples to about this rate
BASE_THRESHOLD_PX = 6.0  # threshold at a 256-px short side and 8 fps
BASE_SIDE_PX = 256.0


def sampling_interval(fps: float) -> int:
    """Keep every n-th frame: n = max(1, round(fps / 8)) (Python's round, as the reference)."""
    return max(1, round(fps / VBENCH_TARGET_FPS))


def dynamic_threshold(height: int, width: int, fps: float) -> float:
    """Top-5 % flow magnitude, in pixels, a pair must exceed: max(1, 8/fps) · 6 · min(H, W)/256."""
    return max(1.0, VBENCH_TARGET_FPS / fps) * BASE_THRESHOLD_PX * min(height, width) / BASE_SIDE_PX


def required_pairs(num_sampled_frames: int) -> int:
    """How many pairs must exceed the threshold: round(4 · N / 16)."""
    return round(4 * num_sampled_frames / 16.0)


@dataclass
class DynamicVerdict:
    """VBench's dynamic/static decision for one clip.

    Attributes:
        is_dynamic: the verdict.
        pair_scores: top-5 % mean flow magnitude of each sampled pair, in pixels.
        threshold: the pixel threshold for this clip's size and fps.
        required_pairs: pairs that had to exceed it.
        interval: frame sub-sampling interval used.
        num_sampled_frames: frames kept after sub-sampling.
    """

    is_dynamic: bool
    pair_scores: list[float]
    threshold: float
    required_pairs: int
    interval: int
    num_sampled_frames: int

    @property
    def pairs_above(self) -> int:
        return int(sum(score > self.threshold for score in self.pair_scores))


def judge_dynamic(pair_scores: list[float], threshold: float, num_required: int) -> bool:
    """VBench ``check_move``: True once ``num_required`` scores are strictly above the threshold.

    As in the reference, the count is checked after each pair, so ``num_required == 0`` is met by any
    clip with at least one pair, and a clip without pairs is static.
    """
    count = 0
    for score in pair_scores:
        if score > threshold:
            count += 1
        if count >= num_required:
            return True
    return False


def video_dynamic_degree(video: np.ndarray, fps: float, estimator: FlowEstimator, *,
                         consecutive: FlowPairStatistics | None = None) -> DynamicVerdict:
    """VBench's dynamic verdict for one clip.

    Args:
        video: uint8 (T, H, W, 3) at native resolution, T >= 2.
        fps: the clip's frame rate (8 for clips that record none, as VBench assumes for image folders).
        estimator: the flow estimator.
        consecutive: optional ``flow_pair_statistics`` of the clip's consecutive frames, reused when the
            sub-sampling interval is 1 (saves recomputing the flow).
    """
    check_video(video, min_frames=2)
    if not fps > 0:
        raise ValueError(f"video_dynamic_degree: fps must be positive, got {fps}")
    height, width = video.shape[1:3]
    interval = sampling_interval(fps)
    sampled = video[::interval]
    if interval == 1 and consecutive is not None:
        scores = consecutive.top_magnitude.tolist()
    elif len(sampled) >= 2:
        scores = flow_pair_statistics(sampled, estimator).top_magnitude.tolist()
    else:
        scores = []
    threshold = dynamic_threshold(height, width, fps)
    needed = required_pairs(len(sampled))
    return DynamicVerdict(is_dynamic=judge_dynamic(scores, threshold, needed), pair_scores=scores,
                          threshold=threshold, required_pairs=needed, interval=interval,
                          num_sampled_frames=len(sampled))


def dynamic_degree(verdicts: list[bool] | list[DynamicVerdict]) -> float:
    """VBench's dimension score: the fraction of dynamic clips."""
    if not verdicts:
        raise ValueError("dynamic_degree: no clips")
    flags = [v.is_dynamic if isinstance(v, DynamicVerdict) else bool(v) for v in verdicts]
    return float(np.mean(flags))
