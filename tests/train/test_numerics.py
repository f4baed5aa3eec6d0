"""train/numerics.py: the guards around a generator step.

What a user relies on: a non-finite step is skipped (its gradients dropped, the weights untouched), counted, and
logged with its own values; too many stop the run naming ``run.max_nonfinite_steps``; NaN weights stop the run
naming the step; the logged SFT / advantage-weighted gradient norms are the norms of the two parts.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn

from shiftvdm.errors import TrainingError
from shiftvdm.train.distributed import Distributed
from shiftvdm.train.engine import GradientEngine
from shiftvdm.train.numerics import check_params_finite, grad_snapshot, grad_split_norms, skip_step
from shiftvdm.train.state import TrainState


def make_state(step: int = 0):
    a, b = nn.Parameter(torch.tensor([1.0, -2.0])), nn.Parameter(torch.tensor([[0.5, 0.25], [3.0, 1.0]]))
    opt = torch.optim.SGD([a, b], lr=0.1)
    state = TrainState(0, 0, [a, b], opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), None, None)
    state.counters.step = step
    return state, GradientEngine(nn.Linear(1, 1), Distributed())


def test_skip_step_drops_the_gradients_counts_and_returns_this_steps_values(caplog):
    state, engine = make_state(step=6)
    a, b = state.params
    (a.sum() + b.sum()).backward()
    before = [p.detach().clone() for p in state.params]
    values = {"loss/real": float("nan"), "grad_norm": 2.5}
    with caplog.at_level(logging.WARNING, logger="shiftvdm.train.numerics"):
        out = skip_step(state, engine, "non-finite real loss", values, max_nonfinite_steps=3)
    assert out["skipped"] == 1.0 and out["grad_norm"] == 2.5 and math.isnan(out["loss/real"])
    assert set(out) == {"loss/real", "grad_norm", "skipped"} and "skipped" not in values  # its own copy
    assert all(p.grad is None for p in state.params)
    state.optimizer.step()  # nothing left to apply
    assert all(torch.equal(x, p) for x, p in zip(before, state.params))
    assert state.counters.nonfinite_steps == 1 and state.counters.step == 6  # the loop counts the step itself
    assert "step 7 skipped: non-finite real loss (1 so far)" in caplog.text  # the step metrics.jsonl records


def test_too_many_skipped_steps_stop_the_run_naming_the_limit():
    state, engine = make_state()
    for _ in range(2):
        skip_step(state, engine, "non-finite gradient", {}, max_nonfinite_steps=2)
    with pytest.raises(TrainingError, match=r"3 steps had a non-finite loss or gradient \(limit "
                                            r"run.max_nonfinite_steps=2\); last cause: non-finite rollout loss"):
        skip_step(state, engine, "non-finite rollout loss", {}, max_nonfinite_steps=2)
    assert state.counters.nonfinite_steps == 3


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_stop_the_run_naming_the_step(bad):
    state, _ = make_state(step=4)
    check_params_finite(state, Distributed(), "after the optimizer step")  # finite: nothing happens
    with torch.no_grad():
        state.params[1][1, 0] = bad
    with pytest.raises(TrainingError, match=r"step 5: the trainable weights became NaN/inf after the optimizer step"):
        check_params_finite(state, Distributed(), "after the optimizer step")


def test_grad_split_norms_are_the_norms_of_the_sft_and_advantage_weighted_parts():
    state, engine = make_state()
    a, b = state.params
    unused = nn.Parameter(torch.ones(3))  # no gradient at all: counts as zero
    params = [a, b, unused]
    (3 * a.sum() + (b ** 2).sum()).backward()  # the SFT term: grads 3 and 2b
    g_sft = grad_snapshot(params)
    assert torch.equal(g_sft[2], torch.zeros(3))
    (a ** 2).sum().backward()  # the advantage-weighted term: grads 2a and 0
    out = grad_split_norms(params, g_sft, Distributed(), engine)

    sft = math.sqrt(2 * 3.0 ** 2 + sum((2 * v) ** 2 for v in (0.5, 0.25, 3.0, 1.0)))
    aw = math.sqrt((2 * 1.0) ** 2 + (2 * -2.0) ** 2)
    assert out["grad_norm/sft"] == pytest.approx(sft, rel=1e-6)
    assert out["grad_norm/aw"] == pytest.approx(aw, rel=1e-6)
    assert out["grad_norm/aw_over_sft"] == pytest.approx(aw / sft, rel=1e-6)
    # the snapshot was a copy: the later backward did not change it
    assert torch.equal(g_sft[0], torch.tensor([3.0, 3.0]))
