"""recipes/dry_run/{squares,plan,step}.py directly: the dry run's clips, its static plan and its one-step config.

What a user relies on: the dry run's clips are deterministic, in [-1, 1], of the asked shape, with a square that
moves; the static plan counts the LoRA weights, gradients, AdamW moments (and the weight EMA when on) exactly and
its total leaves out the stand-in text encoder; the step is the preset cut to one SHIFT step on one
conditioning, everything else as the preset; the printed lines carry the measured numbers.
The whole dry run is tests/recipes/test_dry_run.py's.
"""

from __future__ import annotations

from pathlib import Path

import torch

from shiftvdm.config import config_from_dict
from shiftvdm.recipes.dry_run.plan import static_memory_plan, static_plan_table
from shiftvdm.recipes.dry_run.squares import MovingSquares
from shiftvdm.recipes.dry_run.step import not_run_reason, peak_ratio_line, step_config, step_critic, step_line
from shiftvdm.rewards.critic import MotionCritic
from shiftvdm.train.config import TrainConfig
from shiftvdm.train.memory import GIB


def test_moving_squares_are_deterministic_clips_with_a_moving_square():
    clips = MovingSquares(3, (4, 16, 24), prompt="p")
    assert len(clips) == 3
    video, prompts = clips.load([0, 2])
    assert video.shape == (2, 4, 3, 16, 24) and video.dtype == torch.float32 and prompts == ["p", "p"]
    assert video.min() >= -1 and video.max() <= 1
    again, _ = MovingSquares(3, (4, 16, 24), prompt="p").load([0, 2])
    assert torch.equal(video, again)
    assert torch.equal(clips.load([2])[0][0], video[1])  # a clip depends on its index only
    side = 16 // 4
    for f in range(4):  # clip 0: the square's corner at x = 2f, y = f
        assert (video[0, f, :, f:f + side, 2 * f:2 * f + side] == 0.9).all()
    assert not torch.equal(video[0, 0], video[0, 1])  # it moves


def test_static_plan_counts_lora_gradients_moments_and_ema():
    rows = static_memory_plan({"unet": 3 * GIB, "text_encoder (not built: random embeddings)": 10 * GIB},
                              lora_params=1000, lora_bytes_each=2, weight_ema=True)
    assert dict(rows) == {"frozen unet": 3 * GIB, "frozen text_encoder (not built: random embeddings)": 10 * GIB,
                          "LoRA weights": 2000, "LoRA gradients": 2000, "AdamW moments (2 × fp32)": 8000,
                          "weight EMA": 2000}
    assert "weight EMA" not in dict(static_memory_plan({}, 1000, 2, weight_ema=False))
    table = static_plan_table([("frozen unet", 3 * GIB), ("frozen text (not built)", 10 * GIB), ("LoRA", GIB // 2)])
    assert table.splitlines()[-1].split()[-2:] == ["3.50", "GiB"]  # the stand-in text encoder left out
    assert "frozen unet" in table and "10.00 GiB" in table


def preset(tmp_path: Path) -> TrainConfig:
    return config_from_dict(TrainConfig, {
        "mode": "shift", "optim": {"lr": 3e-5},
        "rollout": {"group_size": 8, "buffer_size": 64, "batch_size": 4, "passes_per_buffer": 2},
        "critic": {"path": "somewhere", "refresh": False},
        "run": {"out_dir": str(tmp_path / "run"), "max_steps": 500, "checkpoint_every": 50, "seed": 1}})


def test_step_config_is_the_preset_cut_to_one_step(tmp_path):
    cfg = preset(tmp_path)
    step = step_config(cfg, group_size=2, inference_steps=3, seed=9, video_shape=(5, 32, 48), out_dir=tmp_path / "P2")
    assert (step.data.num_frames, step.data.height, step.data.width) == (5, 32, 48)
    r = step.rollout
    assert (r.group_size, r.buffer_size, r.batch_size, r.rollout_batch_size, r.passes_per_buffer,
            r.num_inference_steps) == (2, 1, 1, 1, 1, 3)
    assert step.critic.refresh is True and step.critic.d_to_g == 1.0 and step.critic.path == "somewhere"
    assert (step.run.max_steps, step.run.checkpoint_every, step.run.seed, step.run.out_dir) == \
        (1, 0, 9, str(tmp_path / "P2"))
    assert step.optim == cfg.optim and step.loss == cfg.loss  # the rest as the preset
    assert cfg.rollout.group_size == 8 and cfg.run.max_steps == 500  # the preset itself untouched


def test_step_critic_is_the_named_folder_or_a_random_one(tmp_path):
    critic, name = step_critic(str(tmp_path / "missing"))
    assert isinstance(critic, MotionCritic) and name == "random-init MotionCritic(CriticConfig())"
    folder = Path(__file__).parents[1] / "fixtures" / "run_e17d547" / "critic"
    critic, name = step_critic(str(folder))
    assert name == str(folder) and critic.config == MotionCritic.load(folder).config  # the preset's critic


def test_the_printed_lines_carry_the_numbers():
    line = step_line({"seconds": 12.34, "peak_rss": 3 * GIB, "peak_is_step_only": True,
                      "metrics": {"loss/total": 0.123456, "grad_norm": 0.5}})
    assert line.strip() == "12.3 s/step, peak RSS of the step 3.00 GiB, loss 0.1235, grad_norm 0.5"
    assert "VmHWM could not be reset" in step_line({"seconds": 1, "peak_rss": GIB, "peak_is_step_only": False,
                                                     "metrics": {"loss/real": 1.0}})
    steps = [{"group_size": 1, "peak_rss": 2 * GIB}, {"group_size": 4, "peak_rss": 3 * GIB}]
    assert peak_ratio_line(steps[:1]) is None
    assert peak_ratio_line(steps).strip() == "peak RSS P=1: 2.00 GiB   P=4: 3.00 GiB   (ratio 1.500)"
    assert not_run_reason(True, 0, "bf16", 0, 0, 0.8) == "dry_run.meta_only=true"
    reason = not_run_reason(False, 60 * GIB, "bfloat16", 32 * GIB, 20 * GIB, 0.8)
    assert reason.startswith("its frozen weights need 60.00 GiB in bfloat16 but this machine has 32.00 GiB of RAM, "
                             "20.00 GiB available now (× 0.8)") and reason.endswith("no step was run")
