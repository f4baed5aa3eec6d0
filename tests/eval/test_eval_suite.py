"""eval/suite.py: ``evaluate_videos`` / ``prepare_reference``, the set-level aggregation and the input handling.

(The metrics themselves are checked one by one in test_eval.py.) What a user relies on: a set value is the
mean (or, for the dynamic degree, the share) of the per-clip values it reports, only the asked-for metric groups
are computed, unusable clips are listed with the reason (or refused with ``strict``), and the distances to a
reference are zero for the reference itself.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from shiftvdm.errors import DataError
from shiftvdm.eval.suite import DEFAULT_METRICS, METRIC_GROUPS, evaluate_videos, prepare_reference


def panning(frames: int, dx: int, seed: int = 0, size: int = 32) -> np.ndarray:
    """uint8 (frames, size, size, 3): a smooth random texture moving dx px per frame to the right."""
    noise = np.random.default_rng(seed).random((size + 8 + frames * abs(dx), size + 8 + frames * abs(dx), 3))
    big = cv2.GaussianBlur(noise.astype(np.float32), (0, 0), 1.5)
    big = ((big - big.min()) / (big.max() - big.min()) * 255).astype(np.uint8)
    x0 = 4 + frames * abs(dx)
    return np.stack([big[4:4 + size, x0 - t * dx:x0 - t * dx + size] for t in range(frames)])


STATIC, MOVING = panning(8, 0), panning(8, 2, seed=1)


def test_set_values_are_the_means_and_shares_of_the_clip_values():
    res = evaluate_videos([STATIC, MOVING, panning(8, 1, seed=2)], metrics=["dynamic_degree", "motion_score"])
    clips = res.per_video
    assert [c["name"] for c in clips] == ["videos_000", "videos_001", "videos_002"]
    assert [c["dynamic"] for c in clips] == [False, True, True]
    assert clips[0]["motion_score"] == 0.0 and abs(clips[1]["motion_score"] - 2.0) < 0.1
    assert res.aggregate["dynamic_degree"] == pytest.approx(2 / 3)
    assert res.aggregate["motion_score"] == pytest.approx(np.mean([c["motion_score"] for c in clips]))
    assert res.aggregate["motion_score_256"] == pytest.approx(np.mean([c["motion_score_256"] for c in clips]))
    assert clips[1]["motion_score_256"] == pytest.approx(clips[1]["motion_score"] * 256 / 32)  # short side 32 → 256
    assert res.counts == {"dynamic_degree": "3", "motion_score": "3", "motion_score_256": "3"}
    assert set(res.aggregate) == {"dynamic_degree", "motion_score", "motion_score_256"}  # only what was asked
    assert res.settings["metrics"] == ["dynamic_degree", "motion_score"] and res.settings["num_videos"] == 3


def test_float_clips_in_0_1_score_like_uint8():
    as_uint8 = evaluate_videos([MOVING], metrics=["motion_score", "flicker"])
    as_float = evaluate_videos([MOVING.astype(np.float32) / 255.0], metrics=["motion_score", "flicker"])
    for key in ("motion_score", "temporal_flicker"):
        assert as_float.aggregate[key] == pytest.approx(as_uint8.aggregate[key], rel=1e-6)


def test_the_reference_against_itself_has_zero_distances_and_is_prepared_once():
    reference = [MOVING, panning(8, 1, seed=3)]
    itself = evaluate_videos(reference, reference=reference, metrics=["frechet_motion", "appearance"])
    assert abs(itself.aggregate["frechet_motion_combined"]) < 1e-6
    assert abs(itself.aggregate["image_stats_frechet"]) < 1e-6
    other = evaluate_videos([STATIC, panning(8, 0, seed=4)], reference=reference,
                            metrics=["frechet_motion", "appearance"])
    assert other.aggregate["frechet_motion_combined"] > 1.0  # static clips against moving ones
    prepared = prepare_reference(reference, metrics=["frechet_motion", "appearance"])
    again = evaluate_videos([STATIC, panning(8, 0, seed=4)], reference=prepared, metrics=["frechet_motion", "appearance"])
    assert again.aggregate == other.aggregate
    alone = evaluate_videos([STATIC], metrics=["frechet_motion", "appearance"])
    assert "frechet_motion_combined" not in alone.aggregate
    assert any("no --reference" in note for note in alone.notes)


def test_unusable_clips_are_skipped_with_the_reason_or_refused_with_strict():
    res = evaluate_videos([MOVING, MOVING[:1]], metrics=["motion_score"])
    assert len(res.per_video) == 1 and res.settings["num_videos"] == 2
    assert res.skipped == [{"set": "videos", "name": "videos_001", "reason": res.skipped[0]["reason"]}]
    assert res.skipped[0]["reason"].startswith("too short: 1 frame")
    with pytest.raises(DataError, match="videos_001"):
        evaluate_videos([MOVING, MOVING[:1]], metrics=["motion_score"], strict=True)
    with pytest.raises(DataError, match="no usable"):
        evaluate_videos([MOVING[:2]], metrics=["motion_score"])
    with pytest.raises(DataError, match="no usable reference"):
        prepare_reference([MOVING[:1]])


def test_metric_groups_are_checked_by_name():
    assert set(DEFAULT_METRICS) == set(METRIC_GROUPS) - {"sprites"}  # sprites only when asked for
    with pytest.raises(DataError, match=r"unknown metric group\(s\) \['motion'\]"):
        evaluate_videos([MOVING], metrics=["motion"])
