"""Config loading: strict keys with suggestions, types, overrides, one base level, provenance."""

from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from shiftvdm.config import config_differences, dump_config, load_config, parse_overrides
from shiftvdm.errors import ConfigError


@dataclass
class Optim:
    lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.95)


@dataclass
class Cfg:
    optim: Optim = field(default_factory=Optim)
    mode: Literal["sft", "shift"] = "shift"
    steps: int = 10
    name: str | None = None
    targets: list[str] = field(default_factory=list)


def test_defaults_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1e-4\nsteps: 3\n")
    cfg = load_config(Cfg, path, ["steps=7", "mode=sft", "targets=[a, b]"])
    assert cfg.optim.lr == pytest.approx(1e-4)  # YAML's "1e-4" string is accepted as a float
    assert cfg.optim.betas == (0.9, 0.95)
    assert (cfg.steps, cfg.mode, cfg.targets) == (7, "sft", ["a", "b"])


def test_misspelt_key_names_the_closest_valid_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lrr: 1\nstep: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(Cfg, path)
    msg = str(err.value)
    assert str(path) in msg
    assert "optim.lrr: unknown key; did you mean `optim.lr`?" in msg
    assert "step: unknown key; did you mean `steps`?" in msg  # all errors are reported together


def test_wrong_type_names_field_and_expected_type():
    with pytest.raises(ConfigError) as err:
        load_config(Cfg, None, ["steps=many", "optim.betas=[0.9]", "mode=rl"])
    msg = str(err.value)
    assert "steps: expected int, got 'many'" in msg
    assert "optim.betas: expected 2 items" in msg
    assert "mode: expected one of 'sft' | 'shift', got 'rl'" in msg


def test_one_base_level(tmp_path):
    (tmp_path / "base.yaml").write_text("steps: 5\noptim: {lr: 0.1}\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nsteps: 6\n")
    cfg = load_config(Cfg, tmp_path / "child.yaml")
    assert (cfg.steps, cfg.optim.lr) == (6, 0.1)
    (tmp_path / "deep.yaml").write_text("base: child.yaml\n")
    with pytest.raises(ConfigError, match="only one level"):
        load_config(Cfg, tmp_path / "deep.yaml")


def test_missing_file_and_bad_override():
    with pytest.raises(ConfigError, match="not found"):
        load_config(Cfg, "nowhere.yaml")
    with pytest.raises(ConfigError, match="section.field=value"):
        parse_overrides(["steps"])


def test_dump_round_trip_and_differences(tmp_path):
    cfg = load_config(Cfg, None, ["steps=4"])
    dump_config(cfg, tmp_path / "out.yaml")
    again = load_config(Cfg, tmp_path / "out.yaml")
    assert again == cfg
    assert yaml.safe_load((tmp_path / "out.yaml").read_text())["steps"] == 4
    assert config_differences(cfg, load_config(Cfg, None, ["steps=5"])) == ["steps: 4 -> 5"]


def test_an_override_of_a_text_field_keeps_the_text_as_typed():
    # YAML 1.1 would read these as an octal number, a boolean and a date (issue 26, class 5)
    from shiftvdm.train.config import TrainConfig

    cfg = load_config(TrainConfig, None, ["run.out_dir=0755", "data.prompt=no", "data.train=2024-01-01",
                                          "lora.init_from=null", "critic.path='007'", "data.fps=null",
                                          "optim.lr=1e-4", "lora.targets=[to_q,to_k]", "loss.match_noise=false"])
    assert cfg.run.out_dir == "0755" and cfg.data.prompt == "no" and cfg.data.train == "2024-01-01"
    assert cfg.lora.init_from is None and cfg.critic.path == "007" and cfg.data.fps is None  # null where allowed
    assert cfg.optim.lr == 1e-4 and cfg.lora.targets == ["to_q", "to_k"] and cfg.loss.match_noise is False
    assert parse_overrides(["run.out_dir=0755"]) == {"run": {"out_dir": 493}}  # without a schema: YAML scalars


@pytest.mark.parametrize("settings, keys", [
    ({"mode": "sft", "loss": {"lambda_aw": 0.1}}, "mode, loss.lambda_aw, loss.asymmetric"),
    ({"loss": {"lambda_sft": 0.0, "lambda_aw": 0.0}}, "loss.lambda_sft, loss.lambda_aw, loss.asymmetric"),
    ({"rollout": {"group_size": 1}}, "rollout.group_size, advantage.center, loss.lambda_aw"),
    ({"advantage": {"positive_weight": -1.0}}, "advantage.positive_weight"),
    ({"advantage": {"std_eps": 0.0}}, "advantage.std_eps"),
    ({"rollout": {"num_inference_steps": 0}}, "rollout.num_inference_steps"),
    ({"rollout": {"num_inference_steps": -2}}, "rollout.num_inference_steps"),
    ({"critic": {"refresh": True, "d_to_g": 0.0}}, "critic.refresh, critic.d_to_g"),
])
def test_a_setting_that_makes_the_run_meaningless_is_refused_naming_keys_and_fix(settings, keys):
    from shiftvdm.config import config_from_dict
    from shiftvdm.train.config import TrainConfig

    with pytest.raises(ConfigError) as refused:
        config_from_dict(TrainConfig, settings, "run.yaml")
    message = str(refused.value)
    assert message.startswith("run.yaml: invalid config:") and f"\n  {keys}: " in message
    assert "; set " in message or "; use " in message  # the fix


def test_the_sensible_neighbours_of_the_refused_settings_pass():
    from shiftvdm.config import config_from_dict
    from shiftvdm.train.config import TrainConfig

    for settings in ({"mode": "sft", "loss": {"lambda_aw": 0.0}}, {"loss": {"lambda_sft": 0.0}},
                     {"rollout": {"group_size": 1}, "advantage": {"center": "none"}},
                     {"rollout": {"group_size": 2}}, {"advantage": {"positive_weight": 0.0}},
                     {"rollout": {"num_inference_steps": None}}, {"critic": {"refresh": False, "d_to_g": 0.0}}):
        assert config_from_dict(TrainConfig, settings, "run.yaml").rule_violations() == []
