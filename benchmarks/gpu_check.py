"""Does it run, how fast, how much memory: SVD-XT and Wan2.2-TI2V-5B at full size on one GPU, in about 5 minutes.

    python benchmarks/gpu_check.py --json gpu_check.json                  # one H100 / H200 (the default device)
    python benchmarks/gpu_check.py --device cpu --tiny --json /tmp/g.json  # the same code on the tiny presets

Per model (the shipped presets svd_shift_davis and wan22_ti2v5b_shift_wisa, random weights from the shipped
diffusers configs, no download; Wan's UMT5 replaced by random embeddings of its width), through the trainer's
own functions (train/shift.py):

  encode          the real clips' latents and conditionings (VAE, image / text encoders), once
  sft_step        one SFT generator step (the real term: B clips forward/backward)
  rollout         a group of P rollouts for each of rollout.rollout_batch_size conditionings (sub-groups as
                  backbone.options.sample_batch_size says), timed at 2 and 3 sampler steps and extrapolated to
                  the preset's 25 (marked "extrapolated")
  decode          the VAE decode of those rollouts (chunked as the backbone's options say)
  rewards         SEA-RAFT-M + CoTracker3 (random-init weights in the official format, the critic preset's
                  1024 queries) and both discriminators on the device, for the real clip and its P fakes
  shift_step      one SHIFT generator step: 1 + P forward/backward passes of B clips
  refresh_step    one discriminator step on stored features; refresh_recompute the same with the fakes decoded
                  and featurised again (critic.refresh_features=recompute)

Every item: a warm-up, then the median of up to ``--repeats`` timings (fewer when the warm-up is slow; the
warm-up alone, marked ``warmup_only``, when it took over 40 % of the cap), its own
time cap (``--item-timeout``; SIGALRM), its error recorded instead of stopping the script, the peak device
memory (``torch.cuda.max_memory_allocated``; on CPU the peak RSS) beside the memory plan's device total
(train/memory.py) and the measured activation margin (peak − memory resident before the item), which the plan
leaves out. The JSON is rewritten after every item, so a run cut by a timeout keeps what finished. Wan runs at
the largest frame count of ``--wan-frames`` whose SFT step fits in the cap. At the end: the SHIFT / SFT time
ratio per generator step, per rollout buffer and per run at the authors' settings (64 ranks for SVD, 128 for
Wan; the SVD SFT run is svd_sft_davis: 390 steps of batch 6), beside train/cost.py's denoiser-only prediction.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from shiftvdm.backbone import backbone_config
from shiftvdm.backbone.full_size import ARCHITECTURES_DIR, architecture_for, build_backbone
from shiftvdm.config import config_from_dict, deep_merge, load_yaml_with_base, parse_overrides, resolve_config_path
from shiftvdm.recipes.dry_run.squares import MovingSquares
from shiftvdm.recipes.dry_run.step import built_summary
from shiftvdm.recipes.train import assemble, build_backbone as build_train_backbone, resolve_train_config
from shiftvdm.rewards.critic import MotionCritic, MotionFeatures
from shiftvdm.rewards.critic_training import CriticTrainer
from shiftvdm.rewards.pretraining import TrainRewardConfig
from shiftvdm.train.buffer import RolloutBatch, RolloutBuffer
from shiftvdm.train.cost import cost_model
from shiftvdm.train.memory import GIB, memory_plan, peak_rss, reset_peak_rss
from shiftvdm.train.shift import refresh_critic, shift_step
from shiftvdm.utils.checkpoint import save_json

MODELS = {"svd": ("svd_shift_davis", "critic_svd_davis"), "wan": ("wan22_ti2v5b_shift_wisa", "critic_wan22_wisa")}
AUTHORS_WORLD = {"svd": 64, "wan": 128}  # the presets' headers: batch 5 on 64 GPUs (SVD), 2 on 128 GPUs (Wan)
SFT_PRESET = {"svd": "svd_sft_davis"}  # the SFT run the per-run ratio compares with (Wan has none: same steps)
FULL_STEPS = 25  # the presets' rollout sampler steps
# Tiny stand-ins of the official-format extractors (the CPU mode): same classes, toy widths.
TINY_SEA_RAFT = dict(dim=32, initial_dim=16, block_dims=(16, 24, 32), pretrain="resnet18", radius=2, num_blocks=1)
TINY_COTRACKER = dict(latent_dim=16, corr_hidden=32, corr_dim=16, hidden=32, heads=2, time_depth=1, space_depth=1,
                      num_virtual_tracks=4, model_resolution=(32, 48))


class ItemTimeout(Exception):
    """An item ran past its cap."""


@contextlib.contextmanager
def time_cap(seconds: float):
    """Raise ItemTimeout in this (main) thread after ``seconds`` (SIGALRM; no cap where there is none)."""
    if seconds <= 0 or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum, frame):
        raise ItemTimeout(f"ran past its {seconds:.0f} s cap")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resident(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


class Check:
    """The report and its JSON file, rewritten after every item."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.args, self.device, self.t0 = args, device, time.perf_counter()
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
        self.report: dict[str, Any] = {"device": name, "tiny": args.tiny, "torch": torch.__version__,
                                       "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                       "note": f"rollout seconds are measured at 2 and 3 sampler steps and "
                                               f"extrapolated to {FULL_STEPS}", "models": {}}

    def left(self) -> float:
        return self.args.budget - (time.perf_counter() - self.t0)

    def write(self) -> None:
        self.report["elapsed_s"] = time.perf_counter() - self.t0
        if self.args.json:
            save_json(self.report, self.args.json)  # atomic: a cut run keeps the last complete file

    def item(self, model: dict[str, Any], name: str, fn: Callable[[], Any], *, repeats: int | None = None,
             cap: float | None = None) -> Any:
        """Warm-up + median of up to ``repeats`` timings of ``fn`` under the cap; the result of the last call
        (None after an error, which is recorded)."""
        cap = min(cap or self.args.item_timeout, max(1.0, self.left()))
        entry: dict[str, Any] = {"status": "running"}
        model["items"][name] = entry
        if self.left() <= 1:
            entry.update(status="skipped", error="the script's --budget is spent")
            self.write()
            return None
        out, times = None, []
        start_resident = resident(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        rss_reset = reset_peak_rss()
        t_item = time.perf_counter()
        try:
            with time_cap(cap):
                for i in range(1 + (repeats or self.args.repeats)):
                    sync(self.device)
                    t = time.perf_counter()
                    out = fn()
                    sync(self.device)
                    times.append(time.perf_counter() - t)
                    spent = time.perf_counter() - t_item
                    if i >= 1 and spent + times[-1] > 0.8 * cap:  # another timing would not fit in the cap
                        break
                    if i == 0 and spent > 0.4 * cap:  # a slow warm-up (a full-size decode): it is the figure
                        entry["warmup_only"] = True
                        break
            entry["status"] = "ok"
        except Exception as exc:  # recorded, never fatal: the next item runs
            entry.update(status="timeout" if isinstance(exc, ItemTimeout) else "error",
                         error=f"{type(exc).__name__}: {exc}"[:2000], traceback=traceback.format_exc()[-4000:])
            out = None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        timed = times[1:] or times
        entry.update(seconds=statistics.median(timed) if timed else None, timings=times, warmup_s=times[0] if times
                     else None, resident_before_bytes=start_resident)
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
            entry.update(peak_device_bytes=peak, activation_margin_bytes=peak - start_resident)
        else:
            entry.update(peak_rss_bytes=peak_rss(), peak_rss_is_item_only=rss_reset)
        self.write()
        line = f"  {name:<18} {entry['status']:<8}"
        if entry["seconds"] is not None:
            line += f" {entry['seconds']:9.3f} s"
        if "peak_device_bytes" in entry:
            line += (f"   peak {entry['peak_device_bytes'] / GIB:6.2f} GiB (margin over resident "
                     f"{entry['activation_margin_bytes'] / GIB:.2f} GiB)")
        if entry.get("error"):
            line += f"   {entry['error'][:160]}"
        print(line, flush=True)
        return out


# ----- building -------------------------------------------------------------------------------------------

def train_config(key: str, args: argparse.Namespace, out_dir: Path, frames: int | None = None):
    """The preset cut to the check: the clip size (tiny or ``frames``), the device's precision."""
    preset = MODELS[key][0]
    over = ["critic.path=(gpu_check)", f"run.out_dir={out_dir}", "run.progress=false", "run.checkpoint_every=0",
            "run.log_grad_norm_every=0"]
    if args.tiny:
        shape = {"svd": (4, 16, 16), "wan": (5, 32, 32)}[key]
        over += [f"backbone.options.num_frames={shape[0]}", f"backbone.options.height={shape[1]}",
                 f"backbone.options.width={shape[2]}", f"data.num_frames={shape[0]}", f"data.height={shape[1]}",
                 f"data.width={shape[2]}", "backbone.pretrained=" + ("tiny" if key == "svd" else "null"),
                 "rollout.group_size=2", "rollout.batch_size=2", "rollout.rollout_batch_size=1"]
    else:
        if args.clip:  # a smoke run of the full architecture at a small clip size
            frames_, height, width = (int(v) for v in args.clip.split(","))
            frames = frames_ if key == "svd" else 4 * ((frames_ - 1) // 4) + 1
            over += [f"backbone.options.height={height}", f"backbone.options.width={width}",
                     f"data.height={height}", f"data.width={width}"]
        if frames is not None:
            over += [f"backbone.options.num_frames={frames}", f"data.num_frames={frames}"]
    if args.group_size:
        over += [f"rollout.group_size={args.group_size}"]
    if args.batch_size:
        over += [f"rollout.batch_size={args.batch_size}", f"rollout.rollout_batch_size={args.batch_size}"]
    if args.device == "cpu" and args.tiny:  # bf16 autocast and bf16 convolutions are slow on CPU
        over += ["backbone.options.dtype=float32", 'run.mixed_precision="no"']
        if key == "wan":
            over += ["backbone.options.vae_dtype=float32"]
    return resolve_train_config("shift", preset, over)


def critic_for(key: str, args: argparse.Namespace, folder: Path, device: torch.device) -> MotionCritic:
    """The critic preset's architecture with random-init SEA-RAFT-M and CoTracker3 weights in the official format."""
    from shiftvdm.motion.cotracker3 import CoTracker3
    from shiftvdm.motion.sea_raft import VARIANTS, SEARAFTConfig, seeded_state_dict

    flow_path, tracker_path = folder / f"sea_raft_{key}.pth", folder / f"cotracker3_{key}.pth"
    if args.tiny:
        flow_cfg = SEARAFTConfig(**TINY_SEA_RAFT)
        torch.manual_seed(0)
        tracker = CoTracker3(**TINY_COTRACKER)
    else:
        flow_cfg = VARIANTS["M"]
        torch.manual_seed(0)
        tracker = CoTracker3()
    torch.save(seeded_state_dict(flow_cfg, seed=0), flow_path)
    torch.save({"model": tracker.state_dict()}, tracker_path)  # the release's layout
    over = [f"critic.flow_checkpoint={flow_path}", f"critic.tracker_checkpoint={tracker_path}"]
    if args.tiny:
        over += ["critic.ic_size=[16,16]", "critic.num_queries=8", "critic.ic.dim=16", "critic.ic.depth=1",
                 "critic.ic.heads=2", "critic.ic.image_size=[16,16]", "critic.lc.dim=16", "critic.lc.depth=1",
                 "critic.lc.heads=2", "critic.lc.num_virtual_tracks=4", f"critic.lc_token_dim={tracker.input_dim}"]
    if args.clip and not args.tiny:  # the IC maps and their ViT at the smoke run's clip size
        _, height, width = (int(v) for v in args.clip.split(","))
        over += [f"critic.ic_size=[{height},{width}]", f"critic.ic.image_size=[{height},{width}]"]
    data = deep_merge(load_yaml_with_base(resolve_config_path(MODELS[key][1])), parse_overrides(over))
    config = config_from_dict(TrainRewardConfig, data).critic
    if args.tiny:
        config = dataclasses.replace(config, tracker_options=dict(TINY_COTRACKER))
    return MotionCritic(config).to(device).prepare()


def backbone_for(cfg: Any, args: argparse.Namespace, device: torch.device, accelerator: Any) -> Any:
    """The preset's backbone: the tiny preset, or the full architecture with random weights drawn on the device."""
    if args.tiny:
        return build_train_backbone(cfg, accelerator)
    options = dict(cfg.backbone.options)
    arch = architecture_for(cfg.backbone.name, options)
    d = cfg.data
    backbone = build_backbone(arch, options, (d.num_frames, d.height, d.width), 0, ARCHITECTURES_DIR, device=device)
    backbone.to(device)
    if cfg.lora.enabled:
        backbone.add_lora(cfg.lora.rank, cfg.lora.alpha, cfg.lora.targets)
    if cfg.run.gradient_checkpointing:
        backbone.enable_gradient_checkpointing()
    return backbone


# ----- one model ------------------------------------------------------------------------------------------

def check_model(key: str, check: Check, args: argparse.Namespace, tmp: Path) -> None:
    import accelerate

    device = check.device
    model: dict[str, Any] = {"preset": MODELS[key][0], "items": {}}
    check.report["models"][key] = model
    accelerator = accelerate.Accelerator(cpu=device.type == "cpu")
    frames_list = [None] if args.tiny or args.clip or key == "svd" else [int(f) for f in args.wan_frames.split(",")]
    for frames in frames_list:  # Wan: the largest frame count whose SFT step fits in the cap
        cfg = train_config(key, args, tmp / f"run-{key}", frames)
        d, r = cfg.data, cfg.rollout
        model.update(clip=[d.num_frames, d.height, d.width], group_size=r.group_size, batch_size=r.batch_size,
                     rollout_batch_size=r.rollout_batch_size)
        print(f"== {key}: {MODELS[key][0]} at {d.num_frames}×{d.height}×{d.width}, P={r.group_size}, "
              f"B={r.batch_size}, {'tiny preset' if args.tiny else 'full size, random weights'} on {check.report['device']}",
              flush=True)
        built = check.item(model, "build", lambda: backbone_for(cfg, args, device, accelerator), repeats=0,
                           cap=args.build_timeout)
        if built is None:
            return
        backbone = built
        model["built"] = built_summary(backbone)
        critic = check.item(model, "critic_build", lambda: critic_for(key, args, tmp, device), repeats=0,
                            cap=args.build_timeout)
        if critic is None:
            return
        parts = assemble(cfg, backbone, critic, accelerator=accelerator)
        state, engine, dist = parts.state, parts.engine, parts.dist
        clips = MovingSquares(max(r.batch_size, r.rollout_batch_size), (d.num_frames, d.height, d.width))
        video, prompts = clips.load(list(range(len(clips))))

        def encode():
            with torch.no_grad():
                return (backbone.encode_video(video.to(device)).cpu(),
                        backbone.encode_condition(video[:, 0].to(device), prompts).to("cpu"))
        encoded = check.item(model, "encode", encode, repeats=0)  # VAE + image/text encoders, capped as well
        sft, B = None, r.batch_size
        if encoded is not None:
            x, cond = encoded
            real = RolloutBatch(x[:B], cond.index(torch.arange(B)), None, None, None, torch.arange(B))
            sft = check.item(model, "sft_step", lambda: shift_step(backbone, real, cfg, state, engine, dist))
        if sft is None and frames != frames_list[-1]:
            model.setdefault("tried", []).append({"clip": model["clip"], "items": model["items"]})  # why not
            backbone = critic = parts = state = engine = None  # freed before the smaller build
            model["items"] = {}
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue  # the next smaller frame count
        break
    if model["items"].get("sft_step", {}).get("status") != "ok":
        return
    plan = memory_plan(cfg, backbone, 8, critic.config, device_capacity=None, host_capacity=None, local_ranks=8)
    model["plan_device_bytes"], model["plan_host_bytes"] = plan.total("device"), plan.total("host")
    model["plan"] = plan.table()

    n_cond = r.rollout_batch_size
    c_roll = cond.index(torch.arange(n_cond)).to(device)
    P = r.group_size

    def rollout(steps: int):
        return lambda: backbone.sample(c_roll, P, state.generator("rollout", 0, steps), stochastic=r.stochastic,
                                       num_inference_steps=steps)
    with torch.no_grad():
        lat2 = check.item(model, "rollout_2_steps", rollout(2))
        lat = check.item(model, "rollout_3_steps", rollout(3))
    items = model["items"]
    if lat is None or lat2 is None:
        return
    t2, t3 = items["rollout_2_steps"]["seconds"], items["rollout_3_steps"]["seconds"]
    per_step = t3 - t2 if t3 > t2 else t3 / 3  # timing noise: fall back to proportional
    fixed = max(0.0, t3 - 3 * per_step)
    items["rollout"] = {"status": "ok", "extrapolated": True, "seconds": fixed + FULL_STEPS * per_step,
                        "per_sampler_step_s": per_step, "fixed_s": fixed, "conditionings": n_cond,
                        "note": f"measured at 2 and 3 sampler steps, extrapolated to {FULL_STEPS}"}
    print(f"  {'rollout':<18} {'ok':<8} {items['rollout']['seconds']:9.3f} s   (extrapolated to {FULL_STEPS} steps "
          f"from 2 and 3: {per_step:.3f} s per step, {n_cond} conditioning(s) × P={P})", flush=True)
    check.write()
    with torch.no_grad():
        videos = check.item(model, "decode", lambda: backbone.decode(lat.flatten(0, 1).to(device)))
    if videos is None:
        return
    queries = torch.stack([torch.from_numpy(critic.sample_queries(d.height, d.width, state.generator("queries", 0, i)))
                           for i in range(n_cond)]).numpy()
    scored = check.item(model, "rewards", lambda: critic.score_groups(
        video[:n_cond], videos.unflatten(0, (n_cond, P)), queries, keep_features=True))
    x_fake = lat.cpu()[:1].expand(B, *lat.shape[1:]).contiguous()
    adv = torch.randn(B, P, generator=torch.Generator().manual_seed(0))
    batch = RolloutBatch(x[:B], cond.index(torch.arange(B)), x_fake, adv, torch.zeros(B), torch.arange(B))
    check.item(model, "shift_step", lambda: shift_step(backbone, batch, cfg, state, engine, dist))
    # the refresh step even where the preset has the refresh off (SVD): a trainer of the preset's settings
    trainer = state.critic_trainer or CriticTrainer(critic, cfg.critic.train)
    if scored is not None:
        feats_real = MotionFeatures.cat([scored.features_real.index([0])] * B)
        feats_fake = MotionFeatures.cat([scored.features_fake.index(slice(0, P))] * B)
        buffer = RolloutBuffer(x=x[:B], cond=cond.index(torch.arange(B)), clip_ids=torch.arange(B), x_fake=x_fake,
                               adv_fake=adv, adv_real=torch.zeros(B), features_real=feats_real,
                               features_fake=feats_fake)
        stored = dataclasses.replace(cfg, critic=dataclasses.replace(cfg.critic, refresh_features="stored"))
        check.item(model, "refresh_step", lambda: refresh_critic(trainer, buffer, 1, stored, state, dist, backbone))
        slim = dataclasses.replace(buffer, features_fake=None)
        recompute = dataclasses.replace(cfg, critic=dataclasses.replace(cfg.critic, refresh_features="recompute"))
        check.item(model, "refresh_recompute", lambda: refresh_critic(trainer, slim, 1, recompute, state, dist,
                                                                      backbone))
    model["ratios"] = ratios(key, cfg, backbone, model)
    check.write()
    print_summary(key, model)
    backbone = critic = parts = state = engine = trainer = None  # freed before the next model  # noqa: F841
    if device.type == "cuda":
        torch.cuda.empty_cache()


def ratios(key: str, cfg: Any, backbone: Any, model: dict[str, Any]) -> dict[str, Any]:
    """Measured SHIFT / SFT time per generator step, per buffer and per run at the authors' settings (and the
    cost model's denoiser-only prediction for the same settings)."""
    items = model["items"]
    sec = {k: (v.get("seconds") if v.get("status") == "ok" else None) for k, v in items.items()}
    world = AUTHORS_WORLD[key]
    authors = resolve_train_config("shift", MODELS[key][0], ["critic.path=(gpu_check)"])
    family = backbone_config(authors.backbone.name, dict(authors.backbone.options))
    sft_batch = sft_steps = None
    if key in SFT_PRESET:
        sft_cfg = resolve_train_config("sft", SFT_PRESET[key], [])
        sft_batch, sft_steps = sft_cfg.rollout.batch_size, sft_cfg.run.max_steps
    predicted = cost_model(authors, family, world, sft_batch_size=sft_batch, sft_max_steps=sft_steps)
    out: dict[str, Any] = {"world": world, "predicted": predicted.as_dict(),
                           "note": "measured at the check's group size and batch; per-run uses the authors' step counts"}
    need = ("sft_step", "shift_step", "rollout", "decode", "rewards")
    if any(sec.get(k) is None for k in need):
        out["measured"] = None
        return out
    n_cond = items["rollout"]["conditionings"]
    per_cond = (sec["rollout"] + sec["decode"] + sec["rewards"]) / n_cond  # one conditioning's P rollouts, scored
    P, B = model["group_size"], model["batch_size"]
    scale = predicted.group_size / max(1, P)  # tiny mode: the check's P against the preset's
    refresh = sec.get("refresh_recompute" if authors.critic.refresh_features == "recompute" else "refresh_step") or 0.0
    buffer_s = predicted.buffer_share * per_cond * scale + predicted.refresh_steps_per_buffer * refresh
    shift_step_s = sec["shift_step"] * (1 + predicted.group_size) / (1 + P) * predicted.batch_size / B
    sft_step_s = sec["sft_step"] * predicted.batch_size / B
    per_step = shift_step_s + buffer_s / predicted.steps_per_buffer
    sft_run = sft_step_s * (predicted.sft_batch_size / predicted.batch_size) * predicted.sft_max_steps
    out["measured"] = {
        "shift_step_s": shift_step_s, "sft_step_s": sft_step_s, "buffer_rollout_reward_refresh_s": buffer_s,
        "shift_per_g_step_s": per_step, "ratio_per_step": per_step / sft_step_s,
        "ratio_per_buffer": (per_step * predicted.steps_per_buffer) / (sft_step_s * predicted.steps_per_buffer),
        "ratio_per_run": per_step * predicted.max_steps / sft_run,
        "split_per_buffer_s": {"rollouts": predicted.buffer_share * sec["rollout"] / n_cond * scale,
                               "decode": predicted.buffer_share * sec["decode"] / n_cond * scale,
                               "rewards": predicted.buffer_share * sec["rewards"] / n_cond * scale,
                               "training": shift_step_s * predicted.steps_per_buffer,
                               "refresh": predicted.refresh_steps_per_buffer * refresh}}
    return out


def print_summary(key: str, model: dict[str, Any]) -> None:
    plan, r = model.get("plan_device_bytes"), model.get("ratios", {})
    peak = max((v.get("peak_device_bytes", 0) for v in model["items"].values()), default=0)
    step = model["items"].get("shift_step", {})
    if plan is not None and peak:
        print(f"  memory: plan {plan / GIB:.2f} GiB (static rows of train/memory.py; activations not in it), measured "
              f"peak {peak / GIB:.2f} GiB; SHIFT step's activation margin over resident "
              f"{step.get('activation_margin_bytes', 0) / GIB:.2f} GiB", flush=True)
    elif plan is not None:
        rss = max((v.get("peak_rss_bytes", 0) for v in model["items"].values()), default=0)
        print(f"  memory: plan device total {plan / GIB:.3f} GiB (static rows; no device here: peak RSS "
              f"{rss / GIB:.2f} GiB)", flush=True)
    p = r.get("predicted", {})
    if p:
        print(f"  predicted SHIFT/SFT at {r['world']} ranks (denoiser forwards only, train/cost.py): "
              f"{p['ratio_per_step']:.2f}× per step and per buffer, {p['ratio_per_run']:.2f}× per run", flush=True)
    m = r.get("measured")
    if m:
        print(f"  measured SHIFT/SFT at {r['world']} ranks (rollouts + rewards + refresh included): "
              f"{m['ratio_per_step']:.2f}× per step, {m['ratio_per_buffer']:.2f}× per buffer, "
              f"{m['ratio_per_run']:.2f}× per run", flush=True)
        split = ", ".join(f"{k} {v:.1f} s" for k, v in m["split_per_buffer_s"].items())
        print(f"  per buffer per rank: {split}", flush=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="the tiny presets (seconds on a CPU)")
    parser.add_argument("--models", default="svd,wan", help="comma-separated: svd, wan")
    parser.add_argument("--json", help="write the report here (rewritten after every item)")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls after the warm-up (median)")
    parser.add_argument("--item-timeout", type=float, default=60.0, help="seconds cap of one item")
    parser.add_argument("--build-timeout", type=float, default=120.0, help="seconds cap of building a model")
    parser.add_argument("--budget", type=float, default=290.0, help="seconds for the whole script; later items skip")
    parser.add_argument("--wan-frames", default="49,33,17", help="Wan frame counts to try, largest first")
    parser.add_argument("--clip", help="F,H,W: the full architectures at this clip size (a smoke run, e.g. on CPU)")
    parser.add_argument("--group-size", type=int, help="P instead of the preset's (a smoke run)")
    parser.add_argument("--batch-size", type=int, help="B (and conditionings per rollout call) instead of the preset's")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here (use --device cpu --tiny)")
    if device.type == "cpu" and args.tiny:
        torch.set_num_threads(1)  # toy-sized kernels: more threads only add OpenMP barriers (and share the cores)
    check = Check(args, device)
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        for key in [m.strip() for m in args.models.split(",") if m.strip()]:
            if key not in MODELS:
                parser.error(f"--models: unknown model {key!r}; expected svd or wan")
            try:
                check_model(key, check, args, Path(tmp))
            except Exception as exc:  # a model's set-up failure is recorded; the next model still runs
                check.report["models"].setdefault(key, {})["error"] = f"{type(exc).__name__}: {exc}"[:2000]
                check.report["models"][key]["traceback"] = traceback.format_exc()[-4000:]
                print(f"== {key}: failed: {type(exc).__name__}: {exc}", flush=True)
                check.write()
    check.write()
    return check.report


if __name__ == "__main__":
    main(sys.argv[1:])
