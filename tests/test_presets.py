"""Every shipped preset resolves strictly, with valid backbone options, and matches the authors' constants."""

import pytest

from shiftvdm.config import list_presets, load_yaml_with_base, resolve_config_path
from shiftvdm.errors import ConfigError
from shiftvdm.recipes.train import resolve_train_config

TRAIN_PRESETS = [p for p in list_presets() if p != "demo_cpu" and not p.startswith("critic_")]  # critic_*: train-reward (test_rewards.py)


@pytest.mark.parametrize("preset", TRAIN_PRESETS)
def test_training_presets_resolve(preset):
    stage = load_yaml_with_base(resolve_config_path(preset)).get("mode", "shift")
    cfg = resolve_train_config(stage, preset, ["discriminator.critic=critic"])
    assert cfg.mode == stage


def test_authors_constants():
    svd = resolve_train_config("shift", "svd_shift_davis", ["discriminator.critic=c"])
    assert (svd.loss.lambda_aw, svd.rollout.group_size, svd.rollout.passes_per_buffer, svd.lora.rank) == (0.001, 8, 10, 32)
    assert (svd.optim.lr, svd.optim.betas, svd.advantage.clip, svd.discriminator.refresh) == (1e-5, (0.9, 0.95), 10.0, False)
    wan = resolve_train_config("shift", "wan22_ti2v5b_shift_wisa", ["discriminator.critic=c"])
    assert (wan.loss.lambda_aw, wan.rollout.buffer_size, wan.discriminator.refresh, wan.optim.weight_decay) == (0.01, 512, True, 0.0)
    rwr = resolve_train_config("shift", "baselines/rwr_sft", ["discriminator.critic=c"])
    assert (rwr.advantage.center, rwr.discriminator.refresh) == ("none", False)
    sft = resolve_train_config("sft", "svd_sft_davis", [])
    assert sft.loss.lambda_aw == 0.0


def test_backbone_option_typos_are_caught_at_config_time():
    with pytest.raises(ConfigError, match="did you mean `num_frames`"):
        resolve_train_config("shift", "svd_shift_davis", ["discriminator.critic=c", "backbone.options.num_frame=8"])
