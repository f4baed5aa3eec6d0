"""eval/sprites.py: sprite-tracking motion metrics on hand-built clips whose motion is known exactly.

What a user relies on: a bright square moving 3 px/frame measures speed 3 and displacement 3·(T−1); a still one
counts as static; a sprite that vanishes makes its clip lost (speed undefined, not 0); colour mode tracks a
sprite that brightness misses; background flicker and the speed distance to a reference are the defined numbers;
malformed input is refused.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from shiftvdm.errors import DataError
from shiftvdm.eval.sprites import sprite_motion_metrics

T, H, W = 4, 16, 24


def clip(xs: list[int | None], y: int = 6, color=(255, 255, 255), background: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8: a 2×2 square of ``color`` at column xs[t] (None: absent) on a flat background."""
    video = np.full((len(xs), H, W, 3), background, np.uint8)
    for t, x in enumerate(xs):
        if x is not None:
            video[t, y:y + 2, x:x + 2] = color
    return video


def test_known_motion_gives_known_numbers():
    moving, still = clip([2, 5, 8, 11]), clip([10, 10, 10, 10])
    m = sprite_motion_metrics(np.stack([moving, still]))
    np.testing.assert_allclose(m.centroids[0, :, 0], [2.5, 5.5, 8.5, 11.5])  # (x, y) of the square's centre
    np.testing.assert_allclose(m.centroids[0, :, 1], 6.5)
    np.testing.assert_allclose(m.per_clip["speed"], [3.0, 0.0])
    np.testing.assert_allclose(m.per_clip["displacement"], [9.0, 0.0])
    np.testing.assert_allclose(m.per_clip["mass_speed"], [3.0, 0.0])
    np.testing.assert_allclose(m.per_clip["mass_ratio"], [1.0, 1.0])  # the sprite neither fades nor grows
    a = m.aggregate
    assert a["speed"] == pytest.approx(1.5) and a["displacement"] == pytest.approx(4.5)
    assert a["static_fraction"] == 0.5 and a["lost_fraction"] == 0.0 and a["frames_tracked"] == 1.0
    assert a["area"] == 4.0 and a["max_intensity"] == pytest.approx(1.0) and a["bg_flicker"] == 0.0
    assert not m.lost.any() and m.notes == []
    assert m.clip_dicts()[0]["sprite_speed"] == pytest.approx(3.0) and len(m.clip_dicts()) == 2


def test_a_vanishing_sprite_makes_its_clip_lost_not_still():
    m = sprite_motion_metrics([clip([2, 5, None, 11]), clip([2, 4, 6, 8])])
    assert m.lost[0].tolist() == [False, False, True, False] and not m.lost[1].any()
    assert math.isnan(m.per_clip["speed"][0]) and m.per_clip["speed"][1] == pytest.approx(2.0)
    assert m.aggregate["speed"] == pytest.approx(2.0)  # averaged over clips that never lose the sprite
    assert m.aggregate["lost_fraction"] == 0.5
    assert m.aggregate["frames_tracked"] == pytest.approx((2 / 3 + 1) / 2)
    assert m.clip_dicts()[0]["sprite_speed"] is None  # NaN -> null in JSON

    gone = sprite_motion_metrics([clip([None, 3, 3, 3])])
    assert math.isnan(gone.aggregate["speed"]) and "every clip loses its sprite" in gone.notes[0]


def test_colour_mode_tracks_a_sprite_brightness_misses():
    red = clip([1, 3, 5, 7], color=(255, 0, 0), background=40)  # gray 1/3: below the brightness threshold
    assert sprite_motion_metrics([red]).aggregate["lost_fraction"] == 1.0
    m = sprite_motion_metrics([red], sprite_colors=np.array([255, 0, 0]))  # 0-255 or 0-1 both accepted
    assert m.aggregate["speed"] == pytest.approx(2.0) and m.aggregate["lost_fraction"] == 0.0
    assert sprite_motion_metrics([red], sprite_colors=np.array([1.0, 0, 0])).aggregate["speed"] == pytest.approx(2.0)
    with pytest.raises(DataError, match=r"sprite_colors: expected \(3,\) or \(N=1, 3\)"):
        sprite_motion_metrics([red], sprite_colors=np.ones((2, 3)))


def test_background_flicker_is_the_mean_gray_change_away_from_the_sprite():
    video = clip([2, 5, 8, 11])
    video[1::2][video[1::2].sum(-1) == 0] = 51  # the background blinks 0 -> 0.2 -> 0 -> 0.2 in gray
    m = sprite_motion_metrics([video])
    assert m.aggregate["bg_flicker"] == pytest.approx(0.2, abs=1e-6)
    assert m.aggregate["speed"] == pytest.approx(3.0)  # the tracker ignores the dim background


def test_speed_w1_is_the_wasserstein_distance_of_the_steps_to_the_reference():
    ours = [clip([2, 5, 8, 11]), clip([11, 8, 5, 2])]  # steps of 3 px
    reference = [clip([2, 3, 4, 5])]  # steps of 1 px
    m = sprite_motion_metrics(ours, reference=reference)
    assert m.aggregate["speed_w1"] == pytest.approx(2.0)
    assert sprite_motion_metrics(ours, reference=ours).aggregate["speed_w1"] == pytest.approx(0.0)


@pytest.mark.parametrize("videos, message", [
    (np.zeros((1, T, H, W, 3), np.float32), "expected uint8 clips"),
    (np.zeros((1, 1, H, W, 3), np.uint8), "at least 2 frames"),
    ([np.zeros((T, H, W, 3), np.uint8), np.zeros((T, H, W + 1, 3), np.uint8)], "clips of one shape"),
    ([], "no clips"),
])
def test_malformed_clips_are_refused(videos, message):
    with pytest.raises(DataError, match=message):
        sprite_motion_metrics(videos)
