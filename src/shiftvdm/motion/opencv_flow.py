"""Weight-free dense optical flow from OpenCV: DIS (default) and Farnebäck.

Stand-ins for the reference's SEA-RAFT (shift-reference-rewards.md §7.2). Rewards are never
differentiated through the flow, so a non-differentiable estimator is a legitimate drop-in.

Small frames: both estimators run on grayscale frames upsampled (bicubic) by the integer factor
``s = ceil(min_side / min(H, W))`` when the shorter side is below ``min_side`` (default 64 px), and
the flow is area-averaged back to the original grid and divided by ``s``, so it is always reported
in ORIGINAL pixel units. Why: DIS raises on frames under ~10 px, and on 16-32 px frames its coarsest
pyramid level (bounded by its 8 px patches) cannot reach displacements of 3-5 px; measured on a
real texture, a (4.3, -3.1) px shift of a 32×32 crop is off by 1.3 px natively and by 0.05 px at 2×.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from shiftvdm.errors import ConfigError
from shiftvdm.motion.base import check_pair, to_gray, upsample_factor

logger = logging.getLogger(__name__)

_DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


class _UpsamplingFlow:
    """Shared driver: grayscale, optional upsampling, one OpenCV call per pair, rescaled result."""

    name = "base"

    def __init__(self, min_side: int = 64) -> None:
        if min_side < 0:
            raise ConfigError(f"{self.name}: min_side must be >= 0, got {min_side}")
        self.min_side = int(min_side)

    def _pair_flow(self, gray_a: np.ndarray, gray_b: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, frames_a: np.ndarray, frames_b: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) or (N, H, W), twice -> float32 (N, H, W, 2) flow a -> b in pixels."""
        check_pair(frames_a, frames_b)
        gray_a, gray_b = to_gray(frames_a), to_gray(frames_b)
        num, height, width = gray_a.shape
        scale = upsample_factor(height, width, self.min_side)
        flows = np.empty((num, height, width, 2), dtype=np.float32)
        for i in range(num):
            a, b = gray_a[i], gray_b[i]
            if scale > 1:
                size = (width * scale, height * scale)
                a = cv2.resize(a, size, interpolation=cv2.INTER_CUBIC)
                b = cv2.resize(b, size, interpolation=cv2.INTER_CUBIC)
            flow = self._pair_flow(np.ascontiguousarray(a), np.ascontiguousarray(b))
            if scale > 1:
                # INTER_AREA averages each s×s block, whose centre is the original pixel centre.
                flow = cv2.resize(flow, (width, height), interpolation=cv2.INTER_AREA) / scale
            flows[i] = flow
        return flows


class DISFlow(_UpsamplingFlow):
    """OpenCV Dense Inverse Search flow (Kroeger et al. 2016).

    Args:
        preset: "medium" (default; 23 ms per 320×576 pair in the reference notes), "fast" or "ultrafast".
        min_side: frames whose shorter side is below this are upsampled first (see module docstring).
    """

    name = "dis"

    def __init__(self, preset: str = "medium", min_side: int = 64) -> None:
        super().__init__(min_side)
        if preset not in _DIS_PRESETS:
            raise ConfigError(f"dis: unknown preset {preset!r}; expected one of {sorted(_DIS_PRESETS)}")
        self.preset = preset

    def _pair_flow(self, gray_a: np.ndarray, gray_b: np.ndarray) -> np.ndarray:
        # A fresh instance per pair: DIS keeps state between calls when used with an initial flow,
        # and creating one costs microseconds.
        dis = cv2.DISOpticalFlow_create(_DIS_PRESETS[self.preset])
        return dis.calc(gray_a, gray_b, None)


class FarnebackFlow(_UpsamplingFlow):
    """OpenCV Farnebäck polynomial-expansion flow (3 pyramid levels, the reference notes' setting)."""

    name = "farneback"

    def __init__(self, levels: int = 3, pyr_scale: float = 0.5, winsize: int = 15, iterations: int = 3,
                 poly_n: int = 5, poly_sigma: float = 1.2, min_side: int = 64) -> None:
        super().__init__(min_side)
        if levels < 1 or not 0 < pyr_scale < 1 or winsize < 3 or poly_n not in (5, 7):
            raise ConfigError(f"farneback: invalid options levels={levels}, pyr_scale={pyr_scale}, "
                              f"winsize={winsize}, poly_n={poly_n} (poly_n must be 5 or 7)")
        self.levels, self.pyr_scale, self.winsize = int(levels), float(pyr_scale), int(winsize)
        self.iterations, self.poly_n, self.poly_sigma = int(iterations), int(poly_n), float(poly_sigma)

    def _pair_flow(self, gray_a: np.ndarray, gray_b: np.ndarray) -> np.ndarray:
        return cv2.calcOpticalFlowFarneback(gray_a, gray_b, None, self.pyr_scale, self.levels, self.winsize,
                                            self.iterations, self.poly_n, self.poly_sigma, 0)
