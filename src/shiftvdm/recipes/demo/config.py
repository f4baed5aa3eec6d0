"""The demo's configuration (``configs/demo_*.yaml``) and the stage configs built from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shiftvdm.config import config_from_dict, config_to_dict, deep_merge, load_config, parse_overrides
from shiftvdm.recipes.demo.scenarios import Scenario
from shiftvdm.recipes.train import stage_defaults
from shiftvdm.train.config import TrainConfig


@dataclass
class DemoData:
    size: int = 16  # clip side in pixels
    num_frames: int = 8  # frames per clip
    scenario: Scenario = field(default_factory=Scenario)  # looks of the generic and target sets, shared motion law
    generic_clips: int = 8000  # pre-training clips
    target_clips: int = 4000  # the user's fine-tuning clips (all moving)
    heldout_clips: int = 256  # held-out moving clips: evaluation conditioning frames and real reference
    critic_clips: int = 512  # target clips used (with their fakes) to pre-train the discriminators
    fakes_per_clip: int = 2  # generated clips per real clip for discriminator pre-training
    seeds: tuple[int, int, int] = (0, 1, 123)  # generic, target, held-out


@dataclass
class DemoEval:
    curve_clips: int = 64  # held-out frames used for the training curves (every eval_every steps)
    eval_every: int = 25  # generator steps between curve points
    grid_clips: int = 8  # rows of the side-by-side clip grid in the report
    appearance_margin: float = 0.25  # SHIFT's image-statistics distance may exceed SFT's by this fraction
    seed: int = 7  # sampler seed of every evaluation (same noise for every model)


@dataclass
class DemoConfig:
    seed: int = 0  # run seed of every training stage
    threads: int = 0  # torch threads (0 = 2 on an idle machine, 1 when other work keeps the cores busy)
    keep_checkpoints: bool = False  # keep every stage's training checkpoints (hundreds of MB) after it finished
    data: DemoData = field(default_factory=DemoData)
    backbone: dict[str, Any] = field(default_factory=dict)  # backbone section shared by all stages (TrainConfig.backbone)
    pretrain: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields of the pre-training stage
    sft: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields of the SFT stage
    arms_common: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields shared by every arm
    arms: dict[str, dict[str, Any]] = field(default_factory=dict)  # arm name -> its own TrainConfig fields
    critic_training: dict[str, Any] = field(default_factory=dict)  # `train-critic` settings (TrainRewardConfig) of the critic stage
    eval: DemoEval = field(default_factory=DemoEval)
    quick: dict[str, Any] = field(default_factory=dict)  # overrides of this config applied by --quick
    calibrate: bool = True  # time a few toy steps first and print the estimated time of every stage


SCENARIO_PRESETS = {"static-base": "demo_cpu", "collapse": "demo_collapse"}  # --scenario -> shipped config
DEFAULT_SCENARIO = "static-base"  # the collapse scenario did not reproduce a collapse (README, "What the demo shows")
SHIFT_ARM = "shift"  # the arm whose training time (CPU seconds) sets continued SFT's time budget
TIME_MATCHED_ARM = "continued_sft"  # the arm that also runs for SHIFT's training time


def load_demo_config(config: str | None, quick: bool, overrides: list[str]) -> DemoConfig:
    """The demo config; with ``quick`` its ``quick`` section is applied, and the command-line overrides win over both."""
    cfg = load_config(DemoConfig, config or "demo_cpu", overrides)  # validates the overrides against the preset
    if quick and cfg.quick:
        data = deep_merge(deep_merge(config_to_dict(cfg), cfg.quick), parse_overrides(overrides, DemoConfig))
        data["quick"] = {}
        cfg = config_from_dict(DemoConfig, data, "demo --quick")
    return cfg


def train_config(cfg: DemoConfig, out_dir: Path, *sections: dict[str, Any], mode: str):
    d = cfg.data
    data: dict[str, Any] = deep_merge(stage_defaults(mode), {
        "backbone": cfg.backbone,
        "data": {"train": "(in memory)", "num_frames": d.num_frames, "height": d.size, "width": d.size},
        "run": {"out_dir": str(out_dir), "seed": cfg.seed},
    })
    for s in sections:
        data = deep_merge(data, s)
    if mode in ("pretrain", "sft"):  # what the stage means wins over shared arm settings (SFT = no rollouts)
        data = deep_merge(data, stage_defaults(mode))
    return config_from_dict(TrainConfig, data, f"demo {mode} stage")
