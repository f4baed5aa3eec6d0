"""The critic's trainer: one Eq. 7 step for the IC and LC discriminators, its optimizer, its replay store.

Shared by discriminator pre-training (`shiftvdm train-critic`, rewards/pretraining.py) and SHIFT's online
refresh (train/shift.py): both call :meth:`CriticTrainer.step` and checkpoint :meth:`CriticTrainer.state_dict`.

Eq. 7: L = −E_data log D(x) − E_θ log(1 − D(x̃)), i.e. binary cross-entropy on logits with real
clips labelled 1 and generated clips 0, for IC and LC separately (their losses are summed for one
backward pass; the branches share no parameters). After the optimizer step the critic's EMA copies
(the weights that score rewards) follow.

Regularisers are off by default, as in the paper and the reference code. They are there because
tiny CPU toys saturate a discriminator at once (toy-feasibility.md): R1 gradient penalty on real
inputs (``r1_gamma``), Gaussian instance noise on the features (``instance_noise``), one-sided label
smoothing (``label_smoothing``: real target 1 − ε) and a FIFO replay of older fakes
(``replay_size`` clips; half of each fake batch is drawn from it once it holds clips). The replay
store is the trainer's state (``CriticTrainer.replay``), checkpointed with its optimizer.

Only the discriminator parameters move: the features are detached data from frozen extractors. This
module types against the :class:`~shiftvdm.rewards.protocol.Critic` protocol and does not import the
scorer (rewards/critic.py), so the scorer never depends on its trainer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shiftvdm.errors import CheckpointError, DataError
from shiftvdm.rewards.protocol import Critic, Features, ReplayStore

logger = logging.getLogger(__name__)


@dataclass
class CriticTrainConfig:
    """Settings of the critic's training step (``critic.train.*`` of SHIFT; ``optim.*`` of `train-critic`)."""

    lr: float = 1e-5  # AdamW lr: 1e-5 for the SHIFT refresh (reference); `train-critic` uses 2e-4
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW betas: refresh (0.9, 0.95); pre-training (0.9, 0.999)
    weight_decay: float = 0.01  # AdamW weight decay (reference 1e-2)
    eps: float = 1e-8  # AdamW epsilon (reference 1e-8)
    max_grad_norm: float = 1.0  # gradient clipping over both discriminators (reference 1.0)
    ema_decay: float | None = None  # EMA decay per step; None = the critic's own (CriticConfig.ema_decay, 0.99)
    r1_gamma: float = 0.0  # R1 penalty weight γ (γ/2·E‖∇_x D(x_real)‖²); 0 = off (paper)
    instance_noise: float = 0.0  # std of Gaussian noise added to real and fake features; 0 = off (paper)
    label_smoothing: float = 0.0  # one-sided: real target 1 − ε; 0 = off (paper)
    replay_size: int = 0  # older fake clips kept for replay; 0 = off (paper)

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.max_grad_norm <= 0:
            raise ValueError(f"lr and max_grad_norm must be positive, got {self.lr}, {self.max_grad_norm}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.r1_gamma < 0 or self.instance_noise < 0 or self.replay_size < 0:
            raise ValueError("r1_gamma, instance_noise and replay_size must be >= 0")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")


@dataclass
class PretrainConfig(CriticTrainConfig):
    """The reference's pre-training optimizer (`shiftvdm train-critic`): the refresh settings but for these."""

    lr: float = 2e-4  # AdamW lr of discriminator pre-training (reference learning_rate 2e-4)
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas of pre-training (reference script default)


def pretrain_config(**overrides: float) -> PretrainConfig:
    """``PretrainConfig`` (lr 2e-4, betas (0.9, 0.999), wd 0.01, clip 1.0) with ``overrides``."""
    return PretrainConfig(**overrides)  # type: ignore[arg-type]


def _replay_for(replay: ReplayStore, capacity: int) -> ReplayStore:
    if replay.capacity != capacity:  # a changed replay_size starts an empty store
        replay.capacity, replay.items = capacity, None
    return replay


def _noisy(t: Tensor | None, std: float, generator: torch.Generator) -> Tensor | None:
    if t is None or std <= 0:
        return t
    return t + std * torch.randn(t.shape, generator=generator, dtype=t.dtype).to(t.device)


def _r1_penalty(module: nn.Module, inputs: Tensor) -> Tensor:
    """E‖∇_x D(x)‖² over the batch (real inputs), differentiable w.r.t. the discriminator weights."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    inputs = inputs.detach().requires_grad_(True)
    # The fused CPU attention kernels have no double backward; the math kernel does.
    with sdpa_kernel(SDPBackend.MATH):
        (grad,) = torch.autograd.grad(module(inputs).sum(), inputs, create_graph=True)
    return grad.pow(2).flatten(1).sum(dim=1).mean()


def critic_step(critic: Critic, real: Features, fake: Features, optimizer: torch.optim.Optimizer,
                generator: torch.Generator, config: CriticTrainConfig | None = None, replay: ReplayStore | None = None,
                sync_grads: Callable[[list[nn.Parameter]], None] | None = None) -> dict[str, float]:
    """One BCE step (real = 1, fake = 0) on IC and LC, then the critic's EMA update.

    The one Eq. 7 step: :meth:`CriticTrainer.step` calls it with the trainer's optimizer and replay store.

    Args:
        critic: the critic whose ``discriminator_parameters()`` the optimizer holds.
        real, fake: cached features of real and generated clips (any numbers of clips).
        optimizer: optimizer over ``critic.discriminator_parameters()``.
        generator: drives instance noise and replay sampling.
        config: regularisers, clipping and EMA decay (defaults: the refresh settings).
        replay: the store of older fakes (used when ``config.replay_size`` > 0; required then).
        sync_grads: called with the parameters after backward (all-reduce across processes).

    Returns:
        metrics: "disc/loss", "disc/loss_{ic,lc}", "disc/acc_{real,fake}_{ic,lc}",
        "disc/logit_{real,fake}_{ic,lc}", "disc/grad_norm", "disc/skipped" (and "disc/r1_*").
    """
    cfg = config or CriticTrainConfig()
    for name, feats in (("real", real), ("fake", fake)):
        if not bool(feats.finite().all()):
            raise DataError(f"{name} features contain NaN or infinite values; cannot train on them")
    if cfg.replay_size > 0:
        if replay is None:
            raise ValueError("critic_step: replay_size > 0 needs a replay store (CriticTrainer keeps one)")
        replay = _replay_for(replay, cfg.replay_size)
        fresh = fake
        if len(replay) > 0 and len(fake) > 1:
            keep = len(fake) - len(fake) // 2
            fake = type(fake).cat([fake.index(slice(0, keep)), replay.sample(len(fake) // 2, generator)])
        replay.add(fresh)

    device = critic.device
    real = real.to(device, torch.float32)
    fake = fake.to(device, torch.float32)
    nets = critic.discriminators()
    for module in nets.values():
        module.train()
    params = critic.discriminator_parameters()
    optimizer.zero_grad(set_to_none=True)

    metrics: dict[str, float] = {}
    total = torch.zeros((), device=device)
    real_target = 1.0 - cfg.label_smoothing
    for branch, module in nets.items():
        x_real, x_fake = getattr(real, branch), getattr(fake, branch)
        if x_real is None or x_fake is None:
            continue
        x_real = _noisy(x_real, cfg.instance_noise, generator)
        x_fake = _noisy(x_fake, cfg.instance_noise, generator)
        logit_real, logit_fake = module(x_real), module(x_fake)
        loss = (F.binary_cross_entropy_with_logits(logit_real, torch.full_like(logit_real, real_target))
                + F.binary_cross_entropy_with_logits(logit_fake, torch.zeros_like(logit_fake)))
        if cfg.r1_gamma > 0:
            r1 = _r1_penalty(module, x_real)
            loss = loss + 0.5 * cfg.r1_gamma * r1
            metrics[f"disc/r1_{branch}"] = r1.item()
        total = total + loss
        metrics[f"disc/loss_{branch}"] = loss.item()
        metrics[f"disc/acc_real_{branch}"] = (logit_real > 0).float().mean().item()
        metrics[f"disc/acc_fake_{branch}"] = (logit_fake < 0).float().mean().item()
        metrics[f"disc/logit_real_{branch}"] = logit_real.mean().item()
        metrics[f"disc/logit_fake_{branch}"] = logit_fake.mean().item()
    if not metrics:
        raise DataError("real and fake features share no branch (ic/lc) to train")
    metrics["disc/loss"] = total.item()

    total.backward()
    if sync_grads is not None:
        sync_grads(params)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    metrics["disc/grad_norm"] = float(grad_norm)
    if not torch.isfinite(total) or not torch.isfinite(grad_norm):
        logger.warning("discriminator step skipped: non-finite loss or gradient")
        optimizer.zero_grad(set_to_none=True)
        metrics["disc/skipped"] = 1.0
        return metrics
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    critic.update_ema(cfg.ema_decay)
    metrics["disc/skipped"] = 0.0
    return metrics


def build_optimizer(critic: Critic, config: CriticTrainConfig) -> torch.optim.Optimizer:
    """AdamW over the two discriminators (not the EMA copies, not the extractors), from ``config``."""
    return torch.optim.AdamW(critic.discriminator_parameters(), lr=config.lr, betas=config.betas,
                             weight_decay=config.weight_decay, eps=config.eps)


class CriticTrainer:
    """Trains a critic's IC and LC discriminators: optimizer, replay store of older fakes, step count.

    ``step`` is Eq. 7 then the EMA update (:func:`critic_step`); the caller seeds it (the ``generator``
    for noise and replay draws, and the global torch seed for dropout) and picks the batches.
    ``state_dict`` holds everything a resume needs: the critic's weights (live and EMA), the optimizer,
    the replay store and the number of steps taken. Pre-training checkpoints it as is; so does a SHIFT run
    that refreshes its critic.

    Args:
        critic: the scorer being trained (held, not copied: the same object scores rewards).
        config: optimizer, clipping, EMA decay and regularisers (``critic.train`` / ``optim``).
        optimizer: an optimizer over ``critic.discriminator_parameters()``; None = AdamW from ``config``.
    """

    def __init__(self, critic: Critic, config: CriticTrainConfig | None = None,
                 optimizer: torch.optim.Optimizer | None = None) -> None:
        self.critic = critic
        self.config = config or CriticTrainConfig()
        self.optimizer = optimizer if optimizer is not None else build_optimizer(critic, self.config)
        self.replay = ReplayStore(from_state=critic.features_from_state)
        self.steps = 0  # calls of ``step`` (skipped non-finite steps included)

    def step(self, real: Features, fake: Features, generator: torch.Generator,
             sync_grads: Callable[[list[nn.Parameter]], None] | None = None) -> dict[str, float]:
        """One Eq. 7 step on cached features of real and fake clips, then the EMA update; returns metrics."""
        metrics = critic_step(self.critic, real, fake, self.optimizer, generator, self.config, self.replay,
                              sync_grads)
        self.steps += 1
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """{"critic": weights (live + EMA), "optimizer", "replay" (None when empty), "steps"}: plain tensors
        and containers (``torch.load(weights_only=True)`` reads them)."""
        return {"critic": self.critic.state_dict(), "optimizer": self.optimizer.state_dict(),
                "replay": self.replay.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> None:
        """Restore what ``state_dict`` gave; CheckpointError naming ``source`` when it does not fit this critic."""
        missing = {"critic", "optimizer", "replay", "steps"} - set(state)
        if missing:
            raise CheckpointError(f"{source}: not a critic trainer state (missing {', '.join(sorted(missing))})")
        self.critic.load_state_dict(state["critic"])
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{source}: optimizer state does not match this critic ({exc})") from exc
        self.replay.load_state_dict(state["replay"])
        self.steps = int(state["steps"])


def trainer_state_from_e17d547(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """A ``CriticTrainer.state_dict`` from a SHIFT training checkpoint written before the trainer existed
    (e17d547: keys "critic", "d_optimizer", "critic_replay" and counters["d_steps"]); None when that run
    did not refresh its critic (no discriminator optimizer state)."""
    if checkpoint.get("d_optimizer") is None:
        return None
    return {"critic": checkpoint["critic"], "optimizer": checkpoint["d_optimizer"],
            "replay": checkpoint.get("critic_replay"), "steps": int(checkpoint.get("counters", {}).get("d_steps", 0))}


def roc_auc(positive: Tensor, negative: Tensor) -> float:
    """Area under the ROC curve for scores of positives vs negatives (Mann–Whitney U, ties count 1/2).

    NaN scores are treated as the lowest possible score. Returns NaN when either set is empty.
    """
    pos = torch.nan_to_num(positive.double().flatten(), nan=-float("inf"))
    neg = torch.nan_to_num(negative.double().flatten(), nan=-float("inf"))
    if pos.numel() == 0 or neg.numel() == 0:
        return float("nan")
    scores = torch.cat([pos, neg])
    order = torch.argsort(scores, stable=True)
    ranks = torch.empty_like(scores)
    sorted_scores = scores[order]
    # average ranks over ties
    unique, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    mean_rank = ends - (counts.double() - 1) / 2
    ranks[order] = mean_rank[inverse]
    u = ranks[: pos.numel()].sum() - pos.numel() * (pos.numel() + 1) / 2
    return float(u / (pos.numel() * neg.numel()))


@torch.no_grad()
def evaluate_discriminators(critic: Any, real: Any, fake: Any,
                            batch_size: int = 64) -> dict[str, float]:
    """Held-out accuracy (logit > 0 = real) and ROC-AUC of IC, LC and the combined reward.

    Uses the scoring weights (EMA when used). Keys: "val/{acc,acc_real,acc_fake,auc,loss}_{ic,lc}",
    "val/auc_reward" (AUC of r = (w_ic·r_ic + w_lc·r_lc)/2).
    """
    def scores(feats: Any) -> tuple[Tensor, Tensor, Tensor]:
        parts = [critic.scoring_logits(feats.index(slice(i, i + batch_size))) for i in range(0, len(feats), batch_size)]
        ic = torch.cat([p[0] for p in parts])
        lc = torch.cat([p[1] for p in parts])
        reward = critic.reward(feats).r if len(feats) <= batch_size else torch.cat(
            [critic.reward(feats.index(slice(i, i + batch_size))).r for i in range(0, len(feats), batch_size)])
        return ic, lc, reward

    real_ic, real_lc, real_r = scores(real)
    fake_ic, fake_lc, fake_r = scores(fake)
    metrics: dict[str, float] = {"val/auc_reward": roc_auc(real_r, fake_r)}
    for branch, lr_, lf in (("ic", real_ic, fake_ic), ("lc", real_lc, fake_lc)):
        if getattr(real, branch) is None:
            continue
        acc_real = (lr_ > 0).double().mean().item()
        acc_fake = (lf < 0).double().mean().item()
        loss = (F.binary_cross_entropy_with_logits(lr_.nan_to_num(-30.0), torch.ones_like(lr_))
                + F.binary_cross_entropy_with_logits(lf.nan_to_num(30.0), torch.zeros_like(lf))).item()
        metrics.update({f"val/acc_{branch}": (acc_real + acc_fake) / 2, f"val/acc_real_{branch}": acc_real,
                        f"val/acc_fake_{branch}": acc_fake, f"val/auc_{branch}": roc_auc(lr_, lf),
                        f"val/loss_{branch}": loss})
    return metrics


__all__ = ["CriticTrainConfig", "CriticTrainer", "PretrainConfig", "build_optimizer", "critic_step",
           "evaluate_discriminators", "pretrain_config", "roc_auc", "trainer_state_from_e17d547"]
