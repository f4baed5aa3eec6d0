"""Worker for tests/train/test_distributed.py (run under torchrun; not a test module).

Trains a small "frozen base + LoRA" module for a few steps with the trainer's accumulation pattern (a
real term and P rollout terms, one backward each, the engine syncing on the last) and writes the final
trainable weights. On N processes each rank takes its 1/N share of a fixed global batch, so the result
must equal one process on the whole batch.

    python -m torch.distributed.run --nproc_per_node 2 tests/train/dist_engine_worker.py ENGINE OUT.pt
"""

from __future__ import annotations

import os
import sys

import torch
from torch import nn

from shiftvdm.train.distributed import Distributed, full_tensor
from shiftvdm.train.engine import make_engine

GLOBAL_BATCH, DIM, P, STEPS = 4, 8, 2, 3


class Lora(nn.Module):
    def __init__(self, base: nn.Linear, rank: int = 2) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)  # frozen base, as in LoRA fine-tuning
        self.a = nn.Parameter(torch.randn(rank, base.in_features) * 0.3)
        self.b = nn.Parameter(torch.randn(base.out_features, rank) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + x @ self.a.T @ self.b.T


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1 = Lora(nn.Linear(DIM, 16))
        self.l2 = Lora(nn.Linear(16, DIM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(torch.tanh(self.l1(x)))


class Owner:
    """Stands for the backbone: calls its denoiser by attribute, as the backbones do."""

    def __init__(self, net: nn.Module) -> None:
        self.denoiser = net

    def loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((self.denoiser(x) - target) ** 2).mean(dim=1)  # per-sample loss, (B,)


def main() -> None:
    kind, out = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        torch.distributed.init_process_group("gloo")
    dist = Distributed(rank, world)
    torch.manual_seed(0)
    net = Net()
    owner = Owner(net)
    gen = torch.Generator().manual_seed(1)
    data = torch.randn(STEPS, 1 + P, GLOBAL_BATCH, DIM, generator=gen)
    targets = torch.randn(STEPS, 1 + P, GLOBAL_BATCH, DIM, generator=gen)
    adv = torch.randn(STEPS, P, GLOBAL_BATCH, generator=gen)
    share = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)

    if kind == "agree":
        check_agreement(dist, out)
        return
    if kind == "deepspeed":
        run_deepspeed(net, owner, data, targets, adv, share, world, out)
        return
    engine = make_engine(net, dist, kind)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    for s in range(STEPS):
        with engine.routed(owner):
            for t in range(1 + P):  # the real term, then one backward per rollout
                with engine.term(sync=t == P):
                    loss = owner.loss(data[s, t, share], targets[s, t, share])
                    weight = 1.0 if t == 0 else 0.5 * adv[s, t - 1, share] / P
                    (weight * loss).mean().backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    state = {n: full_tensor(p.detach()).clone() for n, p in net.named_parameters() if p.requires_grad}
    if rank == 0:
        torch.save(state, out)
    dist.shutdown()  # rank 1 waits for rank 0's save instead of tearing gloo down under it


def check_agreement(dist: Distributed, out: str) -> None:
    """A DataError on rank 1 only stops both ranks with its message; a NaN flag on one rank is seen by all."""
    import json

    from shiftvdm.errors import DataError

    def load() -> int:
        if dist.rank == 1:
            raise DataError("clip 3: cannot decode (test)")
        return 1

    try:
        dist.together(load, "loading clips")
        caught = None
    except Exception as exc:
        caught = f"{type(exc).__name__}: {exc}"
    seen = [dist.any(dist.rank == r) for r in range(dist.world)]
    slowest = dist.max(10.0 * (dist.rank + 1))
    try:
        dist.raise_if_any("features are NaN (test)" if dist.rank == 0 else None, DataError)
        raised = None
    except DataError as exc:
        raised = str(exc)
    dist.barrier()  # reached by both: no rank is left inside a collective
    with open(f"{out}.rank{dist.rank}.json", "w") as fh:
        json.dump({"caught": caught, "seen": seen, "slowest": slowest, "raised": raised}, fh)
    dist.shutdown()


def run_deepspeed(net, owner, data, targets, adv, share, world, out) -> None:
    """DeepSpeed ZeRO-2 as the authors ran it: the engine owns the optimizer, gradient accumulation over
    the 1+P backwards (one micro-step each), reduction at the boundary."""
    import deepspeed

    config = {"train_micro_batch_size_per_gpu": GLOBAL_BATCH // world, "gradient_accumulation_steps": 1 + P,
              "gradient_clipping": 1.0, "zero_optimization": {"stage": 2},
              "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "weight_decay": 0.01, "torch_adam": True}}}
    engine, *_ = deepspeed.initialize(model=net, model_parameters=[p for p in net.parameters() if p.requires_grad],
                                      config=config)
    owner.denoiser = engine
    for s in range(STEPS):
        for t in range(1 + P):
            loss = owner.loss(data[s, t, share], targets[s, t, share])
            weight = 1.0 if t == 0 else 0.5 * adv[s, t - 1, share] / P
            # DeepSpeed divides each micro-step's loss by the accumulation steps; the terms of Eq. 12 are summed
            engine.backward((1 + P) * (weight * loss).mean())
            engine.step()  # steps the optimizer only at the accumulation boundary
    import deepspeed.utils

    state = {}
    for n, p in net.named_parameters():
        if p.requires_grad:
            state[n] = deepspeed.utils.safe_get_full_fp32_param(p).detach().clone()
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save(state, out)


if __name__ == "__main__":
    main()
