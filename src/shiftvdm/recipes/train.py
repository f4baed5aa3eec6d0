"""`shiftvdm pretrain | sft | shift`: one trainer (train/shift.py), three stages.

Merge order: dataclass defaults < the stage's defaults below < --config YAML < command-line overrides.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from shiftvdm.config import config_from_dict, deep_merge, load_yaml_with_base, parse_overrides, resolve_config_path
from shiftvdm.errors import CheckpointError, ConfigError
from shiftvdm.train.config import TrainConfig

logger = logging.getLogger(__name__)

# What each command means, before any config file: SFT is SHIFT with λ_aw = 0 (no rollouts, no rewards).
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "pretrain": {"mode": "pretrain", "lora": {"enabled": False}, "loss": {"lambda_aw": 0.0},
                 "rollout": {"passes_per_buffer": 1}, "discriminator": {"refresh": False}},
    "sft": {"mode": "sft", "loss": {"lambda_aw": 0.0}, "rollout": {"passes_per_buffer": 1},
            "discriminator": {"refresh": False}},
    "shift": {"mode": "shift"},
}


def merge_train_config(mode: str, config: str | None, overrides: list[str]) -> tuple[TrainConfig, str]:
    """Stage defaults, then the preset (with its base), then the dotted overrides -> (config, its source)."""
    data = dict(STAGE_DEFAULTS[mode])
    source = f"`shiftvdm {mode}` defaults"
    if config:
        path = resolve_config_path(config)
        data = deep_merge(data, load_yaml_with_base(path))
        source = str(path)
    data = deep_merge(data, parse_overrides(overrides))
    data["mode"] = mode
    return config_from_dict(TrainConfig, data, source), source


def resolve_train_config(mode: str, config: str | None, overrides: list[str]) -> TrainConfig:
    cfg, source = merge_train_config(mode, config, overrides)
    from shiftvdm.backbone import backbone_config
    from shiftvdm.train.losses import needs_rollouts

    backbone_config(cfg.backbone.name, dict(cfg.backbone.options), f"{source}: backbone.options")

    if mode in ("pretrain", "sft") and needs_rollouts(cfg.loss):
        raise ConfigError(f"{source}: `shiftvdm {mode}` trains without rollouts, but loss.lambda_aw="
                          f"{cfg.loss.lambda_aw} / loss.asymmetric={cfg.loss.asymmetric}; use `shiftvdm shift` instead")
    if mode == "shift" and needs_rollouts(cfg.loss) and not cfg.discriminator.critic:
        raise ConfigError(f"{source}: discriminator.critic is required for SHIFT (a folder written by "
                          "`shiftvdm train-reward`)")
    return cfg


def build_training(cfg: TrainConfig, clips: Any = None, accelerator: Any = None):
    """Assemble backbone, critic, clips and runtime for a config. Returns (backbone, critic, clips, runtime)."""
    from shiftvdm.backbone import load_backbone
    from shiftvdm.train.clips import open_training_clips
    from shiftvdm.train.losses import needs_rollouts
    from shiftvdm.train.runtime import Runtime

    clips = clips if clips is not None else open_training_clips(cfg.data)
    backbone = load_backbone(cfg.backbone)
    f, h, w = backbone.video_shape
    if (f, h, w) != (cfg.data.num_frames, cfg.data.height, cfg.data.width):
        raise ConfigError(f"the backbone makes clips of {f} frames × {h}×{w}, but data.num_frames/height/width are "
                          f"{cfg.data.num_frames}/{cfg.data.height}/{cfg.data.width}; make them agree "
                          "(backbone.options or data.*)")
    if accelerator is not None and accelerator.device.type != "cpu":
        backbone.to(accelerator.device)
    if cfg.lora.init_from:
        backbone.load_lora(cfg.lora.init_from)
        backbone.fuse_lora()  # start SHIFT on top of the SFT model (the reference's pretrained_sft_lora_path)
    if cfg.lora.enabled:
        backbone.add_lora(cfg.lora.rank, cfg.lora.alpha, cfg.lora.targets)
    if cfg.run.gradient_checkpointing:
        backbone.enable_gradient_checkpointing()
    critic = None
    features_from_state = None
    if needs_rollouts(cfg.loss):
        from shiftvdm.rewards.critic import MotionCritic, MotionFeatures

        critic = MotionCritic.load(cfg.discriminator.critic, accelerator.device if accelerator is not None else "cpu")
        features_from_state = MotionFeatures.from_state_dict
    first = clips.load(list(range(min(cfg.run.num_samples, len(clips)))))
    from shiftvdm.train.memory import memory_plan

    plan = memory_plan(cfg, backbone, accelerator.num_processes if accelerator is not None else 1,
                       critic.config if critic is not None else None)
    if accelerator is None or accelerator.is_main_process:
        logger.info("%s", plan.table())
    plan.check()  # refuse a plan that does not fit, naming the setting to change
    rt = Runtime(cfg, backbone, critic, Path(cfg.run.out_dir), accelerator=accelerator,
                 features_from_state=features_from_state, sample_frames=first[0][:, 0], sample_prompts=first[1])
    return backbone, critic, clips, rt


def run_training(cfg: TrainConfig, *, resume: bool = False, clips: Any = None,
                 evaluate: Callable | None = None, accelerator: Any = None):
    """Train (or resume) one run; returns the TrainResult. Used by the CLI, the demo and tests."""
    from shiftvdm.train.shift import train

    if accelerator is None:
        from accelerate import Accelerator

        from accelerate import DistributedDataParallelKwargs

        ddp = DistributedDataParallelKwargs(find_unused_parameters=cfg.run.find_unused_parameters)
        accelerator = Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp])
    backbone, critic, clips, rt = build_training(cfg, clips, accelerator)
    if resume and not rt.resume():
        raise CheckpointError(f"--resume: no checkpoint under {Path(cfg.run.out_dir) / 'checkpoints'}")
    return train(cfg, backbone, critic, clips, rt, evaluate)


def _main(argv: list[str], prog: str, mode: str) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML file or shipped preset name (see `shiftvdm config list`)")
    parser.add_argument("--resume", action="store_true", help="continue the run in run.out_dir from its last checkpoint")
    parser.add_argument("--out", help="run folder (same as run.out_dir=...)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in run.out_dir (default: refuse; --resume continues it)")
    parser.add_argument("--skip-bad", action="store_true", help="drop bad data entries instead of stopping")
    parser.add_argument("--dry-run", action="store_true",
                        help="build the preset's real architecture at full size with random weights and run one SHIFT "
                             "step per group size at a small clip size (recipes/dry_run/; options dry_run.*=...)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=1e-4 run.max_steps=100")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"run.out_dir={args.out}")
    if args.skip_bad:
        overrides.append("data.skip_bad=true")
    if args.dry_run:  # the command line sends --dry-run to recipes/dry_run/ (recipes/launch.py), never through here
        raise ConfigError(f"--dry-run: `{prog}` runs it through recipes.launch.main_{mode}; recipes.train only trains")
    cfg = resolve_train_config(mode, args.config, overrides)
    from shiftvdm.utils.outputs import check_run_dir, clear_run, new_output_dir

    if args.resume and args.overwrite:
        raise ConfigError("--resume continues the run in run.out_dir and --overwrite replaces it; pass one")
    inputs = [("data.train", cfg.data.train), ("lora.init_from", cfg.lora.init_from),
              ("discriminator.critic", cfg.discriminator.critic), ("--config", args.config)]
    check_run_dir(cfg.run.out_dir, resume=args.resume, overwrite=args.overwrite, inputs=inputs)
    if args.overwrite:
        clear_run(cfg.run.out_dir)
    with new_output_dir(cfg.run.out_dir):  # a run refused before its first checkpoint leaves no folder
        result = run_training(cfg, resume=args.resume)
    from shiftvdm.train.distributed import shutdown_process_group

    shutdown_process_group()  # every rank got here: end gloo/NCCL cleanly instead of at interpreter exit
    print(f"{mode}: {result.steps} steps ({result.stopped_by}); outputs in {cfg.run.out_dir}")
    return 0


def main_pretrain(argv: list[str], prog: str = "shiftvdm pretrain") -> int:
    return _main(argv, prog, "pretrain")


def main_sft(argv: list[str], prog: str = "shiftvdm sft") -> int:
    return _main(argv, prog, "sft")


def main_shift(argv: list[str], prog: str = "shiftvdm shift") -> int:
    return _main(argv, prog, "shift")
