"""utils/ema.py: the one EMA update (generator weight EMA, discriminator EMA): averaged ← d·averaged + (1−d)·current."""

from __future__ import annotations

import pytest
import torch

from shiftvdm.utils.ema import ema_update_


def test_update_is_the_exponential_average_in_place():
    averaged = [torch.tensor([1.0, 2.0]), torch.tensor([[0.0]])]
    storage = [t.data_ptr() for t in averaged]
    ema_update_(averaged, [torch.tensor([3.0, -2.0]), torch.tensor([[10.0]])], decay=0.75)
    assert torch.allclose(averaged[0], torch.tensor([1.5, 1.0]))  # 0.75·1 + 0.25·3, 0.75·2 + 0.25·(−2)
    assert torch.allclose(averaged[1], torch.tensor([[2.5]]))
    assert [t.data_ptr() for t in averaged] == storage  # the same tensors, updated in place


def test_repeated_updates_converge_geometrically_and_edge_decays():
    averaged, target = [torch.zeros(3)], [torch.ones(3)]
    for _ in range(10):
        ema_update_(averaged, target, decay=0.9)
    assert torch.allclose(averaged[0], torch.full((3,), 1 - 0.9**10))
    kept = [torch.tensor([4.0])]
    ema_update_(kept, [torch.tensor([8.0])], decay=1.0)
    assert kept[0].item() == 4.0  # decay 1 keeps the average
    ema_update_(kept, [torch.tensor([8.0])], decay=0.0)
    assert kept[0].item() == 8.0  # decay 0 copies the current weights


def test_no_autograd_history_and_mismatched_lists_are_refused():
    param = torch.nn.Parameter(torch.tensor([2.0]))
    averaged = [torch.zeros(1)]
    ema_update_(averaged, [param * 3], decay=0.5)
    assert averaged[0].grad_fn is None and not averaged[0].requires_grad
    assert averaged[0].item() == 3.0
    with pytest.raises(ValueError):
        ema_update_([torch.zeros(1)], [torch.zeros(1), torch.zeros(1)], decay=0.5)
