"""train/deepspeed_zero.py without DeepSpeed installed: the refusal and the pieces that need no engine.

What a user relies on: choosing ``run.distributed=deepspeed`` without the optional extra stops with the
install line and the alternatives; the ZeRO-2 config is the one the trainer expects (boundaries set by hand,
the trainer's AdamW, clipping from ``optim.max_grad_norm``, none when it is infinite); a checkpoint's fp32
master partition round-trips and one of another size (or none at all) is refused naming both shapes. The
multi-process DeepSpeed run itself is tests/train/test_distributed.py's (skipped without the extra).
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from shiftvdm.errors import CheckpointError, TrainingError
from shiftvdm.train import deepspeed_zero as dz
from shiftvdm.train.engine import make_engine


@pytest.fixture
def no_deepspeed(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # `import deepspeed` raises ImportError


def test_without_the_extra_deepspeed_is_refused_with_the_install_line(no_deepspeed):
    with pytest.raises(TrainingError, match=r"run.distributed=deepspeed needs the deepspeed package[\s\S]*"
                                            r"pip install 'shiftvdm\[deepspeed\]'[\s\S]*run.distributed=ddp / fsdp2"):
        dz.import_deepspeed()
    dist = SimpleNamespace(rank=0, world=2, device=torch.device("cpu"))
    with pytest.raises(TrainingError, match="needs the deepspeed package"):  # when the engine is built
        make_engine(nn.Linear(2, 2), dist, "deepspeed")
    assert type(make_engine(nn.Linear(2, 2), SimpleNamespace(rank=0, world=1, device=torch.device("cpu")),
                            "deepspeed")).__name__ == "GradientEngine"  # one process never needs it


def test_the_zero2_config():
    cfg = dz.zero2_config(micro_batch=3, max_grad_norm=0.5)
    assert cfg["train_micro_batch_size_per_gpu"] == 3 and cfg["gradient_accumulation_steps"] == 1
    assert cfg["zero_optimization"] == {"stage": 2} and cfg["gradient_clipping"] == 0.5
    assert cfg["zero_allow_untested_optimizer"] is True  # the trainer's own AdamW
    assert dz.zero2_config(1, float("inf"))["gradient_clipping"] == 0.0  # no clipping


class FakeZero:
    """The attributes of DeepSpeed's ZeRO-2 optimizer these helpers use."""

    def __init__(self, *shapes):
        self.single_partition_of_fp32_groups = [torch.zeros(s) for s in shapes]
        self.averaged_gradients = {0: [torch.ones(2)], 1: [torch.ones(3)]}
        self.zeroed = None

    def zero_grad(self, set_to_none=False):
        self.zeroed = set_to_none

    def scaled_global_norm(self):
        return 3.5


def test_master_partition_round_trip_and_refusals():
    zero = FakeZero(4, 2)
    with torch.no_grad():
        zero.single_partition_of_fp32_groups[0].copy_(torch.arange(4.0))
    saved = dz.master_state(zero)
    zero.single_partition_of_fp32_groups[0].zero_()
    assert torch.equal(saved[0], torch.arange(4.0))  # a copy, not a view

    dz.load_master_state(zero, saved)
    assert torch.equal(zero.single_partition_of_fp32_groups[0], torch.arange(4.0))
    with pytest.raises(CheckpointError, match=r"master partition of \(5,\) in the checkpoint, \(4,\) in this run"):
        dz.load_master_state(zero, [torch.zeros(5), torch.zeros(2)])
    with pytest.raises(CheckpointError, match="no DeepSpeed master partition"):
        dz.load_master_state(zero, None)


def test_drop_gradients_and_grad_norm():
    zero = FakeZero(2)
    dz.drop_gradients(zero)
    assert zero.zeroed is True and all(v is None for v in zero.averaged_gradients.values())
    norm = dz.grad_norm(zero)
    assert isinstance(norm, torch.Tensor) and norm.item() == 3.5
