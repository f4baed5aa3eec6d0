"""Eq. 7 (the discriminators' BCE), one-sided label smoothing, the R1 penalty, the replay and the EMA, each
checked against a closed form on tiny tensors.

The IC and LC discriminators are swapped for a linear one, D(x) = w·x + b, whose BCE gradient is known:
dL/dz = σ(z) − y, so ∇_w = mean_i (σ(z_i) − y_i)·x_i and ∇_b = mean_i (σ(z_i) − y_i). R1 uses a quadratic
one, D(x) = a·‖x‖² + c, so the penalty depends on which inputs it is taken at: ∇_x D = 2a·x, hence
E‖∇_x D‖² = 4a²·E‖x‖² and its a-derivative 8a·E‖x‖². A plain SGD step with lr 1 exposes −∇ in the weights.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from shiftvdm.rewards.critic import CriticConfig, MotionCritic, MotionFeatures
from shiftvdm.rewards.critic_training import CriticTrainConfig, CriticTrainer
from shiftvdm.rewards.ic import ICConfig
from shiftvdm.rewards.lc import LCConfig


class LinearD(nn.Module):
    """D(x) = w·flatten(x) + b, one logit per clip."""

    def __init__(self, w: list[float], b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor(b, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).double() @ self.w + self.b


class QuadraticD(nn.Module):
    """D(x) = a·‖x‖² + c: its input gradient 2a·x depends on x, so R1 shows which inputs it used."""

    def __init__(self, a: float, c: float) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float64))
        self.c = nn.Parameter(torch.tensor(c, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a * x.flatten(1).double().pow(2).sum(dim=1) + self.c


# Fixed features: IC (N, T−1, C, h, w) = (N, 1, 1, 1, 3); LC (N, 2).
REAL_IC = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5], [-0.75, 1.0, 0.0]]).reshape(3, 1, 1, 1, 3)
FAKE_IC = torch.tensor([[-1.0, 0.5, 0.5], [0.0, -2.0, 1.0], [2.0, 1.0, -1.5]]).reshape(3, 1, 1, 1, 3)
REAL_LC = torch.tensor([[1.0, 2.0], [-0.5, 0.5], [0.25, -1.0]])
FAKE_LC = torch.tensor([[0.0, -1.0], [1.5, 1.0], [-2.0, 0.5]])
W_IC, B_IC = [0.3, -0.2, 0.1], 0.05
W_LC, B_LC = [-0.4, 0.25], -0.1


def critic_with(ic: nn.Module, lc: nn.Module) -> MotionCritic:
    critic = MotionCritic(CriticConfig(num_queries=16, ic=ICConfig(encoder="cnn", image_size=(16, 16), cnn_channels=(8, 16)),
                                       lc=LCConfig(dim=16, depth=1, heads=2)))
    critic.ic, critic.lc = ic, lc
    critic.ema_ic, critic.ema_lc = copy.deepcopy(ic).requires_grad_(False), copy.deepcopy(lc).requires_grad_(False)
    return critic


def features(ic: torch.Tensor, lc: torch.Tensor) -> MotionFeatures:
    return MotionFeatures(ic.clone(), lc.clone())


def trainer_for(critic: MotionCritic, **cfg) -> CriticTrainer:
    """The library's trainer with SGD(lr=1) and no clipping, so −Δθ is the gradient."""
    config = CriticTrainConfig(lr=1.0, max_grad_norm=1e9, **cfg)
    return CriticTrainer(critic, config, optimizer=torch.optim.SGD(critic.discriminator_parameters(), lr=1.0))


def step(critic: MotionCritic, real: MotionFeatures, fake: MotionFeatures, seed: int = 0,
         trainer: CriticTrainer | None = None, **cfg):
    """One library step (``trainer``'s, or a fresh one's): returns the metrics and −Δθ (= the gradient)."""
    trainer = trainer or trainer_for(critic, **cfg)
    params = critic.discriminator_parameters()
    before = [p.detach().clone() for p in params]
    metrics = trainer.step(real, fake, torch.Generator().manual_seed(seed))
    return metrics, [b - p.detach() for b, p in zip(before, params)]


def bce(z: torch.Tensor, y: float) -> torch.Tensor:
    """−[y·log σ(z) + (1 − y)·log(1 − σ(z))], averaged, written out."""
    s = torch.sigmoid(z)
    return -(y * torch.log(s) + (1 - y) * torch.log(1 - s)).mean()


def linear_hand(x_real: torch.Tensor, x_fake: torch.Tensor, w: list[float], b: float, real_target: float):
    """Eq. 7 loss and its (∇_w, ∇_b) for D(x) = w·x + b, by the closed form."""
    w_t = torch.tensor(w, dtype=torch.float64)
    xr, xf = x_real.flatten(1).double(), x_fake.flatten(1).double()
    zr, zf = xr @ w_t + b, xf @ w_t + b
    loss = bce(zr, real_target) + bce(zf, 0.0)
    er, ef = torch.sigmoid(zr) - real_target, torch.sigmoid(zf)  # dL/dz per clip, before the 1/N of the mean
    grad_w = (er[:, None] * xr).mean(0) + (ef[:, None] * xf).mean(0)
    grad_b = er.mean() + ef.mean()
    return loss.item(), grad_w, grad_b, zr, zf


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_eq7_loss_and_gradient_match_the_closed_form(smoothing):
    critic = critic_with(LinearD(W_IC, B_IC), LinearD(W_LC, B_LC))
    metrics, grads = step(critic, features(REAL_IC, REAL_LC), features(FAKE_IC, FAKE_LC), label_smoothing=smoothing)
    ic = linear_hand(REAL_IC, FAKE_IC, W_IC, B_IC, 1.0 - smoothing)
    lc = linear_hand(REAL_LC, FAKE_LC, W_LC, B_LC, 1.0 - smoothing)
    assert metrics["disc/loss_ic"] == pytest.approx(ic[0], rel=1e-12)
    assert metrics["disc/loss_lc"] == pytest.approx(lc[0], rel=1e-12)
    assert metrics["disc/loss"] == pytest.approx(ic[0] + lc[0], rel=1e-12)  # the branches are summed
    for got, want in zip(grads, [ic[1], ic[2], lc[1], lc[2]]):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    norm = math.sqrt(sum(float(g.pow(2).sum()) for g in (ic[1], ic[2], lc[1], lc[2])))
    assert metrics["disc/grad_norm"] == pytest.approx(norm, rel=1e-12)
    assert metrics["disc/acc_real_ic"] == pytest.approx((ic[3] > 0).double().mean().item())
    assert metrics["disc/acc_fake_lc"] == pytest.approx((lc[4] < 0).double().mean().item())
    assert metrics["disc/logit_fake_ic"] == pytest.approx(ic[4].mean().item(), rel=1e-12)
    assert metrics["disc/skipped"] == 0.0


def test_label_smoothing_is_one_sided_and_has_its_known_value():
    """With every logit 0 (w = 0, b = 0): real term −[(1−ε)·log ½ + ε·log ½] = log 2 for any ε, and the
    b-gradient is (½ − (1 − ε)) + ½ = ε; the fakes keep target 0 (a two-sided version would give 2ε)."""
    for eps in (0.0, 0.1, 0.3):
        critic = critic_with(LinearD([0.0, 0.0, 0.0], 0.0), LinearD([0.0, 0.0], 0.0))
        metrics, grads = step(critic, features(REAL_IC, REAL_LC), features(FAKE_IC, FAKE_LC), label_smoothing=eps)
        assert metrics["disc/loss_ic"] == pytest.approx(2 * math.log(2), rel=1e-12)
        assert float(grads[1]) == pytest.approx(eps, abs=1e-12)  # ∇_b of IC
        want_w = (0.5 - (1 - eps)) * REAL_IC.flatten(1).double().mean(0) + 0.5 * FAKE_IC.flatten(1).double().mean(0)
        torch.testing.assert_close(grads[0], want_w, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="label_smoothing"):
        CriticTrainConfig(label_smoothing=0.5)


def test_r1_penalty_is_taken_on_real_inputs_with_its_closed_form_gradient():
    a, c, gamma = 0.2, -0.3, 2.0
    critic = critic_with(QuadraticD(a, c), LinearD(W_LC, B_LC))
    metrics, grads = step(critic, features(REAL_IC, REAL_LC), features(FAKE_IC, FAKE_LC), r1_gamma=gamma)
    sq_real = REAL_IC.flatten(1).double().pow(2).sum(1)  # ‖x‖² per real clip
    sq_fake = FAKE_IC.flatten(1).double().pow(2).sum(1)
    r1 = 4 * a * a * sq_real.mean()  # E‖∇_x D(x_real)‖² = E‖2a·x‖²
    zr, zf = a * sq_real + c, a * sq_fake + c
    bce_loss = bce(zr, 1.0) + bce(zf, 0.0)
    assert metrics["disc/r1_ic"] == pytest.approx(r1.item(), rel=1e-6)
    assert metrics["disc/loss_ic"] == pytest.approx((bce_loss + 0.5 * gamma * r1).item(), rel=1e-6)  # γ/2·R1
    er, ef = torch.sigmoid(zr) - 1.0, torch.sigmoid(zf)
    grad_a = (er * sq_real).mean() + (ef * sq_fake).mean() + 0.5 * gamma * 8 * a * sq_real.mean()
    grad_c = er.mean() + ef.mean()  # the penalty does not depend on c
    # ∇_x D is taken on the float32 features (the step casts them), so the R1 part is float32-exact only
    assert float(grads[0]) == pytest.approx(grad_a.item(), rel=1e-6)
    assert float(grads[1]) == pytest.approx(grad_c.item(), rel=1e-12)
    lc = linear_hand(REAL_LC, FAKE_LC, W_LC, B_LC, 1.0)
    assert metrics["disc/r1_lc"] == pytest.approx(sum(w * w for w in W_LC), rel=1e-6)  # linear: ‖∇_x D‖² = ‖w‖²
    torch.testing.assert_close(grads[2], lc[1] + gamma * torch.tensor(W_LC, dtype=torch.float64), rtol=1e-6, atol=1e-9)


def test_replay_mixes_half_the_fakes_from_older_batches_drawn_by_the_generator():
    critic = critic_with(LinearD(W_IC, B_IC), LinearD(W_LC, B_LC))
    trainer = trainer_for(critic, replay_size=4)
    real = features(REAL_IC, REAL_LC)
    old = features(FAKE_IC, FAKE_LC)
    metrics_first, _ = step(critic, real, old, trainer=trainer)
    # the store was empty: the first step trains on the fresh fakes alone, then keeps them
    assert metrics_first["disc/loss_ic"] == pytest.approx(linear_hand(REAL_IC, FAKE_IC, W_IC, B_IC, 1.0)[0], rel=1e-12)
    assert len(trainer.replay) == 3

    w_now = [critic.ic.w.detach().tolist(), float(critic.ic.b.detach())]
    new_ic, new_lc = FAKE_IC + 10.0, FAKE_LC - 10.0
    metrics, _ = step(critic, real, features(new_ic, new_lc), seed=5, trainer=trainer)
    # 3 fakes: the first 3 − 3//2 = 2 fresh ones, then 1 drawn from the 3 stored with the step's generator
    drawn = torch.randint(3, (1,), generator=torch.Generator().manual_seed(5))
    mixed_ic = torch.cat([new_ic[:2], FAKE_IC[drawn]])
    assert metrics["disc/loss_ic"] == pytest.approx(linear_hand(REAL_IC, mixed_ic, w_now[0], w_now[1], 1.0)[0], rel=1e-12)
    # FIFO at capacity 4: the oldest two of the 6 clips seen are dropped
    torch.testing.assert_close(trainer.replay.items.ic, torch.cat([FAKE_IC[2:], new_ic]))


def test_ema_follows_the_update_with_its_decay():
    critic = critic_with(LinearD(W_IC, B_IC), LinearD(W_LC, B_LC))
    ema_before = [p.clone() for p in critic.ema_ic.parameters()]
    step(critic, features(REAL_IC, REAL_LC), features(FAKE_IC, FAKE_LC), ema_decay=0.75)
    for e0, e1, live in zip(ema_before, critic.ema_ic.parameters(), critic.ic.parameters()):
        torch.testing.assert_close(e1, 0.75 * e0 + 0.25 * live.detach(), rtol=1e-12, atol=1e-14)
        assert not torch.equal(e1, e0)
