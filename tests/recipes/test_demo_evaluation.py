"""recipes/demo/evaluation.py directly: which models the demo evaluates, how it samples them, and its notes.

What a user relies on: every trained model with a saved folder is evaluated under its name (the time-matched
arm twice: at SHIFT's step count and at equal time) and a missing one is left out instead of failing; every
model is sampled from the same frames with the same seed (so the comparison is fair); the notes in
metrics.json state the scenario and the query coverage. The whole demo is tests/recipes/test_demo.py's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from shiftvdm.recipes.demo.config import SHIFT_ARM, TIME_MATCHED_ARM, DemoConfig
from shiftvdm.recipes.demo.evaluation import models_to_evaluate, query_note, sample_clips, scenario_note
from shiftvdm.recipes.demo.scenarios import Scenario
from shiftvdm.recipes.demo.stages import Stages
from support import small_toy


def saved(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")


def test_models_to_evaluate_names_every_saved_model_and_skips_missing_ones(tmp_path):
    cfg = DemoConfig(arms={SHIFT_ARM: {}, TIME_MATCHED_ARM: {}, "dpo": {}})
    runs = tmp_path / "runs"
    for rel in ("pretrain/model", "sft/model", f"{SHIFT_ARM}/model", f"{TIME_MATCHED_ARM}/model-step-40",
                f"{TIME_MATCHED_ARM}/model"):
        saved(runs / rel)
    (runs / "dpo" / "model").mkdir(parents=True)  # a folder without config.json: not a finished model
    models = models_to_evaluate(cfg, tmp_path, steps=40)
    assert models == {"base": runs / "pretrain/model", "sft": runs / "sft/model",
                      f"{TIME_MATCHED_ARM}@40steps": runs / TIME_MATCHED_ARM / "model-step-40",
                      f"{TIME_MATCHED_ARM}@equal-time": runs / TIME_MATCHED_ARM / "model",
                      SHIFT_ARM: runs / SHIFT_ARM / "model"}
    assert models_to_evaluate(cfg, tmp_path / "nothing", steps=40) == {}


def test_sample_clips_gives_one_uint8_clip_per_frame_the_same_for_the_same_seed():
    backbone = small_toy(num_inference_steps=2)
    frames = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    clips = sample_clips(backbone, frames, seed=4, batch=2)  # two batches: 2 + 1
    assert clips.shape == (3, 4, 16, 16, 3) and clips.dtype == np.uint8
    assert np.array_equal(clips, sample_clips(backbone, frames, seed=4, batch=2))
    assert not np.array_equal(clips, sample_clips(backbone, frames, seed=5, batch=2))


def test_the_notes_state_the_scenario_and_the_query_coverage(tmp_path):
    note = scenario_note(Scenario())
    assert note.startswith("Scenario 'collapse': generic clips: flat background, square; target and held-out clips: "
                           "textured background, disc;")
    assert "5-px sprite, 1.5-2.5 px/frame" in note and "0% of the generic clips are static" in note

    stages = Stages(tmp_path)
    assert query_note(stages) == ""  # no data stage recorded: no note
    (tmp_path / "stages.json").write_text(json.dumps({"data": {"result": {"queries": {
        "per_clip": 16, "sampling": "uniform", "on_object_mean": 2.5, "on_object_min": 0, "clips_with_none": 0.1,
        "clips_counted": 40}}}}))
    note = query_note(Stages(tmp_path))
    assert note == ("LC discriminator: 16 query points per clip (uniform), of which 2.5 land on the sprite on average "
                    "(fewest 0; 10% of clips with none), counted from the ground truth of 40 target clips.")
