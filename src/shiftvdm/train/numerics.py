"""Guards around a generator step: the agreed skip of non-finite steps, the finite-weights check, and the split of
the gradient norm into its SFT and advantage-weighted parts (a diagnostic the logs show every
``run.log_grad_norm_every`` steps).

Every function that holds a collective is called on every rank in the same order (see train/distributed.py).
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from shiftvdm.errors import TrainingError
from shiftvdm.train.distributed import Distributed, full_tensor
from shiftvdm.train.engine import GradientEngine
from shiftvdm.train.state import TrainState

logger = logging.getLogger(__name__)


def skip_step(state: TrainState, engine: GradientEngine, reason: str, values: dict[str, float],
              max_nonfinite_steps: int) -> dict[str, float]:
    """Drop this step's gradients, count it, stop after too many (the last checkpoint stays intact).

    Returns this step's own metrics (``values`` so far, marked ``skipped``), never the previous step's; the step
    number in the warning is the one metrics.jsonl records (counted after the step).
    """
    counters = state.counters
    engine.discard_gradients(state.optimizer)
    counters.nonfinite_steps += 1
    state.last_skip_reason = reason
    logger.warning("step %d skipped: %s (%d so far)", counters.step + 1, reason, counters.nonfinite_steps)
    if counters.nonfinite_steps > max_nonfinite_steps:
        raise TrainingError(
            f"{counters.nonfinite_steps} steps had a non-finite loss or gradient (limit "
            f"run.max_nonfinite_steps={max_nonfinite_steps}); last cause: {reason}; lower optim.lr or loss.lambda_aw.")
    return {**values, "skipped": 1.0}


def check_some_step_trained(state: TrainState, stopped_by: str) -> None:
    """TrainingError when every step of a finished run was skipped: its weights are the ones it started from,
    and reporting "N steps" would pass an untrained model on as a result (a NaN base model, a loss that is
    NaN from the start). A preempted run stops without judging: it has not finished."""
    counters = state.counters
    if stopped_by == "preempted" or counters.step == 0 or counters.nonfinite_steps < counters.step:
        return
    why = f" (the last one: {state.last_skip_reason})" if state.last_skip_reason else ""
    raise TrainingError(f"all {counters.step} steps were skipped: every one had a non-finite loss or gradient"
                        f"{why}, so nothing was trained and no final weights are written. Check the base model and "
                        "the data (`shiftvdm data check`), or lower optim.lr.")


def check_params_finite(state: TrainState, dist: Distributed, when: str) -> None:
    """Stop before a non-finite weight is used or saved (an update can write NaN with a finite gradient, e.g. a
    huge learning rate). Agreed: under FSDP2 each rank checks only its shard."""
    if dist.any(not state.params_finite()):
        raise TrainingError(f"step {state.counters.step + 1}: the trainable weights became NaN/inf {when}; "
                            "lower optim.lr or raise optim.eps.")


def grad_snapshot(params: list[nn.Parameter]) -> list[Tensor]:
    """This rank's gradients so far (after the SFT term), to split the step's gradient norm."""
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]


def grad_split_norms(params: list[nn.Parameter], g_sft: list[Tensor], dist: Distributed,
                     engine: GradientEngine) -> dict[str, float]:
    """Norms of the SFT and advantage-weighted parts of the (process-averaged) gradient. Before clipping, on
    every rank (under DDP it reduces the SFT snapshot, which is this rank's while the total is averaged)."""
    total = [full_tensor(p.grad) if p.grad is not None else torch.zeros_like(full_tensor(p)) for p in params]
    g_sft = [full_tensor(g) for g in g_sft]
    if dist.world > 1 and engine.kind == "ddp":
        flat = torch.cat([g.reshape(-1) for g in g_sft])
        dist.mean_(flat)
        g_sft = list(torch.split(flat, [g.numel() for g in g_sft]))
        g_sft = [g.view_as(t) for g, t in zip(g_sft, total)]
    sft = torch.sqrt(sum((g.float() ** 2).sum() for g in g_sft)).item()
    aw = torch.sqrt(sum(((t - g).float() ** 2).sum() for t, g in zip(total, g_sft))).item()
    return {"grad_norm/sft": sft, "grad_norm/aw": aw, "grad_norm/aw_over_sft": aw / max(sft, 1e-12)}


__all__ = ["check_params_finite", "check_some_step_trained", "grad_snapshot", "grad_split_norms", "skip_step"]
