"""The demo's data scenarios: the generic and target sets share the motion law and differ in appearance, and
the LC query points that land on the sprite are counted from the ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ks_2samp

from shiftvdm.recipes.demo.scenarios import ClipLook, MotionLaw, Scenario, queries_on_objects
from shiftvdm.data.synthetic import make_sprite_clips
from shiftvdm.errors import ConfigError
from shiftvdm.recipes.demo.config import SCENARIO_PRESETS, load_demo_config
from shiftvdm.recipes.demo.datasets import scenario_sets


@pytest.fixture(scope="module")
def collapse_sets():
    cfg = load_demo_config(SCENARIO_PRESETS["collapse"], False, ["data.generic_clips=600", "data.target_clips=600",
                                                                 "data.heldout_clips=64"])
    return cfg, scenario_sets(cfg)


def test_collapse_sets_share_the_motion_law(collapse_sets):
    cfg, sets = collapse_sets
    generic, target = sets["generic"], sets["target"]
    assert not generic.is_static.any() and not target.is_static.any()  # the base's data moves
    speed_g = np.linalg.norm(generic.velocities[:, 0], axis=-1)
    speed_t = np.linalg.norm(target.velocities[:, 0], axis=-1)
    lo, hi = cfg.data.scenario.motion.speed
    assert speed_g.min() >= lo - 1e-5 and speed_g.max() <= hi + 1e-5
    assert ks_2samp(speed_g, speed_t).pvalue > 0.01  # one speed law
    angle_g = np.arctan2(generic.velocities[:, 0, 1], generic.velocities[:, 0, 0])
    angle_t = np.arctan2(target.velocities[:, 0, 1], target.velocities[:, 0, 0])
    assert ks_2samp(angle_g, angle_t).pvalue > 0.01  # one direction law (uniform)
    # per-frame steps of the recorded trajectories (reflections included) have one distribution
    steps_g = np.linalg.norm(np.diff(generic.trajectories[:, 0], axis=1), axis=-1).ravel()
    steps_t = np.linalg.norm(np.diff(target.trajectories[:, 0], axis=1), axis=-1).ravel()
    assert abs(np.median(steps_g) - np.median(steps_t)) < 0.25
    assert np.all(generic.radii[:, 0] == target.radii[:, 0])  # one sprite size


def test_collapse_sets_differ_in_appearance(collapse_sets):
    _, sets = collapse_sets
    generic, target = sets["generic"], sets["target"]
    names = generic.shape_names
    assert set(names[s] for s in generic.shapes[:, 0]) == {"square"}
    assert set(names[s] for s in target.shapes[:, 0]) == {"disc"}
    # flat generic backgrounds have no spatial texture; target backgrounds do
    texture = lambda bg: bg.astype(np.float64).std(axis=(1, 2)).mean()  # noqa: E731
    assert texture(generic.backgrounds) < 0.5
    assert texture(target.backgrounds) > 5.0
    assert not np.array_equal(sets["heldout"].videos[:8], target.videos[:8])  # held-out clips are new draws


def test_static_base_preset_keeps_the_first_scenario():
    cfg = load_demo_config(SCENARIO_PRESETS["static-base"], False, ["data.generic_clips=300", "data.target_clips=50",
                                                                    "data.heldout_clips=10"])
    sets = scenario_sets(cfg)
    assert 0.5 < sets["generic"].is_static.mean() < 0.7 and not sets["target"].is_static.any()
    # exactly the clips the first demo made (same generator call)
    old = make_sprite_clips(300, 8, 16, 0, num_sprites=1, sprite_size=3.0, speed=(1.5, 2.5), static_prob=0.6,
                            background="flat", shapes=("square",), antialias=False).videos
    assert np.array_equal(sets["generic"].videos, old)


def test_queries_on_objects_counts_from_ground_truth():
    clips = make_sprite_clips(3, 4, 16, seed=2, num_sprites=1, sprite_size=5.0, speed=0.0, background="flat",
                              shapes=("square",), antialias=False)
    cx, cy = clips.trajectories[0, 0, 0]
    grid = np.stack(np.meshgrid(np.arange(16), np.arange(16)), -1).reshape(-1, 2).astype(np.float32)
    counts = queries_on_objects(grid, clips)
    assert counts.tolist() == [25, 25, 25]  # a 5x5 square covers 25 pixel centres
    inside = np.array([[cx, cy], [cx + 2, cy - 2]], np.float32)
    outside = np.array([[cx + 3, cy], [cx, cy - 2.6]], np.float32)
    assert queries_on_objects(inside, clips)[0] == 2
    assert queries_on_objects(outside, clips)[0] == 0
    discs = make_sprite_clips(1, 4, 16, seed=3, num_sprites=1, sprite_size=5.0, speed=0.0, background="flat",
                              shapes=("disc",), antialias=False)
    # the rendered disc (pixels brighter than the background) is exactly what the count calls "on the sprite"
    frame = discs.videos[0, 0].astype(np.float64).mean(-1)
    rendered = int((frame > frame.min() + 20).sum())
    assert queries_on_objects(grid, discs)[0] == rendered
    with pytest.raises(ConfigError, match="queries must be"):
        queries_on_objects(np.zeros((4, 3)), clips)


def test_demo_records_queries_on_objects(tmp_path):
    from shiftvdm.recipes.demo.datasets import make_data

    cfg = load_demo_config(SCENARIO_PRESETS["collapse"], True, ["data.generic_clips=40", "data.target_clips=60",
                                                                "data.heldout_clips=8"])
    result = make_data(cfg, tmp_path)
    q = result["queries"]
    side = cfg.data.scenario.motion.sprite_size
    expected = q["per_clip"] * side * side / cfg.data.size ** 2  # sprite area share of the frame (square)
    assert q["clips_counted"] == 60
    assert 0.5 * expected < q["on_object_mean"] < 1.6 * expected


def test_looks_and_laws_refuse_bad_values():
    with pytest.raises(ConfigError, match="brighter"):
        ClipLook(color_range=(0.2, 0.5), background_range=(0.1, 0.3))
    with pytest.raises(ConfigError, match="static_prob"):
        ClipLook(static_prob=1.5)
    with pytest.raises(ConfigError, match="MotionLaw"):
        MotionLaw(speed=(2.0, 1.0))
    assert Scenario().target.background == "textured"
