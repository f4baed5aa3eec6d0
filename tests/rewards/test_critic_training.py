"""CriticTrainer: one Eq. 7 step for pre-training and the refresh, and one state (optimizer, replay, steps,
the critic's weights) that a checkpoint holds and a resume continues from bit for bit."""

from __future__ import annotations

import io

import pytest
import torch

from shiftvdm.errors import CheckpointError
from shiftvdm.rewards import Critic, CriticConfig, CriticTrainConfig, CriticTrainer, ICConfig, LCConfig, MotionCritic
from shiftvdm.rewards.critic import MotionFeatures
from shiftvdm.rewards.critic_training import trainer_state_from_e17d547
from shiftvdm.utils.seeding import derive_seed, generator_for

REGULARISED = CriticTrainConfig(lr=1e-3, r1_gamma=1.0, instance_noise=0.05, label_smoothing=0.1, replay_size=6)


def small_critic() -> MotionCritic:
    return MotionCritic(CriticConfig(num_queries=8, ic=ICConfig(encoder="cnn", image_size=(16, 16), cnn_channels=(8, 8)),
                                     lc=LCConfig(dim=16, depth=1, heads=2)))


def features(critic: MotionCritic, n: int, seed: int) -> MotionFeatures:
    g = torch.Generator().manual_seed(seed)
    return MotionFeatures(torch.randn(n, 3, critic.ic_channels, 16, 16, generator=g),
                          torch.randn(n, 8, 4, critic.lc_dim, generator=g))


def run_steps(trainer: CriticTrainer, start: int, stop: int) -> list[dict[str, float]]:
    """Steps seeded as both loops seed them: a generator per step, the global seed (dropout) per step."""
    out = []
    critic = trainer.critic
    for step in range(start, stop):
        real, fake = features(critic, 4, 100 + step), features(critic, 4, 200 + step)
        torch.manual_seed(derive_seed(0, "dropout", step))
        out.append(trainer.step(real, fake, generator_for(0, "noise", step)))
    return out


def round_trip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)  # what a checkpoint file gives back


def test_the_critic_satisfies_the_protocol_the_trainer_types_against():
    assert isinstance(small_critic(), Critic)
    assert list(small_critic().discriminators()) == ["ic", "lc"]


def test_a_resume_from_the_trainer_state_continues_bit_for_bit():
    straight = CriticTrainer(small_critic(), REGULARISED)
    metrics = run_steps(straight, 0, 4)

    first = CriticTrainer(small_critic(), REGULARISED)
    run_steps(first, 0, 2)
    state = round_trip(first.state_dict())
    assert state["steps"] == 2 and len(state["replay"]["items"]["ic"]) == 6
    resumed = CriticTrainer(small_critic(), REGULARISED)
    resumed.load_state_dict(state)
    assert resumed.steps == 2
    assert run_steps(resumed, 2, 4) == metrics[2:]
    a, b = straight.critic.state_dict(), resumed.critic.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # live and EMA weights
    assert torch.equal(straight.replay.items.lc, resumed.replay.items.lc)


def test_a_state_that_does_not_fit_is_refused_by_name():
    trainer = CriticTrainer(small_critic(), REGULARISED)
    with pytest.raises(CheckpointError, match="step-7: not a critic trainer state"):
        trainer.load_state_dict({"optimizer": {}}, "step-7")
    other = MotionCritic(CriticConfig(num_queries=8, ic=ICConfig(encoder="cnn", image_size=(16, 16),
                                                                 cnn_channels=(8, 16)),
                                      lc=LCConfig(dim=16, depth=1, heads=2)))
    with pytest.raises(CheckpointError, match="critic weights do not match"):
        trainer.load_state_dict(CriticTrainer(other, REGULARISED).state_dict())


def test_a_checkpoint_written_at_e17d547_gives_the_trainer_state():
    trainer = CriticTrainer(small_critic(), REGULARISED)
    run_steps(trainer, 0, 2)
    now = trainer.state_dict()
    old = {"critic": now["critic"], "d_optimizer": now["optimizer"], "critic_replay": now["replay"],
           "counters": {"step": 9, "d_steps": 2}}
    resumed = CriticTrainer(small_critic(), REGULARISED)
    resumed.load_state_dict(trainer_state_from_e17d547(old))
    assert resumed.steps == 2 and run_steps(resumed, 2, 3) == run_steps(trainer, 2, 3)
    assert trainer_state_from_e17d547({**old, "d_optimizer": None}) is None  # that run did not refresh


def test_pretraining_resumes_from_its_trainer_state_and_from_a_checkpoint_written_before_it(tmp_path):
    """`train-critic` checkpoints hold {"trainer": CriticTrainer.state_dict(), ...}; one written at e17d547
    ({"step", "optimizer"} + the critic/ folder, no replay store) still resumes."""
    from shiftvdm.rewards.pretraining import _restore
    from shiftvdm.utils.step_checkpoints import write_checkpoint

    trainer = CriticTrainer(small_critic(), REGULARISED)
    run_steps(trainer, 0, 2)
    write_checkpoint(tmp_path / "new" / "checkpoints", 2, {"trainer": trainer.state_dict(), "history": "[]",
                                                           "log_sizes": None}, {"critic": trainer.critic.save})
    write_checkpoint(tmp_path / "old" / "checkpoints", 2, {"step": 2, "optimizer": trainer.optimizer.state_dict(),
                                                           "history": "[]", "log_sizes": None},
                     {"critic": trainer.critic.save})
    want = trainer.critic.state_dict()
    for run, replay in (("new", 6), ("old", 0)):
        resumed = CriticTrainer(small_critic(), REGULARISED)
        assert _restore(resumed, tmp_path / run) == ([], None)
        got = resumed.critic.state_dict()
        assert resumed.steps == 2 and len(resumed.replay) == replay and all(torch.equal(want[k], got[k]) for k in want)
