"""The dry run's memory plans: the static plan of the step's model and optimizer, and train/memory.py's plan of
the preset at its full clip size, both from the meta-device counts of backbone/full_size.py."""

from __future__ import annotations

from typing import Any

from shiftvdm.backbone.full_size import conditioning_bytes, family_options
from shiftvdm.rewards.critic import CriticConfig
from shiftvdm.train.memory import GIB, MemoryPlan, ModelSizes, latent_numel, memory_plan


def static_memory_plan(component_sizes: dict[str, int], lora_params: int, lora_bytes_each: int,
                       weight_ema: bool) -> list[tuple[str, int]]:
    """Per-rank static memory: frozen components, LoRA weights, their gradients and AdamW moments (fp32)."""
    rows = [(f"frozen {name}", size) for name, size in component_sizes.items()]
    rows += [("LoRA weights", lora_params * lora_bytes_each), ("LoRA gradients", lora_params * lora_bytes_each),
             ("AdamW moments (2 × fp32)", lora_params * 8)]
    if weight_ema:
        rows.append(("weight EMA", lora_params * lora_bytes_each))
    return rows


def static_plan_table(rows: list[tuple[str, int]]) -> str:
    """The static plan as printed by the dry run, with its total (the stand-in text encoder left out)."""
    total = sum(size for name, size in rows if "not built" not in name)
    lines = ["  static memory plan per rank (model and optimizer; activations and the buffer come on top):"]
    lines += [f"    {name:<48} {f'{size / GIB:.2f} GiB':>12}" for name, size in rows]
    lines.append(f"    {'total (without the text encoder)':<48} {f'{total / GIB:.2f} GiB':>12}")
    return "\n".join(lines)


def full_size_plan(cfg: Any, arch: str, frozen_bytes: int, lora_params: int, world_size: int,
                   root: Any = None) -> MemoryPlan:
    """The per-rank plan of a preset at its *full* clip size, for a shipped architecture (backbone/full_size.py)
    counted on the meta device, with ``CriticConfig()`` defaults.

    ``frozen_bytes`` counts every frozen component a real run holds (the text encoder included); the stored
    conditioning is ``full_size.conditioning_bytes``.
    """
    d = cfg.data
    family, options = family_options(arch, dict(cfg.backbone.options))
    sizes = ModelSizes(frozen_bytes=frozen_bytes, trainable_params=lora_params,
                       latent_numel=latent_numel(family, options, d.num_frames, d.height, d.width),
                       cond_bytes=conditioning_bytes(arch, options, d.height, d.width, root))
    return memory_plan(cfg, sizes, world_size, CriticConfig(), device_capacity=None)


__all__ = ["full_size_plan", "static_memory_plan", "static_plan_table"]
