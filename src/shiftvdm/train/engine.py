"""The gradient engine: how one step's 1+P backward passes become one optimizer step, on one or many processes.

One class per way of syncing the generator's gradients (``run.distributed``), all with the same five verbs:

    with engine.routed(backbone):                 # the backbone calls its denoiser through the engine's wrapper
        for i, term in enumerate(terms):
            with engine.term(sync=(i == n - 1)):   # only the last backward reduces across processes
                with engine.autocast():
                    loss = forward()
                engine.backward(loss)
    norm = engine.clip_grad_norm_(params, max_norm)
    engine.step(optimizer)                        # or engine.discard_gradients(optimizer) for a skipped step

Gradients accumulate locally over the first n-1 backwards (memory flat in P) and the last one averages the
accumulated sum across processes: the result equals one process at world × batch. Every rank must make its
synchronising backward even when its loss is NaN (the step is then skipped by agreement), else the others wait.

- :class:`GradientEngine`: one process (nothing to sync);
- :class:`DDPEngine`: Accelerate's prepared DistributedDataParallel (``no_sync`` on all but the last backward);
- :class:`FSDP2Engine`: ``fully_shard`` of the whole denoiser, frozen base included (Wan2.2-A14B);
- :class:`DeepSpeedEngine`: ZeRO-2, the authors' engine (train/deepspeed_zero.py; optional extra).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from shiftvdm.errors import TrainingError
from shiftvdm.train import deepspeed_zero  # imports deepspeed itself only when that engine is chosen
from shiftvdm.train.distributed import Distributed, shard_module

ENGINES = ("ddp", "fsdp2", "deepspeed")


class _Routed:
    """Calls go through the engine's wrapper (so its hooks run); attributes come from the module."""

    def __init__(self, wrapper: nn.Module, module: nn.Module) -> None:
        self._wrapper, self._module = wrapper, module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrapper(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


class GradientEngine:
    """One process: plain backward, clip and step. The base of the multi-process engines."""

    kind = "none"
    per_parameter_gradients = True  # False under ZeRO-2: reduced gradients live in its flat partitions

    def __init__(self, module: nn.Module, dist: Distributed, *, mixed_precision: str = "no") -> None:
        self.module, self.dist = module, dist
        self.wrapper: nn.Module = module
        self.mixed_precision = mixed_precision

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast around the denoiser's forward (``run.mixed_precision``); the losses are summed in fp32."""
        if self.mixed_precision == "bf16":
            return torch.autocast(device_type=self.dist.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def attach_optimizer(self, optimizer: torch.optim.Optimizer, micro_batch: int, max_grad_norm: float) -> None:
        """Only DeepSpeed wraps the optimizer; the others step it on the module's own parameters."""

    @contextlib.contextmanager
    def term(self, sync: bool) -> Iterator[None]:
        """One forward+backward; the gradient reduction happens only when ``sync``."""
        yield

    def backward(self, loss: Tensor) -> None:
        loss.backward()

    def clip_grad_norm_(self, params: list[nn.Parameter], max_norm: float) -> Tensor:
        """The total gradient norm before clipping; clips in place."""
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.step()

    def discard_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Drop this step's gradients (a skipped step)."""
        optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any] | None:
        """What the engine itself adds to a checkpoint (None: nothing; only DeepSpeed keeps state)."""
        return None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        pass

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


class DDPEngine(GradientEngine):
    """DistributedDataParallel, reducing on the last of the 1+P backwards only."""

    kind = "ddp"

    def __init__(self, module: nn.Module, dist: Distributed, *, mixed_precision: str = "no", accelerator: Any = None,
                 find_unused_parameters: bool = False) -> None:
        super().__init__(module, dist, mixed_precision=mixed_precision)
        if accelerator is not None and accelerator.num_processes > 1:
            # Accelerate builds the DDP wrapper (device ids, its kwargs handlers); no device move here
            self.wrapper = accelerator.prepare_model(module, device_placement=False)
        else:
            ids = [dist.device.index] if dist.device.type == "cuda" else None
            self.wrapper = DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused_parameters)

    @contextlib.contextmanager
    def term(self, sync: bool) -> Iterator[None]:
        if sync:
            yield
            return
        with self.wrapper.no_sync():  # type: ignore[operator]  # DDP reads the flag at forward time: wrap both
            yield


class FSDP2Engine(GradientEngine):
    """``fully_shard`` of the denoiser: parameters become DTensors (build it before the optimizer)."""

    kind = "fsdp2"

    def __init__(self, module: nn.Module, dist: Distributed, *, mixed_precision: str = "no") -> None:
        super().__init__(module, dist, mixed_precision=mixed_precision)
        shard_module(module, dist)

    @contextlib.contextmanager
    def term(self, sync: bool) -> Iterator[None]:
        self.module.set_requires_gradient_sync(sync)  # type: ignore[operator]
        yield


class DeepSpeedEngine(GradientEngine):
    """ZeRO-2: the engine owns the optimizer step, the clip and the fp32 master partition."""

    kind = "deepspeed"
    per_parameter_gradients = False

    def __init__(self, module: nn.Module, dist: Distributed, *, mixed_precision: str = "no") -> None:
        super().__init__(module, dist, mixed_precision=mixed_precision)
        deepspeed_zero.import_deepspeed()  # an optional extra: refused here, with the install line, when missing
        self.zero: Any = None  # the ZeRO-2 optimizer, from attach_optimizer

    def attach_optimizer(self, optimizer: torch.optim.Optimizer, micro_batch: int, max_grad_norm: float) -> None:
        self.wrapper, self.zero = deepspeed_zero.initialize(self.module, optimizer, micro_batch, max_grad_norm)

    @contextlib.contextmanager
    def term(self, sync: bool) -> Iterator[None]:
        self.wrapper.set_gradient_accumulation_boundary(sync)  # type: ignore[operator]
        yield

    def backward(self, loss: Tensor) -> None:
        self.wrapper.backward(loss)  # type: ignore[operator]  # ZeRO's hooks take the gradients over

    def clip_grad_norm_(self, params: list[nn.Parameter], max_norm: float) -> Tensor:
        return deepspeed_zero.grad_norm(self.zero)  # DeepSpeed clips inside ``step``

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        self.wrapper.step()  # type: ignore[operator]  # clip + the client optimizer on this rank's partition

    def discard_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        deepspeed_zero.drop_gradients(self.zero)

    def state_dict(self) -> dict[str, Any] | None:
        return {"zero2_master": deepspeed_zero.master_state(self.zero)}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        deepspeed_zero.load_master_state(self.zero, (state or {}).get("zero2_master"))


def make_engine(module: nn.Module, dist: Distributed, kind: str = "ddp", *, mixed_precision: str = "no",
                accelerator: Any = None, find_unused_parameters: bool = False) -> GradientEngine:
    """The engine for ``run.distributed``; one process always gets the plain one, whatever ``kind``."""
    if dist.world == 1:
        return GradientEngine(module, dist, mixed_precision=mixed_precision)
    if kind not in ENGINES:
        raise TrainingError(f"run.distributed={kind!r}: expected ddp, fsdp2 or deepspeed")
    if kind == "ddp":
        return DDPEngine(module, dist, mixed_precision=mixed_precision, accelerator=accelerator,
                         find_unused_parameters=find_unused_parameters)
    if kind == "fsdp2":
        return FSDP2Engine(module, dist, mixed_precision=mixed_precision)
    return DeepSpeedEngine(module, dist, mixed_precision=mixed_precision)


__all__ = ["DDPEngine", "DeepSpeedEngine", "ENGINES", "FSDP2Engine", "GradientEngine", "make_engine"]
