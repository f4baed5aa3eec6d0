"""The rollout buffer (METHOD.md step 6): one chunk of conditionings, their real clips, P rollouts each,
rewards and advantages, generated once and reused for ``passes_per_buffer`` passes.

Latents are stored (not pixels), so a generator step never re-encodes; when the adversarial refresh is on,
the critic's motion features of real and fake clips are stored too (in ``critic.feature_dtype``), so the
refresh reuses them without recomputing flow; without a refresh they are not kept (None). train/memory.py
sizes all of it per rank.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from shiftvdm.backbone.base import Condition


@dataclass
class RolloutBatch:
    """A minibatch of B conditionings drawn from the buffer."""

    x: Tensor  # (B, ...) real latents
    cond: Condition
    x_fake: Tensor | None  # (B, P, ...) rollout latents, None for SFT buffers
    adv_fake: Tensor | None  # (B, P)
    adv_real: Tensor | None  # (B,)
    index: Tensor  # (B,) positions in the buffer

    @property
    def group_size(self) -> int:
        return 0 if self.x_fake is None else int(self.x_fake.shape[1])


@dataclass(eq=False)  # identity semantics: two buffers are never "equal"
class RolloutBuffer:
    x: Tensor  # (N, ...) real latents of this rank's share of the chunk
    cond: Condition
    clip_ids: Tensor  # (N,) dataset indices of the real clips (for logs and the no-duplicate check)
    x_fake: Tensor | None = None  # (N, P, ...)
    adv_fake: Tensor | None = None  # (N, P)
    adv_real: Tensor | None = None  # (N,)
    rewards: dict[str, Tensor] = field(default_factory=dict)  # r_fake (N,P), r_real (N,), r_ic_fake, ...
    features_real: Any = None  # critic features of the real clips (N items), for the refresh (None without one)
    features_fake: Any = None  # critic features of the fakes (N*P items, conditioning-major)
    uses: int = 0  # minibatches drawn so far (each rollout is reused passes_per_buffer times)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def group_size(self) -> int:
        return 0 if self.x_fake is None else int(self.x_fake.shape[1])

    def batch(self, index: Tensor) -> RolloutBatch:
        self.uses += 1
        pick = (lambda t: None if t is None else t[index])
        return RolloutBatch(self.x[index], self.cond.index(index), pick(self.x_fake), pick(self.adv_fake),
                            pick(self.adv_real), index)

    def pass_order(self, batch_size: int, generator: torch.Generator) -> list[Tensor]:
        """One shuffled pass over the buffer as a list of index minibatches (the last may be short)."""
        perm = torch.randperm(len(self), generator=generator)
        return [perm[i:i + batch_size] for i in range(0, len(self), batch_size)]

    def state_dict(self) -> dict[str, Any]:
        def feats(f: Any) -> Any:
            return None if f is None else f.state_dict()
        return {"x": self.x, "cond": self.cond.state_dict(), "clip_ids": self.clip_ids, "x_fake": self.x_fake,
                "adv_fake": self.adv_fake, "adv_real": self.adv_real, "rewards": dict(self.rewards),
                "features_real": feats(self.features_real), "features_fake": feats(self.features_fake),
                "uses": self.uses}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], features_from_state: Any = None) -> "RolloutBuffer":
        def feats(s: Any) -> Any:
            return None if s is None or features_from_state is None else features_from_state(s)
        return cls(x=state["x"], cond=Condition.from_state_dict(state["cond"]), clip_ids=state["clip_ids"],
                   x_fake=state["x_fake"], adv_fake=state["adv_fake"], adv_real=state["adv_real"],
                   rewards=dict(state["rewards"]), features_real=feats(state["features_real"]),
                   features_fake=feats(state["features_fake"]), uses=int(state["uses"]))
