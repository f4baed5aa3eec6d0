"""Algorithm 1 of SHIFT (arXiv 2603.17426): the file to read first. Symbols as in METHOD.md.

    for each chunk of conditionings c (one rollout buffer):
        x̃¹..x̃ᴾ ~ p_θ(·|c)                         rollouts, no gradients         collect_buffer
        r = clip(logit D_ema(·), r_min, r_max)    pixel-motion rewards, detached
        Ã_p = clip(r̃_p − r̄, ±A_max)                 group-recentred advantages
        repeat passes_per_buffer times, per minibatch:                                shift_step
            J = mean_b w_b L(x_b) + λ_aw mean_p mean_b Ã_{p,b} L(x̃_{p,b})       (Eq. 12)
        refresh D on the latest fakes vs the real clips (Eq. 7), EMA update         refresh_discriminators

SFT, pre-training and the baselines are settings (λ_aw = 0, advantage.center = none, refresh off, ...).
This file never names a model part: everything model-specific is behind ``Backbone``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from shiftvdm.backbone.base import Backbone
from shiftvdm.errors import DataError
from shiftvdm.rewards.protocol import GroupScores, RewardModel
from shiftvdm.train.advantages import group_advantages
from shiftvdm.train.buffer import RolloutBatch, RolloutBuffer
from shiftvdm.train.config import TrainConfig
from shiftvdm.train.losses import aw_weight, needs_rollouts, real_weight
from shiftvdm.train.distributed import full_tensor
from shiftvdm.train.runtime import Runtime
from shiftvdm.utils.seeding import derive_seed, generator_for

logger = logging.getLogger(__name__)


class ClipSource(Protocol):
    """The real training clips, addressed by dataset index."""

    def __len__(self) -> int: ...

    def load(self, indices: list[int]) -> tuple[Tensor, list[str] | None]:
        """(B, F, 3, H, W) clips in [-1, 1] and their prompts (or None)."""
        ...


@dataclass
class TrainResult:
    steps: int
    timers: dict[str, float]
    last_metrics: dict[str, float]
    stopped_by: str  # "max_steps" or "time_limit"


def chunk_indices(num_clips: int, cfg: TrainConfig, epoch: int, chunk: int, rank: int, world: int) -> list[int]:
    """This process's share of chunk ``chunk`` of epoch ``epoch``.

    Each epoch is a fresh permutation (seeded by (seed, "order", epoch)), cut into chunks of
    ``buffer_size``; a short last chunk is padded by wrapping, and every chunk is padded to a multiple of
    world × batch_size so all processes take the same number of steps. Processes take disjoint strides,
    so no conditioning is rolled out twice within a chunk.
    """
    perm = torch.randperm(num_clips, generator=generator_for(cfg.run.seed, "order", epoch)).tolist()
    size = min(cfg.rollout.buffer_size, num_clips)
    quantum = world * cfg.rollout.batch_size
    size = max(quantum, math.ceil(size / quantum) * quantum)
    start = chunk * cfg.rollout.buffer_size
    picked = [perm[(start + i) % num_clips] for i in range(size)]
    return picked[rank::world]


def num_chunks(num_clips: int, cfg: TrainConfig) -> int:
    return max(1, math.ceil(num_clips / cfg.rollout.buffer_size))


@torch.no_grad()
def collect_buffer(backbone: Backbone, critic: RewardModel, clips: ClipSource, indices: list[int], cfg: TrainConfig,
                   rt: Runtime) -> RolloutBuffer:
    """Alg. 1, rollout phase: encode real clips, sample P rollouts each, score them, compute advantages."""
    video, prompts = rt.timed("data", lambda: clips.load(indices))  # (N, F, 3, H, W) in [-1, 1]
    x = rt.timed("encode", lambda: backbone.encode_video(video.to(rt.device)))  # (N, ...) real latents
    cond = backbone.encode_condition(video[:, 0].to(rt.device), prompts)
    buffer = RolloutBuffer(x=x.cpu(), cond=cond.to("cpu"), clip_ids=torch.as_tensor(indices))
    if not needs_rollouts(cfg.loss):  # SFT / pre-training: the buffer is just real data
        return buffer
    P, n = cfg.rollout.group_size, len(indices)
    x_fake, scores = [], []
    for start in range(0, n, cfg.rollout.rollout_batch_size):
        ids = list(range(start, min(n, start + cfg.rollout.rollout_batch_size)))
        gen = rt.generator("rollout", rt.state.chunks_done, start)  # (seed, rank, buffer, slot): never repeats
        lat = rt.timed("rollout", lambda: backbone.sample(cond.index(ids).to(rt.device), P, gen,  # x̃ ~ p_θ(·|c)
                                                         stochastic=cfg.rollout.stochastic,
                                                         num_inference_steps=cfg.rollout.num_inference_steps))
        videos = rt.timed("decode", lambda: backbone.decode(lat.flatten(0, 1)))  # (b*P, F, 3, H, W), on the device
        x_fake.append(lat.cpu())
        # one query set per conditioning, shared by its real clip and its P fakes; the chunk scored in one call
        queries = np.stack([critic.sample_queries(video.shape[-2], video.shape[-1],
                                                  rt.generator("queries", rt.state.chunks_done, i)) for i in ids])
        scores.append(rt.timed("reward", lambda: critic.score_groups(
            video[ids], videos.unflatten(0, (len(ids), P)), queries, keep_features=cfg.discriminator.refresh)))
    buffer.x_fake = torch.cat(x_fake)  # (N, P, ...)
    scored = GroupScores.cat(scores)
    buffer.rewards = scored.rewards
    buffer.adv_fake, buffer.adv_real = group_advantages(buffer.rewards["r_fake"], buffer.rewards["r_real"], cfg.advantage)
    buffer.features_real, buffer.features_fake = scored.features_real, scored.features_fake  # None without refresh
    return buffer


def shift_step(backbone: Backbone, batch: RolloutBatch, cfg: TrainConfig, rt: Runtime) -> dict[str, float] | None:
    """One generator update (Eq. 12), back-propagated one rollout at a time so memory does not grow with P.

    Gradients accumulate over the 1+P backwards and are averaged across processes by the engine on the
    last one. A non-finite loss does not return early: every rank makes all its backwards (the last one is
    a collective) and the skip is agreed after it. Returns the step's metrics; a skipped step returns its
    own values so far with ``skipped`` = 1.
    """
    params = rt.params
    x, cond = batch.x.to(rt.device), batch.cond.to(rt.device)
    draw = backbone.draw_noise(x, rt.generator("noise", rt.state.step))  # ε, σ/t, dropout: shared below
    lam_aw = aw_weight(cfg.loss, rt.state.step)
    # zero advantages contribute no gradient: no forward/backward for a rollout whose advantages are zero on
    # every rank (agreed: FSDP2 all-gathers and DDP buffer broadcasts in each forward need equal counts)
    group = range(batch.group_size if lam_aw > 0 else 0)
    keep = rt.dist.any_each([bool(batch.adv_fake[:, p].any()) for p in group])
    rollouts = [p for p, k in zip(group, keep) if k]
    bad: list[str] = []  # this rank's reasons to skip, agreed across ranks below
    with rt.engine.routed(backbone):
        with rt.engine.term(sync=not rollouts):
            with rt.autocast():
                loss_real = rt.test_hooks(backbone.denoising_loss(x, cond, draw))  # L(x_b), (B,)
            w_real = real_weight(cfg.loss, batch.adv_real, len(x)).to(loss_real.device)
            if not torch.isfinite(loss_real).all():
                bad.append("non-finite real loss")
            rt.engine.backward((w_real * loss_real.float()).mean())
        metrics = {"loss/real": loss_real.float().mean().item(), "loss/real_weight": w_real.mean().item(),
                   "lambda_aw": lam_aw}
        g_sft = rt.grad_snapshot() if rt.log_grad_norms_now() and batch.group_size else None
        aw_terms = []
        for i, p in enumerate(rollouts):  # one rollout at a time
            adv = batch.adv_fake[:, p].to(rt.device)  # Ã_{p,b}, (B,)
            x_p = batch.x_fake[:, p].to(rt.device)
            d = draw if cfg.loss.match_noise else backbone.draw_noise(x_p, rt.generator("noise", rt.state.step, p))
            with rt.engine.term(sync=i == len(rollouts) - 1):
                with rt.autocast():
                    loss_fake = backbone.denoising_loss(x_p, cond, d)  # L(x̃_{p,b}), (B,)
                if not torch.isfinite(loss_fake).all():
                    bad.append("non-finite rollout loss")
                    metrics["loss/fake"] = loss_fake.float().mean().item()
                term = (adv * loss_fake.float()).mean()
                rt.engine.backward(lam_aw * term / batch.group_size)
            aw_terms.append(term.item())
    if batch.group_size:
        metrics["loss/aw"] = sum(aw_terms) / batch.group_size  # mean_p mean_b Ã·L, unscaled by λ_aw
        metrics["loss/total"] = metrics["loss/real"] * cfg.loss.lambda_sft + lam_aw * metrics["loss/aw"]

    if g_sft is not None:  # before clipping, on every rank (it reduces the SFT snapshot)
        metrics.update(rt.grad_split_norms(g_sft))  # grad_norm/sft, grad_norm/aw, grad_norm/aw_over_sft
    grad_norm = full_tensor(rt.engine.clip_grad_norm_(params, cfg.optim.max_grad_norm))
    if not torch.isfinite(grad_norm):
        bad.append("non-finite gradient")
    if rt.dist.any(bool(bad)):  # any rank non-finite -> every rank skips this step and counts it
        return rt.skip_step(bad[0] if bad else "non-finite loss or gradient on another process",
                            {**metrics, "grad_norm": grad_norm.item()})
    rt.engine.step(rt.optimizer)
    rt.check_params_finite("after the optimizer step")  # the update itself can overflow (e.g. a huge lr)
    rt.lr_scheduler.step()
    rt.optimizer.zero_grad(set_to_none=True)
    rt.update_weight_ema()
    metrics["grad_norm"] = grad_norm.item()
    metrics["lr"] = rt.lr_scheduler.get_last_lr()[0]
    return metrics


def refresh_discriminators(critic: RewardModel, buffer: RolloutBuffer, n_steps: int, cfg: TrainConfig, rt: Runtime) -> dict[str, float]:
    """Alg. 1, adversarial refresh: Eq. 7 on this buffer's fakes (negatives) vs its real clips, EMA update.

    Uses the motion features stored at scoring time. The generator's parameters are not touched: the
    discriminator has its own optimizer, and fakes are detached data.
    """
    P, n = buffer.group_size, len(buffer)
    bsz = min(n, cfg.discriminator.batch_size or cfg.rollout.batch_size)
    metrics: dict[str, float] = {}
    for s in range(n_steps):
        gen = rt.generator("disc", rt.state.chunks_done, s)
        idx = torch.randperm(n, generator=gen)[:bsz]
        p = (rt.state.d_steps + s) % P  # cycle through the rollouts, as the reference does
        fake_idx = idx * P + p
        torch.manual_seed(derive_seed(cfg.run.seed, "disc-global", rt.rank, rt.state.d_steps + s))
        real, fake = buffer.features_real.index(idx), buffer.features_fake.index(fake_idx)
        rt.dist.raise_if_any(unusable_features(real, fake), DataError)  # agreed before the step's all-reduce
        m = critic.refresh_step(real, fake, rt.d_optimizer, gen, cfg.discriminator.train, sync_grads=rt.average_gradients)
        for k, v in m.items():
            metrics[k] = metrics.get(k, 0.0) + v / n_steps
    rt.state.d_steps += n_steps
    return metrics


def unusable_features(real: Any, fake: Any) -> str | None:
    """Why a discriminator step cannot train on these features (None when it can)."""
    for name, feats in (("real", real), ("fake", fake)):
        if hasattr(feats, "finite") and not bool(feats.finite().all()):
            return f"the {name} motion features of this buffer contain NaN or infinite values; cannot refresh on them"
    return None


def buffer_metrics(buffer: RolloutBuffer) -> dict[str, float]:
    """Reward and advantage statistics of a fresh buffer, for the logs."""
    if buffer.adv_fake is None:
        return {}
    r, a = buffer.rewards, buffer.adv_fake
    out = {"reward/fake": r["r_fake"].mean().item(), "reward/real": r["r_real"].mean().item(),
           "reward/ic_fake": r["r_ic_fake"].mean().item(), "reward/lc_fake": r["r_lc_fake"].mean().item(),
           "reward/ic_real": r["r_ic_real"].mean().item(), "reward/lc_real": r["r_lc_real"].mean().item(),
           "reward/group_std": r["r_fake"].std(dim=1, unbiased=False).mean().item(),
           "adv/abs_mean": a.abs().mean().item(), "adv/real_mean": buffer.adv_real.mean().item(),
           "disc/acc_fake_ema": (r["r_fake"] < 0).float().mean().item(),
           "disc/acc_real_ema": (r["r_real"] > 0).float().mean().item()}
    return out


def train(cfg: TrainConfig, backbone: Backbone, critic: RewardModel | None, clips: ClipSource, rt: Runtime,
          evaluate: Callable[[Backbone, int], dict[str, float]] | None = None) -> TrainResult:
    """Run (or resume) training until ``run.max_steps`` generator steps or ``run.time_limit_s`` seconds."""
    state, c = rt.state, cfg.rollout
    stopped_by = "max_steps"
    metrics: dict[str, float] = {}
    rt.begin(evaluate)
    while state.step < cfg.run.max_steps:
        if rt.buffer is None:  # Alg. 1: new chunk -> rollouts, rewards, advantages
            indices = chunk_indices(len(clips), cfg, state.epoch, state.chunk, rt.rank, rt.world)
            t0 = time.perf_counter()
            with rt.rollout_origin() as again:  # again: resumed without the buffer, rolled out once more
                rt.buffer = rt.dist.together(lambda: collect_buffer(backbone, critic, clips, indices, cfg, rt),
                                             "collecting the rollout buffer")  # an error on one rank stops all
            state.add_time("buffer", time.perf_counter() - t0)
            if not again:
                rt.record_buffer(rt.buffer)
                rt.log(buffer_metrics(rt.buffer), step=state.step)
        order = rt.buffer.pass_order(c.batch_size, rt.generator("pass", state.chunks_done, state.pass_index))
        while state.batch_index < len(order):
            t0 = time.perf_counter()
            torch.manual_seed(derive_seed(cfg.run.seed, "global", rt.rank, state.step))
            metrics = shift_step(backbone, rt.buffer.batch(order[state.batch_index]), cfg, rt) or metrics
            state.add_time("generator", time.perf_counter() - t0)
            state.batch_index += 1
            state.step += 1
            rt.after_step(metrics)  # logs, samples, evaluation hook, checkpoint
            if rt.out_of_time():
                stopped_by = "time_limit"
                break
            if state.step >= cfg.run.max_steps:
                break
        if stopped_by == "time_limit" or state.batch_index < len(order):
            break  # stopped mid-pass: the checkpoint keeps the position inside the buffer
        state.pass_index += 1
        state.batch_index = 0
        if state.pass_index >= c.passes_per_buffer:  # buffer used up: refresh D, next chunk
            steps_in_buffer = c.passes_per_buffer * len(order)
            if critic is not None and cfg.discriminator.refresh and rt.buffer.group_size:
                t0 = time.perf_counter()
                d_metrics = refresh_discriminators(critic, rt.buffer, round(cfg.discriminator.d_to_g * steps_in_buffer), cfg, rt)
                state.add_time("discriminator", time.perf_counter() - t0)
                rt.log(d_metrics, step=state.step)
            rt.buffer = None
            state.pass_index = 0
            state.chunks_done += 1
            state.chunk += 1
            if state.chunk >= num_chunks(len(clips), cfg):
                state.chunk, state.epoch = 0, state.epoch + 1
    rt.finish(metrics)
    return TrainResult(state.step, dict(state.timers), metrics, stopped_by)


__all__ = ["ClipSource", "TrainResult", "chunk_indices", "collect_buffer", "refresh_discriminators", "shift_step",
           "train", "Path"]
