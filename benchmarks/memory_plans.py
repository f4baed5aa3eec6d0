"""The per-rank memory plans of the two GPU presets (train/memory.py) at a given world size.

    python benchmarks/memory_plans.py [--world 8] [--before]

Model sizes come from the real SVD-XT / Wan2.2-TI2V-5B architectures built on the meta device (the
shipped diffusers configs, backbone/full_size.py); the critic is the matching shipped critic preset
(critic_svd_davis / critic_wan22_wisa: SEA-RAFT-M + CoTracker3 tokens, float16 features). ``--before``
shows the pre-plan layout: every buffer keeps float32 features of the default critic
(full-resolution IC maps, 256 queries of hand-made track features) whether or not the refresh reads them.
"""

from __future__ import annotations

import argparse
import dataclasses

from shiftvdm.backbone import backbone_config, full_size
from shiftvdm.backbone.base import DTYPES
from shiftvdm.config import config_from_dict, deep_merge, load_yaml_with_base, parse_overrides, resolve_config_path
from shiftvdm.recipes.train import resolve_train_config
from shiftvdm.rewards.critic import CriticConfig
from shiftvdm.rewards.pretraining import TrainRewardConfig
from shiftvdm.train.memory import ModelSizes, latent_numel, memory_plan

PRESETS = {"svd_shift_davis": "critic_svd_davis", "wan22_ti2v5b_shift_wisa": "critic_wan22_wisa"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=int, default=8)
    parser.add_argument("--before", action="store_true")
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
        plan = memory_plan(cfg, ModelSizes(frozen, lora, lat), args.world, critic, device_capacity=80 * 1024 ** 3,
                           host_capacity=None, local_ranks=8)
        print(f"== {preset} ({'before' if args.before else critic_preset}), refresh={cfg.critic.refresh}")
        print(plan.table())


if __name__ == "__main__":
    main()
