"""motion/opencv_flow.py: the weight-free flow estimators (DIS, the default, and Farnebäck).

What a user relies on: (N, H, W, 2) float32 flow from a to b in ORIGINAL pixels, including on small frames
that are upsampled internally, and option errors that name the estimator and the option.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from shiftvdm.errors import ConfigError, DataError
from shiftvdm.motion.opencv_flow import DISFlow, FarnebackFlow


def texture(size: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB texture (blurred noise), uint8 (size, size, 3)."""
    noise = np.random.default_rng(seed).random((size, size, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 1.5)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return (smooth * 255).astype(np.uint8)


def shifted_pair(size: int, dx: int, dy: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frames a, b (1, size, size, 3) where b is a translated by (dx, dy) pixels (crops of one larger texture)."""
    big = texture(size + 16, seed)
    a = big[8:8 + size, 8:8 + size]
    b = big[8 - dy:8 - dy + size, 8 - dx:8 - dx + size]  # b(x + dx, y + dy) = a(x, y)
    return a[None], b[None]


def interior_median(flow: np.ndarray, margin: int) -> np.ndarray:
    return np.median(flow[0, margin:-margin, margin:-margin].reshape(-1, 2), axis=0)


@pytest.mark.parametrize("estimator", [DISFlow(), DISFlow(preset="fast"), FarnebackFlow()], ids=["dis", "dis-fast", "farneback"])
@pytest.mark.parametrize("size", [24, 64])
def test_a_translation_is_measured_in_original_pixels(estimator, size):
    a, b = shifted_pair(size, dx=3, dy=-2)
    flow = estimator(a, b)
    assert flow.shape == (1, size, size, 2) and flow.dtype == np.float32
    # 24 px frames are upsampled 3x internally (min_side 64); the flow is still reported in original pixels
    np.testing.assert_allclose(interior_median(flow, size // 4), [3.0, -2.0], atol=0.35)


def test_identical_frames_have_zero_flow_and_batches_are_independent():
    a, b = shifted_pair(32, dx=2, dy=1)
    frames_a, frames_b = np.concatenate([a, a]), np.concatenate([a, b])
    flow = DISFlow()(frames_a, frames_b)
    assert np.abs(flow[0]).max() < 0.05
    np.testing.assert_array_equal(flow[1], DISFlow()(a, b)[0])  # pair 1 does not depend on pair 0
    gray = DISFlow()(frames_a[..., 0], frames_b[..., 0])  # (N, H, W) grayscale input is accepted
    assert gray.shape == (2, 32, 32, 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_upsampling_factor_reports_the_same_pixels(seed):
    # 24 px frames: native (min_side 0), 2x (min_side 48) and 3x (the default 64) agree on a (2, 1) px shift
    a, b = shifted_pair(24, dx=2, dy=1, seed=seed)
    for min_side in (0, 48, 64):
        np.testing.assert_allclose(interior_median(DISFlow(min_side=min_side)(a, b), 6), [2.0, 1.0], atol=0.1)


def test_bad_options_and_inputs_are_refused_by_name():
    with pytest.raises(ConfigError, match="dis: unknown preset 'slow'"):
        DISFlow(preset="slow")
    with pytest.raises(ConfigError, match="min_side must be >= 0"):
        DISFlow(min_side=-1)
    with pytest.raises(ConfigError, match="poly_n must be 5 or 7"):
        FarnebackFlow(poly_n=6)
    with pytest.raises(ConfigError, match="farneback: invalid options"):
        FarnebackFlow(pyr_scale=1.0)
    a, b = shifted_pair(24, 1, 1)
    with pytest.raises(DataError, match="differ in shape"):
        DISFlow()(a, b[:, :20])
    with pytest.raises(DataError, match="uint8"):
        DISFlow()(a.astype(np.float32), b.astype(np.float32))
