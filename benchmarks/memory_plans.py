"""The per-rank memory plans of the two GPU presets (train/memory.py) at a given world size.

    python benchmarks/memory_plans.py [--world 8] [--before] [--refresh-features stored|recompute]
                                      [--gpu-json gpu_check.json]

Model sizes come from the real SVD-XT / Wan2.2-TI2V-5B architectures built on the meta device (the
shipped diffusers configs, backbone/full_size.py); the critic is the matching shipped critic preset
(critic_svd_davis / critic_wan22_wisa: SEA-RAFT-M + CoTracker3 tokens, float16 features). ``--before``
shows the pre-plan layout: every buffer keeps float32 features of the default critic
(full-resolution IC maps, 256 queries of hand-made track features) whether or not the refresh reads them.
``--refresh-features`` overrides the presets' ``critic.refresh_features`` (stored: every clip's features in the
buffer; recompute: the real clips' only, the fakes featurised again at the refresh).

Each preset ends with a fit line: the device plan plus an activation margin (measured by benchmarks/gpu_check.py
when ``--gpu-json`` names its output, else, for a transformer, Korthikanti et al. 2022's 34·s·b·h bytes per
layer: bf16, flash attention, no recomputation) against ``--device-gib``, and the host plan against
``--host-gib`` per rank.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from shiftvdm.backbone import backbone_config, full_size, latent_layout
from shiftvdm.backbone.base import DTYPES
from shiftvdm.config import config_from_dict, deep_merge, load_yaml_with_base, parse_overrides, resolve_config_path
from shiftvdm.recipes.train import resolve_train_config
from shiftvdm.rewards.critic import CriticConfig
from shiftvdm.rewards.pretraining import TrainRewardConfig
from shiftvdm.train.memory import GIB, ModelSizes, latent_numel, memory_plan

PRESETS = {"svd_shift_davis": "critic_svd_davis", "wan22_ti2v5b_shift_wisa": "critic_wan22_wisa"}
GPU_CHECK_MODEL = {"svd_shift_davis": "svd", "wan22_ti2v5b_shift_wisa": "wan"}  # gpu_check.py's model keys


def transformer_activation_bytes(arch: str, cfg) -> int | None:
    """Activations of one generator forward/backward of ``rollout.batch_size`` clips: 34·s·b·h bytes per layer
    (Korthikanti et al. 2022, bf16, flash attention, no recomputation; 2·s·b·h per layer plus one layer's 34·s·b·h
    with gradient checkpointing). None for a UNet (not estimated: measure with benchmarks/gpu_check.py)."""
    if not arch.startswith("wan"):
        return None
    t = full_size.architecture_config(arch, "transformer")
    d = cfg.data
    options = dict(cfg.backbone.options)
    _, family_options = full_size.family_options(arch, options)
    shape = latent_layout("wan", family_options).shape(d.num_frames, d.height, d.width)  # (C, F', h, w)
    pf, ph, pw = t["patch_size"]
    tokens = (shape[-3] // pf) * (shape[-2] // ph) * (shape[-1] // pw)
    hidden = t["num_attention_heads"] * t["attention_head_dim"]
    per_layer = 34 * tokens * cfg.rollout.batch_size * hidden
    checkpointing = cfg.run.gradient_checkpointing or options.get("gradient_checkpointing", False)
    if checkpointing:
        return 2 * tokens * cfg.rollout.batch_size * hidden * t["num_layers"] + per_layer
    return per_layer * t["num_layers"]


def measured_margin(path: str | None, preset: str) -> int | None:
    """The activation margin gpu_check.py measured for this preset's model (peak minus the plan's static rows)."""
    if not path or not Path(path).is_file():
        return None
    items = json.loads(Path(path).read_text()).get("models", {}).get(GPU_CHECK_MODEL[preset], {}).get("items", {})
    margin = items.get("shift_step", {}).get("activation_margin_bytes")
    return int(margin) if margin is not None else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=int, default=8)
    parser.add_argument("--before", action="store_true")
    parser.add_argument("--refresh-features", choices=["stored", "recompute"], default=None,
                        help="override the presets' critic.refresh_features")
    parser.add_argument("--gpu-json", help="benchmarks/gpu_check.py output: its measured activation margins")
    parser.add_argument("--device-gib", type=float, default=80.0)
    parser.add_argument("--host-gib", type=float, default=64.0, help="host memory per rank")
    args = parser.parse_args()
    for preset, critic_preset in PRESETS.items():
        cfg = resolve_train_config("shift", preset, ["critic.path=(plan)"])
        options = dict(cfg.backbone.options)
        arch = full_size.architecture_for(cfg.backbone.name, options)
        meta = full_size.build_on_meta(arch)
        dtype = DTYPES[options.get("dtype", "bfloat16")]
        frozen = sum(full_size.component_bytes(m, dtype) for m in meta.values())
        family, family_options = full_size.family_options(arch, options)
        bcfg = backbone_config(family, family_options)
        targets = cfg.lora.targets if cfg.lora.targets is not None else bcfg.lora_target_modules
        denoisers = [k for k in ("unet", "transformer", "transformer_2") if k in meta]
        lora = sum(full_size.lora_parameter_count(meta[k], cfg.lora.rank, targets) for k in denoisers)
        if args.before:
            critic = CriticConfig()
            cfg = dataclasses.replace(cfg, critic=dataclasses.replace(cfg.critic, refresh=True))
        else:
            ckpt = ["critic.flow_checkpoint=SEA-RAFT-M.pth", "critic.tracker_checkpoint=scaled_offline.pth"]
            data = deep_merge(load_yaml_with_base(resolve_config_path(critic_preset)), parse_overrides(ckpt))
            critic = config_from_dict(TrainRewardConfig, data).critic
        d = cfg.data
        lat = latent_numel(family, family_options, d.num_frames, d.height, d.width)
        if args.refresh_features:
            cfg = dataclasses.replace(cfg, critic=dataclasses.replace(cfg.critic, refresh_features=args.refresh_features))
        plan = memory_plan(cfg, ModelSizes(frozen, lora, lat), args.world, critic,
                           device_capacity=int(args.device_gib * GIB), host_capacity=None, local_ranks=8)
        print(f"== {preset} ({'before' if args.before else critic_preset}), refresh={cfg.critic.refresh}, "
              f"refresh_features={cfg.critic.refresh_features}")
        print(plan.table())
        margin, how = measured_margin(args.gpu_json, preset), "measured by gpu_check.py"
        if margin is None:
            margin, how = transformer_activation_bytes(arch, cfg), "estimated: 34·s·b·h bytes per layer"
        device, host = plan.total("device"), plan.total("host")
        if margin is None:
            dev_text = (f"device {device / GIB:.1f} GiB + activations (not estimated for a UNet: run "
                        "benchmarks/gpu_check.py)")
        else:
            dev_text = (f"device {device / GIB:.1f} + {margin / GIB:.1f} GiB activations ({how}) = "
                        f"{(device + margin) / GIB:.1f} GiB {'<=' if device + margin <= args.device_gib * GIB else '>'} "
                        f"{args.device_gib:g}")
        host_ok = "<=" if host <= args.host_gib * GIB else ">"
        print(f"  fits at {args.world} ranks: {dev_text}; host {host / GIB:.1f} GiB {host_ok} {args.host_gib:g} per rank")


if __name__ == "__main__":
    main()
