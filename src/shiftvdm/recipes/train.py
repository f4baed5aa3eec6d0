"""`shiftvdm pretrain | sft | shift`: one trainer (train/shift.py), three stages.

Merge order: dataclass defaults < the stage's defaults below < --config YAML < command-line overrides.
"""

from __future__ import annotations

import argparse
import logging
import math
import shlex
import shutil
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from torch import Tensor

from shiftvdm.backbone import TINY_PRESETS, backbone_config, load_backbone
from shiftvdm.backbone.base import Backbone, Condition
from shiftvdm.config import (
    absolute_path_values,
    config_from_dict,
    deep_merge,
    load_yaml_with_base,
    parse_overrides,
    resolve_config_path,
)
from shiftvdm.errors import CheckpointError, ConfigError, DataError, OutputError, TrainingError
from shiftvdm.recipes.args import parse_command_line
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
from shiftvdm.train.memory import ModelSizes, latent_numel, memory_plan, model_sizes
from shiftvdm.train.optim import WeightEMA, build_generator_optimizer
from shiftvdm.train.shift import TrainResult, train
from shiftvdm.train.state import TrainState
from shiftvdm.utils import preemption
from shiftvdm.utils.atomic import sweep_stale
from shiftvdm.utils.outputs import (
    begin_outputs,
    check_run_dir,
    clear_run,
    entries,
    holds_run,
    model_identity,
    new_output_dir,
    path_inputs,
    record_outputs,
    stored_differences,
)
from shiftvdm.utils.run_lock import run_lock
from shiftvdm.utils.step_checkpoints import checkpoint_dirs

logger = logging.getLogger(__name__)

STAGES = ("pretrain", "sft", "shift")
# what a run writes at its top level (claimed in its stamp when absent at the start; what else appears during the
# run is claimed at its end), so --overwrite removes these and nothing else
RUN_OUTPUTS = ("config.yaml", "checkpoints", "logs", "samples", "summary.json", "lora.safetensors",
               "lora.transformer_2.safetensors", "model", "critic", preemption.MARKER)


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
    # recorded absolute (config.yaml, checkpoints): a resume from another working directory names the same files
    data = absolute_path_values(TrainConfig, data)
    data["mode"] = mode
    return config_from_dict(TrainConfig, data, source), source


def resolve_train_config(mode: str, config: str | None, overrides: list[str]) -> TrainConfig:
    cfg, source = merge_train_config(mode, config, overrides)
    backbone_config(cfg.backbone.name, dict(cfg.backbone.options), f"{source}: backbone.options")
    for warning in cfg.rule_warnings():  # train/config.py RULES: the run still trains, differently
        logger.warning("%s: %s", source, warning)
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
             sample_prompts: list[str] | None = None, sample_cond: Condition | None = None) -> TrainingParts:
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
                     sample_frames=sample_frames, sample_prompts=sample_prompts, sample_cond=sample_cond)
    return TrainingParts(state, engine, dist, hooks, checkpointer)


def build_backbone(cfg: TrainConfig, accelerator: Any = None, *, text_encoder: bool = True) -> Backbone:
    """The backbone of ``cfg``: loaded, on the device, the SFT LoRA fused when given, LoRA added.

    ``text_encoder=False`` (every prompt embedding comes from ``data.cache``) leaves out the text encoder of a
    family that has the option (Wan's ``load_text_encoder``) unless the config sets it."""
    backbone_cfg = cfg.backbone
    if not text_encoder and "load_text_encoder" in {f.name for f in fields(backbone_config(backbone_cfg.name, {}))} \
            and "load_text_encoder" not in backbone_cfg.options:
        backbone_cfg = replace(backbone_cfg, options={**backbone_cfg.options, "load_text_encoder": False})
    backbone = load_backbone(backbone_cfg)
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


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "F8_E4M3": 1, "F8_E5M2": 1}


def planned_model_sizes(cfg: TrainConfig) -> ModelSizes | None:
    """What the memory plan needs of the backbone, known before any weight is allocated: the tensors listed in the
    safetensors headers of a model folder (floating ones in ``backbone.options.dtype``), or a meta-device build of
    a random-init preset. The LoRA is not built yet, so its weights count 0: this plan is a lower bound, and the
    full plan follows the build. None when it cannot be read this way (e.g. a folder of .bin files)."""
    from safetensors import safe_open

    latents = latent_numel(cfg.backbone.name, dict(cfg.backbone.options), cfg.data.num_frames, cfg.data.height,
                           cfg.data.width)
    pretrained = cfg.backbone.pretrained
    if pretrained is None or pretrained in TINY_PRESETS:
        try:
            with torch.random.fork_rng(devices=[]), torch.device("meta"):
                sizes = model_sizes(load_backbone(cfg.backbone), cfg)
            if not cfg.lora.enabled:  # full training: these weights are the trainable ones
                return ModelSizes(sizes.frozen_bytes, sizes.trainable_params, latents)
            return ModelSizes(sizes.frozen_bytes + 4 * sizes.trainable_params, 0, latents)
        except Exception:  # a builder that needs real values: planned after the build only
            return None
    files = sorted(Path(pretrained).rglob("*.safetensors")) if Path(pretrained).is_dir() else []
    # diffusers folders may hold a variant beside the plain weights (x.fp16.safetensors): the loader reads the plain
    # ones (no variant is asked for), so a variant with a plain sibling is not counted twice
    plain = {(f.parent, f.name) for f in files if len(f.name.split(".")) == 2}
    files = [f for f in files if len(f.name.split(".")) == 2
             or (f.parent, f"{f.name.split('.')[0]}.safetensors") not in plain]
    if cfg.data.cache or cfg.backbone.options.get("load_text_encoder") is False:
        # with cached conditioning the text encoder is never loaded (Wan's UMT5-XXL: 13.5 GB): a lower bound
        # that counted it would refuse runs that fit
        root = Path(pretrained)
        files = [f for f in files if "text_encoder" not in f.relative_to(root).parts[:-1]]
    if not files:
        return None
    cast = {"bfloat16": 2, "float16": 2, "float32": 4}.get(str(cfg.backbone.options.get("dtype", "")))
    frozen = 0
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():
                    piece = handle.get_slice(key)
                    numel = math.prod(piece.get_shape())
                    dtype = piece.get_dtype()
                    size = cast if cast is not None and dtype.startswith(("F", "BF")) else _DTYPE_BYTES.get(dtype, 4)
                    frozen += numel * size
        except Exception:  # not a weights file this build reads: left to the full plan
            continue
    return ModelSizes(frozen, 0, latents)


def check_rules_with_data(cfg: TrainConfig, num_clips: int) -> None:
    """The rules of train/config.py RULES that need the dataset's size: refused or logged as warnings."""
    where = f"{cfg.data.train or 'the training clips'} ({num_clips} clips)"
    errors = [e for e in cfg.rule_violations(num_clips) if e not in cfg.rule_violations()]
    if errors:
        raise ConfigError(f"{where}: invalid config:\n  " + "\n  ".join(errors))
    for warning in cfg.rule_warnings(num_clips):
        if warning not in cfg.rule_warnings():
            logger.warning("%s: %s", where, warning)


def run_training(cfg: TrainConfig, *, resume: bool = False, clips: Any = None,
                 evaluate: Evaluate | None = None, accelerator: Any = None) -> TrainResult:
    """Train (or resume) one run; returns the TrainResult. Used by the CLI, the demo and tests."""
    accelerator = accelerator if accelerator is not None else default_accelerator(cfg)
    sizes = planned_model_sizes(cfg)
    if sizes is not None:  # refuse a model that cannot fit before any of it is allocated (and before the data check)
        memory_plan(cfg, sizes, accelerator.num_processes).check()
    clips = clips if clips is not None else open_training_clips(cfg.data, cfg.backbone)
    check_rules_with_data(cfg, len(clips))
    load_encoded = getattr(clips, "load_encoded", None)
    # every clip's conditioning is in data.cache (open_training_clips refuses a gap): no text encoder to load
    backbone = build_backbone(cfg, accelerator, text_encoder=load_encoded is None)
    device = accelerator.device
    critic = MotionCritic.load(cfg.critic.path, device) if cfg.uses_rollouts else None
    sample_ids = list(range(min(cfg.run.num_samples, len(clips))))
    first = clips.load(sample_ids)
    sample_cond = load_encoded(sample_ids)[1] if load_encoded is not None and sample_ids else None
    plan = memory_plan(cfg, backbone, accelerator.num_processes, critic.config if critic is not None else None)
    if accelerator.is_main_process:
        logger.info("%s", plan.table())
        logger.info("%s", startup_cost(cfg, backbone, accelerator.num_processes).table())
    plan.check()  # refuse a plan that does not fit, naming the setting to change
    parts = assemble(cfg, backbone, critic, accelerator=accelerator, evaluate=evaluate, sample_frames=first[0][:, 0],
                     sample_prompts=first[1], sample_cond=sample_cond)
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
    inputs = [*path_inputs(cfg), ("--config", args.config)]  # every path-valued setting: none inside the run
    out = Path(cfg.run.out_dir)
    # decided on every rank before any rank changes the folder (rank 0 below empties logs/ but keeps it)
    restart = not args.overwrite and bool(stopped_before_first_checkpoint(out))
    check_run_dir(out, resume=args.resume or restart, overwrite=args.overwrite, inputs=inputs,
                  command=mode)  # writes nothing
    if restart and not args.resume:
        raise OutputError(f"run.out_dir {out}: holds a run that stopped before its first checkpoint "
                          f"({', '.join(stopped_before_first_checkpoint(out))}): there is nothing to continue; "
                          "pass --resume (or --overwrite) to run it again from step 0, replacing its logs, or "
                          "choose a new folder")
    rank0 = preemption.launch_rank() == 0  # multi-process: rank 0 holds the folder's lock, and clears it
    # a run refused before its first checkpoint leaves no folder; one job per folder (utils/run_lock.py);
    # SIGTERM / SIGUSR1 stop at a checkpoint (utils/preemption.py)
    with new_output_dir(out), run_lock(out, enabled=rank0), preemption.handling():
        check_run_dir(out, resume=args.resume, overwrite=args.overwrite, inputs=inputs,
                      command=mode)  # again, now that it is ours
        before: set[str] = set()
        if rank0:
            sweep_stale(out)  # what killed writers left, under the lock
            models = model_inputs(cfg)
            if args.resume and not restart:
                check_resume_inputs(out, models)
            if args.overwrite:
                check_inputs_exist(cfg)  # a missing input found after the old run was removed costs the run
                clear_run(out, mode)
            elif restart:
                if not stopped_before_first_checkpoint(out):  # a job that ended just before this one took the lock
                    raise OutputError(f"run.out_dir {out}: changed while this job started (it holds a checkpoint "
                                      "now); run the command again")
                logger.warning("--resume: %s holds no checkpoint yet (the earlier job stopped before its first "
                               "one): running it again from step 0; its logs are replaced", out)
                clear_logs(out)
            before = begin_outputs(out, mode, declared=RUN_OUTPUTS, inputs=models, resume=args.resume)
            preemption.clear_marker(out)  # this start handles an earlier preemption
        try:
            result = run_training(cfg, resume=args.resume and not restart)
        finally:
            if rank0:
                record_outputs(out, entries(out) - before)
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


def stopped_before_first_checkpoint(out: Path) -> list[str]:
    """The run outputs in ``out`` when it holds a run that stopped before writing any checkpoint or final weights
    (killed while starting, or crashed before a checkpoint): nothing to resume from. [] otherwise."""
    found = holds_run(out)
    if not found or {"summary.json", "lora.safetensors", "model"} & set(found):
        return []
    roots = [out / "checkpoints", *sorted((out / "checkpoints").glob("rank*"))]
    return [] if any(checkpoint_dirs(root) for root in roots) else found


def clear_logs(out: Path) -> None:
    """Empty ``out/logs`` (a restart from step 0 would append to the first attempt's records); the folder stays,
    so every rank sees the same run outputs whenever it looks."""
    logs = out / "logs"
    for p in logs.iterdir() if logs.is_dir() else []:
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def model_inputs(cfg: TrainConfig) -> dict[str, dict]:
    """The identity (``utils.outputs.model_identity``: sizes, headers, sampled bytes) of each local weights path
    the run builds on; a hub id or an unset one is left out."""
    values = {"backbone.pretrained": cfg.backbone.pretrained, "lora.init_from": cfg.lora.init_from,
              "critic.path": cfg.critic.path}
    return {k: model_identity(v) for k, v in values.items() if v and Path(v).exists()}


def check_inputs_exist(cfg: TrainConfig) -> None:
    """The local inputs a run reads exist (checked before ``--overwrite`` removes the earlier run)."""
    needed = {"data.train": cfg.data.train, "lora.init_from": cfg.lora.init_from,
              "critic.path": cfg.critic.path if cfg.uses_rollouts else None}
    missing = [f"{k}={v}" for k, v in needed.items() if v and not Path(v).exists()]
    if missing:
        raise DataError(f"--overwrite: {', '.join(missing)}: not found; nothing was removed")


def check_resume_inputs(out: Path, current: dict[str, dict]) -> None:
    """--resume continues with the weights the run started from: refuse, naming the setting and the files,
    when they changed (a folder made before the stamp has no record, and is resumed as before)."""
    diffs = stored_differences(out, current)
    if diffs is None:
        logger.info("%s has no stamp (made by an older shiftvdm): the base model's identity is not checked", out)
        return
    if diffs:
        raise CheckpointError(f"--resume {out}: the weights this run started from have changed:\n  "
                              + "\n  ".join(diffs) + "\nresume with the original weights, or start a new run "
                              "(another run.out_dir, or --overwrite)")


def resume_command(prog: str, argv: list[str]) -> str:
    """The command line that continues this run: the same arguments with ``--resume`` (never ``--overwrite``)."""
    kept = [a for a in argv if a not in ("--resume", "--overwrite")]
    return " ".join([prog, *(shlex.quote(a) for a in kept), "--resume"])
