"""The distributed layer of training: agreement between processes, and FSDP2's sharded state.

Agreement rule: a collective (gradient sync, barrier) hangs when one process skips it, so every
skip / stop / error decision is reduced across processes *before* the next collective:
- a non-finite loss or gradient on any rank -> every rank skips the step and counts it;
- the time limit -> any rank over it stops all (the slowest clock decides), at the same step;
- an error on one rank in the data path or the discriminator refresh -> every rank stops with its message;
- resume -> one checkpoint step for all ranks, the newest intact on every rank.

The engines that sync the generator's gradients live in train/engine.py; the FSDP2 sharding and the
per-rank shard state they need are at the end of this file.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from shiftvdm.errors import ShiftvdmError, TrainingError

logger = logging.getLogger(__name__)
T = TypeVar("T")



def _dist() -> Any:
    import torch.distributed as dist

    return dist


def shutdown_process_group() -> None:
    """End of a process whose run succeeded on every rank: wait for all, then destroy the process group.

    Without the wait, a rank that finishes first (its peer still writing the final checkpoint) tears gloo
    down under the peer, which aborts with "terminate called without an active exception" (SIGABRT, exit
    -6): 10 of 60 two-process runs on CPU, 0 of 60 with the wait. Without the destroy the same can happen
    at interpreter exit. Not for error paths: a rank that failed alone would leave the others waiting.
    """
    if _dist().is_available() and _dist().is_initialized():
        _dist().barrier()
        _dist().destroy_process_group()


class Distributed:
    """Rank, world size and the agreement collectives (all no-ops on one process)."""

    def __init__(self, rank: int = 0, world: int = 1, device: torch.device | None = None) -> None:
        self.rank, self.world = rank, world
        self.device = device or torch.device("cpu")
        if world > 1 and not _dist().is_initialized():
            raise TrainingError(f"{world} processes but torch.distributed is not initialised (use `accelerate launch`)")

    @classmethod
    def from_accelerator(cls, accelerator: Any) -> "Distributed":
        if accelerator is None:
            return cls()
        return cls(accelerator.process_index, accelerator.num_processes, accelerator.device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _flag_device(self) -> torch.device:
        # gloo reduces CPU tensors; NCCL needs them on the GPU
        return self.device if _dist().get_backend() == "nccl" else torch.device("cpu")

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank."""
        if self.world == 1:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=self._flag_device())
        _dist().all_reduce(t, op=_dist().ReduceOp.MAX)
        return bool(t.item() > 0)

    def any_each(self, flags: list[bool]) -> list[bool]:
        """Element-wise ``any`` of a list of flags (one all-reduce)."""
        if self.world == 1 or not flags:
            return [bool(f) for f in flags]
        t = torch.tensor([1.0 if f else 0.0 for f in flags], device=self._flag_device())
        _dist().all_reduce(t, op=_dist().ReduceOp.MAX)
        return [bool(v > 0) for v in t.tolist()]

    def max(self, value: float) -> float:
        if self.world == 1:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self._flag_device())
        _dist().all_reduce(t, op=_dist().ReduceOp.MAX)
        return float(t.item())

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        _dist().all_gather_object(out, obj)
        return out

    def broadcast(self, obj: T, src: int = 0) -> T:
        """Rank ``src``'s ``obj`` on every rank (rank 0 decides)."""
        if self.world == 1:
            return obj
        box = [obj]
        _dist().broadcast_object_list(box, src=src)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            _dist().barrier()

    def shutdown(self) -> None:
        shutdown_process_group()

    def together(self, fn: Callable[[], T], what: str) -> T:
        """Run ``fn`` (which must hold no collective) on every rank; if it raises on any rank, every rank
        raises: the failing rank its own error, the others a TrainingError naming the rank and message."""
        error: BaseException | None = None
        try:
            result = fn()
        except Exception as exc:  # gathered below, then re-raised
            error, result = exc, None
        if self.world == 1:
            if error is not None:
                raise error
            return result  # type: ignore[return-value]
        reports = self.gather(None if error is None else f"{type(error).__name__}: {error}")
        failed = [(r, m) for r, m in enumerate(reports) if m is not None]
        if not failed:
            return result  # type: ignore[return-value]
        if error is not None:
            raise error
        rank, message = failed[0]
        raise TrainingError(f"{what} failed on process {rank} of {self.world}, so every process stopped: {message}")

    def raise_if_any(self, message: str | None, error: type[ShiftvdmError]) -> None:
        """Raise ``error`` on every rank when any rank has a ``message`` (all messages joined)."""
        if not self.any(message is not None):  # one small all-reduce on the common path
            return
        reports = self.gather(message)
        failed = [f"process {r}: {m}" if self.world > 1 else m for r, m in enumerate(reports) if m]
        if failed:
            raise error("; ".join(failed))

    def mean_(self, t: Tensor) -> Tensor:
        """In-place mean of ``t`` over processes."""
        if self.world > 1:
            _dist().all_reduce(t)
            t /= self.world
        return t

    def mean_gradients(self, params: list[nn.Parameter]) -> None:
        """Average gradients with one flat all-reduce: for the small discriminators of the refresh only (the
        generator's gradients go through :class:`GradientEngine`)."""
        if self.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        _dist().all_reduce(flat)
        flat /= self.world
        offset = 0
        for p, g in zip(params, grads):
            p.grad = flat[offset:offset + g.numel()].view_as(g).clone()
            offset += g.numel()


def shard_units(module: nn.Module) -> list[nn.Module]:
    """The modules FSDP2 shards one by one: every direct child with parameters, and for a container
    (ModuleList / ModuleDict, which has no forward for FSDP2's hooks) each of its items, e.g. each block."""
    units: list[nn.Module] = []
    for child in module.children():
        if not any(True for _ in child.parameters()):
            continue
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            units.extend(shard_units(child))
        else:
            units.append(child)
    return units


def shard_module(module: nn.Module, dist: Distributed) -> None:
    """FSDP2: shard each unit (:func:`shard_units`), then the root (params become DTensors); a unit's weights
    are gathered only around its own forward and backward."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(dist.device.type, (dist.world,))
    for unit in shard_units(module):
        fully_shard(unit, mesh=mesh)
    fully_shard(module, mesh=mesh)


def full_tensor(t: Tensor) -> Tensor:
    """A DTensor's gathered value (FSDP2); any other tensor as is."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


# ----- FSDP2 state: each rank saves its own shards; weights for use are gathered once -------------------------
# Checkpoints are per process already (each rank's buffer share and random streams), and resume requires the
# same world size, so each rank stores the local shards of the trainable weights and of their optimizer
# states: no collective on save or load, memory 1/world per rank, and resume is exact (the same bytes go
# back into the same shards). Only the weights for use (the LoRA file, the weight digest) are gathered.

def is_sharded(t: Any) -> bool:
    return hasattr(t, "to_local") and hasattr(t, "device_mesh")


def local_tree(obj: Any) -> Any:
    """``obj`` (nested dicts/lists/tuples of tensors) with every DTensor replaced by this rank's shard, so
    that ``torch.load(weights_only=True)`` reads it back."""
    if is_sharded(obj):
        return obj.to_local().detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: local_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(local_tree(v) for v in obj)
    return obj


def like(local: Tensor, param: Tensor) -> Tensor:
    """A saved shard as a DTensor laid out like ``param`` (as is when ``param`` is not sharded)."""
    if not is_sharded(param):
        return local
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(local.to(param.to_local().device), param.device_mesh, param.placements,
                              run_check=False, shape=param.shape, stride=param.stride())


def sharded_optimizer_state(state: dict[str, Any], params: list[Tensor]) -> dict[str, Any]:
    """An optimizer ``state_dict`` saved as local shards, its per-parameter tensors made DTensors again
    (scalars such as Adam's ``step`` stay plain)."""
    out = {**state, "state": {}}
    for i, entry in state["state"].items():
        p = params[int(i)]
        out["state"][i] = {k: like(v, p) if isinstance(v, Tensor) and v.dim() > 0 and is_sharded(p) else v
                           for k, v in entry.items()}
    return out


def gather_full(module: nn.Module, params: list[nn.Parameter]) -> dict[str, Tensor]:
    """Gathered (full, CPU) values of those ``params`` of ``module`` that are FSDP2 shards, by name; empty
    when none is. A collective: call it on every rank in the same order."""
    wanted = {id(p) for p in params}
    return {name: p.detach().full_tensor().cpu() for name, p in module.named_parameters()
            if id(p) in wanted and is_sharded(p)}


@contextlib.contextmanager
def full_state_dicts(module: nn.Module, full: dict[str, Tensor]) -> Iterator[None]:
    """While inside, ``state_dict()`` of ``module`` or of any of its submodules holds the gathered values
    ``full`` (from :func:`gather_full`) instead of their shards, so a backbone's own ``save_lora`` /
    ``save_pretrained`` writes whole weights, also when it saves a part (Wan2.2-A14B saves each expert).
    Local: writing inside may happen on process 0 only. Nothing changes when ``full`` is empty."""
    if not full:
        yield
        return

    def hook_for(values: dict[str, Tensor]) -> Callable[..., None]:
        def hook(_module: nn.Module, state: dict[str, Any], prefix: str, _meta: Any) -> None:
            for name, value in values.items():
                if prefix + name in state:
                    state[prefix + name] = value
        return hook

    handles = []
    for path, sub in module.named_modules():
        head = f"{path}." if path else ""
        values = {name[len(head):]: v for name, v in full.items() if name.startswith(head)}  # names under sub
        if values:
            handles.append(sub.register_state_dict_post_hook(hook_for(values)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


__all__ = ["Distributed", "full_state_dicts", "full_tensor", "gather_full", "is_sharded", "like", "local_tree",
           "shard_module", "sharded_optimizer_state", "shutdown_process_group"]
