"""Dynamic degree by VBench's rule: is a clip dynamic, and the fraction of dynamic clips.

Reference: Vchitect/VBench ``vbench/dynamic_degree.py`` @ 45e79ec1 (HEAD). Per clip:

1. frames RGB at native resolution, sub-sampled to about 8 fps: every ``interval = max(1, round(fps/8))``-th
   frame starting with frame 0 (Python's ``round``, half to even);
2. optical flow of each consecutive pair of kept frames by RAFT (``raft-things.pth``, 20 iterations,
   ``test_mode``) on the frames replicate-padded (centred) to a multiple of 8; the pair's score is the
   mean of the ``int(h·w·0.05)`` largest per-pixel magnitudes of that padded flow;
3. threshold = 6 · min(H, W)/256 pixels (H, W of the frames before padding); the clip is dynamic once
   ``round(4·N/16)`` pairs score strictly above it, N being the number of KEPT frames (checked after each
   pair, so ``round(...) == 0`` is met by the first pair, and a clip without pairs is static);
4. the dimension score is the fraction of dynamic clips.

"VBench-exact": with ``get_flow_estimator("raft", checkpoint=raft-things.pth, iters=20)`` this module
is that procedure (our RAFT equals the official one; the pair score is computed on the padded flow in
float32 as VBench does). Frames are decoded by PyAV, VBench decodes with OpenCV: both use FFmpeg, but a
clip whose decoders disagree can differ. With any other estimator (DIS by default) it is VBench's rule
applied to another flow, and results say so. On clips whose padded short side is under 128 px, RAFT runs
on upsampled frames (VBench's RAFT cannot run there), so those verdicts are not exact either.

Not VBench's rule: its commit 11abda97 (2024-07) multiplied the threshold by max(1, 8/fps); the
multi-GPU rewrite a week later (fc4620b) dropped that factor and HEAD has none, so neither do we.
CIntellifusion/VideoDPO's copy (``OmniScore/vbench/dynamic_degree.py``) returns a continuous rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shiftvdm.eval.motion_score import FlowPairStatistics, FlowPairStream
from shiftvdm.motion.base import FlowEstimator, check_video

VBENCH_TARGET_FPS = 8.0  # VBench sub-samples to about this rate
BASE_THRESHOLD_PX = 6.0  # threshold at a 256-px short side
BASE_SIDE_PX = 256.0


def sampling_interval(fps: float) -> int:
    """Keep every n-th frame: n = max(1, round(fps / 8)) (Python's round, as the reference)."""
    return max(1, round(fps / VBENCH_TARGET_FPS))


def dynamic_threshold(height: int, width: int) -> float:
    """Top-5 % flow magnitude, in pixels, a pair must exceed: 6 · min(H, W)/256 (VBench ``set_params``)."""
    return BASE_THRESHOLD_PX * min(height, width) / BASE_SIDE_PX


def required_pairs(num_sampled_frames: int) -> int:
    """How many pairs must exceed the threshold: round(4 · N / 16)."""
    return round(4 * num_sampled_frames / 16.0)


@dataclass
class DynamicVerdict:
    """VBench's dynamic/static decision for one clip.

    Attributes:
        is_dynamic: the verdict.
        pair_scores: top-5 % mean flow magnitude of each sampled pair, in pixels.
        threshold: the pixel threshold for this clip's size.
        required_pairs: pairs that had to exceed it.
        interval: frame sub-sampling interval used.
        num_sampled_frames: frames kept after sub-sampling.
        vbench_exact: True when the flow was VBench's (RAFT large, 20 iterations, padded, native size).
    """

    is_dynamic: bool
    pair_scores: list[float]
    threshold: float
    required_pairs: int
    interval: int
    num_sampled_frames: int
    vbench_exact: bool = False

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


class DynamicDegreeStream:
    """``video_dynamic_degree`` of frames given one at a time: holds only the kept (sub-sampled) frames
    of the current flow batch.

    Args:
        fps: the clip's frame rate.
        estimator: the flow estimator.
        consecutive: a ``FlowPairStream`` fed the same frames, reused when the interval is 1 (the caller
            feeds it; this stream does not).
    """

    def __init__(self, fps: float, estimator: FlowEstimator, *, consecutive: FlowPairStream | None = None) -> None:
        if not fps > 0:
            raise ValueError(f"video_dynamic_degree: fps must be positive, got {fps}")
        self.estimator = estimator
        self.interval = sampling_interval(fps)
        self._shared = consecutive if self.interval == 1 else None
        self._own = FlowPairStream(estimator) if self._shared is None else None
        self._seen = 0
        self._kept = 0
        self._size: tuple[int, int] | None = None

    def add(self, frame: np.ndarray) -> None:
        if self._size is None:
            self._size = (int(frame.shape[0]), int(frame.shape[1]))
        if self._seen % self.interval == 0:  # frames 0, n, 2n, ...
            self._kept += 1
            if self._own is not None:
                self._own.add(frame)
        self._seen += 1

    def result(self) -> DynamicVerdict:
        if self._seen < 2:
            raise ValueError(f"video has {self._seen} frame(s); motion needs at least 2")
        stats = None
        if self._shared is not None:
            stats = self._shared.result()
        elif self._kept >= 2:
            stats = self._own.result()
        scores = [] if stats is None else stats.top_magnitude.tolist()
        threshold = dynamic_threshold(*self._size)
        needed = required_pairs(self._kept)
        exact = bool(getattr(self.estimator, "vbench_exact", False)) and (stats is None or stats.native)
        return DynamicVerdict(is_dynamic=judge_dynamic(scores, threshold, needed), pair_scores=scores,
                              threshold=threshold, required_pairs=needed, interval=self.interval,
                              num_sampled_frames=self._kept, vbench_exact=exact)


def video_dynamic_degree(video: np.ndarray, fps: float, estimator: FlowEstimator, *,
                         consecutive: FlowPairStatistics | None = None) -> DynamicVerdict:
    """VBench's dynamic verdict for one clip.

    Args:
        video: uint8 (T, H, W, 3) at native resolution, T >= 2.
        fps: the clip's frame rate (8 for clips that record none, as VBench assumes for image folders).
        estimator: the flow estimator (VBench-exact with RAFT large from raft-things.pth at 20 iterations).
        consecutive: optional ``flow_pair_statistics`` of the clip's consecutive frames, reused when the
            sub-sampling interval is 1 (saves recomputing the flow).
    """
    check_video(video, min_frames=2)
    stream = DynamicDegreeStream(fps, estimator, consecutive=_Given(consecutive) if consecutive else None)
    for frame in video:
        stream.add(frame)
    return stream.result()


class _Given:
    """Statistics computed beforehand, in the place of a ``FlowPairStream``."""

    def __init__(self, stats: FlowPairStatistics) -> None:
        self.stats = stats

    def result(self) -> FlowPairStatistics:
        return self.stats


def dynamic_degree(verdicts: list[bool] | list[DynamicVerdict]) -> float:
    """VBench's dimension score: the fraction of dynamic clips."""
    if not verdicts:
        raise ValueError("dynamic_degree: no clips")
    flags = [v.is_dynamic if isinstance(v, DynamicVerdict) else bool(v) for v in verdicts]
    return float(np.mean(flags))


def vbench_status(estimator: FlowEstimator, exact_flags: list[bool]) -> tuple[bool, str]:
    """Whether a set's dynamic degree is VBench-exact, and the note that says so (or why not).

    Args:
        estimator: the flow estimator the clips were scored with.
        exact_flags: ``DynamicVerdict.vbench_exact`` of every scored clip.
    """
    describe = getattr(estimator, "describe", None)
    flow = describe() if callable(describe) else estimator.name.upper()
    if exact_flags and all(exact_flags):
        return True, (f"dynamic degree: VBench-exact ({flow}; frames every max(1, round(fps/8)); centred "
                      "replicate padding; top-5 % magnitude of the padded flow; threshold 6·min(H,W)/256; "
                      "dynamic once round(4·N/16) pairs exceed it)")
    if hasattr(estimator, "vbench_exact"):
        why = []
        if not getattr(estimator, "vbench_exact"):
            why.append(f"VBench uses RAFT large at {20} iterations, this run used {flow}")
        if exact_flags and not all(exact_flags) and getattr(estimator, "vbench_exact"):
            why.append(f"{exact_flags.count(False)} clip(s) under 128 px padded ran on upsampled frames")
        return False, "dynamic degree: VBench's rule, not VBench-exact: " + "; ".join(why or ["no clip scored"])
    return False, (f"dynamic degree: VBench's rule on a stand-in flow: VBench uses RAFT (raft-things, 20 "
                   f"iterations), this run used {flow} optical flow, so verdicts near the threshold can "
                   "differ from VBench's (use --flow raft --flow-checkpoint raft-things.pth for VBench-exact)")
