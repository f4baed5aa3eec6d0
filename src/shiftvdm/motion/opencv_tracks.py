"""Weight-free point tracks: pyramidal Lucas–Kanade chained frame to frame, with a forward–backward check.

Stand-in for the reference's CoTracker3 (shift-reference-rewards.md §7.2). For each step t -> t+1
every point is tracked forward with LK, the result is tracked back to frame t, and the distance
between the start and the round trip (the forward–backward error, in original pixels) decides:

* visibility: the point stays visible while LK succeeds both ways, the round-trip error is at most
  ``fb_threshold_px`` and the point stays inside the frame. Chained LK cannot re-identify a point
  once it has lost it, so a lost point stays invisible for the rest of the clip (it keeps being
  followed from its last estimate, and is held in place when LK fails outright);
* confidence: exp(-fb_error / ``confidence_scale_px``) per frame (1 on frame 0), 0 where LK failed.

Small frames are upsampled by ``s = ceil(min_side / min(H, W))`` as for DIS (see opencv_flow), the
LK window and pyramid act on the upsampled frames, and positions are reported in original pixels.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from shiftvdm.errors import ConfigError
from shiftvdm.motion.base import Tracks, check_queries, check_video, to_gray, upsample_factor

logger = logging.getLogger(__name__)


class LucasKanadeTracker:
    """Pyramidal LK tracks from frame-0 queries (the default tracker, name "lk").

    Args:
        win_size: LK window side in working (possibly upsampled) pixels.
        max_level: number of pyramid levels above the base (OpenCV ``maxLevel``).
        fb_threshold_px: largest forward–backward error, in original pixels, of a visible point.
        confidence_scale_px: error scale of the per-frame confidence, in original pixels.
        min_side: frames with a shorter side below this are upsampled first.
        min_eig_threshold: OpenCV's texture test; points in flat regions fail it (status 0).
        max_iterations, epsilon: LK stopping criteria per pyramid level.
    """

    name = "lk"

    def __init__(self, win_size: int = 21, max_level: int = 3, fb_threshold_px: float = 1.0,
                 confidence_scale_px: float = 0.5, min_side: int = 64, min_eig_threshold: float = 1e-4,
                 max_iterations: int = 30, epsilon: float = 0.01) -> None:
        if win_size < 3 or max_level < 0 or fb_threshold_px <= 0 or confidence_scale_px <= 0:
            raise ConfigError(f"lk: invalid options win_size={win_size}, max_level={max_level}, "
                              f"fb_threshold_px={fb_threshold_px}, confidence_scale_px={confidence_scale_px}")
        self.win_size = int(win_size)
        self.max_level = int(max_level)
        self.fb_threshold_px = float(fb_threshold_px)
        self.confidence_scale_px = float(confidence_scale_px)
        self.min_side = int(min_side)
        self.min_eig_threshold = float(min_eig_threshold)
        self.criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, int(max_iterations), float(epsilon))

    def _lk(self, gray_from: np.ndarray, gray_to: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        moved, status, _ = cv2.calcOpticalFlowPyrLK(
            gray_from, gray_to, points.reshape(-1, 1, 2), None, winSize=(self.win_size, self.win_size),
            maxLevel=self.max_level, criteria=self.criteria, flags=0, minEigThreshold=self.min_eig_threshold)
        moved = moved.reshape(-1, 2)
        ok = status.reshape(-1).astype(bool) & np.all(np.isfinite(moved), axis=1)
        return moved, ok

    def __call__(self, video: np.ndarray, queries: np.ndarray) -> Tracks:
        """video uint8 (T, H, W, 3) or (T, H, W); queries (N, 2) (x, y) on frame 0 -> Tracks."""
        check_video(video, min_frames=1)
        num_frames, height, width = video.shape[:3]
        queries = check_queries(queries, height, width)
        scale = upsample_factor(height, width, self.min_side)
        gray = to_gray(video)
        if scale > 1:
            size = (width * scale, height * scale)
            gray = np.stack([cv2.resize(g, size, interpolation=cv2.INTER_CUBIC) for g in gray])
        # pixel centres: original x maps to s*x + (s-1)/2 in the upsampled frame
        offset = (scale - 1) / 2.0
        upper = np.array([width - 1, height - 1], dtype=np.float32)

        num_points = queries.shape[0]
        points = np.empty((num_frames, num_points, 2), dtype=np.float32)
        visible = np.zeros((num_frames, num_points), dtype=bool)
        confidence = np.zeros((num_frames, num_points), dtype=np.float32)
        points[0], visible[0], confidence[0] = queries, True, 1.0

        current = (queries * scale + offset).astype(np.float32)
        alive = np.ones(num_points, dtype=bool)
        for t in range(num_frames - 1):
            forward, ok_fw = self._lk(gray[t], gray[t + 1], current)
            # The round trip only matters where the forward pass succeeded (elsewhere ok is False and
            # the error is never read); LK treats points independently, so tracking the subset back
            # gives the same numbers and skips the points on flat background that fail forward.
            fb_error = np.full(num_points, np.inf, dtype=np.float32)
            ok_bw = np.zeros(num_points, dtype=bool)
            if ok_fw.any():
                backward, ok_bw[ok_fw] = self._lk(gray[t + 1], gray[t], forward[ok_fw])
                fb_error[ok_fw] = np.linalg.norm(backward - current[ok_fw], axis=1) / scale
            ok = ok_fw & ok_bw & np.isfinite(fb_error)
            nxt = np.where(ok_fw[:, None], forward, current)
            nxt_orig = (nxt - offset) / scale
            inside = np.all((nxt_orig >= 0) & (nxt_orig <= upper), axis=1)
            nxt_orig = np.clip(nxt_orig, 0, upper)
            alive &= ok & inside & (fb_error <= self.fb_threshold_px)
            points[t + 1] = nxt_orig
            visible[t + 1] = alive
            confidence[t + 1] = np.where(ok, np.exp(-np.where(ok, fb_error, 0.0) / self.confidence_scale_px), 0.0)
            current = (nxt_orig * scale + offset).astype(np.float32)
        return Tracks(points=points, visible=visible, confidence=confidence)
