"""train/state.py: TrainState is what a checkpoint holds and restores, and the source of every named random stream.

What a user relies on: a state saved and loaded into a fresh run is the same run (counters, weights, optimizer,
schedule, EMA, critic, buffer and torch RNG, so the next step is bit-identical); a checkpoint of another model is
refused by name; random streams differ per rank and stream and repeat exactly; a run without the buffer in its
checkpoint rolls it out again from the saved origin; a checkpoint written at e17d547 (critic parts under three
keys) loads into the critic trainer.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from shiftvdm.errors import CheckpointError
from shiftvdm.rewards.critic import MotionCritic
from shiftvdm.rewards.critic_training import CriticTrainer, trainer_state_from_e17d547
from shiftvdm.train.state import Counters, TrainState, read_checkpoint
from shiftvdm.train.shift import refresh_critic
from tiny_run import fill_buffer, make_cfg, make_parts, train_one_step

FIXTURE = Path(__file__).parents[1] / "fixtures" / "run_e17d547"


def through_disk(state: dict) -> dict:
    """What ``torch.save`` then ``torch.load(weights_only=True)`` gives back (as a checkpoint does)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def trained(tmp_path: Path, seed: int = 0):
    """Parts after 2 generator steps and 1 critic step, with a scored buffer: every part of the state is non-trivial."""
    cfg = make_cfg(tmp_path, optim={"ema_decay": 0.9})
    backbone, critic, parts = make_parts(cfg, seed=seed)
    buffer = fill_buffer(backbone, critic, cfg, parts)
    for _ in range(2):
        train_one_step(backbone, parts, cfg)
    refresh_critic(parts.state.critic_trainer, buffer, 1, cfg, parts.state, parts.dist)
    parts.state.counters.add_time("generator", 1.25)
    return cfg, backbone, critic, parts


def assert_tree_equal(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            assert_tree_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_tree_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_round_trip_restores_everything_and_the_next_step_is_bit_identical(tmp_path):
    cfg, backbone, critic, parts = trained(tmp_path, seed=0)
    saved = through_disk(parts.state.state_dict(with_buffer=True))
    assert saved["buffer"] is not None and saved["buffer_origin"] is None and saved["ema"] is not None
    assert saved["critic"]["steps"] == 1

    backbone2, critic2, parts2 = make_parts(cfg, seed=1)  # another critic init, untrained weights
    s2 = parts2.state
    assert not all(torch.equal(a, b) for a, b in zip(parts.state.params, s2.params))  # really different before
    assert not all(torch.equal(a, b) for a, b in zip(critic.state_dict().values(), critic2.state_dict().values()))
    s2.load_state_dict(saved, "ckpt")

    s1 = parts.state
    assert s2.counters == s1.counters and s2.counters.step == 2 and s2.counters.timers["generator"] == 1.25
    assert all(torch.equal(a, b) for a, b in zip(s1.params, s2.params))
    assert_tree_equal(s1.optimizer.state_dict(), s2.optimizer.state_dict(), "optimizer")
    assert s2.lr_scheduler.state_dict()["last_epoch"] == s1.lr_scheduler.state_dict()["last_epoch"] == 2
    assert all(torch.equal(a, b) for a, b in zip(s1.ema.shadow, s2.ema.shadow))
    assert_tree_equal(critic.state_dict(), critic2.state_dict(), "critic")
    assert_tree_equal(s1.critic_trainer.optimizer.state_dict(), s2.critic_trainer.optimizer.state_dict(), "d_opt")
    assert s2.critic_trainer.steps == 1
    assert torch.equal(torch.get_rng_state(), saved["torch_rng"])
    b1, b2 = s1.buffer, s2.buffer
    for name in ("x", "x_fake", "adv_fake", "adv_real", "clip_ids"):
        assert torch.equal(getattr(b1, name), getattr(b2, name)), name
    assert_tree_equal(b1.rewards, b2.rewards, "rewards")
    assert_tree_equal(b1.cond.state_dict(), b2.cond.state_dict(), "cond")
    assert b2.uses == b1.uses
    # the refresh's motion features come back as features (rebuilt by the critic), equal to the saved ones
    assert type(b2.features_fake) is type(b1.features_fake)
    assert_tree_equal(b1.features_fake.state_dict(), b2.features_fake.state_dict(), "features_fake")

    # the resumed state takes the same next step as the one that kept going
    before = [p.detach().clone() for p in s1.params]
    train_one_step(backbone, parts, cfg)
    assert not all(torch.equal(a, b) for a, b in zip(before, s1.params))  # a real update
    train_one_step(backbone2, parts2, cfg)
    assert all(torch.equal(a, b) for a, b in zip(s1.params, s2.params))


def test_a_checkpoint_with_another_number_of_trainable_tensors_is_refused_by_name(tmp_path):
    cfg, backbone, critic, parts = trained(tmp_path)
    saved = parts.state.state_dict(with_buffer=True)
    n = len(parts.state.params)
    saved["params"] = {k: v for k, v in saved["params"].items() if k != str(n - 1)}
    before = [p.detach().clone() for p in parts.state.params]
    with pytest.raises(CheckpointError, match=rf"runs/x/step-9: checkpoint has {n - 1} trainable tensors, this run {n}"):
        parts.state.load_state_dict(saved, "runs/x/step-9")
    assert all(torch.equal(a, b) for a, b in zip(before, parts.state.params))  # nothing half-loaded


def bare_state(seed: int = 3, rank: int = 0) -> TrainState:
    param = nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([param], lr=0.1)
    return TrainState(seed, rank, [param], opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), None, None)


def draw(gen: torch.Generator) -> torch.Tensor:
    return torch.randn(8, generator=gen)


def test_generator_streams_differ_per_rank_stream_and_counters_and_repeat():
    r0, r1 = bare_state(rank=0), bare_state(rank=1)
    noise = draw(r0.generator("noise", 4))
    assert torch.equal(noise, draw(r0.generator("noise", 4)))  # reproducible
    assert torch.equal(noise, draw(bare_state(rank=0).generator("noise", 4)))  # and from a fresh state
    assert not torch.equal(noise, draw(r1.generator("noise", 4)))  # per rank
    assert not torch.equal(noise, draw(r0.generator("rollout", 4)))  # per stream
    assert not torch.equal(noise, draw(r0.generator("noise", 5)))  # per counter
    assert not torch.equal(noise, draw(bare_state(seed=4).generator("noise", 4)))  # per seed
    assert not torch.equal(draw(r0.generator("noise", 1, 2)), draw(r0.generator("noise", 2, 1)))  # order counts


def test_timed_returns_the_value_and_adds_its_seconds_to_the_phase_timer():
    state = bare_state()
    assert state.timed("data", lambda: time.sleep(0.02) or 41) == 41
    first = state.counters.timers["data"]
    assert 0.02 <= first < 1.0
    state.timed("data", lambda: time.sleep(0.02))
    assert state.counters.timers["data"] >= first + 0.02  # summed over the run
    assert set(state.counters.timers) == {"data"}


def test_rollout_origin_keeps_the_weights_and_rng_and_a_reroll_puts_them_back():
    state = bare_state()
    p = state.params[0]
    with torch.no_grad():
        p.copy_(torch.tensor([1.0, 2.0, 3.0]))
    with state.rollout_origin(keep=False, with_weights=True) as again:
        assert again is False
    assert state.buffer_origin is None  # checkpoint_buffer=true: nothing kept
    with state.rollout_origin(keep=True, with_weights=False):
        pass
    assert state.buffer_origin["params"] is None  # SFT: rollouts do not depend on the weights

    torch.manual_seed(11)
    rng_at_collection = torch.get_rng_state()
    with state.rollout_origin(keep=True, with_weights=True) as again:
        assert again is False
        first_draw = torch.rand(4)  # what the collection drew
    assert torch.equal(state.buffer_origin["params"][0], torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(state.buffer_origin["torch_rng"], rng_at_collection)

    # training moves on; then a resume without the buffer rolls it out again from its origin
    with torch.no_grad():
        p.add_(10.0)
    torch.manual_seed(99)
    rng_now = torch.get_rng_state()
    state.reroll = True
    with state.rollout_origin(keep=True, with_weights=True) as again:
        assert again is True
        assert torch.equal(p.detach(), torch.tensor([1.0, 2.0, 3.0]))  # the weights it was rolled out with
        assert torch.equal(torch.rand(4), first_draw)  # and the same draws
    assert torch.equal(p.detach(), torch.tensor([11.0, 12.0, 13.0]))  # the trained weights are back
    assert torch.equal(torch.get_rng_state(), rng_now)  # and the RNG
    assert state.reroll is False


def test_a_checkpoint_without_the_buffer_resumes_as_a_reroll(tmp_path):
    cfg, backbone, critic, parts = trained(tmp_path)
    s1 = parts.state
    with s1.rollout_origin(keep=True, with_weights=True):
        pass  # as train() does around the collection when run.checkpoint_buffer=false
    saved = through_disk(s1.state_dict(with_buffer=False))
    assert saved["buffer"] is None and saved["buffer_origin"] is not None
    assert all(torch.equal(a, b) for a, b in zip(saved["buffer_origin"]["params"], s1.params))

    _, _, parts2 = make_parts(cfg, seed=1)
    parts2.state.load_state_dict(saved, "ckpt")
    assert parts2.state.buffer is None and parts2.state.reroll is True
    assert all(torch.equal(a, b) for a, b in zip(parts2.state.buffer_origin["params"], s1.params))


def test_an_e17d547_checkpoint_loads_its_critic_parts_into_the_critic_trainer(tmp_path):
    cfg, backbone, critic, parts = trained(tmp_path)
    new = through_disk(parts.state.state_dict(with_buffer=True))
    trainer_state = new.pop("critic")
    # the e17d547 layout: the critic's weights, its optimizer and replay store under three keys, steps in counters
    old = {**new, "critic": trainer_state["critic"], "d_optimizer": trainer_state["optimizer"],
           "critic_replay": trainer_state["replay"], "counters": {**new["counters"], "d_steps": 5}}

    _, critic2, parts2 = make_parts(cfg, seed=1)
    parts2.state.load_state_dict(old, "old/step-2")
    assert parts2.state.critic_trainer.steps == 5  # counters["d_steps"] at e17d547
    assert_tree_equal(critic.state_dict(), critic2.state_dict(), "critic")
    assert_tree_equal(parts.state.critic_trainer.optimizer.state_dict(),
                      parts2.state.critic_trainer.optimizer.state_dict(), "d_optimizer")

    # a run that did not refresh its critic saved no discriminator optimizer: the critic is left as it is
    assert trainer_state_from_e17d547({**old, "d_optimizer": None}) is None


def test_the_e17d547_fixture_checkpoint_loads_into_a_critic_trainer():
    state = read_checkpoint(FIXTURE / "run" / "checkpoints" / "step-0000003")
    assert {"critic", "d_optimizer", "critic_replay"} <= set(state)
    critic = MotionCritic.load(FIXTURE / "critic")
    trainer = CriticTrainer(critic)
    trainer.load_state_dict(trainer_state_from_e17d547(state), "fixture")
    assert trainer.steps == state["counters"]["d_steps"] == 0
    assert_tree_equal(critic.state_dict(), dict(state["critic"]), "critic")
    assert len(trainer.replay) == 0  # that run kept no replay store
    assert Counters(**state["counters"]).step == 3  # the counters of that version still fit
