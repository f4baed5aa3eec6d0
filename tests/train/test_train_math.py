"""Advantages and loss weights against hand computations (METHOD.md steps 3-4)."""

import pytest
import torch

from shiftvdm.train.advantages import AdvantageConfig, group_advantages
from shiftvdm.train.losses import LossConfig, aw_weight, needs_rollouts, real_weight

R = torch.tensor([[1.0, 2.0, 3.0, 6.0],
                  [-1.0, -1.0, -1.0, -1.0]])  # second group has zero variance
R_REAL = torch.tensor([5.0, 0.0])


def test_recentring_only_is_the_default():
    adv, adv_real = group_advantages(R, R_REAL, AdvantageConfig())
    assert torch.allclose(adv, torch.tensor([[-2.0, -1.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0]]))
    assert torch.allclose(adv_real, torch.tensor([2.0, 1.0]))  # r − r̄ per group
    assert torch.allclose(adv.sum(1), torch.zeros(2))


def test_clipping_at_a_max():
    adv, adv_real = group_advantages(R * 10, R_REAL * 10, AdvantageConfig(clip=10.0))
    assert torch.allclose(adv[0], torch.tensor([-10.0, -10.0, 0.0, 10.0]))
    assert torch.allclose(adv_real, torch.tensor([10.0, 10.0]))


def test_std_normalisation_and_zero_variance_group():
    adv, adv_real = group_advantages(R, R_REAL, AdvantageConfig(scale="group_std"))
    std0 = torch.tensor([1.0, 2.0, 3.0, 6.0]).std(unbiased=False)
    assert torch.allclose(adv[0], (torch.tensor([1.0, 2.0, 3.0, 6.0]) - 3.0) / (std0 + 1e-8))
    assert torch.equal(adv[1], torch.zeros(4))  # no division by zero
    assert torch.isfinite(adv_real).all()
    assert adv_real[1].abs() <= 10.0  # (0 − (−1)) / 1e-8 is clipped, not infinite


def test_rwr_baseline_uses_raw_rewards():
    adv, _ = group_advantages(R, None, AdvantageConfig(center="none"))
    assert torch.allclose(adv, R)


def test_positive_weight():
    adv, _ = group_advantages(R, None, AdvantageConfig(positive_weight=0.5))
    assert torch.allclose(adv[0], torch.tensor([-2.0, -1.0, 0.0, 1.5]))


def test_bad_shapes_and_settings():
    with pytest.raises(ValueError, match=r"\(B, P\)"):
        group_advantages(torch.zeros(4), None, AdvantageConfig())
    with pytest.raises(ValueError, match="advantage.clip"):
        AdvantageConfig(clip=0)


def test_lambda_aw_ramp():
    cfg = LossConfig(lambda_aw=0.01, lambda_aw_ramp_steps=100)
    assert aw_weight(cfg, 0) == 0.0
    assert aw_weight(cfg, 50) == pytest.approx(0.005)
    assert aw_weight(cfg, 100) == pytest.approx(0.01)
    assert aw_weight(cfg, 1000) == pytest.approx(0.01)
    assert aw_weight(LossConfig(lambda_aw=0.01), 0) == pytest.approx(0.01)


def test_real_weight_symmetric_and_asymmetric():
    adv_real = torch.tensor([2.0, -1.0])
    assert torch.equal(real_weight(LossConfig(lambda_sft=1.0), adv_real, 2), torch.tensor([1.0, 1.0]))
    w = real_weight(LossConfig(lambda_sft=1.0, asymmetric=True), adv_real, 2)
    assert torch.allclose(w, torch.tensor([3.0, 1.0]))  # λ_sft + max(0, A)
    with pytest.raises(ValueError, match="asymmetric"):
        real_weight(LossConfig(asymmetric=True), None, 2)


def test_sft_needs_no_rollouts():
    assert not needs_rollouts(LossConfig(lambda_aw=0.0))
    assert needs_rollouts(LossConfig(lambda_aw=0.001))
    assert needs_rollouts(LossConfig(lambda_aw=0.0, asymmetric=True))
