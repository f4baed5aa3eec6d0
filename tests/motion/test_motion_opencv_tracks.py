"""motion/opencv_tracks.py: the weight-free point tracker (pyramidal Lucas–Kanade, forward–backward checked).

What a user relies on: tracks from frame-0 queries in original pixels, visibility that drops (for good) when a
point leaves the frame or cannot be followed, and a confidence of 1 on frame 0 and exp(-fb_error/scale) after.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from shiftvdm.errors import ConfigError, DataError
from shiftvdm.motion.base import Tracks
from shiftvdm.motion.opencv_tracks import LucasKanadeTracker


def panning_video(frames: int, size: int, dx: int, dy: int, seed: int = 0) -> np.ndarray:
    """uint8 (frames, size, size, 3): a smooth random texture translated by (dx, dy) px per frame."""
    pad = 8 + frames * max(abs(dx), abs(dy))
    noise = np.random.default_rng(seed).random((size + 2 * pad, size + 2 * pad, 3)).astype(np.float32)
    big = cv2.GaussianBlur(noise, (0, 0), 1.5)
    big = ((big - big.min()) / (big.max() - big.min()) * 255).astype(np.uint8)
    return np.stack([big[pad - t * dy:pad - t * dy + size, pad - t * dx:pad - t * dx + size] for t in range(frames)])


QUERIES = np.array([[10.0, 12.0], [16.0, 16.0], [20.5, 9.5]], dtype=np.float32)


@pytest.mark.parametrize("size", [32, 64])  # 32 px frames are tracked upsampled 2x, 64 px natively
def test_points_follow_a_translation_in_original_pixels(size):
    video = panning_video(5, size, dx=2, dy=1)
    tracks = LucasKanadeTracker()(video, QUERIES)
    assert isinstance(tracks, Tracks)
    assert tracks.points.shape == (5, 3, 2) and tracks.visible.shape == tracks.confidence.shape == (5, 3)
    expected = QUERIES[None] + np.arange(5)[:, None, None] * np.array([2.0, 1.0], dtype=np.float32)
    np.testing.assert_allclose(tracks.points, expected, atol=0.2)
    np.testing.assert_array_equal(tracks.points[0], QUERIES)  # frame 0 is the queries themselves
    assert tracks.visible.all()
    assert (tracks.confidence[0] == 1.0).all() and ((tracks.confidence > 0.5) & (tracks.confidence <= 1.0)).all()


def test_a_point_that_leaves_the_frame_stays_invisible_and_is_clipped():
    video = panning_video(5, 32, dx=3, dy=0, seed=1)
    queries = np.array([[16.0, 16.0], [26.0, 16.0]], dtype=np.float32)  # the second reaches x = 32 at frame 2
    tracks = LucasKanadeTracker()(video, queries)
    assert tracks.visible[:, 0].all()
    np.testing.assert_array_equal(tracks.visible[:, 1], [True, True, False, False, False])
    assert (tracks.points[..., 0] <= 31).all() and (tracks.points >= 0).all()  # positions stay inside the frame


def test_a_point_on_flat_background_is_lost_with_zero_confidence():
    video = panning_video(3, 32, dx=1, dy=1)
    video[:, :12, :12] = 128  # a flat corner: LK's texture test fails there
    tracks = LucasKanadeTracker()(video, np.array([[4.0, 4.0], [20.0, 20.0]], dtype=np.float32))
    np.testing.assert_array_equal(tracks.visible[:, 0], [True, False, False])
    assert (tracks.confidence[1:, 0] == 0).all()
    np.testing.assert_array_equal(tracks.points[1:, 0], [[4.0, 4.0], [4.0, 4.0]])  # held where LK failed
    assert tracks.visible[:, 1].all()


def test_threshold_decides_visibility_and_scale_the_confidence():
    video = panning_video(4, 32, dx=2, dy=1, seed=2)
    loose = LucasKanadeTracker(confidence_scale_px=0.5)(video, QUERIES)
    sharp = LucasKanadeTracker(confidence_scale_px=0.05)(video, QUERIES)
    np.testing.assert_array_equal(loose.points, sharp.points)  # the scale changes confidence only
    err = -0.5 * np.log(loose.confidence[1:])  # the forward-backward error behind each confidence
    np.testing.assert_allclose(sharp.confidence[1:], np.exp(-err / 0.05), rtol=1e-4, atol=1e-6)
    strict = LucasKanadeTracker(fb_threshold_px=1e-6)(video, QUERIES)
    assert not strict.visible[1:].all()  # no real round trip is exact to a micro-pixel


def test_bad_options_and_queries_are_refused():
    with pytest.raises(ConfigError, match="lk: invalid options"):
        LucasKanadeTracker(win_size=2)
    with pytest.raises(ConfigError, match="fb_threshold_px=0"):
        LucasKanadeTracker(fb_threshold_px=0)
    video = panning_video(3, 32, 1, 1)
    with pytest.raises(DataError, match="outside the 32x32 frame"):
        LucasKanadeTracker()(video, np.array([[40.0, 3.0]], dtype=np.float32))
    with pytest.raises(DataError, match="NaN"):
        LucasKanadeTracker()(video, np.array([[np.nan, 3.0]], dtype=np.float32))
