"""Every shipped preset resolves strictly, with valid backbone options, and matches the authors' constants."""

import os
from pathlib import Path

import pytest
import yaml

from shiftvdm.config import PATH_KEYS, config_to_dict, list_presets, load_yaml_with_base, resolve_config_path
from shiftvdm.errors import ConfigError
from shiftvdm.recipes.train import resolve_train_config

# demo_* are the demo's own configs; critic_* are `train-critic` presets (tests/rewards/test_rewards.py checks those)
TRAIN_PRESETS = [p for p in list_presets() if not p.startswith(("demo_", "critic_"))]
BASELINES = [p for p in TRAIN_PRESETS if p.startswith("baselines/")]


def leaves(data: dict, prefix: str = ""):
    """(dotted key, value) of every setting a YAML file gives (backbone.options compared as one dict)."""
    for key, value in data.items():
        if isinstance(value, dict) and value and key != "options":
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def lookup(data: dict, dotted: str):
    for part in dotted.split("."):
        data = data[part]
    return data


def same(a, b) -> bool:
    norm = (lambda v: list(v) if isinstance(v, tuple) else v)
    return norm(a) == norm(b) or (isinstance(a, (int, float)) and isinstance(b, (int, float)) and float(a) == float(b))


def resolved(preset: str) -> dict:
    stage = load_yaml_with_base(resolve_config_path(preset)).get("mode", "shift")
    return config_to_dict(resolve_train_config(stage, preset, ["critic.path=critic"]))


@pytest.mark.parametrize("preset", TRAIN_PRESETS)
def test_every_setting_a_preset_writes_reaches_the_resolved_config(preset):
    """No setting of a shipped file is dropped, renamed or overwritten by stage defaults on the way in."""
    raw = load_yaml_with_base(resolve_config_path(preset))
    cfg = resolved(preset)
    paths = PATH_KEYS["shiftvdm.train.config.TrainConfig"]  # recorded absolute, read against the working directory
    wrong = [(key, value, lookup(cfg, key)) for key, value in leaves(raw)
             if key != "critic.path" and not same(lookup(cfg, key), os.path.abspath(value) if key in paths and value and
                                                  value not in ("tiny", "tiny-pixel") else value)]
    assert not wrong, wrong


@pytest.mark.parametrize("preset", BASELINES)
def test_each_baseline_changes_its_base_only_in_the_fields_it_names(preset):
    """§B.5: a baseline is its base plus the settings of its row: it must differ from it, and only there
    (a field it repeats with the base's value, like rwr_sft's refresh=false, is allowed)."""
    text = load_yaml_with_base(resolve_config_path(preset))
    own = {k: v for k, v in yaml.safe_load(resolve_config_path(preset).read_text()).items() if k != "base"}
    base, cfg = resolved(Path(yaml.safe_load(resolve_config_path(preset).read_text())["base"]).stem), resolved(preset)
    changed = {key for key, _ in leaves(text) if not same(lookup(cfg, key), lookup(base, key))}
    assert changed, f"{preset} resolves to the same config as its base"
    assert changed <= {key for key, _ in leaves(own)}, changed


def test_authors_constants():
    svd = resolve_train_config("shift", "svd_shift_davis", ["critic.path=c"])
    assert (svd.loss.lambda_aw, svd.rollout.group_size, svd.rollout.passes_per_buffer, svd.lora.rank) == (0.001, 8, 10, 32)
    assert (svd.optim.lr, svd.optim.betas, svd.advantage.clip, svd.critic.refresh) == (1e-5, (0.9, 0.95), 10.0, False)
    wan = resolve_train_config("shift", "wan22_ti2v5b_shift_wisa", ["critic.path=c"])
    assert (wan.loss.lambda_aw, wan.rollout.buffer_size, wan.critic.refresh, wan.optim.weight_decay) == (0.01, 512, True, 0.0)
    rwr = resolve_train_config("shift", "baselines/rwr_sft", ["critic.path=c"])
    assert (rwr.advantage.center, rwr.critic.refresh) == ("none", False)
    sft = resolve_train_config("sft", "svd_sft_davis", [])
    assert sft.loss.lambda_aw == 0.0


def test_backbone_option_typos_are_caught_at_config_time():
    with pytest.raises(ConfigError, match="did you mean `num_frames`"):
        resolve_train_config("shift", "svd_shift_davis", ["critic.path=c", "backbone.options.num_frame=8"])
