"""Parts of the full-size dry run (``shiftvdm shift --dry-run``, assembled in recipes/dry_run/).

The preset's backbone and critic materialised for the step (``materialise``, ``step_critic``), the preset
cut to one measured SHIFT step (``step_config``, ``run_step``) and the lines the dry run prints,
each a pure function of figures already measured, so the recipe only builds, runs and echoes. The meta-device
build and its counts are backbone/full_size.py; the plans are train/memory.py and ``plan`` here.
"""

from __future__ import annotations

import gc
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from shiftvdm.backbone.full_size import build_backbone
from shiftvdm.recipes.dry_run.plan import static_plan_table
from shiftvdm.recipes.train import assemble
from shiftvdm.rewards.critic import CriticConfig, MotionCritic
from shiftvdm.train.memory import GIB, MemoryPlan, measure_peak, peak_rss
from shiftvdm.train.shift import train


def built_summary(backbone: Any) -> dict[str, Any]:
    """What a built backbone holds: trainable parameters and their dtypes, the frozen denoiser's dtypes."""
    trainable = backbone.trainable_parameters()
    return {"trainable_parameters_built": sum(p.numel() for p in trainable),
            "lora_dtype": sorted({str(p.dtype).replace("torch.", "") for p in trainable}),
            "frozen_dtypes": sorted({str(p.dtype).replace("torch.", "") for p in backbone.denoiser.parameters()
                                     if not p.requires_grad}),
            "bytes_per_trainable": max((p.element_size() for p in trainable), default=4)}


def materialise(cfg: Any, arch: str, video_shape: tuple[int, int, int], seed: int,
                root: Path) -> tuple[Any, dict[str, Any]]:
    """The preset's backbone in its dtypes with seeded random weights, its LoRA and gradient checkpointing as the
    preset sets them; with ``built_summary``'s figures plus the build's ``seconds`` and ``peak_rss``."""
    t0 = time.perf_counter()
    backbone = build_backbone(arch, dict(cfg.backbone.options), video_shape, seed, root)
    if cfg.lora.enabled:
        backbone.add_lora(cfg.lora.rank, cfg.lora.alpha, cfg.lora.targets)
    if cfg.run.gradient_checkpointing and hasattr(backbone.denoiser, "enable_gradient_checkpointing"):
        backbone.denoiser.enable_gradient_checkpointing()
    built = built_summary(backbone)
    return backbone, {**built, "seconds": time.perf_counter() - t0, "peak_rss": peak_rss()}


def step_critic(critic_dir: str | None) -> tuple[Any, str]:
    """The critic of the step: ``critic.path`` if it names an existing folder, else a random-init
    ``MotionCritic(CriticConfig())``; with how the report names it."""
    if critic_dir and Path(critic_dir).is_dir():
        return MotionCritic.load(critic_dir), str(critic_dir)
    return MotionCritic(CriticConfig()), "random-init MotionCritic(CriticConfig())"


def step_config(cfg: Any, group_size: int, inference_steps: int, seed: int, video_shape: tuple[int, int, int],
                out_dir: Path) -> Any:
    """The preset's TrainConfig, cut to one SHIFT step on one conditioning (everything else as the preset)."""
    frames, height, width = video_shape
    return replace(
        cfg,
        data=replace(cfg.data, num_frames=frames, height=height, width=width),
        rollout=replace(cfg.rollout, group_size=group_size, buffer_size=1, batch_size=1, rollout_batch_size=1,
                        passes_per_buffer=1, num_inference_steps=inference_steps),
        critic=replace(cfg.critic, refresh=True, d_to_g=1.0, batch_size=1),
        run=replace(cfg.run, out_dir=str(out_dir), max_steps=1, checkpoint_every=0, sample_every=0, eval_every=0,
                    progress=False, seed=seed),
    )


def run_step(cfg: Any, backbone: Any, critic: Any, clips: Any, accelerator: Any) -> dict[str, Any]:
    """One full SHIFT step through the real trainer; its wall time, its own peak RSS and its metrics."""
    with measure_peak() as peak:
        first = clips.load([0])
        parts = assemble(cfg, backbone, critic, accelerator=accelerator, sample_frames=first[0][:, 0],
                         sample_prompts=first[1])
        result = train(cfg, backbone, clips, parts.state, parts.engine, parts.dist, parts.hooks)
    del parts
    gc.collect()  # the next step's peak must not include this step's trainer
    return {"group_size": cfg.rollout.group_size, **peak, "steps": result.steps, "timers": dict(result.timers),
            "metrics": dict(result.last_metrics)}


# ----- the printed report -------------------------------------------------------------------------------

def fmt_gib(n: int) -> str:
    """Bytes as the dry run prints them (``4.30 GiB``)."""
    return f"{n / GIB:.2f} GiB"


def built_line(report: dict[str, Any], built: dict[str, Any]) -> str:
    """The materialised backbone: build time, peak RSS, frozen dtypes and the LoRA actually added."""
    return (f"  built in {report['build_seconds']:.0f} s, peak RSS {fmt_gib(report['build_peak_rss'])}; frozen "
            f"denoiser dtypes {built['frozen_dtypes']}, trainable LoRA {built['trainable_parameters_built']:,} in "
            f"{built['lora_dtype']}")


def step_start_line(group_size: int, video_shape: tuple[int, int, int], inference_steps: int) -> str:
    return (f"  step at P={group_size}: {video_shape[0]}×{video_shape[1]}×{video_shape[2]} clips, "
            f"{inference_steps} sampler steps, 1 conditioning ...")


def step_line(step: dict[str, Any]) -> str:
    """One measured step (``run_step``'s dict): time, its own peak RSS, loss and gradient norm."""
    m = step["metrics"]
    loss = m.get("loss/total", m.get("loss/real", float("nan")))
    return (f"    {step['seconds']:.1f} s/step, peak RSS of the step {fmt_gib(step['peak_rss'])}"
            f"{'' if step['peak_is_step_only'] else ' (process peak: VmHWM could not be reset)'}, "
            f"loss {loss:.4g}, grad_norm {m.get('grad_norm', float('nan')):.3g}")


def not_run_reason(meta_only: bool, frozen_needed: int, dtype: Any, mem_total: int, available: int,
                   memory_fraction: float) -> str:
    """Why no step ran: asked for (``meta_only``) or the frozen weights do not fit in this machine's memory."""
    if meta_only:
        return "dry_run.meta_only=true"
    return (f"its frozen weights need {fmt_gib(frozen_needed)} in {dtype} but this machine has {fmt_gib(mem_total)} "
            f"of RAM, {fmt_gib(available)} available now (× {memory_fraction}); built on the meta device only: "
            "no step was run")


def plan_lines(static_plan: list[tuple[str, int]], full: MemoryPlan, full_shape: tuple[int, int, int]) -> list[str]:
    """The static plan at the step's size, then train/memory.py's plan at the preset's full clip size."""
    frames, height, width = full_shape
    return [static_plan_table(static_plan),
            f"  full-size plan of the preset ({frames}×{height}×{width} clips, text encoder held, CriticConfig() "
            "defaults; train/memory.py):",
            "\n".join("    " + line for line in full.table().splitlines())]


def peak_ratio_line(steps: list[dict[str, Any]]) -> str | None:
    """Peak RSS of the smallest against the largest group size (None with fewer than two steps)."""
    if len(steps) < 2:
        return None
    lo, hi = steps[0], steps[-1]
    return (f"  peak RSS P={lo['group_size']}: {fmt_gib(lo['peak_rss'])}   P={hi['group_size']}: "
            f"{fmt_gib(hi['peak_rss'])}   (ratio {hi['peak_rss'] / lo['peak_rss']:.3f})")


__all__ = ["built_line", "built_summary", "fmt_gib", "materialise", "not_run_reason", "peak_ratio_line", "plan_lines", "run_step", "step_config",
           "step_critic", "step_line", "step_start_line"]
