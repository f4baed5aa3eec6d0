"""The critic as train/ sees it: clips -> motion features -> rewards, and what its trainer needs.

The critic is the thing that turns clips into rewards: frozen motion features, the IC and LC
discriminators (the two networks inside it, as in the paper), clipping and the EMA copies that score.
``train/`` types against :class:`Critic` only; ``MotionCritic`` (rewards/critic.py) is the
implementation and ``CriticTrainer`` (rewards/critic_training.py) trains any :class:`Critic`. The
critic's own state is its weights (``state_dict`` / ``load_state_dict``: discriminators and EMA copies);
the trainer's state (optimizer, :class:`ReplayStore` of older fakes, step count) is the trainer's.
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

    def finite(self) -> Tensor:
        """(N,) True for clips whose features are all finite."""
        ...

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Features": ...


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

    State of the critic's trainer (``CriticTrainer.replay``): saved and restored with its checkpoint, so
    a resumed run draws the same replay samples.
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
class Critic(Protocol):
    """What SHIFT needs from its critic (score groups, queries, state) and what ``CriticTrainer`` trains."""

    @property
    def device(self) -> torch.device: ...

    def sample_queries(self, height: int, width: int, generator: torch.Generator) -> np.ndarray:
        """Query points shared by a conditioning's real clip and its P rollouts."""
        ...

    def score_groups(self, real: Tensor, fakes: Tensor, queries: np.ndarray | None,
                     keep_features: bool = True) -> GroupScores:
        """real (N, F, 3, H, W) and fakes (N, P, F, 3, H, W) in [-1, 1], queries (N, Q, 2) -> GroupScores."""
        ...

    def features(self, videos: Tensor, queries: np.ndarray | None = None) -> Features:
        """Features of N clips (N, F, 3, H, W) in the form ``score_groups`` keeps them (CPU, the storage dtype);
        the refresh recomputes the fakes' features with it (``critic.refresh_features=recompute``)."""
        ...

    def features_from_state(self, state: dict[str, Any]) -> Features:
        """Features saved with ``Features.state_dict`` (buffer and replay checkpoints)."""
        ...

    def discriminators(self) -> dict[str, nn.Module]:
        """The trainable networks by the feature branch they read, in training order ({"ic": …, "lc": …})."""
        ...

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """The parameters the trainer's optimizer holds (the discriminators', not the EMA copies)."""
        ...

    def update_ema(self, decay: float | None = None) -> None:
        """Move the scoring (EMA) weights towards the trained ones; None = the critic's own decay."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> Any: ...

    def save(self, path: Any) -> Any:
        """Write the critic folder (weights + config) that ``critic.path`` names."""
        ...




__all__ = ["Critic", "Features", "GroupScores", "ReplayStore"]
