"""SHIFT against SFT on the same preset, measured side by side in one run.

Prints, for each: wall time per generator update and per denoising-loss clip, the share of time spent in
rollouts, rewards, generator and discriminator updates, and the time for the same number of real-data
epochs — then the SHIFT/SFT ratios. The authors report SHIFT at 2.46× SFT's training time on SVD.

    python benchmarks/bench_shift_vs_sft.py                    # the demo's toy preset, 60 steps each
    python benchmarks/bench_shift_vs_sft.py --steps 120 --passes 10

Both runs use the same backbone, data, batch size and seed; SFT is the same trainer with λ_aw = 0.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from shiftvdm.backbone.toy import ToyBackbone
from shiftvdm.config import config_from_dict, deep_merge, load_config
from shiftvdm.data.synthetic import make_sprite_clips
from shiftvdm.recipes.demo import DemoConfig
from shiftvdm.rewards.critic import MotionCritic, MotionFeatures
from shiftvdm.train.clips import TensorClips
from shiftvdm.train.config import TrainConfig
from shiftvdm.train.runtime import Runtime
from shiftvdm.train.shift import train


def arm_config(demo: DemoConfig, out: Path, steps: int, passes: int, sft: bool) -> TrainConfig:
    d = demo.data
    data = deep_merge(demo.arms_common, {
        "mode": "sft" if sft else "shift",
        "backbone": demo.backbone,
        "data": {"train": "(memory)", "num_frames": d.num_frames, "height": d.size, "width": d.size},
        "rollout": {"passes_per_buffer": 1 if sft else passes},
        "loss": {"lambda_aw": 0.0} if sft else {},
        "discriminator": {"critic": "(memory)", "refresh": not sft},
        "run": {"out_dir": str(out), "max_steps": steps, "eval_every": 0, "progress": False, "log_grad_norm_every": 0},
    })
    return config_from_dict(TrainConfig, data)


def measure(cfg: TrainConfig, demo: DemoConfig, clips: TensorClips) -> dict[str, float]:
    backbone = ToyBackbone(load_config_toy(demo))
    critic = None if cfg.mode == "sft" else MotionCritic(critic_config(demo))
    rt = Runtime(cfg, backbone, critic, Path(cfg.run.out_dir), features_from_state=MotionFeatures.from_state_dict)
    t0 = time.perf_counter()
    result = train(cfg, backbone, critic, clips, rt)
    wall = time.perf_counter() - t0
    timers = result.timers
    b, P = cfg.rollout.batch_size, cfg.rollout.group_size
    clips_per_step = b * (1 + (P if cfg.mode == "shift" else 0))  # denoising-loss evaluations per update
    epoch_steps = len(clips) / b * cfg.rollout.passes_per_buffer  # one pass of every real clip through a buffer
    return {"wall": wall, "steps": result.steps, "per_step": wall / result.steps,
            "per_clip": wall / (result.steps * clips_per_step), "epoch_s": wall / result.steps * epoch_steps,
            "rollout": timers.get("rollout", 0.0) + timers.get("decode", 0.0), "reward": timers.get("reward", 0.0),
            "generator": timers.get("generator", 0.0), "discriminator": timers.get("discriminator", 0.0)}


def load_config_toy(demo: DemoConfig):
    from shiftvdm.backbone import backbone_config

    return backbone_config("toy", demo.backbone.get("options", {}))


def critic_config(demo: DemoConfig):
    from shiftvdm.rewards.critic import CriticConfig

    return config_from_dict(CriticConfig, demo.critic.get("critic", {}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="generator updates per arm")
    parser.add_argument("--passes", type=int, default=0, help="SHIFT passes per buffer (0 = the demo preset's)")
    parser.add_argument("--clips", type=int, default=512, help="real clips (one epoch = every clip once)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    demo = load_config(DemoConfig, "demo_cpu")
    passes = args.passes or int(demo.arms_common["rollout"]["passes_per_buffer"])
    d = demo.data
    videos = make_sprite_clips(args.clips, d.num_frames, d.size, seed=1, num_sprites=1, sprite_size=d.sprite_size,
                               speed=d.speed, background="flat", shapes=("square",), antialias=False).videos
    clips = TensorClips(torch.from_numpy(videos))
    with tempfile.TemporaryDirectory() as tmp:
        sft = measure(arm_config(demo, Path(tmp) / "sft", args.steps, passes, sft=True), demo, clips)
        shift = measure(arm_config(demo, Path(tmp) / "shift", args.steps, passes, sft=False), demo, clips)
    print(f"toy demo preset, {args.clips} real clips, batch {demo.arms_common['rollout']['batch_size']}, "
          f"P={demo.arms_common['rollout']['group_size']}, SHIFT passes/buffer={passes}, {args.steps} updates each, "
          f"{args.threads} threads")
    print(f"{'':28}{'SFT':>10}{'SHIFT':>10}{'ratio':>8}")
    for key, label in [("per_step", "s per generator update"), ("per_clip", "s per denoising-loss clip"),
                       ("epoch_s", "s per real-data epoch")]:
        print(f"{label:28}{sft[key]:10.4f}{shift[key]:10.4f}{shift[key] / sft[key]:8.2f}")
    total = shift["wall"]
    print("SHIFT time shares: " + ", ".join(f"{k} {shift[k] / total:.0%}" for k in ("rollout", "reward", "generator",
                                                                                     "discriminator")))
    print("(authors, SVD on GPUs: SHIFT 2.46x SFT training time; Flow-GRPO 19.35x)")


if __name__ == "__main__":
    main()
