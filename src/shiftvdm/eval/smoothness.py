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


class SmoothnessStream:
    """``interpolation_errors`` of frames given one at a time: holds the (previous, middle, next) triples
    of one batch (at most 2·``batch_size`` + 1 frames), scored in the same batches as on a whole clip."""

    def __init__(self, estimator: FlowEstimator, batch_size: int = PAIRS_PER_BATCH) -> None:
        self.estimator, self.batch_size = estimator, batch_size
        self._last_two: list[np.ndarray] = []  # frames t-2 and t-1
        self._triples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._seen = 0
        self._errors: list[float] = []

    def add(self, frame: np.ndarray) -> None:
        if self._seen >= 2 and self._seen % 2 == 0:  # frame t completes the odd middle frame t-1
            self._triples.append((self._last_two[0], self._last_two[1], frame))
            if len(self._triples) == self.batch_size:
                self._flush()
        self._last_two = (self._last_two + [frame])[-2:]
        self._seen += 1

    def _flush(self) -> None:
        if not self._triples:
            return
        prev = np.stack([t[0] for t in self._triples])
        nxt = np.stack([t[2] for t in self._triples])
        flow_fw = self.estimator(prev, nxt)
        flow_bw = self.estimator(nxt, prev)
        for i, (_, middle, _) in enumerate(self._triples):
            predicted = interpolate_midframe(prev[i], nxt[i], flow_fw[i], flow_bw[i])
            self._errors.append(np.abs(predicted.astype(np.int16) - middle.astype(np.int16)).mean())
        self._triples = []

    def errors(self) -> np.ndarray:
        """float64 (⌊(T−1)/2⌋,) errors of every middle frame given so far; needs T >= 3."""
        if self._seen < 3:
            raise ValueError(f"video has {self._seen} frame(s); motion needs at least 3")
        self._flush()
        return np.asarray(self._errors, dtype=np.float64)

    def result(self) -> float:
        """(255 − mean MAE) / 255, as ``motion_smoothness``."""
        return float((255.0 - self.errors().mean()) / 255.0)


def interpolation_errors(video: np.ndarray, estimator: FlowEstimator,
                         batch_size: int = PAIRS_PER_BATCH) -> np.ndarray:
    """Mean absolute error (0-255) of each interpolated odd frame 1, 3, 5, ... that has a next frame.

    Args:
        video: uint8 (T, H, W, 3), T >= 3.

    Returns:
        float64 (⌊(T−1)/2⌋,).
    """
    check_video(video, min_frames=3)
    stream = SmoothnessStream(estimator, batch_size)
    for frame in video:
        stream.add(frame)
    return stream.errors()


def motion_smoothness(video: np.ndarray, estimator: FlowEstimator) -> float:
    """Flow-warp stand-in for VBench's motion smoothness, (255 − mean MAE) / 255, in [0, 1]; needs T >= 3."""
    return float((255.0 - interpolation_errors(video, estimator).mean()) / 255.0)
