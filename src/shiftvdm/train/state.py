"""Training state: counters, named random streams, and everything a checkpoint holds (the folder layout and
the atomic writer are train/checkpointing.py's and utils/step_checkpoints.py's).

Every random draw of training is derived from (seed, stream, counters) (utils/seeding.py), so the
counters stored here together with the buffer, the weights and the optimizer states regenerate the
rest of the run exactly. The global torch RNG state is saved as well, for modules with internal
randomness (dropout) that the trainer reseeds per step anyway.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from shiftvdm.errors import CheckpointError
from shiftvdm.rewards.critic_training import CriticTrainer, trainer_state_from_e17d547
from shiftvdm.rewards.protocol import Critic
from shiftvdm.train.buffer import RolloutBuffer
from shiftvdm.train.distributed import is_sharded, like, local_tree, sharded_optimizer_state
from shiftvdm.train.optim import WeightEMA
from shiftvdm.utils.seeding import generator_for
from shiftvdm.utils.step_checkpoints import STATE_FILE, read_step_state

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Counters:
    step: int = 0  # generator optimizer steps taken
    epoch: int = 0  # passes over the real data (chunk order is reshuffled per epoch)
    chunk: int = 0  # chunk index within the epoch
    chunks_done: int = 0  # buffers finished over the whole run (seeds rollouts: never repeats)
    pass_index: int = 0  # pass over the current buffer
    batch_index: int = 0  # minibatch within the current pass
    d_steps: int = 0  # discriminator optimizer steps taken
    nonfinite_steps: int = 0  # generator steps skipped because of a NaN/inf loss or gradient
    timers: dict[str, float] = field(default_factory=dict)  # seconds per phase, summed over the run

    def add_time(self, phase: str, seconds: float) -> None:
        self.timers[phase] = self.timers.get(phase, 0.0) + seconds


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load ``trainer_state.pt`` from a checkpoint folder (weights_only: never unpickles code)."""
    file = path / STATE_FILE if path.is_dir() else path
    if not file.is_file():
        raise CheckpointError(f"{path}: no {STATE_FILE} in this folder; pass a run folder or a step-N checkpoint")
    return read_step_state(file.parent)  # the folder's digests checked first


class TrainState:
    """What a run is at one moment: counters, trainable weights, optimizer and schedule states, the weight
    EMA, the critic (scorer and, when refreshed, its optimizer and replay store of older fakes), the current
    rollout buffer and the global torch RNG. ``state_dict`` / ``load_state_dict`` are what a checkpoint writes
    and restores; with the named random streams (``generator``) they regenerate the rest of the run bit for bit.

    The training loop reads and advances ``counters``; it hands each new rollout buffer to ``buffer`` so that a
    checkpoint holds it."""

    def __init__(self, seed: int, rank: int, params: list[nn.Parameter], optimizer: torch.optim.Optimizer,
                 lr_scheduler: torch.optim.lr_scheduler.LRScheduler, ema: WeightEMA | None, critic: Critic | None,
                 critic_trainer: CriticTrainer | None = None, engine: Any = None) -> None:
        self.seed, self.rank = seed, rank
        self.counters = Counters()
        self.params, self.optimizer, self.lr_scheduler, self.ema = params, optimizer, lr_scheduler, ema
        # the critic scores the rollouts; its trainer (refresh on) holds the same critic with its optimizer and
        # replay store: its state is the critic's part of a checkpoint (without refresh the critic never changes)
        self.critic, self.critic_trainer = critic, critic_trainer
        self.buffer: RolloutBuffer | None = None
        # run.checkpoint_buffer=false: what the current buffer was rolled out from (the trainable weights and
        # the torch RNG at that moment), so a resume can roll the same buffer out again, bit for bit
        self.buffer_origin: dict[str, Any] | None = None
        self.reroll = False  # resumed without the buffer: the next collection is a re-roll from buffer_origin
        self._before_collection: tuple[torch.Tensor, bool, dict[str, Any] | None] | None = None  # forget_collection
        # rebuilds the buffer's reward features on load
        self.features_from_state = critic.features_from_state if critic is not None else None
        self.engine = engine  # GradientEngine: DeepSpeed keeps part of the optimizer state itself
        self.last_skip_reason: str | None = None  # why the last skipped step was skipped (not checkpointed)

    def generator(self, stream: str, *counters: int) -> torch.Generator:
        """The generator for one named stream at given counters, distinct per process."""
        return generator_for(self.seed, stream, self.rank, *counters)

    def timed(self, phase: str, fn: Callable[[], T]) -> T:
        """``fn()``, its wall seconds added to the run's timer ``phase`` (kept in checkpoints)."""
        t0 = time.perf_counter()
        out = fn()
        self.counters.add_time(phase, time.perf_counter() - t0)
        return out

    def params_finite(self) -> bool:
        """One fused reduction over the trainable set: the norm of a tensor holding NaN/inf is NaN/inf."""
        norms = torch._foreach_norm([p.detach() for p in self.params])
        return bool(torch.isfinite(torch.stack(norms).sum()))

    def update_weight_ema(self) -> None:
        """Fold the weights after this step into the EMA (``optim.ema_decay`` > 0)."""
        if self.ema is not None:
            self.ema.update(self.params, self.counters.step + 1)

    @contextlib.contextmanager
    def ema_applied(self) -> Iterator[None]:
        """The EMA weights swapped in for the duration (sampling, evaluation, saved weights); as is without EMA."""
        if self.ema is None:
            yield
            return
        with self.ema.swapped_in(self.params):
            yield

    @contextlib.contextmanager
    def rollout_origin(self, *, keep: bool, with_weights: bool) -> Iterator[bool]:
        """Around the collection of a buffer; yields True when it is a re-roll.

        ``keep`` (``run.checkpoint_buffer=false``): a checkpoint holds, instead of the buffer, the trainable
        weights (``with_weights``: only rollouts depend on them) and the torch RNG state the buffer was rolled
        out with, kept from the collection on. The critic only changes after the buffer is used up, so its
        checkpointed state is the one that scored it. A resume from such a checkpoint rolls the buffer out
        again from them, then puts the resumed weights and RNG back: the run continues bit for bit.
        """
        self._before_collection = (torch.get_rng_state(), self.reroll, self.buffer_origin)
        if self.reroll and self.buffer_origin is not None:
            origin, rng, now = self.buffer_origin, torch.get_rng_state(), None
            with torch.no_grad():
                if origin["params"] is not None:
                    now = [p.detach().clone() for p in self.params]
                    for p, o in zip(self.params, origin["params"]):
                        p.copy_(o)
            torch.set_rng_state(origin["torch_rng"])
            try:
                yield True
            finally:
                with torch.no_grad():
                    for p, n in zip(self.params, now or []):
                        p.copy_(n)
                torch.set_rng_state(rng)
                self.reroll = False
            return
        self.buffer_origin = None
        if keep:
            weights = [p.detach().clone() for p in self.params] if with_weights else None
            self.buffer_origin = {"params": weights, "torch_rng": torch.get_rng_state()}
        yield False

    def forget_collection(self) -> None:
        """Back to the moment before the last ``rollout_origin`` (a buffer collection stopped by preemption): no
        buffer, the torch RNG, the pending re-roll and its origin as they were, so a checkpoint written now is
        the one a resume rolls the same buffer out from, bit for bit. Weights and the critic do not change while
        a buffer is collected."""
        self.buffer = None
        if self._before_collection is not None:
            rng, self.reroll, self.buffer_origin = self._before_collection
            torch.set_rng_state(rng)
            self._before_collection = None

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {str(i): p.detach().cpu().clone() for i, p in enumerate(self.params)}

    @property
    def sharded(self) -> bool:
        """FSDP2: the trainable weights are DTensors; checkpoints then hold this rank's shards."""
        return any(is_sharded(p) for p in self.params)

    def state_dict(self, *, with_buffer: bool) -> dict[str, Any]:
        """Everything but the run's config and log sizes (the checkpointer adds those). Under FSDP2 the
        weights, optimizer states and EMA are this rank's shards (see train/distributed.py)."""
        state = {
            "counters": asdict(self.counters),
            "params": self.trainable_state(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "ema": self.ema.shadow if self.ema is not None else None,
            # the refreshed critic: weights (live, EMA), optimizer, replay store of older fakes, steps
            "critic": self.critic_trainer.state_dict() if self.critic_trainer is not None else None,
            "buffer": self.buffer.state_dict() if self.buffer is not None and with_buffer else None,
            # also while a re-roll is pending (a resume preempted before it finished rolling the buffer out again)
            "buffer_origin": (self.buffer_origin if (self.buffer is not None or self.reroll) and not with_buffer
                              else None),
            "torch_rng": torch.get_rng_state(),
        }
        engine_state = self.engine.state_dict() if self.engine is not None else None
        if engine_state is not None:  # only DeepSpeed adds a key: other checkpoints stay as they were
            state["engine"] = engine_state
        if self.sharded:
            for key in ("params", "optimizer", "ema", "buffer_origin"):
                state[key] = local_tree(state[key])
        return state

    def load_state_dict(self, state: dict[str, Any], source: Path | str) -> None:
        if len(state["params"]) != len(self.params):
            raise CheckpointError(f"{source}: checkpoint has {len(state['params'])} trainable tensors, this run "
                                  f"{len(self.params)} (different LoRA settings or backbone?)")
        with torch.no_grad():
            for i, p in enumerate(self.params):
                p.copy_(like(state["params"][str(i)], p))  # a saved shard goes back into its own shard
        sharded = self.sharded
        self.optimizer.load_state_dict(sharded_optimizer_state(state["optimizer"], self.params) if sharded
                                       else state["optimizer"])
        if self.engine is not None:
            self.engine.load_state_dict(state.get("engine"))
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if state["ema"] is not None and self.ema is not None:
            self.ema.shadow = [like(t, p).clone() for t, p in zip(state["ema"], self.params)]
        # a checkpoint written before the critic trainer existed (e17d547) keeps its parts under three keys
        critic_state = trainer_state_from_e17d547(state) if "d_optimizer" in state else state["critic"]
        if self.critic_trainer is not None and critic_state is not None:
            self.critic_trainer.load_state_dict(critic_state, str(source))
        self.counters = Counters(**state["counters"])
        self.buffer = (RolloutBuffer.from_state_dict(state["buffer"], self.features_from_state)
                       if state["buffer"] is not None else None)
        origin = state.get("buffer_origin")
        if origin is not None and origin.get("params") is not None:
            origin = {**origin, "params": [like(t, p) for t, p in zip(origin["params"], self.params)]}
        self.buffer_origin, self.reroll = origin, self.buffer is None and origin is not None
        torch.set_rng_state(state["torch_rng"])
