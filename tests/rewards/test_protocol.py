"""rewards/protocol.py: what train/ sees of the critic: GroupScores of consecutive chunks, the replay store.

What a user relies on: scores of a buffer scored in chunks join in order (rewards and, when kept, features);
the replay store keeps the newest ``capacity`` fakes, draws reproducibly from a generator, and comes back from a
checkpoint with the same items (so a resumed refresh draws the same replay samples).
"""

from __future__ import annotations

import io

import pytest
import torch

from shiftvdm.rewards.critic import CriticConfig, MotionCritic, MotionFeatures
from shiftvdm.rewards.ic import ICConfig
from shiftvdm.rewards.lc import LCConfig
from shiftvdm.rewards.protocol import Critic, GroupScores, ReplayStore


def feats(start: int, n: int) -> MotionFeatures:
    """n clips whose features hold their index (clip i: all values i)."""
    ids = torch.arange(start, start + n, dtype=torch.float32)
    return MotionFeatures(ids.view(n, 1, 1, 1, 1).expand(n, 2, 1, 2, 2).clone(),
                          ids.view(n, 1, 1, 1).expand(n, 3, 2, 4).clone())


def scores(start: int, n: int, p: int, with_features: bool = True) -> GroupScores:
    real = torch.arange(start, start + n, dtype=torch.float32)
    fake = real[:, None] * 10 + torch.arange(p)
    rewards = {"r_real": real, "r_ic_real": real, "r_lc_real": real, "r_fake": fake, "r_ic_fake": fake,
               "r_lc_fake": fake}
    if not with_features:
        return GroupScores(rewards)
    return GroupScores(rewards, feats(start, n), feats(100 + start * p, n * p))


def test_group_scores_of_chunks_join_in_order():
    joined = GroupScores.cat([scores(0, 2, 3), scores(2, 1, 3)])
    assert torch.equal(joined.rewards["r_real"], torch.tensor([0.0, 1.0, 2.0]))
    assert joined.rewards["r_fake"].shape == (3, 3)
    assert torch.equal(joined.rewards["r_fake"][2], torch.tensor([20.0, 21.0, 22.0]))
    assert set(joined.rewards) == set(scores(0, 1, 3).rewards)
    assert isinstance(joined.features_real, MotionFeatures) and len(joined.features_real) == 3
    assert len(joined.features_fake) == 9  # N·P, conditioning-major
    assert joined.features_real.ic[:, 0, 0, 0, 0].tolist() == [0.0, 1.0, 2.0]
    assert joined.features_fake.lc[:, 0, 0, 0].tolist() == [100.0 + i for i in range(9)]


def test_group_scores_without_features_join_to_none():
    joined = GroupScores.cat([scores(0, 2, 2, with_features=False), scores(2, 2, 2)])
    assert joined.features_real is None and joined.features_fake is None  # not kept: no refresh reads them
    assert len(joined.rewards["r_real"]) == 4


def test_the_replay_store_keeps_the_newest_capacity_items():
    store = ReplayStore(capacity=5, from_state=MotionCritic.features_from_state)
    assert len(store) == 0 and store.state_dict() is None
    store.add(feats(0, 3))
    store.add(feats(3, 4))  # 7 added, 5 kept: the oldest two dropped
    assert len(store) == 5
    assert store.items.ic[:, 0, 0, 0, 0].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0]
    a = store.sample(8, torch.Generator().manual_seed(1))
    b = store.sample(8, torch.Generator().manual_seed(1))
    assert len(a) == 8 and torch.equal(a.ic, b.ic)  # reproducible from the generator
    assert set(a.ic[:, 0, 0, 0, 0].tolist()) <= {2.0, 3.0, 4.0, 5.0, 6.0}


def test_the_replay_store_round_trips_through_a_checkpoint():
    store = ReplayStore(capacity=4, from_state=MotionCritic.features_from_state)
    store.add(feats(0, 6))
    buf = io.BytesIO()
    torch.save(store.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)

    back = ReplayStore(capacity=99, from_state=MotionCritic.features_from_state)
    back.load_state_dict(state)
    assert back.capacity == 4 and len(back) == 4
    assert torch.equal(back.items.ic, store.items.ic) and torch.equal(back.items.lc, store.items.lc)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(back.sample(3, g1).lc, store.sample(3, g2).lc)  # a resumed refresh draws the same

    back.load_state_dict(None)  # a checkpoint of an empty store
    assert len(back) == 0
    with pytest.raises(TypeError, match="no feature reader"):
        ReplayStore(capacity=4).load_state_dict(state)


def test_the_motion_critic_is_a_critic():
    ic = ICConfig(encoder="cnn", image_size=(16, 16), cnn_channels=(4, 8))
    critic = MotionCritic(CriticConfig(num_queries=4, ic=ic, lc=LCConfig(dim=8, depth=1, heads=2)))
    assert isinstance(critic, Critic)  # runtime-checkable protocol: what train/ calls exists
    assert not isinstance(object(), Critic)
