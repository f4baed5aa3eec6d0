"""Motion score: mean optical-flow magnitude in pixels per frame (EvalCrafter's ``flow_score`` / SVD's motion score).

Reference: EvalCrafter ``metrics/RAFT/optical_flow_scores.py`` averages the per-pixel RAFT flow magnitude
over all consecutive pairs; SVD's "motion bucket" conditioning is the same kind of number. We use the
estimator we are given (DIS by default).

A flow in pixels grows with the frame size, so the score is also reported at a reference resolution:
the same flow rescaled to a 256-px short side (× 256 / min(H, W)). This rescales the flow measured at
native resolution; it does not recompute flow on resized frames.

Flow is computed a few pairs at a time and reduced at once to per-pair statistics
(``flow_pair_statistics``, or ``FlowPairStream`` on frames read one at a time), so a long HD clip never
holds its whole (T-1, H, W, 2) flow, nor its frames, in memory.
The same pass also gives VBench's dynamic-degree pair score (``vbench_pair_score``): with an estimator
that pads its input (RAFT) it is read on the padded flow, as VBench does; the motion score always uses
the flow of the original frames.
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


def vbench_pair_score(flow: np.ndarray) -> float:
    """VBench's ``get_score`` of one (H, W, 2) flow: mean of the ``int(H·W·0.05)`` largest magnitudes.

    Computed as VBench does, in float32 on the descending sort (so ties and rounding match); on frames
    so small that the count is 0 (VBench would average an empty set) the single largest is used.
    """
    magnitude = flow_magnitude(flow.astype(np.float32, copy=False)).ravel()
    count = int(magnitude.size * TOP_FRACTION)
    if count == 0:
        return float(magnitude.max())
    return float(np.mean(np.abs(np.sort(-magnitude))[:count]))


@dataclass
class FlowPairStatistics:
    """Per consecutive pair statistics of a clip's flow.

    Attributes:
        mean_magnitude: float64 (P,) mean flow magnitude of each pair, in pixels (original frames).
        top_magnitude: float64 (P,) VBench's pair score (``vbench_pair_score``), on the padded flow when
            the estimator pads (``padded_flow``), else on the flow of the original frames.
        height, width: frame size the flow was measured at.
        native: False when a padding estimator had to upsample the frames (too small for it), so the
            pair scores are not read at the resolution VBench would use.
    """

    mean_magnitude: np.ndarray
    top_magnitude: np.ndarray
    height: int
    width: int
    native: bool = True


class FlowPairStream:
    """``flow_pair_statistics`` of frames given one at a time (holds at most ``batch_size`` + 1 frames).

    Pairs are computed in the same batches as on a whole clip, so the numbers are the same.
    """

    def __init__(self, estimator: FlowEstimator, batch_size: int = PAIRS_PER_BATCH) -> None:
        self.estimator, self.batch_size = estimator, batch_size
        self._frames: list[np.ndarray] = []  # the current batch's frames; its last one starts the next batch
        self._means: list[float] = []
        self._tops: list[float] = []
        self._native = True
        self._size: tuple[int, int] | None = None
        self._result: FlowPairStatistics | None = None

    def add(self, frame: np.ndarray) -> None:
        if self._size is None:
            self._size = (int(frame.shape[0]), int(frame.shape[1]))
        self._frames.append(frame)
        if len(self._frames) == self.batch_size + 1:
            self._flush()

    def _flush(self) -> None:
        if len(self._frames) >= 2:
            video = check_video(np.stack(self._frames), min_frames=2)
            padded = getattr(self.estimator, "padded_flow", None)
            if padded is not None:
                result = padded(video[:-1], video[1:])
                scored, flow, self._native = result.flow, result.cropped(), self._native and result.native
            else:
                scored = flow = self.estimator(video[:-1], video[1:])
            for pair, pair_scored in zip(flow, scored):
                self._means.append(flow_magnitude(pair).mean(dtype=np.float64))
                self._tops.append(vbench_pair_score(pair_scored))
        self._frames = self._frames[-1:]

    def result(self) -> FlowPairStatistics:
        """The statistics of every pair given so far (call once all frames are in)."""
        if self._result is None:
            self._flush()
            if not self._means:
                raise ValueError("FlowPairStream: fewer than 2 frames given")
            height, width = self._size
            self._result = FlowPairStatistics(mean_magnitude=np.asarray(self._means),
                                              top_magnitude=np.asarray(self._tops), height=height, width=width,
                                              native=self._native)
        return self._result


def flow_pair_statistics(video: np.ndarray, estimator: FlowEstimator,
                         batch_size: int = PAIRS_PER_BATCH) -> FlowPairStatistics:
    """Flow of every consecutive pair of a uint8 (T, H, W, 3) clip (T >= 2), reduced pair by pair.

    An estimator with a ``padded_flow`` method (RAFT) is asked for the flow at its padded resolution:
    the pair scores are read on it (VBench's ``get_score`` sees the padded flow) and the mean magnitude
    on its un-padded crop, from one flow computation.
    """
    check_video(video, min_frames=2)
    stream = FlowPairStream(estimator, batch_size)
    for frame in video:
        stream.add(frame)
    return stream.result()


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
