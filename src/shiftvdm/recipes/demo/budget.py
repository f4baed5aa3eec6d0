"""The demo's time estimate: unit costs measured on a throw-away model, then the seconds of every stage."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from shiftvdm.backbone import BackboneConfig, load_backbone
from shiftvdm.config import config_from_dict, deep_merge
from shiftvdm.eval import evaluate_videos, prepare_reference
from shiftvdm.recipes.demo.config import SHIFT_ARM, TIME_MATCHED_ARM, DemoConfig
from shiftvdm.rewards.critic import CriticConfig, MotionCritic


def _timed(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up: first-call allocations and kernel selection are not a step's cost
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def calibrate(cfg: DemoConfig, repeats: int = 2, clips: int = 4) -> dict[str, Any]:
    """Unit costs in seconds, measured on a throw-away model built from the demo's own backbone settings:
    ``train`` {batch: s/step} (forward+backward), ``sample_clip_step`` (s per clip per sampler step),
    ``feature_clip`` (critic features, s per clip), ``reference_clip`` / ``eval_clip`` (evaluation
    metrics of the real reference / of one model, s per clip). Torch's global RNG state is saved and restored
    and every draw uses its own generator, so no stage's random stream moves."""
    d = cfg.data
    batches = sorted({int(s.get("rollout", {}).get("batch_size", 8)) for s in (cfg.pretrain, cfg.sft, cfg.arms_common)})
    with torch.random.fork_rng(devices=[]):
        gen = torch.Generator().manual_seed(12345)
        options = {k: v for k, v in cfg.backbone.get("options", {}).items() if k != "pretrained_path"}
        backbone = load_backbone(BackboneConfig(name=cfg.backbone.get("name", "toy"), pretrained=None, options=options))
        params = backbone.trainable_parameters()
        unit: dict[str, Any] = {"train": {}}
        for b in batches:
            video = torch.rand(b, d.num_frames, 3, d.size, d.size, generator=gen) * 2 - 1

            def step(video=video) -> None:
                latents = backbone.encode_video(video)
                cond = backbone.encode_condition(video[:, 0])
                backbone.denoising_loss(latents, cond, backbone.draw_noise(latents, gen)).mean().backward()
                for p in params:
                    p.grad = None
            unit["train"][b] = _timed(step, repeats)
        steps = int(options.get("num_inference_steps", 12))
        frames = torch.rand(clips, 3, d.size, d.size, generator=gen) * 2 - 1
        with torch.no_grad():
            cond = backbone.encode_condition(frames)
            t = _timed(lambda: backbone.decode(backbone.sample(cond, 1, gen, stochastic=True)[:, 0]), 1)
        unit["sample_clip_step"] = t / (clips * steps)
        critic = MotionCritic(config_from_dict(CriticConfig, cfg.critic_training.get("critic", {}), "demo critic_training.critic"))
        videos = torch.rand(clips, d.num_frames, 3, d.size, d.size, generator=gen) * 2 - 1
        queries = critic.sample_queries(d.size, d.size, gen)
        unit["feature_clip"] = _timed(lambda: critic.features(videos, queries), 1) / clips

        pixels = MotionCritic.videos_to_uint8(videos)
        t0 = time.perf_counter()
        reference = prepare_reference(pixels, sprites=True)
        unit["reference_clip"] = (time.perf_counter() - t0) / clips  # held-out clips are tracked once
        unit["eval_clip"] = _timed(lambda: evaluate_videos(pixels, reference=reference, sprites=True), 1) / clips
    return unit


def _train_seconds(unit: dict[str, Any], batch: int) -> float:
    """Seconds per training step at ``batch`` (linear in the batch from the nearest measured size)."""
    measured = unit["train"]
    near = min(measured, key=lambda b: abs(int(b) - batch))
    return measured[near] * batch / int(near)


def estimate_stage_seconds(cfg: DemoConfig, unit: dict[str, Any]) -> dict[str, float]:
    """Expected seconds of every stage from the unit costs of :func:`calibrate` (same keys as stages.json)."""
    d, ev = cfg.data, cfg.eval
    eval_steps = int(cfg.backbone.get("options", {}).get("num_inference_steps", 12))
    sample = lambda n, steps=eval_steps: n * steps * unit["sample_clip_step"]  # noqa: E731

    def run(section: dict[str, Any]) -> tuple[int, int, int]:
        r = section.get("run", {})
        batch = int(section.get("rollout", {}).get("batch_size", 8))
        return int(r.get("max_steps", 100)), batch, int(r.get("eval_every", 0))

    def curves(steps: int, every: int) -> float:  # held-out samples every `every` steps and at the end
        return (steps // every + 1) * sample(ev.curve_clips) if every > 0 else 0.0

    est: dict[str, float] = {}
    steps, batch, _ = run(cfg.pretrain)
    est["pretrain"] = steps * _train_seconds(unit, batch)
    steps, batch, every = run(cfg.sft)
    est["sft"] = steps * _train_seconds(unit, batch) + curves(steps, every)
    est["critic"] = (sample(d.critic_clips * d.fakes_per_clip)  # fake generation
                     + d.critic_clips * (1 + d.fakes_per_clip) * unit["feature_clip"])  # features of real and fakes
    shift_seconds = 0.0
    for name, arm in cfg.arms.items():
        s = deep_merge(cfg.arms_common, arm)
        steps, batch, every = run(s)
        if arm.get("mode") == "sft":
            continue
        ro = s.get("rollout", {})
        group, buffer = int(ro.get("group_size", 8)), int(ro.get("buffer_size", 8))
        per_buffer = max(1, int(ro.get("passes_per_buffer", 1)) * buffer // max(1, batch))  # generator steps
        buffers = -(-steps // per_buffer)
        rollouts = buffers * (sample(buffer * group, int(ro.get("num_inference_steps", eval_steps)))
                              + buffer * (1 + group) * unit["feature_clip"])  # P fakes and the real clip scored
        est[f"arm:{name}"] = rollouts + steps * (1 + group) * _train_seconds(unit, batch) + curves(steps, every)
        if name == SHIFT_ARM:
            shift_seconds = est[f"arm:{name}"]
    for name, arm in cfg.arms.items():
        if arm.get("mode") == "sft":  # time-limited to SHIFT's wall time
            steps, batch, every = run(deep_merge(cfg.arms_common, arm))
            est[f"arm:{name}"] = shift_seconds if name == TIME_MATCHED_ARM else \
                steps * _train_seconds(unit, batch) + curves(steps, every)
    models = 2 + len(cfg.arms) + (1 if TIME_MATCHED_ARM in cfg.arms else 0)
    per_model = sample(d.heldout_clips) + d.heldout_clips * unit["eval_clip"]
    est["eval"] = d.heldout_clips * unit["reference_clip"] + models * per_model  # the reference is tracked once
    return {k: round(v, 2) for k, v in est.items()}


def estimate_line(estimates: dict[str, float], threads: int) -> str:
    parts = ", ".join(f"{k.removeprefix('arm:')} {v:.0f} s" for k, v in estimates.items())
    return f"[demo] estimate: ~{sum(estimates.values()) / 60:.1f} min ({parts}) on {threads} threads"
