"""SHIFT against SFT on the same preset, measured side by side in one run.

Prints, for each: wall time per generator update and per denoising-loss clip, the share of time spent in
rollouts, rewards, generator and discriminator updates, and the time for the same number of real-data
epochs — then the SHIFT/SFT ratios. The authors report SHIFT at 2.46× SFT's training time on SVD.

    python benchmarks/bench_shift_vs_sft.py                    # the demo's toy preset, 60 steps each
    python benchmarks/bench_shift_vs_sft.py --steps 120 --passes 10
    python benchmarks/bench_shift_vs_sft.py --size 32 --queries 256   # 32×32 frames (data, backbone, IC size)
    python benchmarks/bench_shift_vs_sft.py critic_training.critic.workers=2   # any demo-config override

Both runs use the same backbone, data, batch size and seed; SFT is the same trainer with λ_aw = 0.
The reward share (issue 14 item 5: goal ≤ 15 % of a SHIFT step) is printed on its own line, by wall
clock and by process CPU time: on a shared machine the wall-clock shares move with the load (torch's
multi-threaded generator step slows more than the single-threaded OpenCV calls), so the load average
is printed too. The reward line also splits the reward into flow (DIS + IC maps), tracks (LK + LC
features) and the rest (discriminator forwards).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from shiftvdm.backbone.toy import ToyBackbone
from shiftvdm.config import config_from_dict, deep_merge, load_config
from shiftvdm.data.synthetic import make_sprite_clips
from shiftvdm.recipes.demo.config import DemoConfig
from shiftvdm.recipes.train import TrainingParts, assemble
from shiftvdm.rewards.critic import MotionCritic
from shiftvdm.train.clips import TensorClips
from shiftvdm.train.config import TrainConfig
from shiftvdm.train import shift as shift_module
from shiftvdm.train.shift import train


def arm_config(demo: DemoConfig, out: Path, steps: int, passes: int, sft: bool) -> TrainConfig:
    d = demo.data
    data = deep_merge(demo.arms_common, {
        "mode": "sft" if sft else "shift",
        "backbone": demo.backbone,
        "data": {"train": "(memory)", "num_frames": d.num_frames, "height": d.size, "width": d.size},
        "rollout": {"passes_per_buffer": 1 if sft else passes},
        "loss": {"lambda_aw": 0.0} if sft else {},
        "critic": {"path": "(memory)", "refresh": not sft},
        "run": {"out_dir": str(out), "max_steps": steps, "eval_every": 0, "progress": False, "log_grad_norm_every": 0},
    })
    return config_from_dict(TrainConfig, data)


def measure(cfg: TrainConfig, demo: DemoConfig, clips: TensorClips) -> dict[str, float]:
    backbone = ToyBackbone(load_config_toy(demo))
    critic = None if cfg.mode == "sft" else MotionCritic(critic_config(demo))
    parts = assemble(cfg, backbone, critic)
    cpu = track_cpu_time(parts)
    extract = track_feature_time(critic) if critic is not None else {}
    t0, c0 = time.perf_counter(), time.process_time()
    result = train(cfg, backbone, clips, parts.state, parts.engine, parts.dist, parts.hooks)
    wall, cpu_total = time.perf_counter() - t0, time.process_time() - c0
    timers = result.timers
    b, P = cfg.rollout.batch_size, cfg.rollout.group_size
    clips_per_step = b * (1 + (P if cfg.mode == "shift" else 0))  # denoising-loss evaluations per update
    epoch_steps = len(clips) / b * cfg.rollout.passes_per_buffer  # one pass of every real clip through a buffer
    out = {"wall": wall, "cpu": cpu_total, "steps": result.steps, "per_step": wall / result.steps,
           "per_clip": wall / (result.steps * clips_per_step), "epoch_s": wall / result.steps * epoch_steps,
           "rollout": timers.get("rollout", 0.0) + timers.get("decode", 0.0), "reward": timers.get("reward", 0.0),
           "generator": timers.get("generator", 0.0), "discriminator": timers.get("discriminator", 0.0),
           "flow": extract.get("flow", 0.0), "tracks": extract.get("tracks", 0.0)}
    out.update({f"cpu_{k}": v for k, v in cpu.items()})
    out["cpu_rollout"] = cpu.get("rollout", 0.0) + cpu.get("decode", 0.0)
    return out


def track_cpu_time(parts: TrainingParts) -> dict[str, float]:
    """Also accumulate each phase's process CPU time (all threads), beside the run's wall clock.

    Phases timed through ``state.timed`` (rollout, decode, reward, ...) are wrapped there; the generator
    and discriminator updates (timed inline by ``train``) through the module functions they call.
    """
    cpu: dict[str, float] = {}

    def wrap(phase, fn):
        def run(*args, **kwargs):
            c0 = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                cpu[phase] = cpu.get(phase, 0.0) + time.process_time() - c0
        return run

    wall_timed = parts.state.timed
    parts.state.timed = lambda phase, fn: wrap(phase, wall_timed)(phase, fn)  # type: ignore[method-assign]
    for name, phase in (("shift_step", "generator"), ("refresh_critic", "discriminator")):
        original = getattr(shift_module, "_bench_" + name, None) or getattr(shift_module, name)
        setattr(shift_module, "_bench_" + name, original)
        setattr(shift_module, name, wrap(phase, original))
    return cpu


def track_feature_time(critic: MotionCritic) -> dict[str, float]:
    """Sum the critic's per-call feature timings (flow = DIS + IC maps, tracks = LK + LC features) over a run."""
    totals = {"flow": 0.0, "tracks": 0.0}
    features_on_device = critic.features_on_device

    def timed(*args, **kwargs):
        out = features_on_device(*args, **kwargs)
        for key in totals:
            totals[key] += critic.last_timings.get(key, 0.0)
        return out

    critic.features_on_device = timed  # type: ignore[method-assign]
    return totals


def load_config_toy(demo: DemoConfig):
    from shiftvdm.backbone import backbone_config

    return backbone_config("toy", demo.backbone.get("options", {}))


def critic_config(demo: DemoConfig):
    from shiftvdm.rewards.critic import CriticConfig

    return config_from_dict(CriticConfig, demo.critic_training.get("critic", {}))


def size_overrides(size: int, queries: int) -> list[str]:
    """Demo-config overrides for ``size``×``size`` frames: data, backbone and IC image size move together."""
    out = []
    if size:
        out += [f"data.size={size}", f"backbone.options.size={size}", f"critic_training.critic.ic.image_size=[{size},{size}]"]
    if queries:
        out.append(f"critic_training.critic.num_queries={queries}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="demo-config overrides, e.g. critic_training.critic.workers=2")
    parser.add_argument("--steps", type=int, default=60, help="generator updates per arm")
    parser.add_argument("--passes", type=int, default=0, help="SHIFT passes per buffer (0 = the demo preset's)")
    parser.add_argument("--clips", type=int, default=512, help="real clips (one epoch = every clip once)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=0, help="frame side in px (0 = the preset's); sets data.size, "
                        "backbone.options.size and critic_training.critic.ic.image_size")
    parser.add_argument("--queries", type=int, default=0, help="LC queries per clip (0 = the preset's)")
    parser.add_argument("--sprite-size", type=float, default=0.0, help="sprite side in px (0 = 3 px per 16 px of frame)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    demo = load_config(DemoConfig, "demo_cpu", size_overrides(args.size, args.queries) + list(args.overrides))
    passes = args.passes or int(demo.arms_common["rollout"]["passes_per_buffer"])
    d = demo.data
    # the bench's own clips (the demo's data fields change with its scenarios): one crisp square on a flat
    # background, sized and moving in proportion to the frame, as the demo's sprites
    unit = d.size / 16
    sprite = args.sprite_size or 3.0 * unit
    videos = make_sprite_clips(args.clips, d.num_frames, d.size, seed=1, num_sprites=1, sprite_size=sprite,
                               speed=(1.5 * unit, 2.5 * unit), background="flat", shapes=("square",),
                               antialias=False).videos
    clips = TensorClips(torch.from_numpy(videos))
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        sft = measure(arm_config(demo, Path(tmp) / "sft", args.steps, passes, sft=True), demo, clips)
        shift = measure(arm_config(demo, Path(tmp) / "shift", args.steps, passes, sft=False), demo, clips)
    critic = critic_config(demo)
    print(f"toy demo preset, {d.size}x{d.size}x{d.num_frames} frames, sprite {sprite:g} px, {args.clips} real clips, "
          f"batch {demo.arms_common['rollout']['batch_size']}, P={demo.arms_common['rollout']['group_size']}, "
          f"SHIFT passes/buffer={passes}, {args.steps} updates each, {args.threads} threads; critic "
          f"{critic.num_queries} queries ({critic.query_sampling}), flow {critic.flow}/{critic.flow_preset}, "
          f"tracker {critic.tracker}, workers {critic.workers}; load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    if args.overrides:
        print("overrides: " + " ".join(args.overrides))
    print(f"{'':28}{'SFT':>10}{'SHIFT':>10}{'ratio':>8}")
    for key, label in [("per_step", "s per generator update"), ("per_clip", "s per denoising-loss clip"),
                       ("epoch_s", "s per real-data epoch")]:
        print(f"{label:28}{sft[key]:10.4f}{shift[key]:10.4f}{shift[key] / sft[key]:8.2f}")
    phases = ("rollout", "reward", "generator", "discriminator")
    total, cpu_total = shift["wall"], shift["cpu"]
    print("SHIFT time shares (wall): " + ", ".join(f"{k} {shift[k] / total:.0%}" for k in phases))
    print("SHIFT time shares (CPU):  " + ", ".join(f"{k} {shift['cpu_' + k] / cpu_total:.0%}" for k in phases))
    reward = shift["reward"]
    print(f"reward share of a SHIFT step: wall {reward / total:.1%}, CPU {shift['cpu_reward'] / cpu_total:.1%} "
          f"(goal <= 15 %); {reward / shift['steps']:.3f} s per update, of which flow {shift['flow'] / reward:.0%}, "
          f"tracks {shift['tracks'] / reward:.0%}, discriminators and the rest "
          f"{(reward - shift['flow'] - shift['tracks']) / reward:.0%}")
    print("(authors, SVD on GPUs: SHIFT 2.46x SFT training time; Flow-GRPO 19.35x)")

if __name__ == "__main__":
    main()
