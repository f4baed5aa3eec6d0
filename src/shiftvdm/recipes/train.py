"""`shiftvdm pretrain | sft | shift`: one trainer (train/shift.py), three stages.

Merge order: dataclass defaults < the stage's defaults below < --config YAML < command-line overrides.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from torch import Tensor

from shiftvdm.backbone import backbone_config, load_backbone
from shiftvdm.backbone.base import Backbone
from shiftvdm.config import config_from_dict, deep_merge, load_yaml_with_base, parse_overrides, resolve_config_path
from shiftvdm.errors import CheckpointError, ConfigError, TrainingError
from shiftvdm.rewards.critic import MotionCritic
from shiftvdm.rewards.critic_training import CriticTrainer
from shiftvdm.train.checkpointing import Checkpointer
from shiftvdm.train.checkpointing import resume as resume_run
from shiftvdm.train.clips import open_training_clips
from shiftvdm.train.config import TrainConfig
from shiftvdm.train.cost import cost_model
from shiftvdm.train.distributed import Distributed, shutdown_process_group
from shiftvdm.train.engine import GradientEngine, make_engine
from shiftvdm.train.hooks import Evaluate, RunHooks
from shiftvdm.train.memory import memory_plan
from shiftvdm.train.optim import WeightEMA, build_generator_optimizer
from shiftvdm.train.shift import TrainResult, train
from shiftvdm.train.state import TrainState
from shiftvdm.utils import preemption
from shiftvdm.utils.outputs import check_run_dir, clear_run, new_output_dir
from shiftvdm.recipes.args import parse_command_line
from shiftvdm.utils.run_lock import run_lock

logger = logging.getLogger(__name__)

STAGES = ("pretrain", "sft", "shift")


def stage_defaults(mode: str) -> dict[str, Any]:
    """What each command means before any config file: the preset ``stages/<mode>`` (configs/stages/*.yaml);
    SFT is SHIFT with λ_aw = 0 (no rollouts, no rewards)."""
    return load_yaml_with_base(resolve_config_path(f"stages/{mode}"), TrainConfig)


def merge_train_config(mode: str, config: str | None, overrides: list[str]) -> tuple[TrainConfig, str]:
    """Stage defaults, then the preset (with its base), then the dotted overrides -> (config, its source)."""
    data = stage_defaults(mode)
    source = f"`shiftvdm {mode}` defaults (preset stages/{mode})"
    if config:
        path = resolve_config_path(config)
        data = deep_merge(data, load_yaml_with_base(path, TrainConfig))
        source = str(path)
    data = deep_merge(data, parse_overrides(overrides, TrainConfig))
    data["mode"] = mode
    return config_from_dict(TrainConfig, data, source), source


def resolve_train_config(mode: str, config: str | None, overrides: list[str]) -> TrainConfig:
    cfg, source = merge_train_config(mode, config, overrides)
    backbone_config(cfg.backbone.name, dict(cfg.backbone.options), f"{source}: backbone.options")
    if cfg.optim.warmup_steps >= cfg.run.max_steps:  # a warning: short debugging runs do this on purpose
        logger.warning("%s: optim.warmup_steps=%d >= run.max_steps=%d: the learning rate never reaches optim.lr=%g",
                       source, cfg.optim.warmup_steps, cfg.run.max_steps, cfg.optim.lr)
    if mode == "shift" and cfg.uses_rollouts and not cfg.critic.path:
        raise ConfigError(f"{source}: critic.path is required for SHIFT (a folder written by "
                          "`shiftvdm train-critic`)")
    return cfg


@dataclass
class TrainingParts:
    """What train/shift.py's ``train`` takes besides the config, the backbone and the clips."""

    state: TrainState
    engine: GradientEngine
    dist: Distributed
    hooks: RunHooks
    checkpointer: Checkpointer


def assemble(cfg: TrainConfig, backbone: Backbone, critic: Any, *, accelerator: Any = None,
             evaluate: Evaluate | None = None, sample_frames: Tensor | None = None,
             sample_prompts: list[str] | None = None) -> TrainingParts:
    """The run around a built backbone and critic: engine, optimizers, state, checkpointer and hooks.

    The engine comes first: FSDP2 replaces the parameters with sharded ones, and the optimizer must hold those.
    """
    dist = Distributed.from_accelerator(accelerator)
    engine = make_engine(backbone.denoiser, dist, cfg.run.distributed, mixed_precision=cfg.run.mixed_precision,
                         accelerator=accelerator, find_unused_parameters=cfg.run.find_unused_parameters)
    params = [p for p in backbone.trainable_parameters() if p.requires_grad]
    if not params:
        raise TrainingError("the backbone has no trainable parameters (LoRA not added and full training off?)")
    optimizer, scheduler = build_generator_optimizer(cfg, params)
    engine.attach_optimizer(optimizer, cfg.rollout.batch_size, cfg.optim.max_grad_norm)  # DeepSpeed
    ema = WeightEMA(params, cfg.optim.ema_decay) if cfg.optim.ema_decay > 0 else None
    trainer = CriticTrainer(critic, cfg.critic.train) if critic is not None and cfg.critic.refresh else None
    state = TrainState(cfg.run.seed, dist.rank, params, optimizer, scheduler, ema, critic, trainer, engine=engine)
    run_dir = Path(cfg.run.out_dir)
    checkpointer = Checkpointer(cfg, run_dir, dist)
    hooks = RunHooks(cfg, run_dir, dist, backbone, state, engine, checkpointer, evaluate=evaluate,
                     sample_frames=sample_frames, sample_prompts=sample_prompts)
    return TrainingParts(state, engine, dist, hooks, checkpointer)


def build_backbone(cfg: TrainConfig, accelerator: Any = None) -> Backbone:
    """The backbone of ``cfg``: loaded, on the device, the SFT LoRA fused when given, LoRA added."""
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
    return backbone


def default_accelerator(cfg: TrainConfig) -> Any:
    """Accelerate's process group and device (DDP kwargs from the config); one CPU process without a launcher."""
    ddp = DistributedDataParallelKwargs(find_unused_parameters=cfg.run.find_unused_parameters)
    return Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp])


def run_training(cfg: TrainConfig, *, resume: bool = False, clips: Any = None,
                 evaluate: Evaluate | None = None, accelerator: Any = None) -> TrainResult:
    """Train (or resume) one run; returns the TrainResult. Used by the CLI, the demo and tests."""
    accelerator = accelerator if accelerator is not None else default_accelerator(cfg)
    clips = clips if clips is not None else open_training_clips(cfg.data)
    backbone = build_backbone(cfg, accelerator)
    device = accelerator.device
    critic = MotionCritic.load(cfg.critic.path, device) if cfg.uses_rollouts else None
    first = clips.load(list(range(min(cfg.run.num_samples, len(clips)))))
    plan = memory_plan(cfg, backbone, accelerator.num_processes, critic.config if critic is not None else None)
    if accelerator.is_main_process:
        logger.info("%s", plan.table())
        logger.info("%s", startup_cost(cfg, backbone, accelerator.num_processes).table())
    plan.check()  # refuse a plan that does not fit, naming the setting to change
    parts = assemble(cfg, backbone, critic, accelerator=accelerator, evaluate=evaluate, sample_frames=first[0][:, 0],
                     sample_prompts=first[1])
    if resume and not resume_run(parts.checkpointer, parts.state):
        raise CheckpointError(f"--resume: no checkpoint under {Path(cfg.run.out_dir) / 'checkpoints'}")
    try:
        return train(cfg, backbone, clips, parts.state, parts.engine, parts.dist, parts.hooks)
    except TrainingError as exc:  # a stopped run says where it can resume from
        note = parts.hooks.last_checkpoint_note()
        raise TrainingError(f"{exc} {note[:1].upper()}{note[1:]}.") from exc


def startup_cost(cfg: TrainConfig, backbone: Backbone, world_size: int) -> Any:
    """The run's cost model in SFT units (train/cost.py), printed beside the memory plan."""
    family = getattr(backbone, "config", None)
    if family is None:
        family = backbone_config(cfg.backbone.name, dict(cfg.backbone.options))
    return cost_model(cfg, family, world_size)


def command_overrides(args: argparse.Namespace) -> list[str]:
    """The dotted overrides of a run's command line: its positional ones, then ``--out`` and ``--skip-bad``."""
    return [*args.overrides, *([f"run.out_dir={args.out}"] if args.out else []),
            *(["data.skip_bad=true"] if args.skip_bad else [])]


def main(argv: list[str], prog: str, mode: str) -> int:
    """`shiftvdm pretrain | sft | shift` without ``--dry-run`` (recipes/launch.py decides)."""
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
    args = parse_command_line(parser, argv)
    overrides = command_overrides(args)
    if args.dry_run:  # the command line sends --dry-run to recipes/dry_run/ (recipes/launch.py), never through here
        raise ConfigError(f"--dry-run: `{prog}` runs it through recipes.launch.main_{mode}; recipes.train only trains")
    cfg = resolve_train_config(mode, args.config, overrides)

    if args.resume and args.overwrite:
        raise ConfigError("--resume continues the run in run.out_dir and --overwrite replaces it; pass one")
    inputs = [("data.train", cfg.data.train), ("lora.init_from", cfg.lora.init_from),
              ("critic.path", cfg.critic.path), ("--config", args.config)]
    out = Path(cfg.run.out_dir)
    check_run_dir(out, resume=args.resume, overwrite=args.overwrite, inputs=inputs)  # writes nothing
    rank0 = preemption.launch_rank() == 0  # multi-process: rank 0 holds the folder's lock, and clears it
    # a run refused before its first checkpoint leaves no folder; one job per folder (utils/run_lock.py);
    # SIGTERM / SIGUSR1 stop at a checkpoint (utils/preemption.py)
    with new_output_dir(out), run_lock(out, enabled=rank0), preemption.handling():
        check_run_dir(out, resume=args.resume, overwrite=args.overwrite, inputs=inputs)  # again, now that it is ours
        if rank0:
            if args.overwrite:
                clear_run(out)
            preemption.clear_marker(out)  # this start handles an earlier preemption
        result = run_training(cfg, resume=args.resume)
        resume_cmd = resume_command(prog, argv)
        if result.stopped_by == "preempted" and rank0:  # after every rank's checkpoint (the save's barrier)
            preemption.write_marker(out, result.steps, result.checkpoint, resume_cmd, prog)
        since = preemption.seconds_since_signal()
    shutdown_process_group()  # every rank got here: end gloo/NCCL cleanly instead of at interpreter exit
    if result.stopped_by == "preempted":
        if rank0:
            after = f", {since:.1f} s after the signal" if since is not None else ""
            print(f"{prog}: preempted at step {result.steps}; checkpoint {result.checkpoint}; resume with "
                  f"`{resume_cmd}` (exit {preemption.EXIT_CODE}{after})", file=sys.stderr, flush=True)
        return preemption.EXIT_CODE
    print(f"{mode}: {result.steps} steps ({result.stopped_by}); outputs in {cfg.run.out_dir}")
    return 0


def resume_command(prog: str, argv: list[str]) -> str:
    """The command line that continues this run: the same arguments with ``--resume`` (never ``--overwrite``)."""
    kept = [a for a in argv if a not in ("--resume", "--overwrite")]
    return " ".join([prog, *(shlex.quote(a) for a in kept), "--resume"])
