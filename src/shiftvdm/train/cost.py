"""The cost of a run in SFT units, computed from the config before anything runs (printed beside the memory plan).

    cost = cost_model(cfg, backbone.config, world_size)
    print(cost.table())

The unit is one **denoiser forward of one clip** (a clip-forward). Per rank and per buffer of Algorithm 1:

* rollouts: n conditionings × P rollouts × S sampler steps × the CFG factor (2 when classifier-free guidance
  runs an unconditional branch, else 1) clip-forwards, no gradients;
* training: each generator step makes 1 + P forward/backward passes of B clips (the real term and one per
  rollout, train/shift.py ``shift_step``); a forward/backward counts 1 + ``BACKWARD_FORWARDS`` clip-forwards
  (+ ``RECOMPUTE_FORWARDS`` with gradient checkpointing, which runs the forward again in the backward);
* an SFT step is the real term alone: B_sft × (1 + ``BACKWARD_FORWARDS`` [+ 1]).

Rewards (VAE decodes, flow, tracks, two discriminators) and the refresh are not denoiser forwards: they are
counted in their own units (clips decoded and scored, discriminator steps) and left out of the predicted ratio,
which is the denoiser's share. The run logs the measured split (``time/rollouts``, ``time/rewards``,
``time/training``, ``time/refresh`` in metrics.jsonl, train/hooks.py), so the prediction can be checked
against a run; ``benchmarks/gpu_check.py`` measures the parts on one GPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from shiftvdm.train.memory import buffer_share

# A backward costs about two forwards (gradients w.r.t. the activations and w.r.t. the weights are each a
# matrix product of the forward's size); the usual 1:2 rule of transformer FLOP counts (Kaplan et al. 2020).
BACKWARD_FORWARDS = 2.0
# Gradient checkpointing recomputes the forward inside the backward.
RECOMPUTE_FORWARDS = 1.0


def cfg_factor(backbone_config: Any) -> int:
    """Denoiser forwards per sampler step per clip: 2 when classifier-free guidance runs (scale > 1), else 1.
    SVD guides with its per-frame ramp up to ``max_guidance_scale``; Wan with ``guidance_scale``; the toy never."""
    scale = getattr(backbone_config, "max_guidance_scale", getattr(backbone_config, "guidance_scale", 1.0))
    return 2 if scale is not None and float(scale) > 1.0 else 1


def sampler_steps(cfg: Any, backbone_config: Any) -> int:
    """Rollout sampler steps: ``rollout.num_inference_steps``, else the backbone's own default."""
    return int(cfg.rollout.num_inference_steps or getattr(backbone_config, "num_inference_steps", 25))


def forward_backward_cost(cfg: Any, backbone_config: Any) -> float:
    """Clip-forwards of one forward/backward of one clip."""
    checkpointing = cfg.run.gradient_checkpointing or bool(getattr(backbone_config, "gradient_checkpointing", False))
    return 1.0 + BACKWARD_FORWARDS + (RECOMPUTE_FORWARDS if checkpointing else 0.0)


@dataclass
class CostModel:
    """Per-rank counts of one run (see the module docstring); ``*_fe`` are clip-forward equivalents."""

    world_size: int
    group_size: int  # P (0 for SFT)
    sampler_steps: int
    cfg_factor: int
    batch_size: int  # B, conditionings per generator step
    buffer_share: int  # n, conditionings in this rank's buffer
    passes_per_buffer: int
    steps_per_buffer: int  # generator steps per buffer
    fb_cost: float  # clip-forwards of one forward/backward
    rollout_forwards_per_buffer: int  # n·P·S·CFG
    training_forwards_per_step: int  # (1+P)·B forwards (each followed by a backward)
    decodes_per_buffer: int  # n·P rollouts decoded for scoring
    clips_scored_per_buffer: int  # n·(1+P) clips through flow + tracker + discriminators
    refresh_steps_per_buffer: int  # discriminator steps (d_to_g × steps_per_buffer) when the refresh is on
    refresh_recomputed_clips_per_buffer: int  # fakes decoded and featurised again at the refresh (recompute mode)
    sft_batch_size: int
    max_steps: int
    sft_max_steps: int

    @property
    def training_fe_per_step(self) -> float:
        return self.training_forwards_per_step * self.fb_cost

    @property
    def rollout_fe_per_step(self) -> float:
        return self.rollout_forwards_per_buffer / self.steps_per_buffer if self.group_size else 0.0

    @property
    def fe_per_step(self) -> float:
        return self.training_fe_per_step + self.rollout_fe_per_step

    @property
    def fe_per_buffer(self) -> float:
        return self.fe_per_step * self.steps_per_buffer

    @property
    def sft_fe_per_step(self) -> float:
        return self.sft_batch_size * self.fb_cost

    @property
    def ratio_per_step(self) -> float:
        """SHIFT / SFT denoiser cost of one generator step (rollouts amortised over the buffer's steps)."""
        return self.fe_per_step / self.sft_fe_per_step

    @property
    def ratio_per_buffer(self) -> float:
        """SHIFT's buffer against SFT steps of the same count (equal to the per-step ratio by construction)."""
        return self.fe_per_buffer / (self.sft_fe_per_step * self.steps_per_buffer)

    @property
    def ratio_per_run(self) -> float:
        """``max_steps`` SHIFT steps against ``sft_max_steps`` SFT steps of ``sft_batch_size``."""
        return self.fe_per_step * self.max_steps / (self.sft_fe_per_step * self.sft_max_steps)

    def as_dict(self) -> dict[str, Any]:
        extra = {k: getattr(self, k) for k in ("training_fe_per_step", "rollout_fe_per_step", "fe_per_step",
                                                 "fe_per_buffer", "sft_fe_per_step", "ratio_per_step",
                                                 "ratio_per_buffer", "ratio_per_run")}
        return {**asdict(self), **extra}

    def table(self) -> str:
        """The start-up lines (recipes/train.py prints them after the memory plan)."""
        fb = f"1 + {BACKWARD_FORWARDS:g} (backward)" + (f" + {RECOMPUTE_FORWARDS:g} (recompute)"
                                                       if self.fb_cost > 1 + BACKWARD_FORWARDS else "")
        lines = [f"cost model per rank ({self.world_size} ranks), in denoiser forwards of one clip (a forward/backward "
                 f"= {fb} = {self.fb_cost:g}):"]
        if self.group_size:
            lines += [
                f"  rollouts per buffer    {self.rollout_forwards_per_buffer:>12,}  = {self.buffer_share} conditionings "
                f"× P {self.group_size} × {self.sampler_steps} steps × CFG {self.cfg_factor}",
                f"  training per G-step    {self.training_fe_per_step:>12,.0f}  = (1 + P) × B {self.batch_size} × "
                f"{self.fb_cost:g}",
                f"  G-steps per buffer     {self.steps_per_buffer:>12,}  = {self.passes_per_buffer} passes × "
                f"⌈{self.buffer_share}/{self.batch_size}⌉",
                f"  per G-step             {self.fe_per_step:>12,.0f}  (rollouts {self.rollout_fe_per_step:,.0f} "
                f"+ training {self.training_fe_per_step:,.0f}); per buffer {self.fe_per_buffer:,.0f}",
                f"  rewards per buffer     {self.decodes_per_buffer:>12,}  decodes, {self.clips_scored_per_buffer:,} "
                "clips scored (flow + tracks + discriminators; not in the ratio)",
            ]
            if self.refresh_steps_per_buffer:
                again = (f", {self.refresh_recomputed_clips_per_buffer:,} fakes decoded and featurised again"
                         if self.refresh_recomputed_clips_per_buffer else "")
                lines.append(f"  refresh per buffer     {self.refresh_steps_per_buffer:>12,}  discriminator steps{again} "
                             "(not in the ratio)")
            lines.append(f"  SFT step               {self.sft_fe_per_step:>12,.0f}  = B {self.sft_batch_size} × "
                         f"{self.fb_cost:g}")
            lines.append(f"  predicted SHIFT / SFT: {self.ratio_per_step:.2f}× per step and per buffer, "
                         f"{self.ratio_per_run:.2f}× per run ({self.max_steps} vs {self.sft_max_steps} steps); "
                         "measured split in metrics.jsonl (time/rollouts, time/rewards, time/training, time/refresh)")
        else:
            lines.append(f"  SFT step               {self.sft_fe_per_step:>12,.0f}  = B {self.sft_batch_size} × "
                         f"{self.fb_cost:g}; no rollouts, no rewards (SHIFT / SFT = 1.00×)")
        return "\n".join(lines)


def cost_model(cfg: Any, backbone_config: Any, world_size: int, *, sft_batch_size: int | None = None,
               sft_max_steps: int | None = None) -> CostModel:
    """The cost model of TrainConfig ``cfg`` with the backbone's family config (``backbone.config``).

    The SFT counterpart defaults to ``cfg``'s own batch size and step count; pass an SFT preset's
    (``sft_batch_size``, ``sft_max_steps``) for the per-run ratio at the authors' settings."""
    r = cfg.rollout
    shift = bool(cfg.uses_rollouts)
    P = r.group_size if shift else 0
    n = buffer_share(cfg, world_size)
    steps_per_buffer = r.passes_per_buffer * math.ceil(n / r.batch_size)
    S, k = sampler_steps(cfg, backbone_config), cfg_factor(backbone_config)
    refresh = shift and cfg.critic.refresh
    refresh_steps = round(cfg.critic.d_to_g * steps_per_buffer) if refresh else 0
    disc_batch = min(n, cfg.critic.batch_size or r.batch_size)
    recompute = refresh and getattr(cfg.critic, "refresh_features", "stored") == "recompute"
    return CostModel(
        world_size=world_size, group_size=P, sampler_steps=S, cfg_factor=k, batch_size=r.batch_size, buffer_share=n,
        passes_per_buffer=r.passes_per_buffer, steps_per_buffer=steps_per_buffer,
        fb_cost=forward_backward_cost(cfg, backbone_config),
        rollout_forwards_per_buffer=n * P * S * k, training_forwards_per_step=(1 + P) * r.batch_size,
        decodes_per_buffer=n * P, clips_scored_per_buffer=n * (1 + P) if shift else 0,
        refresh_steps_per_buffer=refresh_steps,
        refresh_recomputed_clips_per_buffer=refresh_steps * disc_batch if recompute else 0,
        sft_batch_size=sft_batch_size or r.batch_size, max_steps=cfg.run.max_steps,
        sft_max_steps=sft_max_steps or cfg.run.max_steps)


__all__ = ["BACKWARD_FORWARDS", "CostModel", "RECOMPUTE_FORWARDS", "cfg_factor", "cost_model",
           "forward_backward_cost", "sampler_steps"]
