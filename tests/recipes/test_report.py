"""The report's reading aids, by hand: columns that cannot separate the models are hidden, the best model per
column is marked, the hacking monitor counts fading, and the motion trail shows where a sprite went."""

from __future__ import annotations

import numpy as np

from shiftvdm.recipes.demo.report import (REFERENCE, best_models, comparison_verdicts, metric_table,
                                          motion_trail, separating_columns)

MODELS = {
    REFERENCE: {"static": 0.0, "dd": 1.0, "w1": 0.0, "area": 9.0},
    "a": {"static": 0.5, "dd": 1.0, "w1": 1.2, "area": 8.0},
    "b": {"static": 0.2, "dd": 1.0, "w1": 0.9, "area": 11.0},
}


def test_constant_columns_are_hidden_and_winners_marked():
    shown, hidden = separating_columns(MODELS, ["static", "dd", "w1"], REFERENCE)
    assert shown == ["static", "w1"] and hidden == ["dd"]
    assert best_models(MODELS, "w1", "lower", REFERENCE) == {"b"}
    assert best_models(MODELS, "area", "real", REFERENCE) == {"a"}  # |8 - 9| < |11 - 9|
    assert best_models(MODELS, "static", "higher", REFERENCE) == {"a"}
    page = metric_table({"models": MODELS, "columns": ["static", "dd", "w1"], "reference_model": REFERENCE,
                         "column_better": {"w1": "lower"}, "column_labels": {"dd": "dyn. degree"}})
    assert '<td class="best">0.900</td>' in page
    assert "cannot separate the models: dyn. degree = 1.000" in page
    assert ">dyn. degree</th>" not in page and ">w1</th>" in page  # the hidden column has no header


def _row(static: float, w1: float, area: float, lost: float, image: float) -> dict[str, float]:
    return {"sprite_static_fraction": static, "sprite_speed_w1": w1, "sprite_area": area,
            "sprite_lost_fraction": lost, "image_stats_frechet": image}


def test_hacking_monitor_counts_fading():
    models = {REFERENCE: _row(0.01, 0.0, 9.0, 0.0, 0.0), "base": _row(0.9, 1.7, 8.7, 0.08, 0.03),
              "sft": _row(0.5, 1.3, 8.2, 0.27, 0.035), "shift": _row(0.1, 0.85, 7.6, 0.59, 0.04)}
    lines = comparison_verdicts(models, shift="shift", time_matched="continued_sft", steps=150, baselines=[],
                                appearance_margin=0.25)
    monitor = next(line for line in lines if line.startswith("Hacking monitor"))
    assert "sprites fade more often than SFT's" in monitor and "no sign" not in monitor
    models["shift"]["sprite_lost_fraction"] = 0.28
    monitor = next(line for line in comparison_verdicts(models, shift="shift", time_matched="continued_sft", steps=150,
                                                        baselines=[], appearance_margin=0.25)
                   if line.startswith("Hacking monitor"))
    assert monitor.endswith("no sign of reward hacking.")


def test_motion_trail_marks_the_path_and_leaves_a_static_clip_alone():
    clip = np.zeros((4, 8, 8, 3), np.float32)
    for t in range(4):
        clip[t, 2, 1 + 2 * t] = 1.0  # a dot moving right by 2 px/frame
    trail = motion_trail(clip)
    assert trail[2, 7, 0] == 1.0 and trail[2, 7, 1] == 1.0  # last position: yellow (late)
    assert trail[2, 3, 0] == 1.0 and abs(trail[2, 3, 1] - 1 / 3) < 1e-6  # second position: early, redder
    assert np.all(trail[5] == 0)  # untouched rows stay as frame 0
    still = np.repeat(clip[:1], 4, axis=0)
    assert np.array_equal(motion_trail(still), still[0])


def test_success_criteria_follow_their_rules():
    from shiftvdm.recipes.demo.report import success_criteria

    def row(w1, static=0.1, lost=0.05, img=0.01):
        return {"sprite_speed_w1": w1, "sprite_static_fraction": static, "sprite_lost_fraction": lost,
                "image_stats_frechet": img}

    models = {"base": row(0.30, img=0.008), "sft": row(0.50, img=0.010), "shift": row(0.32, static=0.05, img=0.012),
              "continued_sft@equal-time": row(0.45, static=0.2), "shift_static": row(0.40)}
    result = {c["name"]: c["passed"] for c in success_criteria(models)}
    assert result == {"sft_collapses": True, "shift_restores": True, "shift_beats_equal_time_sft": True,
                      "shift_keeps_sprites": True, "refresh_matters": True, "clean_base": True}
    models["sft"] = row(0.35, img=0.010)  # 1.17x the base: not a collapse; SHIFT no longer 30 % below SFT
    models["shift"] = row(0.32, static=0.3, lost=0.2, img=0.02)
    models["base"] = row(0.30, img=0.02)
    result = {c["name"]: c["passed"] for c in success_criteria(models)}
    assert result == {"sft_collapses": False, "shift_restores": False, "shift_beats_equal_time_sft": False,
                      "shift_keeps_sprites": False, "refresh_matters": True, "clean_base": False}
    del models["shift_static"]
    assert {c["name"]: c["passed"] for c in success_criteria(models)}["refresh_matters"] is None
