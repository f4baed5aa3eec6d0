"""train/optim.py: the learning-rate schedule, the generator's optimizer and the EMA of the trained weights.

What a user relies on: warm-up starts at lr/warmup (not 0) and reaches lr; constant stays at lr; cosine ends at
``min_lr_ratio`` × lr exactly at ``run.max_steps`` and never goes below; the EMA follows its warm-up decay and
``swapped_in`` gives the trained weights back.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from shiftvdm.train.optim import WeightEMA, build_generator_optimizer, lr_lambda
from tiny_run import make_cfg


def cfg_with(**optim):
    return make_cfg(Path("unused"), optim=optim, run={"max_steps": 10})


def test_warmup_starts_at_lr_over_warmup_and_reaches_lr():
    f = lr_lambda(cfg_with(warmup_steps=4, schedule="constant"))
    assert [f(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [lr_lambda(cfg_with(warmup_steps=0))(s) for s in (0, 5, 10, 50)] == [1.0] * 4  # constant, no warm-up


def test_cosine_decays_to_the_floor_at_max_steps_and_stays_there():
    f = lr_lambda(cfg_with(warmup_steps=2, schedule="cosine", min_lr_ratio=0.1))
    assert [f(0), f(1)] == [0.5, 1.0]
    assert f(2) == pytest.approx(1.0)  # the cosine starts after warm-up at the full rate
    mid = 2 + (10 - 2) / 2
    assert f(int(mid)) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))  # halfway: (1 + floor)/2
    assert f(10) == pytest.approx(0.1) and f(25) == pytest.approx(0.1)  # the floor at max_steps, and after
    values = [f(s) for s in range(2, 11)]
    assert all(a > b for a, b in zip(values, values[1:]))  # strictly decreasing
    assert min(f(s) for s in range(40)) == pytest.approx(0.1)


def test_the_optimizer_is_adamw_with_the_schedule_applied():
    cfg = cfg_with(lr=0.4, warmup_steps=2, betas=(0.8, 0.9), weight_decay=0.0, eps=1e-6)
    param = nn.Parameter(torch.zeros(2))
    opt, sched = build_generator_optimizer(cfg, [param])
    assert isinstance(opt, torch.optim.AdamW)
    group = opt.param_groups[0]
    assert group["betas"] == (0.8, 0.9) and group["eps"] == 1e-6 and group["weight_decay"] == 0.0
    lrs = []
    for _ in range(3):
        lrs.append(opt.param_groups[0]["lr"])
        param.grad = torch.ones(2)
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.2, 0.4, 0.4])  # step 0 at lr/warmup


def test_weight_ema_follows_its_warmup_decay_and_swapped_in_restores_the_trained_weights():
    p = nn.Parameter(torch.zeros(3))
    ema = WeightEMA([p], decay=0.9)
    assert torch.equal(ema.shadow[0], torch.zeros(3)) and ema.shadow[0] is not p
    expected = torch.zeros(3)
    for step in range(1, 6):
        with torch.no_grad():
            p.fill_(float(step))
        ema.update([p], step)
        decay = min(0.9, (1 + step) / (10 + step))  # early steps: 2/11, 3/12, ... then 0.9
        expected = decay * expected + (1 - decay) * torch.full((3,), float(step))
        assert torch.allclose(ema.shadow[0], expected, atol=1e-6)
    before = ema.shadow[0].clone()
    with torch.no_grad():
        p.fill_(100.0)
    ema.update([p], 100)  # later: the configured decay
    assert torch.allclose(ema.shadow[0], 0.9 * before + 0.1 * 100.0, atol=1e-5)

    trained = p.detach().clone()
    with ema.swapped_in([p]):
        assert torch.equal(p.detach(), ema.shadow[0])
    assert torch.equal(p.detach(), trained)
    with pytest.raises(RuntimeError, match="stop"):
        with ema.swapped_in([p]):
            raise RuntimeError("stop")
    assert torch.equal(p.detach(), trained)  # back even after an error inside
