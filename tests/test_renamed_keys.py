"""Renamed config keys (config.RENAMED_KEYS): an old key works for one release with a warning naming the new
one, a setting given under both names with different values is refused naming both, every shipped preset uses
the new names, and a run folder written at e17d547 (old names in config.yaml and in its checkpoints' config)
still reads to the same config."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import yaml

from shiftvdm.config import (RENAMED_KEYS, config_differences, config_from_dict, config_to_dict, list_presets,
                             load_config, resolve_config_path)
from shiftvdm.errors import ConfigError
from shiftvdm.recipes.demo.config import DemoConfig
from shiftvdm.recipes.train import resolve_train_config
from shiftvdm.recipes.train_reward import TrainRewardConfig
from shiftvdm.train.config import TrainConfig

OLD_RUN = Path(__file__).parent / "fixtures" / "wan_run_config_e17d547.yaml"


def renamed_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "is renamed" in r.getMessage()]


def test_old_key_in_a_yaml_file_is_accepted_with_a_warning_naming_the_new_key(tmp_path, caplog):
    path = tmp_path / "old.yaml"
    path.write_text("discriminator:\n  critic: /runs/c\n  refresh: false\n  train: {lr: 3.0e-5}\n")
    with caplog.at_level(logging.WARNING, logger="shiftvdm.config"):
        cfg = load_config(TrainConfig, path)
    assert (cfg.critic.path, cfg.critic.refresh, cfg.critic.train.lr) == ("/runs/c", False, 3e-5)
    said = renamed_warnings(caplog)
    assert any("discriminator.critic is renamed critic.path; accepted until 0.3" in m for m in said), said
    assert any("discriminator.refresh -> critic.refresh" in m and "discriminator.train.lr -> critic.train.lr" in m
               for m in said), said
    assert all(str(path) in m for m in said)  # the warning names the file


def test_old_key_as_an_override_is_accepted_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="shiftvdm.config"):
        cfg = resolve_train_config("shift", "svd_shift_davis", ["discriminator.critic=c"])
    # paths are recorded absolute (config.PATH_KEYS): "c" is read against the working directory
    assert (cfg.critic.path, cfg.critic.refresh) == (os.path.abspath("c"), False)  # the rest from the preset
    assert any("discriminator.critic is renamed critic.path" in m for m in renamed_warnings(caplog))


def test_each_source_is_mapped_as_it_is_read_so_an_old_name_override_still_overrides(tmp_path, caplog):
    """load_config maps the file, its base and the overrides each on its own: an old-name override wins over
    a new-name file value, and a new-name file over an old-name base (no 'both given')."""
    base = tmp_path / "base.yaml"
    base.write_text("discriminator: {d_to_g: 2.0, refresh: false}\n")
    child = tmp_path / "child.yaml"
    child.write_text("base: base.yaml\ncritic: {d_to_g: 1.0}\n")
    cfg = load_config(TrainConfig, child, ["discriminator.d_to_g=0.5"])
    assert (cfg.critic.d_to_g, cfg.critic.refresh) == (0.5, False)
    assert load_config(TrainConfig, child).critic.d_to_g == 1.0


def test_both_names_with_different_values_are_refused_naming_both():
    with pytest.raises(ConfigError, match=r"discriminator\.critic and critic\.path are both given"):
        resolve_train_config("shift", "svd_shift_davis", ["discriminator.critic=a", "critic.path=b"])
    with pytest.raises(ConfigError, match=r"discriminator\.refresh and critic\.refresh are both given.*give only "
                                          r"critic\.refresh"):
        resolve_train_config("shift", "svd_shift_davis", ["critic.path=c", "critic.refresh=false",
                                                           "discriminator.refresh=true"])
    # the same value under both names is one setting
    cfg = resolve_train_config("shift", "svd_shift_davis", ["critic.path=c", "critic.refresh=true",
                                                            "discriminator.refresh=true"])
    assert cfg.critic.refresh is True
    # each source is mapped on its own: an old name on the command line overrides the preset's new name
    cfg = resolve_train_config("shift", "svd_shift_davis", ["critic.path=c", "discriminator.refresh=true"])
    assert cfg.critic.refresh is True


def test_unknown_keys_inside_an_old_section_are_still_reported_under_the_new_name():
    with pytest.raises(ConfigError, match=r"critic\.d_to_gg: unknown key; did you mean `critic\.d_to_g`"):
        config_from_dict(TrainConfig, {"discriminator": {"d_to_gg": 1.0}})


@pytest.mark.parametrize("preset", list_presets())
def test_every_shipped_preset_loads_with_the_new_names_and_no_warning(preset, caplog):
    schema, overrides = TrainConfig, []
    if preset.startswith("demo_"):
        schema = DemoConfig
    elif preset.startswith("critic_"):  # they refuse to start without the neural extractors' weights
        schema, overrides = TrainRewardConfig, ["critic.flow_checkpoint=f.pth", "critic.tracker_checkpoint=t.pth"]
    with caplog.at_level(logging.WARNING, logger="shiftvdm.config"):
        load_config(schema, preset, overrides)
    assert not renamed_warnings(caplog)
    text = resolve_config_path(preset).read_text()
    assert "discriminator:" not in text and "discriminator.critic" not in text and "train-reward" not in text


def test_a_run_folder_written_at_e17d547_reads_to_the_same_config(caplog):
    """Its config.yaml (load_config) and its checkpoints' config dict (config_from_dict, what the checkpointer
    compares on resume) both use discriminator.*; both map to today's config, with no difference left."""
    now = resolve_train_config("shift", "wan22_ti2v5b_shift_wisa", ["critic.path=/runs/critic-wisa/critic",
                                                                      "critic.train.replay_size=8",
                                                                      "run.out_dir=/runs/shift-wisa",
                                                                      # the preset's value since 2026-12-07; that
                                                                      # run used the then default
                                                                      "critic.refresh_features=stored"])
    with caplog.at_level(logging.WARNING, logger="shiftvdm.config"):
        from_yaml = load_config(TrainConfig, OLD_RUN)
        from_checkpoint = config_from_dict(TrainConfig, yaml.safe_load(OLD_RUN.read_text()), "step-0000010")
    assert config_differences(from_yaml, now) == [] and config_differences(from_checkpoint, now) == []
    assert from_checkpoint.critic.path == "/runs/critic-wisa/critic"
    assert any("step-0000010: discriminator.critic is renamed critic.path" in m for m in renamed_warnings(caplog))
    # and what a run writes now round-trips without a warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="shiftvdm.config"):
        assert config_differences(config_from_dict(TrainConfig, config_to_dict(now)), now) == []
    assert not renamed_warnings(caplog)


def test_the_demo_critic_stage_section_is_renamed_critic_training(caplog):
    with caplog.at_level(logging.WARNING, logger="shiftvdm.config"):
        cfg = load_config(DemoConfig, "demo_cpu", ["critic.critic.workers=2"])
    assert cfg.critic_training["critic"]["workers"] == 2
    assert cfg.critic_training["critic"]["num_queries"] == 64  # the rest of the preset's section is kept
    assert any("critic is renamed critic_training" in m for m in renamed_warnings(caplog))


def test_the_table_names_schemas_that_exist():
    import importlib

    for schema, pairs in RENAMED_KEYS.items():
        module, name = schema.rsplit(".", 1)
        cls = getattr(importlib.import_module(module), name)
        fields = {f for f in cls.__dataclass_fields__}
        for old, new in pairs:
            assert new.split(".")[0] in fields and old.split(".")[0] not in fields, (schema, old, new)


def test_train_reward_is_an_alias_of_train_critic_with_a_one_line_note(capsys):
    from shiftvdm.cli import _usage, main

    with pytest.raises(SystemExit) as done:
        main(["train-reward", "--help"])
    assert done.value.code == 0
    out, err = capsys.readouterr()
    assert err.strip() == "shiftvdm: `train-reward` is renamed `train-critic`; the old name works until 0.3"
    assert "usage: shiftvdm train-critic" in out
    assert "train-critic" in _usage() and "train-reward" not in _usage()
