"""Algorithm 1 of SHIFT (arXiv 2603.17426): the file to read first. Symbols as in METHOD.md.

    for each chunk of conditionings c (one rollout buffer):
        x̃¹..x̃ᴾ ~ p_θ(·|c)                         rollouts, no gradients         collect_buffer
        r = clip(logit D_ema(·), r_min, r_max)    pixel-motion rewards, detached
        Ã_p = clip(r̃_p − r̄, ±A_max)                 group-recentred advantages
        repeat passes_per_buffer times, per minibatch:                                shift_step
            J = mean_b w_b L(x_b) + λ_aw mean_p mean_b Ã_{p,b} L(x̃_{p,b})       (Eq. 12)
        refresh D on the latest fakes vs the real clips (Eq. 7), EMA update         refresh_critic

SFT, pre-training and the baselines are settings (λ_aw = 0, advantage.center = none, refresh off, ...).
This file never names a model part: everything model-specific is behind ``Backbone``. ``train`` takes the rest
of the run as parts (assembled by recipes/train.py): ``state`` (TrainState: counters, random streams, weights,
optimizers, buffer, critic — what a checkpoint holds), ``engine`` (GradientEngine: backward / no_sync / clip /
step for one process, DDP, FSDP2 or DeepSpeed), ``dist`` (Distributed: every rank reaches the same decision
before a collective) and ``hooks`` (RunHooks: logs, samples, evaluation, checkpoints, and the agreed stop: time budget or preemption).
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
from shiftvdm.rewards.critic_training import CriticTrainer
from shiftvdm.rewards.protocol import Critic, GroupScores
from shiftvdm.train.advantages import group_advantages
from shiftvdm.train.buffer import RolloutBatch, RolloutBuffer
from shiftvdm.train.config import RolloutConfig, TrainConfig
from shiftvdm.train.distributed import Distributed, full_tensor
from shiftvdm.train.engine import GradientEngine
from shiftvdm.train.hooks import RunHooks
from shiftvdm.train.losses import aw_weight, real_weight
from shiftvdm.train.numerics import (
    check_params_finite,
    check_some_step_trained,
    grad_snapshot,
    grad_split_norms,
    skip_step,
)
from shiftvdm.train.state import TrainState
from shiftvdm.utils import preemption
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
    stopped_by: str  # "max_steps", "time_limit" or "preempted"
    checkpoint: Path | None = None  # the last checkpoint written (the one a preempted run resumes from)


def chunk_indices(num_clips: int, cfg: TrainConfig, epoch: int, chunk: int, rank: int, world: int) -> list[int]:
    """This process's share of chunk ``chunk`` of epoch ``epoch``.

    Each epoch is a fresh permutation (seeded by (seed, "order", epoch)), cut into chunks of
    ``buffer_size``; a short last chunk is padded by wrapping, and every chunk is padded to a multiple of
    world × batch_size so all processes take the same number of steps. Processes take disjoint strides,
    so no conditioning is rolled out twice within a chunk.
    """
    rollout, run = cfg.rollout, cfg.run
    perm = torch.randperm(num_clips, generator=generator_for(run.seed, "order", epoch))
    size = min(rollout.buffer_size, num_clips)
    quantum = world * rollout.batch_size
    size = max(quantum, math.ceil(size / quantum) * quantum)
    start = chunk * rollout.buffer_size
    picked = perm[(start + torch.arange(size)) % num_clips]  # only the chunk becomes Python ints, not the permutation
    return picked[rank::world].tolist()


def num_chunks(num_clips: int, rollout: RolloutConfig) -> int:
    return max(1, math.ceil(num_clips / rollout.buffer_size))


@torch.no_grad()
def collect_buffer(backbone: Backbone, critic: Critic | None, clips: ClipSource, indices: list[int], cfg: TrainConfig,
                   state: TrainState, device: torch.device,
                   stop_requested: Callable[[], bool] = preemption.requested) -> RolloutBuffer | None:
    """Alg. 1, rollout phase: encode real clips, sample P rollouts each, score them, compute advantages.

    None when ``stop_requested()`` (a preemption signal) before a rollout batch (a safe point): the half buffer is
    dropped and train() checkpoints the state from before it, so a resume rolls the whole buffer out again."""
    rollout, critic_cfg, counters = cfg.rollout, cfg.critic, state.counters
    load_encoded = getattr(clips, "load_encoded", None)
    if load_encoded is not None:  # data.cache: latents and conditioning as `shiftvdm data encode` stored them
        x, cond = state.timed("data", lambda: load_encoded(indices))
        # pixels only for the rewards (SFT needs none)
        video = state.timed("data", lambda: clips.load(indices)[0]) if cfg.uses_rollouts else None
    else:
        video, prompts = state.timed("data", lambda: clips.load(indices))  # (N, F, 3, H, W) in [-1, 1]
        x = state.timed("encode", lambda: backbone.encode_video(video.to(device)))  # (N, ...) real latents
        cond = backbone.encode_condition(video[:, 0].to(device), prompts)
    buffer = RolloutBuffer(x=x.cpu(), cond=cond.to("cpu"), clip_ids=torch.as_tensor(indices))
    if not cfg.uses_rollouts:  # SFT / pre-training: the buffer is just real data
        return buffer
    P, n = rollout.group_size, len(indices)
    x_fake, scores = [], []
    for start in range(0, n, rollout.rollout_batch_size):
        if stop_requested():  # train() reduces the stop across ranks after the buffer (or here, under FSDP2)
            return None
        ids = list(range(start, min(n, start + rollout.rollout_batch_size)))
        gen = state.generator("rollout", counters.chunks_done, start)  # (seed, rank, buffer, slot): never repeats
        lat = state.timed("rollout", lambda: backbone.sample(cond.index(ids).to(device), P, gen,  # x̃ ~ p_θ(·|c)
                                                             stochastic=rollout.stochastic,
                                                             num_inference_steps=rollout.num_inference_steps))
        videos = state.timed("decode", lambda: backbone.decode(lat.flatten(0, 1)))  # (b*P, F, 3, H, W), on the device
        x_fake.append(lat.cpu())
        # one query set per conditioning, shared by its real clip and its P fakes; the chunk scored in one call
        queries = np.stack([critic.sample_queries(video.shape[-2], video.shape[-1],
                                                  state.generator("queries", counters.chunks_done, i)) for i in ids])
        scored = state.timed("reward", lambda: critic.score_groups(
            video[ids], videos.unflatten(0, (len(ids), P)), queries, keep_features=critic_cfg.refresh))
        if critic_cfg.refresh_features == "recompute":  # the refresh decodes and featurises the fakes again
            scored.features_fake = None
        scores.append(scored)
    buffer.x_fake = torch.cat(x_fake)  # (N, P, ...)
    scored = GroupScores.cat(scores)
    buffer.rewards = scored.rewards
    buffer.adv_fake, buffer.adv_real = group_advantages(buffer.rewards["r_fake"], buffer.rewards["r_real"], cfg.advantage)
    buffer.features_real, buffer.features_fake = scored.features_real, scored.features_fake  # None without refresh
    return buffer


def shift_step(backbone: Backbone, batch: RolloutBatch, cfg: TrainConfig, state: TrainState, engine: GradientEngine,
               dist: Distributed) -> dict[str, float]:
    """One generator update (Eq. 12), back-propagated one rollout at a time so memory does not grow with P.

    Gradients accumulate over the 1+P backwards and are averaged across processes by the engine on the
    last one. A non-finite loss does not return early: every rank makes all its backwards (the last one is
    a collective) and the skip is agreed after it. Returns the step's metrics; a skipped step returns its
    own values so far with ``skipped`` = 1.
    """
    loss_cfg, optim, run = cfg.loss, cfg.optim, cfg.run
    params, optimizer, scheduler, counters = state.params, state.optimizer, state.lr_scheduler, state.counters
    step = counters.step  # generator steps taken before this one
    x, cond = batch.x, batch.cond
    x, cond = x.to(dist.device), cond.to(dist.device)
    draw = backbone.draw_noise(x, state.generator("noise", step))  # ε, σ/t, dropout: shared below
    lam_aw = aw_weight(loss_cfg, step)
    # zero advantages contribute no gradient: no forward/backward for a rollout whose advantages are zero on
    # every rank (agreed: FSDP2 all-gathers and DDP buffer broadcasts in each forward need equal counts)
    group = range(batch.group_size if lam_aw > 0 else 0)
    keep = dist.any_each([bool(batch.adv_fake[:, p].any()) for p in group])
    rollouts = [p for p, k in zip(group, keep) if k]
    bad: list[str] = []  # this rank's reasons to skip, agreed across ranks below
    with engine.routed(backbone):
        with engine.term(sync=not rollouts):  # forward and backward inside: DDP reads the flag at forward time
            with engine.autocast():
                loss_real = backbone.denoising_loss(x, cond, draw)  # L(x_b), (B,)
            w_real = real_weight(loss_cfg, batch.adv_real, len(x)).to(loss_real.device)
            if not torch.isfinite(loss_real).all():
                bad.append("non-finite real loss")
            engine.backward((w_real * loss_real.float()).mean())
        metrics = {"loss/real": loss_real.float().mean().item(), "loss/real_weight": w_real.mean().item(),
                   "lambda_aw": lam_aw}
        every = run.log_grad_norm_every  # (not under ZeRO-2: no per-parameter gradients to split)
        split_norms = every > 0 and step % every == 0 and engine.per_parameter_gradients and batch.group_size
        g_sft = grad_snapshot(params) if split_norms else None
        aw_terms = []
        for i, p in enumerate(rollouts):  # one rollout at a time
            adv = batch.adv_fake[:, p].to(dist.device)  # Ã_{p,b}, (B,)
            x_p = batch.x_fake[:, p].to(dist.device)
            d = draw if loss_cfg.match_noise else backbone.draw_noise(x_p, state.generator("noise", step, p))
            with engine.term(sync=i == len(rollouts) - 1):
                with engine.autocast():
                    loss_fake = backbone.denoising_loss(x_p, cond, d)  # L(x̃_{p,b}), (B,)
                if not torch.isfinite(loss_fake).all():
                    bad.append("non-finite rollout loss")
                    metrics["loss/fake"] = loss_fake.float().mean().item()
                term = (adv * loss_fake.float()).mean()
                engine.backward(lam_aw * term / batch.group_size)
            aw_terms.append(term.item())
    if batch.group_size:
        metrics["loss/aw"] = sum(aw_terms) / batch.group_size  # mean_p mean_b Ã·L, unscaled by λ_aw
        metrics["loss/total"] = metrics["loss/real"] * loss_cfg.lambda_sft + lam_aw * metrics["loss/aw"]

    if g_sft is not None:  # before clipping, on every rank (it reduces the SFT snapshot)
        metrics.update(grad_split_norms(params, g_sft, dist, engine))  # grad_norm/sft, /aw, /aw_over_sft
    grad_norm = full_tensor(engine.clip_grad_norm_(params, optim.max_grad_norm))
    if not torch.isfinite(grad_norm):
        bad.append("non-finite gradient")
    if dist.any(bool(bad)):  # any rank non-finite -> every rank skips this step and counts it
        reason = bad[0] if bad else "non-finite loss or gradient on another process"
        return skip_step(state, engine, reason, {**metrics, "grad_norm": grad_norm.item()}, run.max_nonfinite_steps)
    engine.step(optimizer)
    check_params_finite(state, dist, "after the optimizer step")  # the update itself can overflow (e.g. a huge lr)
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    state.update_weight_ema()
    metrics["grad_norm"] = grad_norm.item()
    metrics["lr"] = scheduler.get_last_lr()[0]
    return metrics


def refresh_critic(trainer: CriticTrainer, buffer: RolloutBuffer, n_steps: int, cfg: TrainConfig, state: TrainState,
                   dist: Distributed, backbone: Backbone | None = None) -> dict[str, float]:
    """Alg. 1, adversarial refresh: Eq. 7 on this buffer's fakes (negatives) vs its real clips, EMA update.

    Uses the motion features stored at scoring time; with ``critic.refresh_features=recompute`` the buffer keeps
    only the real clips' and each step decodes its fakes from the buffer's rollout latents and featurises them
    again on the device (``backbone`` needed; same queries, same stored dtype: the same update).
    The generator's parameters are not touched: the discriminators have their own optimizer (the trainer's),
    and fakes are detached data.
    """
    counters, critic_cfg, rollout, run = state.counters, cfg.critic, cfg.rollout, cfg.run
    features_real, features_fake = buffer.features_real, buffer.features_fake
    P, n = buffer.group_size, len(buffer)
    bsz = min(n, critic_cfg.batch_size or rollout.batch_size)
    metrics: dict[str, float] = {}
    for s in range(n_steps):
        gen = state.generator("disc", counters.chunks_done, s)
        idx = torch.randperm(n, generator=gen)[:bsz]
        p = (counters.d_steps + s) % P  # cycle through the rollouts, as the reference does
        fake_idx = idx * P + p
        if features_fake is None:  # recompute mode: before the reseed below, so the step's draws do not change
            fake = recompute_fake_features(backbone, state.critic, buffer, idx, p, state)
        else:
            fake = features_fake.index(fake_idx)
        torch.manual_seed(derive_seed(run.seed, "disc-global", dist.rank, counters.d_steps + s))
        real = features_real.index(idx)
        dist.raise_if_any(unusable_features(real, fake), DataError)  # agreed before the step's all-reduce
        m = trainer.step(real, fake, gen, sync_grads=dist.mean_gradients)
        for k, v in m.items():
            metrics[k] = metrics.get(k, 0.0) + v / n_steps
    counters.d_steps += n_steps
    return metrics


@torch.no_grad()
def recompute_fake_features(backbone: Backbone | None, critic: Critic | None, buffer: RolloutBuffer, idx: Tensor,
                            p: int, state: TrainState) -> Any:
    """The features of rollout ``p`` of conditionings ``idx`` as scoring made them: decoded from the buffer's
    latents on the device, with the query set of their conditioning (the same named stream as collect_buffer)."""
    if backbone is None or critic is None or buffer.x_fake is None:
        raise DataError("critic.refresh_features=recompute: the refresh needs the backbone, the critic and the "
                        "buffer's rollout latents to featurise the fakes again")
    counters = state.counters
    lat = buffer.x_fake[idx, p].to(backbone.device)
    videos = state.timed("refresh_decode", lambda: backbone.decode(lat))  # (b, F, 3, H, W)
    height, width = videos.shape[-2:]
    queries = np.stack([critic.sample_queries(height, width, state.generator("queries", counters.chunks_done, int(i)))
                        for i in idx])
    return state.timed("refresh_features", lambda: critic.features(videos, queries))


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
    r, a, a_real = buffer.rewards, buffer.adv_fake, buffer.adv_real
    out = {"reward/fake": r["r_fake"].mean().item(), "reward/real": r["r_real"].mean().item(),
           "reward/ic_fake": r["r_ic_fake"].mean().item(), "reward/lc_fake": r["r_lc_fake"].mean().item(),
           "reward/ic_real": r["r_ic_real"].mean().item(), "reward/lc_real": r["r_lc_real"].mean().item(),
           "reward/group_std": r["r_fake"].std(dim=1, unbiased=False).mean().item(),
           "adv/abs_mean": a.abs().mean().item(), "adv/real_mean": a_real.mean().item(),
           "disc/acc_fake_ema": (r["r_fake"] < 0).float().mean().item(),
           "disc/acc_real_ema": (r["r_real"] > 0).float().mean().item()}
    return out


def train(cfg: TrainConfig, backbone: Backbone, clips: ClipSource, state: TrainState, engine: GradientEngine,
          dist: Distributed, hooks: RunHooks) -> TrainResult:
    """Run (or resume) training until ``run.max_steps`` generator steps or ``run.time_limit_s`` seconds.

    ``state`` is where the run stands (fresh, or loaded from a checkpoint); its critic scores the rollouts and
    is refreshed on them. The buffer in ``state`` is the one a checkpoint holds.
    """
    rollout, run, critic_cfg, counters = cfg.rollout, cfg.run, cfg.critic, state.counters
    critic, critic_trainer = state.critic, state.critic_trainer
    stop: str | None = None  # the agreed stop at a safe point: "time_limit" or "preempted" (hooks.stop_reason)
    metrics: dict[str, float] = {}
    buffer = state.buffer  # a resumed run continues inside its buffer
    # FSDP2 samples through its wrapper, whose every forward all-gathers: a rank that dropped its buffer alone would
    # leave the others waiting there, so under FSDP2 the ranks agree before each rollout batch (each rank runs the
    # same number of batches: chunk_indices pads every rank's share)
    stop_requested = (lambda: dist.any(preemption.requested())) if engine.kind == "fsdp2" else preemption.requested
    hooks.begin()
    while counters.step < run.max_steps:
        if buffer is None:  # Alg. 1: new chunk -> rollouts, rewards, advantages
            indices = chunk_indices(len(clips), cfg, counters.epoch, counters.chunk, dist.rank, dist.world)
            t0 = time.perf_counter()
            # again: resumed without the buffer in the checkpoint, so rolled out once more from its origin
            with state.rollout_origin(keep=not run.checkpoint_buffer, with_weights=cfg.uses_rollouts) as again:
                buffer = dist.together(lambda: collect_buffer(backbone, critic, clips, indices, cfg, state, dist.device,
                                                              stop_requested),
                                       "collecting the rollout buffer")  # an error on one rank stops all
            counters.add_time("buffer", time.perf_counter() - t0)
            if hooks.stop_reason(buffer_abandoned=buffer is None) == "preempted":  # agreed: every rank drops it
                state.forget_collection()  # the checkpoint holds the state before it: resume rolls it out again
                stop = "preempted"
                break
            state.buffer = buffer
            if not again:
                hooks.after_buffer(buffer, buffer_metrics(buffer))
        order = buffer.pass_order(rollout.batch_size, state.generator("pass", counters.chunks_done, counters.pass_index))
        while counters.batch_index < len(order):
            t0 = time.perf_counter()
            torch.manual_seed(derive_seed(run.seed, "global", dist.rank, counters.step))
            metrics = shift_step(backbone, buffer.batch(order[counters.batch_index]), cfg, state, engine, dist) or metrics
            counters.add_time("generator", time.perf_counter() - t0)
            counters.batch_index += 1
            counters.step += 1
            hooks.after_step(metrics)  # logs, samples, evaluation hook, checkpoint
            stop = hooks.stop_reason()  # agreed: the time limit, or a preemption signal on any rank
            if stop or counters.step >= run.max_steps:
                break
        if stop or counters.batch_index < len(order):
            break  # stopped mid-pass: the checkpoint keeps the position inside the buffer
        counters.pass_index += 1
        counters.batch_index = 0
        if counters.pass_index >= rollout.passes_per_buffer:  # buffer used up: refresh D, next chunk
            steps_in_buffer = rollout.passes_per_buffer * len(order)
            if critic_trainer is not None and buffer.group_size:  # a trainer exists when critic.refresh is on
                t0 = time.perf_counter()
                n_steps = round(critic_cfg.d_to_g * steps_in_buffer)
                hooks.log(refresh_critic(critic_trainer, buffer, n_steps, cfg, state, dist, backbone),
                          step=counters.step)
                counters.add_time("discriminator", time.perf_counter() - t0)
            buffer = state.buffer = None
            counters.pass_index = 0
            counters.chunks_done += 1
            counters.chunk += 1
            if counters.chunk >= num_chunks(len(clips), rollout):
                counters.chunk, counters.epoch = 0, counters.epoch + 1
    stopped_by = stop or "max_steps"
    check_some_step_trained(state, stopped_by)
    checkpoint = hooks.finish(metrics, stopped_by)  # preempted: the checkpoint only, no final weights
    return TrainResult(counters.step, dict(counters.timers), metrics, stopped_by, checkpoint)


__all__ = ["ClipSource", "TrainResult", "chunk_indices", "collect_buffer", "recompute_fake_features", "refresh_critic",
           "shift_step", "train"]
