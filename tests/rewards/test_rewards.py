"""IC/LC discriminators, the MotionCritic reward API, the CriticTrainer's Eq. 7 steps and critic save/load."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from shiftvdm.data.synthetic import make_sprite_clips
from shiftvdm.data.video_io import to_tensor
from shiftvdm.errors import CheckpointError, DataError
from shiftvdm.rewards import (
    CriticConfig,
    CriticTrainConfig,
    CriticTrainer,
    ICConfig,
    ICDiscriminator,
    LCConfig,
    LCDiscriminator,
    MotionCritic,
    MotionFeatures,
)
from shiftvdm.rewards.critic_training import roc_auc


def small_config(**changes) -> CriticConfig:
    cfg = CriticConfig(num_queries=16, ic=ICConfig(dim=16, depth=1, heads=2, patch_size=4, image_size=(16, 16)),
                       lc=LCConfig(dim=16, depth=1, heads=2))
    return dataclasses.replace(cfg, **changes)



@pytest.fixture(scope="module")
def videos() -> torch.Tensor:
    """(4, 5, 3, 16, 16) sprite clips in [-1, 1]."""
    return to_tensor(make_sprite_clips(4, 5, 16, seed=9, sprite_size=(4.0, 7.0)).videos)


@pytest.fixture(scope="module")
def critic_and_features(videos):
    critic = MotionCritic(small_config())
    return critic, critic.features(videos)


# ----- discriminators --------------------------------------------------------------------------

@pytest.mark.parametrize("encoder", ["vit", "cnn"])
def test_ic_discriminator_shapes_and_initial_logits(encoder):
    torch.manual_seed(0)
    net = ICDiscriminator(ICConfig(encoder=encoder, dim=16, depth=1, heads=2, image_size=(16, 16),
                                   cnn_channels=(8, 16)), in_channels=2).eval()
    logits = net(torch.randn(3, 4, 2, 16, 16))
    assert logits.shape == (3,)
    assert logits.abs().max() < 0.1  # classifier starts at std 0.001: every clip near logit 0
    assert net(torch.randn(2, 4, 2, 20, 28)).shape == (2,)  # other map sizes (pos-embed resize, padding)
    with pytest.raises(DataError, match="IC input"):
        net(torch.randn(3, 4, 3, 16, 16))


def test_lc_discriminator_is_invariant_to_point_order():
    torch.manual_seed(0)
    net = LCDiscriminator(LCConfig(dim=16, depth=2, heads=2), in_dim=25).eval()
    with torch.no_grad():
        for p in net.head.parameters():
            p.normal_(0, 0.5)  # make the output depend visibly on the input
    x = torch.randn(2, 10, 6, 25)
    out = net(x)
    assert out.shape == (2,)
    torch.testing.assert_close(net(x[:, torch.randperm(10)]), out, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(net(x.flip(2)), out)  # but not to frame order
    with pytest.raises(DataError, match="LC input"):
        net(torch.randn(2, 10, 6, 24))


# ----- features and rewards --------------------------------------------------------------------

def test_features_shapes_and_determinism(critic_and_features, videos):
    critic, feats = critic_and_features
    assert feats.ic.shape == (4, 4, 2, 16, 16) and feats.lc.shape == (4, 16, 5, 25)
    again = critic.features(videos)  # default queries come from the fixed query_seed
    torch.testing.assert_close(again.lc, feats.lc, rtol=0, atol=0)
    torch.testing.assert_close(again.ic, feats.ic, rtol=0, atol=0)
    queries = critic.sample_queries(16, 16, torch.Generator().manual_seed(5))
    assert queries.shape == (16, 2) and queries.min() >= 1.0 and queries.max() <= 14.0
    shared = critic.features(videos, queries)
    per_clip = critic.features(videos, np.repeat(queries[None], 4, axis=0))
    torch.testing.assert_close(shared.lc, per_clip.lc, rtol=0, atol=0)
    with pytest.raises(DataError, match="queries must be"):
        critic.features(videos, np.zeros((3, 16, 2), np.float32))


def test_features_index_cat_and_state_roundtrip(critic_and_features):
    _, feats = critic_and_features
    parts = MotionFeatures.cat([feats.index([2, 0]), feats.index(slice(1, 2))])
    torch.testing.assert_close(parts.lc, feats.lc[[2, 0, 1]])
    assert len(parts) == 3
    back = MotionFeatures.from_state_dict(parts.state_dict())
    torch.testing.assert_close(back.ic, parts.ic)
    with pytest.raises(DataError, match="differ in size"):
        MotionFeatures.cat([feats, MotionFeatures(feats.ic[:, :2], feats.lc)])


def test_reward_is_clipped_weighted_and_uses_ema(videos):
    critic = MotionCritic(small_config(r_min=-0.5, r_max=0.5, w_ic=1.0, w_lc=0.5))
    feats = critic.features(videos)
    before = critic.reward(feats)
    with torch.no_grad():  # change the live weights only: the EMA copy still scores
        critic.ic.head.bias.fill_(5.0)
        critic.lc.head[3].bias.fill_(-5.0)
    same = critic.reward(feats)
    torch.testing.assert_close(same.r, before.r)
    critic.update_ema(decay=0.0)  # EMA <- live weights
    out = critic.reward(feats)
    assert torch.all(out.r_ic == 0.5) and torch.all(out.r_lc == -0.5)  # clipped to [r_min, r_max]
    torch.testing.assert_close(out.r, (1.0 * out.r_ic + 0.5 * out.r_lc) / 2)
    no_ema = MotionCritic(small_config(use_ema=False))
    assert no_ema.ema_ic is None and no_ema.reward(feats).r.shape == (4,)


def test_reward_from_videos_matches_features(critic_and_features, videos):
    critic, feats = critic_and_features
    torch.testing.assert_close(critic.reward(videos).r, critic.reward(feats).r)


def test_zero_weight_branch_is_skipped(videos):
    critic = MotionCritic(small_config(w_lc=0.0))
    feats = critic.features(videos)
    assert feats.lc is None and feats.ic is not None
    out = critic.reward(feats)
    assert torch.all(out.r_lc == 0) and torch.allclose(out.r, out.r_ic / 2)


def test_bad_inputs_never_give_nan_rewards(critic_and_features, videos):
    critic, feats = critic_and_features
    with pytest.raises(DataError, match="at least 2"):
        critic.features(videos[:, :1])
    broken = videos.clone()
    broken[1, 2, 0, 3, 3] = float("nan")
    with pytest.raises(DataError, match=r"videos \[1\]"):
        critic.features(broken)
    with pytest.raises(DataError, match=r"\(N, F, 3, H, W\)"):
        critic.features(videos[:, :, :2])
    constant = torch.zeros(2, 5, 3, 16, 16)
    assert torch.isfinite(critic.reward(constant).r).all()
    nan_feats = MotionFeatures(feats.ic.clone(), feats.lc.clone())
    nan_feats.lc[2, 0, 0, 0] = float("nan")
    out = critic.reward(nan_feats)
    assert torch.isfinite(out.r).all()
    assert out.r_lc[2] == critic.config.r_min  # documented: non-finite features score as most fake
    torch.testing.assert_close(out.r_lc[[0, 1, 3]], critic.reward(feats).r_lc[[0, 1, 3]])
    other = MotionCritic(small_config(include_flow=True))
    with pytest.raises(DataError, match="channels"):
        other.reward(feats)
    with pytest.raises(ValueError, match="r_min"):
        small_config(r_min=1.0, r_max=0.0)


# ----- Eq. 7 steps -----------------------------------------------------------------------------

def test_critic_step_moves_only_discriminator_weights(videos):
    critic = MotionCritic(small_config())
    real = critic.features(videos)
    fake = critic.features(videos[:, :1].expand(-1, 5, -1, -1, -1).contiguous())  # frozen clips
    snapshot = {k: v.clone() for k, v in critic.state_dict().items()}
    trainer = CriticTrainer(critic, CriticTrainConfig(lr=1e-3, ema_decay=0.5))
    metrics = trainer.step(real, fake, torch.Generator().manual_seed(0))
    for key in ("disc/loss", "disc/loss_ic", "disc/loss_lc", "disc/acc_real_ic", "disc/acc_fake_lc", "disc/grad_norm"):
        assert np.isfinite(metrics[key]), key
    assert metrics["disc/loss_ic"] == pytest.approx(2 * np.log(2), abs=0.05)  # logits start near 0
    after = critic.state_dict()
    changed = {k for k in after if not torch.equal(after[k], snapshot[k])}
    assert any(k.startswith("ic.") for k in changed) and any(k.startswith("lc.") for k in changed)
    assert any(k.startswith("ema_ic.") for k in changed)  # EMA followed
    assert all(k.split(".")[0] in {"ic", "lc", "ema_ic", "ema_lc"} for k in after)  # no extractor weights
    # EMA with decay 0.5 sits half way between the old and the new weights
    key = "ic.head.weight"
    torch.testing.assert_close(after["ema_" + key], 0.5 * snapshot["ema_" + key] + 0.5 * after[key])
    # extractors are frozen: features do not change
    torch.testing.assert_close(critic.features(videos).lc, real.lc, rtol=0, atol=0)


def test_critic_step_with_regularisers_and_bad_features(critic_and_features):
    critic, feats = critic_and_features
    critic = MotionCritic(critic.config)
    cfg = CriticTrainConfig(lr=1e-3, r1_gamma=1.0, instance_noise=0.1, label_smoothing=0.1, replay_size=6)
    trainer = CriticTrainer(critic, cfg)
    for _ in range(3):
        metrics = trainer.step(feats, feats.index([3, 2, 1, 0]), torch.Generator().manual_seed(1))
    assert metrics["disc/r1_ic"] >= 0 and metrics["disc/skipped"] == 0
    assert len(trainer.replay) == 6
    bad = MotionFeatures(feats.ic.clone(), feats.lc)
    bad.ic[0, 0, 0, 0, 0] = float("inf")
    with pytest.raises(DataError, match="fake features"):
        trainer.step(feats, bad, torch.Generator())
    with pytest.raises(ValueError, match="label_smoothing"):
        CriticTrainConfig(label_smoothing=0.7)


def test_roc_auc():
    assert roc_auc(torch.tensor([3.0, 2.0]), torch.tensor([1.0, 0.0])) == 1.0
    assert roc_auc(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 3.0])) == 0.25
    assert roc_auc(torch.tensor([1.0]), torch.tensor([1.0])) == 0.5
    assert roc_auc(torch.tensor([float("nan")]), torch.tensor([0.0])) == 0.0


# ----- save / load -----------------------------------------------------------------------------

def test_save_load_roundtrip_and_errors(critic_and_features, tmp_path):
    critic, feats = critic_and_features
    with torch.no_grad():
        critic.ema_lc.head[3].bias.fill_(0.3)  # EMA differs from the live weights
    folder = critic.save(tmp_path / "critic")
    assert sorted(p.name for p in folder.iterdir()) == ["critic.safetensors", "critic_config.json"]
    loaded = MotionCritic.load(folder)
    assert loaded.config == critic.config
    torch.testing.assert_close(loaded.reward(feats).r, critic.reward(feats).r)
    with pytest.raises(CheckpointError, match="not a critic folder"):
        MotionCritic.load(tmp_path / "nowhere")
    state = critic.state_dict()
    state.pop("lc.head.0.weight")
    with pytest.raises(CheckpointError, match="lc.head.0.weight"):
        MotionCritic(critic.config).load_state_dict(state)


# ----- neural features (SEA-RAFT + CoTracker3 tokens) ------------------------------------------

def test_neural_features_refuse_without_checkpoints():
    from shiftvdm.errors import ConfigError

    with pytest.raises(ConfigError, match=r"critic.flow_checkpoint=PATH.*critic.flow=dis critic.tracker=lk"):
        CriticConfig(flow="sea-raft")
    with pytest.raises(ConfigError, match=r"critic.tracker_checkpoint=PATH .*scaled_offline.pth"):
        CriticConfig(tracker="cotracker3")
    with pytest.raises(ConfigError, match="lc.kind=tokens reads CoTracker3"):
        CriticConfig(lc=LCConfig(kind="tokens"))
    with pytest.raises(ConfigError, match="flow_confidence=mixture needs critic.flow=sea-raft"):
        CriticConfig(flow_confidence="mixture")


def test_shipped_critic_presets_refuse_without_checkpoints():
    from shiftvdm.config import load_config
    from shiftvdm.errors import ConfigError
    from shiftvdm.recipes.train_reward import TrainRewardConfig

    for preset in ("critic_svd_davis", "critic_wan22_wisa"):
        with pytest.raises(ConfigError, match="flow_checkpoint=PATH"):
            load_config(TrainRewardConfig, preset)


def test_neural_feature_path_scores_a_tiny_clip(tmp_path, videos):
    from shiftvdm.motion.cotracker3 import CoTracker3
    from shiftvdm.motion.sea_raft import SEARAFT, SEARAFTConfig
    from shiftvdm.rewards.lc import trackformer_config

    torch.manual_seed(0)
    flow_net = SEARAFT(SEARAFTConfig(dim=32, initial_dim=16, block_dims=(16, 24, 32), pretrain="resnet18", radius=2,
                                     num_blocks=1))
    torch.save(flow_net.state_dict(), tmp_path / "sea_raft.pth")
    small = dict(latent_dim=16, corr_hidden=32, corr_dim=16, hidden=32, heads=2, time_depth=1, space_depth=1,
                 num_virtual_tracks=4, model_resolution=(32, 48))
    tracker_net = CoTracker3(**small)
    torch.save(tracker_net.state_dict(), tmp_path / "cotracker3.pth")
    cfg = CriticConfig(flow="sea-raft", flow_checkpoint=str(tmp_path / "sea_raft.pth"), tracker="cotracker3",
                       tracker_checkpoint=str(tmp_path / "cotracker3.pth"), tracker_options=small,
                       lc_token_dim=tracker_net.input_dim, num_queries=8, query_sampling="pixels",
                       residual_mode="reference", ic=ICConfig(dim=16, depth=1, heads=2, image_size=(16, 16)),
                       lc=trackformer_config(dim=16, depth=1, heads=2, num_virtual_tracks=4))
    critic = MotionCritic(cfg).prepare()
    real, fakes = videos[:2], videos[2:].reshape(2, 1, *videos.shape[1:])
    queries = np.stack([critic.sample_queries(16, 16, torch.Generator().manual_seed(i)) for i in range(2)])
    assert np.all(queries == np.round(queries)) and len(np.unique(queries[0], axis=0)) == 8  # distinct pixels
    scores = critic.score_groups(real, fakes, queries)
    assert scores.features_real.ic.shape == (2, 4, 2, 16, 16)  # (N, T-1, residual + SEA-RAFT confidence, h, w)
    assert scores.features_real.lc.shape == (2, 8, 5, tracker_net.input_dim)  # CoTracker3 update tokens
    conf = scores.features_real.ic[:, :, 1]
    assert float(conf.min()) > 0 and float(conf.max()) <= 1.0
    assert all(torch.isfinite(v).all() for v in scores.rewards.values())
    alone = critic.reward(critic.features(fakes[1], queries[1]))  # batched = one group alone
    torch.testing.assert_close(scores.rewards["r_fake"][1], alone.r, rtol=0, atol=1e-4)
