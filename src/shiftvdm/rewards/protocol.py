"""The reward model as train/ sees it: features -> rewards, a refresh step, state (issue 13 item 2).

``train/shift.py`` and ``train/runtime.py`` type against :class:`RewardModel` only; ``MotionCritic``
(rewards/critic.py) is the implementation. Everything a trainer needs to checkpoint is in
``state_dict`` / ``load_state_dict`` (the discriminators, their EMA copies) and in the
:class:`ReplayStore` the model owns (``replay_state`` / ``load_replay_state``), so nothing outside
rewards/ reaches into private attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn


class Features(Protocol):
    """Cached discriminator inputs of N clips (e.g. ``MotionFeatures``)."""

    def __len__(self) -> int: ...

    def index(self, idx: Tensor | list[int] | slice) -> "Features": ...

    def state_dict(self) -> dict[str, Any]: ...


@dataclass
class GroupScores:
    """Rewards of N conditionings' real clips and their P rollouts, and (optionally) their features.

    ``rewards`` holds r_real, r_ic_real, r_lc_real (N,) and r_fake, r_ic_fake, r_lc_fake (N, P), CPU
    float32. ``features_real`` has N items, ``features_fake`` N·P items, conditioning-major; both are
    None when the caller did not ask to keep them (no refresh reads them).
    """

    rewards: dict[str, Tensor]
    features_real: Any = None
    features_fake: Any = None

    @staticmethod
    def cat(items: list["GroupScores"]) -> "GroupScores":
        """Join scores of consecutive conditioning chunks."""
        rewards = {k: torch.cat([s.rewards[k] for s in items]) for k in items[0].rewards}

        def join(name: str) -> Any:
            parts = [getattr(s, name) for s in items]
            if any(p is None for p in parts):
                return None
            return type(parts[0]).cat(parts)

        return GroupScores(rewards, join("features_real"), join("features_fake"))


@dataclass
class ReplayStore:
    """FIFO store of older fake features, sampled by the refresh (regulariser ``replay_size``).

    Registered state of the reward model: saved and restored with the training checkpoint, so a
    resumed run draws the same replay samples.
    """

    capacity: int = 0
    items: Any = None
    from_state: Callable[[dict[str, Any]], Any] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return 0 if self.items is None else len(self.items)

    def add(self, fake: Any) -> None:
        fake = fake.to("cpu")
        joined = fake if self.items is None else type(fake).cat([self.items, fake])
        start = max(0, len(joined) - self.capacity)
        self.items = joined.index(slice(start, None))

    def sample(self, num: int, generator: torch.Generator) -> Any:
        assert self.items is not None
        idx = torch.randint(len(self.items), (num,), generator=generator)
        return self.items.index(idx)

    def state_dict(self) -> dict[str, Any] | None:
        if self.items is None:
            return None
        return {"capacity": self.capacity, "items": self.items.state_dict()}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state is None:
            self.items = None
            return
        if self.from_state is None:
            raise TypeError("ReplayStore.load_state_dict: this store has no feature reader (from_state)")
        self.capacity = int(state["capacity"])
        self.items = self.from_state(state["items"])


@runtime_checkable
class RewardModel(Protocol):
    """What the SHIFT trainer needs from its reward: score groups, refresh, state."""

    replay: ReplayStore

    @property
    def device(self) -> torch.device: ...

    def sample_queries(self, height: int, width: int, generator: torch.Generator) -> np.ndarray:
        """Query points shared by a conditioning's real clip and its P rollouts."""
        ...

    def score_groups(self, real: Tensor, fakes: Tensor, queries: np.ndarray | None,
                     keep_features: bool = True) -> GroupScores:
        """real (N, F, 3, H, W) and fakes (N, P, F, 3, H, W) in [-1, 1], queries (N, Q, 2) -> GroupScores."""
        ...

    def refresh_step(self, real: Any, fake: Any, optimizer: torch.optim.Optimizer, generator: torch.Generator,
                     config: Any = None, sync_grads: Callable[[list[nn.Parameter]], None] | None = None
                     ) -> dict[str, float]:
        """One Eq. 7 step on cached features, then the EMA update; returns metrics."""
        ...

    def discriminator_parameters(self) -> list[nn.Parameter]: ...

    def features_from_state(self, state: dict[str, Any]) -> Features: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> Any: ...

    def replay_state(self) -> dict[str, Any] | None: ...

    def load_replay_state(self, state: dict[str, Any] | None) -> None: ...


__all__ = ["Features", "GroupScores", "ReplayStore", "RewardModel"]
