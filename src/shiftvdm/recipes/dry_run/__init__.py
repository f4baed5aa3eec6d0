"""`shiftvdm shift --config <preset> --dry-run`: the preset's real architecture at full size, on CPU, no download.

1. every component is built on the meta device from the diffusers configs shipped in ``backbone/configs/``:
   exact parameter counts, the exact LoRA size and the static memory plan;
2. if the frozen weights fit in this machine's available memory, the model is materialised in the preset's
   dtypes with seeded random weights (UMT5 replaced by random embeddings of its real width);
3. one full SHIFT step runs through the real trainer (``train.shift.train``) at a small clip size and with few
   sampler steps, once per group size P, with the peak resident memory of each step measured on its own.

The critic is a random-init ``MotionCritic`` unless ``critic.path`` names an existing folder. The parts
are backbone/full_size.py (building, counting, the text encoder's stand-in), train/memory.py (the plan, peak RSS),
and here: ``plan`` (the static and the full-size plan), ``squares`` (the clips) and ``step`` (the one-step config,
the measured step, the printed lines). recipes/launch.py sends ``--dry-run`` here. Options are dotted overrides
under ``dry_run.`` (:class:`DryRunConfig`), e.g.
``shiftvdm shift --config svd_shift_davis --dry-run dry_run.group_sizes=[2,8] dry_run.height=64``.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from shiftvdm.backbone.full_size import (ARCHITECTURES, ARCHITECTURES_DIR, architecture_config, architecture_for,
                                         build_on_meta, component_bytes, lora_parameter_count, parameter_count,
                                         summarize_on_meta)
from shiftvdm.config import config_from_dict, parse_overrides
from shiftvdm.errors import ConfigError
from shiftvdm.utils.atomic import write_text
from shiftvdm.recipes.dry_run.plan import full_size_plan, static_memory_plan
from shiftvdm.recipes.dry_run.squares import MovingSquares
from shiftvdm.recipes.dry_run.step import (built_line, materialise, not_run_reason, peak_ratio_line, plan_lines,
                                           run_step, step_config, step_critic, step_line, step_start_line)
from shiftvdm.recipes.train import command_overrides, merge_train_config
from shiftvdm.train.memory import mem_available as _mem_available  # module-level so tests can stand in
from shiftvdm.train.memory import meminfo
from shiftvdm.recipes.args import parse_command_line

# Small clip sizes that still pass every component's size rules (SVD: 8× VAE, 3 UNet downsamplings;
# Wan: 4k+1 frames, multiples of VAE stride × patch).
_SMALL_SIZE = {"svd_xt": (8, 64, 64), "wan22_ti2v_5b": (9, 64, 64), "wan22_i2v_a14b": (9, 32, 32)}


@dataclass
class DryRunConfig:
    """Settings of the dry run (``dry_run.<field>=value`` on the command line)."""

    group_sizes: list[int] = field(default_factory=lambda: [2, 8])  # P values, one SHIFT step each
    num_frames: int | None = None  # clip frames of the step; None = a small size per model (SVD 8, Wan 9)
    height: int | None = None  # clip height; None = 64 (Wan2.2-A14B: 32)
    width: int | None = None  # clip width; None = 64 (Wan2.2-A14B: 32)
    inference_steps: int = 2  # rollout sampler steps (the presets' 25 would take hours on 2 CPU cores)
    meta_only: bool = False  # only the meta-device build: parameter counts and the memory plan
    memory_fraction: float = 0.9  # materialise only if the frozen weights fit in this share of MemAvailable
    seed: int = 0  # random weights, clips and embeddings
    out_dir: str | None = None  # run folder of the steps; None = a temporary folder, removed afterwards
    report_json: str | None = None  # also write the figures to this JSON file (benchmarks/bench_full_size.py)
    world_size: int = 8  # ranks of the full-size plan (train/memory.py), as the presets' launch lines (8 GPUs)

    def __post_init__(self) -> None:
        if not self.group_sizes or any(int(p) < 1 for p in self.group_sizes):
            raise ConfigError(f"dry_run.group_sizes: expected a list of integers >= 1, got {self.group_sizes}")
        if self.inference_steps < 1:
            raise ConfigError(f"dry_run.inference_steps: expected >= 1, got {self.inference_steps}")
        if not 0 < self.memory_fraction <= 1:
            raise ConfigError(f"dry_run.memory_fraction: expected a value in (0, 1], got {self.memory_fraction}")


def _run_steps(cfg: Any, dry: DryRunConfig, arch: str, video_shape: tuple[int, int, int], report: dict[str, Any],
               echo) -> tuple[list[dict[str, Any]], int]:
    """Materialise the backbone (+ LoRA), run one SHIFT step per group size; the steps and LoRA bytes/weight."""
    import accelerate

    backbone, built = materialise(cfg, arch, video_shape, dry.seed, ARCHITECTURES_DIR)
    report.update(build_seconds=built["seconds"], build_peak_rss=built["peak_rss"], lora_dtype=built["lora_dtype"],
                  trainable_parameters_built=built["trainable_parameters_built"])
    echo(built_line(report, built))
    critic, report["critic"] = step_critic(cfg.critic.path)
    accelerator = accelerate.Accelerator(cpu=not torch.cuda.is_available())
    if accelerator.device.type != "cpu":  # as build_training does: the model lives on the rollouts' device
        backbone.to(accelerator.device)
    steps = []
    with tempfile.TemporaryDirectory(prefix="shiftvdm-dry-run-") as tmp:
        root = Path(dry.out_dir) if dry.out_dir else Path(tmp)
        for P in dry.group_sizes:
            echo(step_start_line(P, video_shape, dry.inference_steps))
            step_cfg = step_config(cfg, int(P), dry.inference_steps, dry.seed, video_shape, root / f"P{P}")
            steps.append(run_step(step_cfg, backbone, critic, MovingSquares(1, video_shape), accelerator))
            echo(step_line(steps[-1]))
    return steps, built["bytes_per_trainable"]


def dry_run(cfg: Any, dry: DryRunConfig, echo=print) -> dict[str, Any]:
    """Build the preset's real architecture, print counts and the memory plan, run one SHIFT step per P."""
    options = dict(cfg.backbone.options)
    arch = architecture_for(cfg.backbone.name, options)
    small = _SMALL_SIZE[arch]
    video_shape = (dry.num_frames or small[0], dry.height or small[1], dry.width or small[2])
    # 1. Meta-device build: exact counts and the static plan, for every model including those that cannot run here.
    meta = summarize_on_meta(arch, options, cfg.lora, ARCHITECTURES_DIR)
    sizes, lora = meta.plan_sizes, meta.lora_parameters
    report: dict[str, Any] = {"architecture": arch, "video_shape": video_shape, "parameters": meta.parameters,
                              "lora_parameters": lora, "meta_build_seconds": meta.seconds}
    echo(f"== {arch}: real architecture from {ARCHITECTURES_DIR / arch} (random weights, no download)")
    echo("\n".join(meta.lines()))
    frozen_needed = sum(v for k, v in sizes.items() if not k.startswith("text_encoder"))
    available = _mem_available()
    report["frozen_bytes_to_materialise"], report["mem_available"] = frozen_needed, available
    gc.collect()
    # 2. The steps, if the frozen weights fit; the plan assumes fp32 LoRA weights unless measured.
    lora_bytes_each = 4
    if dry.meta_only or frozen_needed > dry.memory_fraction * available:
        report["not_run"] = reason = not_run_reason(dry.meta_only, frozen_needed, meta.dtype, meminfo("MemTotal"),
                                                    available, dry.memory_fraction)
        echo(f"  step: NOT RUN — {reason}")
    else:
        report["steps"], lora_bytes_each = _run_steps(cfg, dry, arch, video_shape, report, echo)
    # 3. Plans: static per rank at the step's size, and train/memory.py's at the preset's full clip size.
    plan = report["memory_plan"] = static_memory_plan(sizes, lora, lora_bytes_each, cfg.optim.ema_decay > 0)
    report["static_total"] = sum(size for name, size in plan if "not built" not in name)
    full = full_size_plan(cfg, arch, sum(sizes.values()), lora, dry.world_size, ARCHITECTURES_DIR)
    for line in plan_lines(plan, full, (cfg.data.num_frames, cfg.data.height, cfg.data.width)):
        echo(line)
    report["full_size_plan"] = [(r.where, r.name, r.bytes) for r in full.rows]
    ratio = peak_ratio_line(report.get("steps", []))
    if ratio is not None:
        echo(ratio)
    return report


def resolve_dry_run(mode: str, config: str | None, overrides: list[str]) -> tuple[Any, DryRunConfig]:
    """The preset's TrainConfig (without the folder and critic checks a real run needs) and the dry-run options."""
    mine = [o for o in overrides if o.startswith("dry_run.")]
    rest = [o for o in overrides if not o.startswith("dry_run.")]
    dry = config_from_dict(DryRunConfig, parse_overrides(mine).get("dry_run", {}), "dry_run.*")
    return merge_train_config(mode, config, rest)[0], dry


def run_dry_run(mode: str, config: str | None, overrides: list[str], echo=print) -> int:
    """Entry point of ``shiftvdm <stage> --config X --dry-run [dry_run.field=value ...]``."""
    torch.manual_seed(0)
    cfg, dry = resolve_dry_run(mode, config, overrides)
    report = dry_run(cfg, dry, echo=echo)
    if dry.report_json:
        write_text(dry.report_json, json.dumps(report, indent=2, default=str) + "\n")
    return 0 if report.get("steps") or report.get("not_run") else 1


def main(argv: list[str], prog: str, mode: str) -> int:
    """``shiftvdm <stage> --config X --dry-run [dry_run.field=value ...]`` (recipes/launch.py sends it here).

    Takes a run's command line: ``--out`` and ``--skip-bad`` become their overrides as in a run, ``--resume`` and
    ``--overwrite`` change nothing (the steps run in ``dry_run.out_dir`` or a temporary folder).
    """
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="this dry run (without it: a training run)")
    parser.add_argument("--config", help="YAML file or shipped preset name (see `shiftvdm config list`)")
    parser.add_argument("--out", help="run folder (same as run.out_dir=...; the steps run in dry_run.out_dir)")
    parser.add_argument("--skip-bad", action="store_true", help="same as data.skip_bad=true")
    parser.add_argument("--resume", action="store_true", help="no effect on a dry run")
    parser.add_argument("--overwrite", action="store_true", help="no effect on a dry run")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. dry_run.group_sizes=[2,8] lora.rank=16")
    args = parse_command_line(parser, argv)
    return run_dry_run(mode, args.config, command_overrides(args))


__all__ = ["ARCHITECTURES", "DryRunConfig", "architecture_config", "architecture_for", "build_on_meta", "component_bytes",
           "dry_run", "lora_parameter_count", "main", "parameter_count", "resolve_dry_run", "run_dry_run"]
