"""The distributed layer of training: agreement between processes, and the engine that syncs gradients.

Agreement rule: a collective (gradient sync, barrier) hangs when one process skips it, so every
skip / stop / error decision is reduced across processes *before* the next collective:
- a non-finite loss or gradient on any rank -> every rank skips the step and counts it;
- the time limit -> any rank over it stops all (the slowest clock decides), at the same step;
- an error on one rank in the data path or the discriminator refresh -> every rank stops with its message;
- resume -> one checkpoint step for all ranks, the newest intact on every rank.

Engine: the generator's gradients are synchronised by torch's own machinery, chosen by
``run.distributed``: ``ddp`` (Accelerate's prepared DistributedDataParallel, reducing on the last of
the 1+P backwards only), ``fsdp2`` (``torch.distributed.fsdp.fully_shard`` of the denoiser, frozen base
included: for Wan2.2-A14B), ``deepspeed`` (ZeRO-2, train/deepspeed_zero.py). One process needs no engine.
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

# Test hook only: inject a NaN into the real loss of one rank at one step ("rank:step", steps from 1).
NAN_HOOK_ENV = "SHIFTVDM_TEST_NAN_AT"
CLOCK_HOOK_ENV = "SHIFTVDM_TEST_CLOCK_AHEAD"  # test hook only: one rank's clock runs ahead ("rank:seconds")


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


def injected_nan(rank: int, step: int) -> bool:
    """Test hook (env ``SHIFTVDM_TEST_NAN_AT=rank:step``): make this rank's loss NaN at this step."""
    import os

    spec = os.environ.get(NAN_HOOK_ENV, "")
    if not spec:
        return False
    r, s = spec.split(":")
    return int(r) == rank and int(s) == step


def test_clock_ahead(rank: int) -> float:
    """Test hook (env ``SHIFTVDM_TEST_CLOCK_AHEAD=rank:seconds``): this rank's clock reads that much later."""
    import os

    spec = os.environ.get(CLOCK_HOOK_ENV, "")
    if not spec:
        return 0.0
    r, s = spec.split(":")
    return float(s) if int(r) == rank else 0.0


class _Routed:
    """Calls go through the engine's wrapper (so its hooks run); attributes come from the module."""

    def __init__(self, wrapper: nn.Module, module: nn.Module) -> None:
        self._wrapper, self._module = wrapper, module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrapper(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


class GradientEngine:
    """Synchronises one module's gradients over processes: ``none`` (one process), ``ddp`` or ``fsdp2``.

    Usage per step, with ``n`` backward passes known in advance (the real term plus the rollouts with a
    non-zero advantage on this rank)::

        for i, term in enumerate(terms):
            with engine.term(sync=(i == n - 1)):   # only the last backward reduces
                loss = forward(); loss.backward()

    Gradients accumulate locally over the first n-1 backwards (memory flat in P) and the last one
    averages the accumulated sum across processes: the result equals one process at world × batch.
    Every rank must make its synchronising backward even when its loss is NaN (the step is then
    skipped by agreement), else the others wait forever.
    """

    def __init__(self, module: nn.Module, dist: Distributed, kind: str = "ddp", *, accelerator: Any = None,
                 find_unused_parameters: bool = False) -> None:
        self.module, self.dist = module, dist
        self.kind = "none" if dist.world == 1 else kind
        self.wrapper: nn.Module = module
        if self.kind == "ddp":
            if accelerator is not None and accelerator.num_processes > 1:
                # Accelerate builds the DDP wrapper (device ids, its kwargs handlers); no device move here
                self.wrapper = accelerator.prepare_model(module, device_placement=False)
            else:
                from torch.nn.parallel import DistributedDataParallel as DDP

                ids = [dist.device.index] if dist.device.type == "cuda" else None
                self.wrapper = DDP(module, device_ids=ids, find_unused_parameters=find_unused_parameters)
        elif self.kind == "fsdp2":
            shard_module(module, dist)
        elif self.kind == "deepspeed":
            from shiftvdm.train.deepspeed_zero import import_deepspeed

            import_deepspeed()  # refused up front, with the install line, when it is missing
            self.zero: Any = None  # the ZeRO-2 optimizer, from attach_optimizer
        elif self.kind != "none":
            raise TrainingError(f"run.distributed={kind!r}: expected ddp, fsdp2 or deepspeed")

    def attach_optimizer(self, optimizer: torch.optim.Optimizer, micro_batch: int, max_grad_norm: float) -> None:
        """DeepSpeed: wrap the module and the trainer's optimizer in a ZeRO-2 engine (a no-op for the others,
        whose optimizer works on the module's own parameters)."""
        if self.kind == "deepspeed":
            from shiftvdm.train import deepspeed_zero

            self.wrapper, self.zero = deepspeed_zero.initialize(self.module, optimizer, micro_batch, max_grad_norm)

    def backward(self, loss: Tensor) -> None:
        if self.kind == "deepspeed":
            self.wrapper.backward(loss)  # type: ignore[operator]  # ZeRO's hooks take the gradients over
        else:
            loss.backward()

    def clip_grad_norm_(self, params: list[nn.Parameter], max_norm: float) -> Tensor:
        """The total gradient norm before clipping; clips in place (DeepSpeed clips inside ``step``)."""
        if self.kind == "deepspeed":
            from shiftvdm.train.deepspeed_zero import grad_norm

            return grad_norm(self.zero)
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.kind == "deepspeed":
            self.wrapper.step()  # type: ignore[operator]  # clip + the client optimizer on this rank's partition
        else:
            optimizer.step()

    def discard_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Drop this step's gradients (a skipped step)."""
        optimizer.zero_grad(set_to_none=True)
        if self.kind == "deepspeed":
            from shiftvdm.train.deepspeed_zero import drop_gradients

            drop_gradients(self.zero)

    @property
    def per_parameter_gradients(self) -> bool:
        """False under ZeRO-2: the reduced gradients live in its flat partitions, not in ``p.grad``."""
        return self.kind != "deepspeed"

    def state_dict(self) -> dict[str, Any] | None:
        """What the engine itself adds to a checkpoint (DeepSpeed: the fp32 master partition)."""
        if self.kind != "deepspeed":
            return None
        from shiftvdm.train.deepspeed_zero import master_state

        return {"zero2_master": master_state(self.zero)}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.kind == "deepspeed":
            from shiftvdm.train.deepspeed_zero import load_master_state

            load_master_state(self.zero, (state or {}).get("zero2_master"))

    @contextlib.contextmanager
    def term(self, sync: bool) -> Iterator[None]:
        """One forward+backward; the gradient reduction happens only when ``sync``."""
        if self.kind == "ddp" and not sync:
            with self.wrapper.no_sync():  # DDP reads the flag at forward time: wrap forward and backward
                yield
        elif self.kind == "fsdp2":
            self.module.set_requires_gradient_sync(sync)  # type: ignore[operator]
            yield
        elif self.kind == "deepspeed":
            self.wrapper.set_gradient_accumulation_boundary(sync)  # type: ignore[operator]
            yield
        else:
            yield

    @contextlib.contextmanager
    def routed(self, owner: Any, attr: str = "denoiser") -> Iterator[None]:
        """Make ``owner.attr(...)`` call the wrapper for the duration (the backbone calls its denoiser)."""
        if self.wrapper is self.module:
            yield
            return
        setattr(owner, attr, _Routed(self.wrapper, self.module))
        try:
            yield
        finally:
            setattr(owner, attr, self.module)


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


__all__ = ["Distributed", "GradientEngine", "NAN_HOOK_ENV", "full_state_dicts", "full_tensor", "gather_full", "injected_nan", "is_sharded",
           "like", "local_tree", "shard_module", "sharded_optimizer_state"]
