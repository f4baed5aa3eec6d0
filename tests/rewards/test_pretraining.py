"""rewards/pretraining.py: the data side of discriminator pre-training (`shiftvdm train-critic`).

What a user relies on: every generated clip is paired with its real clip (by manifest source or by name) and
an unpairable one is refused by name; the validation split is by real clip, so no real clip (nor any fake made
from it) is in both splits, and the split and the batches are the same for the same seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from shiftvdm.data.manifest import ClipEntry
from shiftvdm.errors import DataError
from shiftvdm.rewards.critic_training import pretrain_config
from shiftvdm.rewards.pretraining import (RewardDataConfig, TrainRewardConfig, pair_fakes, pick_batch, prepare_data,
                                          split_by_source)


def entry(root: Path, rel: str, source: str | None = None) -> ClipEntry:
    return ClipEntry(path=root / rel, relpath=rel, source=source)


def test_pair_fakes_by_source_or_by_name(tmp_path):
    reals = [entry(tmp_path, "real/cat.mp4"), entry(tmp_path, "real/cat_big.mp4"), entry(tmp_path, "real/dog.mp4")]
    fakes = [entry(tmp_path, "gen/a.mp4", source="real/dog.mp4"),  # the relative path
             entry(tmp_path, "gen/b.mp4", source="cat.mp4"),  # the file name
             entry(tmp_path, "gen/c.mp4", source="cat_big"),  # the stem
             entry(tmp_path, "gen/cat_big_3.mp4"),  # <real stem>_<k>: the longest stem wins
             entry(tmp_path, "gen/cat-0.mp4"),
             entry(tmp_path, "gen/dog_1.mp4")]
    assert pair_fakes(reals, fakes) == [2, 0, 1, 1, 0, 2]


def test_unpairable_fakes_are_refused_naming_them(tmp_path):
    reals = [entry(tmp_path, "real/cat.mp4"), entry(tmp_path, "other/cat.mp4")]
    with pytest.raises(DataError, match=r"gen/x.mp4 \(source 'bird.mp4': no matching real clip\)"):
        pair_fakes(reals, [entry(tmp_path, "gen/x.mp4", source="bird.mp4")])
    with pytest.raises(DataError, match=r"gen/y.mp4 \(source 'cat.mp4': several real clips match\)"):
        pair_fakes(reals, [entry(tmp_path, "gen/y.mp4", source="cat.mp4")])
    with pytest.raises(DataError, match=r"catalog.mp4 \(source None: no matching real clip\)"):
        pair_fakes(reals, [entry(tmp_path, "gen/catalog.mp4")])  # a prefix without _ or - is no match


@pytest.mark.parametrize("n, fraction, val_size", [(2, 0.5, 1), (10, 0.2, 2), (10, 0.01, 1), (5, 0.99, 4), (50, 0.1, 5)])
def test_split_by_source_is_disjoint_complete_and_sized(n, fraction, val_size):
    train, val = split_by_source(n, fraction, seed=7)
    assert not set(train) & set(val)
    assert sorted([*train, *val]) == list(range(n))
    assert len(val) == val_size and len(train) >= 1  # at least one held out, at least one trained on
    assert list(train) == sorted(train) and list(val) == sorted(val)


def test_split_by_source_is_the_same_for_the_same_seed():
    a, b = split_by_source(40, 0.25, seed=3), split_by_source(40, 0.25, seed=3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(split_by_source(40, 0.25, seed=4)[1], a[1])
    with pytest.raises(DataError, match="need at least 2 real clips"):
        split_by_source(1, 0.5, seed=0)


def test_prepare_data_keeps_every_fake_with_its_real_clip(tmp_path):
    reals = [entry(tmp_path, f"real/r{i}.mp4") for i in range(10)]
    fakes = [entry(tmp_path, f"gen/r{i}_{k}.mp4") for i in range(10) for k in range(2)]
    cfg = TrainRewardConfig(optim=pretrain_config(), seed=11,
                            data=RewardDataConfig(num_frames=4, height=16, width=16, val_fraction=0.3))
    data = prepare_data(cfg, reals, fakes)
    assert data.size == (4, 16, 16)
    assert len(data.val_real) == 3
    assert np.array_equal(data.fake_source, np.repeat(np.arange(10), 2))
    assert set(data.fake_source[data.train_fake]) <= set(data.train_real)  # no source in both splits
    assert set(data.fake_source[data.val_fake]) == set(data.val_real)
    assert len(data.train_fake) + len(data.val_fake) == 20

    noisy = TrainRewardConfig(optim=pretrain_config(), seed=11,
                              data=RewardDataConfig(num_frames=4, height=16, width=16, val_fraction=0.3,
                                                    noise_negatives=[10.0]))
    data = prepare_data(noisy, reals, fakes)  # noisy real copies are fakes 20..29, training only
    assert len(data.fake_source) == 30 and list(data.fake_source[20:]) == list(range(10))
    assert set(data.train_fake) - set(range(20)) == {20 + int(r) for r in data.train_real}
    assert all(f < 20 for f in data.val_fake)


def test_pick_batch_is_deterministic_and_picks_each_real_clips_own_fake():
    train_real = np.array([0, 2, 3, 5])
    fakes_of = {0: np.array([0, 1]), 2: np.array([4]), 3: np.array([6, 7]), 5: np.array([])}
    train_fake = np.array([0, 1, 4, 6, 7])
    reals, picks = pick_batch(4, 9, train_real, fakes_of, train_fake, 16)
    r2, p2 = pick_batch(4, 9, train_real, fakes_of, train_fake, 16)
    assert torch.equal(reals, r2) and torch.equal(picks, p2)  # same step, same seed: same batch
    assert not torch.equal(pick_batch(5, 9, train_real, fakes_of, train_fake, 16)[0], reals)  # the step counts
    assert reals.dtype == torch.long and reals.shape == picks.shape == (16,)
    assert set(reals.tolist()) == {0, 2, 3, 5}  # clip 5 (no fake of its own) among them
    for r, f in zip(reals.tolist(), picks.tolist()):
        own = fakes_of[r]
        assert f in (own.tolist() if len(own) else train_fake.tolist())  # its own fake; any train fake if none
