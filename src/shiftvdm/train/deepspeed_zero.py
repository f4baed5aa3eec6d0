"""DeepSpeed ZeRO-2 as the gradient engine (``run.distributed: deepspeed``), as the authors ran SHIFT.

The engine wraps the denoiser and the trainer's own AdamW (a "client" optimizer): ZeRO-2 partitions the
optimizer states and the reduced gradients of the trainable weights over the processes; the weights
themselves stay whole on every rank (so sampling, the LoRA file and the digest need no gather).

How it maps onto one SHIFT step (the 1+P backwards of Eq. 12, their number agreed across ranks):
- ``gradient_accumulation_steps`` is 1 and the boundary is set by hand on each backward: gradients
  accumulate locally over the first n-1 backwards and are reduce-scattered on the last one;
- the loss goes through ``engine.backward`` (ZeRO's hooks move the gradients into its partitions);
- clipping (``optim.max_grad_norm``) happens inside ``engine.step()``, which also steps the client AdamW;
  the learning-rate schedule stays the trainer's (stepped by the trainer, not by DeepSpeed);
- a step skipped by agreement drops the partitioned gradients the way DeepSpeed drops an overflowed
  step (it does so itself for a non-finite gradient norm in fp32: the averaged gradient is then NaN on
  every rank, so every rank skips);
- checkpoints hold the client AdamW's state (over this rank's flat partition) and the fp32 master
  partition, both plain tensors (``torch.load(weights_only=True)``): DeepSpeed's own ``state_dict``
  holds Python objects (its loss scaler, enums) that a weights-only load refuses.

DeepSpeed is an optional extra (``pip install 'shiftvdm[deepspeed]'``; on a CPU-only machine build it with
``DS_BUILD_OPS=0``; it then runs over gloo with ``DS_ACCELERATOR=cpu``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from shiftvdm.errors import CheckpointError, TrainingError


def import_deepspeed() -> Any:
    try:
        import deepspeed
    except ImportError as exc:
        raise TrainingError("run.distributed=deepspeed needs the deepspeed package, which is not installed "
                            f"({exc}); pip install 'shiftvdm[deepspeed]' (CPU-only: DS_BUILD_OPS=0), or use "
                            "run.distributed=ddp / fsdp2") from exc
    return deepspeed


def zero2_config(micro_batch: int, max_grad_norm: float) -> dict[str, Any]:
    """The DeepSpeed config of a SHIFT run: ZeRO stage 2, boundaries set by the trainer, fp32 weights."""
    return {"train_micro_batch_size_per_gpu": micro_batch, "gradient_accumulation_steps": 1,
            "gradient_clipping": max_grad_norm if math.isfinite(max_grad_norm) else 0.0,
            "zero_optimization": {"stage": 2}, "zero_allow_untested_optimizer": True,  # the trainer's AdamW
            "steps_per_print": 2**62, "wall_clock_breakdown": False}


def initialize(module: nn.Module, optimizer: torch.optim.Optimizer, micro_batch: int, max_grad_norm: float
               ) -> tuple[nn.Module, Any]:
    """(DeepSpeed engine wrapping ``module``, its ZeRO-2 optimizer wrapping ``optimizer``)."""
    deepspeed = import_deepspeed()
    engine, zero, _, _ = deepspeed.initialize(model=module, optimizer=optimizer,
                                              config=zero2_config(micro_batch, max_grad_norm))
    return engine, zero


def grad_norm(zero: Any) -> Tensor:
    """The global norm of the reduced gradients before clipping (a collective), as torch's clip returns it."""
    return torch.as_tensor(float(zero.scaled_global_norm()))


def drop_gradients(zero: Any) -> None:
    """Forget this step's reduced gradients without an optimizer step (what ZeRO-2 does on an overflow)."""
    zero.zero_grad(set_to_none=True)
    for k in list(zero.averaged_gradients.keys()):
        zero.averaged_gradients[k] = None


def master_state(zero: Any) -> list[Tensor]:
    """This rank's fp32 master partition (the client AdamW's parameters under ZeRO-2)."""
    return [t.detach().cpu().clone() for t in zero.single_partition_of_fp32_groups]


def load_master_state(zero: Any, saved: list[Tensor] | None) -> None:
    if saved is None:
        raise CheckpointError("the checkpoint has no DeepSpeed master partition (written without "
                              "run.distributed=deepspeed?)")
    with torch.no_grad():
        for t, s in zip(zero.single_partition_of_fp32_groups, saved):
            if t.shape != s.shape:
                raise CheckpointError(f"DeepSpeed master partition of {tuple(s.shape)} in the checkpoint, "
                                      f"{tuple(t.shape)} in this run (another world size or LoRA?)")
            t.copy_(s)


__all__ = ["drop_gradients", "grad_norm", "import_deepspeed", "initialize", "load_master_state", "master_state",
           "zero2_config"]
