"""The knobs that lower SHIFT's cost, measured on the tiny toy preset: time per step and motion gain per step.

    python benchmarks/cost_knobs.py [--steps 8] [--seeds 0,1] [--json knobs.json]

Each variant trains ``--steps`` generator steps from the same start (the tiny toy backbone with a rank-2 LoRA,
sprite clips 4×16×16, a fresh tiny critic refreshed online), with one knob changed from the base setting:
rollout sampler steps (SHIFT is sampler-agnostic), passes_per_buffer, group size P, the rollout sub-group size
(rollout.rollout_batch_size) and the refresh's feature source (stored / recompute); an SFT run (λ_aw = 0) gives
the unit. Printed side by side: seconds per step, the SHIFT / SFT ratio, the split (rollouts, rewards,
training, refresh; process CPU seconds on one thread, since wall seconds move with a shared machine's load)
and the motion gain per step: the decrease of |motion score(samples) − motion score(real)|
(mean DIS flow in px/frame, eval/motion_score.py) per generator step, on fixed conditionings and seeds with a
fixed 4-step deterministic sampler. Decode chunking is timed apart on the tiny latent SVD (the toy has no
VAE), with its output's max |Δ| against one chunk: the temporal decoder mixes frames within a chunk.
Tiny-model figures on a shared CPU: they rank the knobs, they are not GPU throughput.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tests/support.py: the toy backbone

from support import pretrained_toy  # noqa: E402

from shiftvdm.config import config_from_dict  # noqa: E402
from shiftvdm.data.synthetic import make_sprite_clips  # noqa: E402
from shiftvdm.eval.motion_score import motion_score  # noqa: E402
from shiftvdm.motion.base import get_flow_estimator  # noqa: E402
from shiftvdm.recipes.train import assemble  # noqa: E402
from shiftvdm.rewards.critic import CriticConfig, MotionCritic  # noqa: E402
from shiftvdm.rewards.ic import ICConfig  # noqa: E402
from shiftvdm.rewards.lc import LCConfig  # noqa: E402
from shiftvdm.train.clips import TensorClips  # noqa: E402
from shiftvdm.train.config import TrainConfig  # noqa: E402
from shiftvdm.train.hooks import time_split  # noqa: E402
from shiftvdm.train.shift import train  # noqa: E402

BASE = {"group_size": 4, "buffer_size": 4, "passes_per_buffer": 2, "batch_size": 2, "rollout_batch_size": 2,
        "num_inference_steps": 4}
VARIANTS = {  # name -> (rollout overrides, critic overrides, loss overrides)
    "SFT (unit)": ({}, {"refresh": False}, {"lambda_aw": 0.0}),
    "SHIFT base (P 4, 4 steps, 2 passes)": ({}, {}, {}),
    "sampler steps 4 -> 2": ({"num_inference_steps": 2}, {}, {}),
    "passes_per_buffer 2 -> 4": ({"passes_per_buffer": 4}, {}, {}),
    "group size P 4 -> 2": ({"group_size": 2}, {}, {}),
    "rollout sub-group 2 -> 1": ({"rollout_batch_size": 1}, {}, {}),
    "refresh features recompute": ({}, {"refresh_features": "recompute"}, {}),
}


def critic() -> MotionCritic:
    return MotionCritic(CriticConfig(num_queries=16, ic=ICConfig(encoder="cnn", image_size=(16, 16),
                                                                 cnn_channels=(8, 16)),
                                     lc=LCConfig(dim=16, depth=1, heads=2)))


def make_cfg(out: Path, seed: int, steps: int, rollout: dict, critic_over: dict, loss: dict) -> TrainConfig:
    return config_from_dict(TrainConfig, {
        "mode": "shift", "lora": {"enabled": True, "rank": 2, "alpha": 2},
        "optim": {"lr": 2e-3, "warmup_steps": 0}, "loss": {"lambda_aw": 0.5, **loss},
        "advantage": {"scale": "group_std"},
        "rollout": {**BASE, **rollout},
        "critic": {"path": "in-memory", "refresh": True, "d_to_g": 0.5, "train": {"lr": 1e-3}, **critic_over},
        "run": {"out_dir": str(out), "seed": seed, "max_steps": steps, "checkpoint_every": 0, "progress": False,
                "log_grad_norm_every": 0}})


def motion_gap(backbone, clips: TensorClips, estimator) -> float:
    """|mean motion score of samples − of the real clips| on fixed conditionings and seeds (px/frame)."""
    video, prompts = clips.load(list(range(len(clips))))
    with torch.no_grad():
        cond = backbone.encode_condition(video[:, 0], prompts)
        lat = backbone.sample(cond, 1, torch.Generator().manual_seed(1234), stochastic=False, num_inference_steps=4)
        fakes = backbone.decode(lat.flatten(0, 1))
    to_u8 = (lambda v: ((v.permute(0, 2, 3, 1).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8))
    real = statistics.mean(motion_score(to_u8(v), estimator)["motion_score"] for v in video)
    fake = statistics.mean(motion_score(to_u8(v), estimator)["motion_score"] for v in fakes)
    return abs(fake - real)


def run_variant(name: str, seed: int, steps: int, out: Path, clips: TensorClips, held_out: TensorClips,
                estimator) -> dict:
    rollout, critic_over, loss = VARIANTS[name]
    cfg = make_cfg(out, seed, steps, rollout, critic_over, loss)
    torch.manual_seed(seed)
    backbone = pretrained_toy(norm_num_groups=8, num_inference_steps=4)
    backbone.add_lora(2, 2)
    before = motion_gap(backbone, held_out, estimator)
    parts = assemble(cfg, backbone, critic() if cfg.uses_rollouts else None)
    t0, c0 = time.perf_counter(), time.process_time()
    result = train(cfg, backbone, clips, parts.state, parts.engine, parts.dist, parts.hooks)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    after = motion_gap(backbone, held_out, estimator)
    # the phases' wall seconds move with the machine's load; their shares scaled to the process's CPU seconds
    # (one thread) do not
    parts_wall = time_split(result.timers)
    total = sum(v for k, v in parts_wall.items()) or 1.0
    return {"seconds_per_step": cpu / result.steps, "wall_seconds_per_step": wall / result.steps,
            "split": {k: cpu * v / total / result.steps for k, v in parts_wall.items()},
            "motion_gap_before": before, "motion_gap_after": after,
            "motion_gain_per_step": (before - after) / result.steps}


def decode_chunking() -> list[dict]:
    """Decode time of 4 tiny-SVD clips of 8 frames per decode_chunk_size, and max |Δ| against one chunk."""
    from shiftvdm.backbone.svd import SVDConfig
    from shiftvdm.backbone.tiny import tiny_svd_backbone

    rows, reference = [], None
    for chunk in (8, 4, 2, 1):
        backbone = tiny_svd_backbone(SVDConfig(num_frames=8, height=32, width=32, decode_chunk_size=chunk), "tiny")
        lat = torch.randn(4, 8, 4, 16, 16, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            backbone.decode(lat[:1])  # warm-up
            t0 = time.perf_counter()
            out = backbone.decode(lat)
            seconds = time.perf_counter() - t0
        reference = out if reference is None else reference
        rows.append({"decode_chunk_size": chunk, "seconds": seconds,
                     "max_abs_diff_vs_one_chunk": float((out - reference).abs().max())})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    data = make_sprite_clips(8, 4, 16, seed=3, num_sprites=1, sprite_size=(3.0, 4.0), speed=(1.5, 2.5),
                             background="flat")
    clips = TensorClips(torch.from_numpy(data.videos[:4]))
    held_out = TensorClips(torch.from_numpy(data.videos[4:]))
    estimator = get_flow_estimator("dis", preset="medium", min_side=64)
    results: dict = {"steps": args.steps, "seeds": seeds, "variants": {}}
    with tempfile.TemporaryDirectory(prefix="cost_knobs-") as tmp:
        for index, name in enumerate(VARIANTS):
            runs = [run_variant(name, s, args.steps, Path(tmp) / f"{index}-{s}", clips, held_out, estimator)
                    for s in seeds]
            merged = {k: statistics.mean(r[k] for r in runs) for k in ("seconds_per_step", "wall_seconds_per_step",
                                                                        "motion_gain_per_step", "motion_gap_before",
                                                                        "motion_gap_after")}
            merged["split"] = {k: statistics.mean(r["split"][k] for r in runs) for k in runs[0]["split"]}
            merged["motion_gain_per_step_each_seed"] = [r["motion_gain_per_step"] for r in runs]
            results["variants"][name] = merged
    unit = results["variants"]["SFT (unit)"]["seconds_per_step"]
    print("CPU seconds per generator step (one thread; the split: the phases' wall shares of it), and the motion gain")
    print(f"{'variant':<38} {'s/step':>8} {'×SFT':>7} {'rollouts':>9} {'rewards':>8} {'training':>9} {'refresh':>8} "
          f"{'motion gain/step (px/frame)':>28}")
    for name, v in results["variants"].items():
        s = v["split"]
        each = ", ".join(f"{g:+.4f}" for g in v["motion_gain_per_step_each_seed"])
        print(f"{name:<38} {v['seconds_per_step']:8.3f} {v['seconds_per_step'] / unit:7.2f} "
              f"{s['time/rollouts']:9.2f} {s['time/rewards']:8.2f} {s['time/training']:9.2f} {s['time/refresh']:8.2f} "
              f"{v['motion_gain_per_step']:+10.4f} ({each})")
    results["decode_chunking"] = decode_chunking()
    print("decode chunking (tiny latent SVD, 4 clips × 8 frames 32×32):")
    for row in results["decode_chunking"]:
        print(f"  decode_chunk_size {row['decode_chunk_size']}: {row['seconds']:.3f} s, max |Δ| vs one chunk "
              f"{row['max_abs_diff_vs_one_chunk']:.3g}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
