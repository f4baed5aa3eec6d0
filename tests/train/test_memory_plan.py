"""The per-rank memory plan: arithmetic on a hand-computed case, and the refusal naming the setting."""

from __future__ import annotations

import pytest

from shiftvdm.backbone import LatentLayout, latent_layout
from shiftvdm.config import config_from_dict
from shiftvdm.errors import ConfigError
from shiftvdm.rewards import CriticConfig, ICConfig, LCConfig
from shiftvdm.train.config import TrainConfig
from shiftvdm.train.memory import GIB, ModelSizes, buffer_share, latent_numel, memory_plan


def tiny_case(refresh: bool = True, feature_dtype: str = "float32"):
    cfg = config_from_dict(TrainConfig, {
        "data": {"num_frames": 5, "height": 16, "width": 16},
        "rollout": {"group_size": 2, "buffer_size": 6, "batch_size": 2, "rollout_batch_size": 1},
        "critic": {"refresh": refresh}, "loss": {"lambda_aw": 0.1}})
    critic = CriticConfig(num_queries=4, corr_scales=(1,), corr_radius=1, feature_dtype=feature_dtype,
                          ic=ICConfig(dim=8, depth=1, heads=2, image_size=(16, 16)), lc=LCConfig(dim=8, depth=1, heads=2))
    return cfg, critic, ModelSizes(frozen_bytes=1000, trainable_params=10, latent_numel=100, cond_bytes=8)


def rows(plan):
    return {r.name.split(" (")[0]: r.bytes for r in plan.rows}


def test_plan_arithmetic_by_hand():
    cfg, critic, sizes = tiny_case()
    plan = memory_plan(cfg, sizes, world_size=2, critic_config=critic, device_capacity=10 * GIB, host_capacity=10 * GIB,
                       local_ranks=2)
    r = rows(plan)
    # buffer 6 over 2 ranks × batch 2 -> padded to 8, 4 conditionings per rank, 4·(1+2) = 12 clips
    assert buffer_share(cfg, 2) == 4
    assert r["frozen model"] == 1000
    assert r["trainable weights"] == r["their gradients"] == 40 and r["AdamW moments"] == 80
    assert r["buffer: real latents"] == 4 * 4 * 100 and r["buffer: rollout latents"] == 4 * 8 * 100
    assert r["buffer: conditionings"] == 4 * 8
    # IC maps: 12 clips × 4 pairs × 2 channels × 16 × 16 × 4 bytes; LC: 12 × 4 queries × 5 frames × (7 + 9) × 4
    assert r["buffer: IC maps for the refresh"] == 12 * 4 * 2 * 256 * 4
    assert r["buffer: LC features for the refresh"] == 12 * 4 * 5 * 16 * 4
    # scoring working set of one chunk (1 conditioning: 1 + 2 clips), float32 pixels
    assert r["scoring: decoded clips of one chunk"] == 4 * 3 * 5 * 3 * 256
    host = sum(b for k, b in r.items() if k.startswith("buffer:"))
    assert plan.total("host") == host and r["buffer in every checkpoint"] == host
    half = rows(memory_plan(cfg, sizes, 2, tiny_case(feature_dtype="float16")[1]))
    assert half["buffer: IC maps for the refresh"] * 2 == r["buffer: IC maps for the refresh"]
    off = rows(memory_plan(cfg.__class__(**{**cfg.__dict__, "critic": cfg.critic.__class__(refresh=False)}),
                           sizes, 2, critic))
    assert "buffer: IC maps for the refresh" not in off  # no refresh reads them: not kept
    assert "memory plan per rank (2 ranks)" in plan.table()


def test_plan_refuses_with_the_setting_to_change():
    cfg, critic, sizes = tiny_case()
    plan = memory_plan(cfg, sizes, 2, critic, device_capacity=10 * GIB, host_capacity=60_000, local_ranks=2)
    with pytest.raises(ConfigError, match=r"host needs .* for 2 ranks .*buffer: IC maps for the refresh .*"
                                          r"critic.feature_dtype=float16"):
        plan.check()
    memory_plan(cfg, sizes, 2, critic, device_capacity=10 * GIB, host_capacity=10 * GIB, local_ranks=2).check()
    small_device = memory_plan(cfg, sizes, 2, critic, device_capacity=500, host_capacity=10 * GIB)
    with pytest.raises(ConfigError, match="device needs"):
        small_device.check()


def test_latent_sizes_of_the_shipped_backbones():
    assert latent_numel("svd", {}, 24, 320, 576) == 4 * 24 * 40 * 72
    assert latent_numel("wan", {"layout": "ti2v"}, 49, 480, 832) == 48 * 13 * 30 * 52
    assert latent_numel("toy", {}, 8, 16, 16) == 3 * 8 * 16 * 16


def test_latent_sizes_come_from_each_backbones_layout():
    """train/memory.py reads the family module's ``latent_layout`` (no name switch of its own)."""
    assert latent_layout("wan", {"layout": "i2v_a14b"}) == LatentLayout(channels=16, spatial=8, temporal=4)
    assert latent_numel("wan", {"layout": "i2v_a14b"}, 81, 480, 832) == 16 * 21 * 60 * 104
    assert latent_numel("wan", {}, 49, 480, 832) == 48 * 13 * 30 * 52  # no layout given: TI2V, the 5 B preset's
    assert latent_layout("svd", {}).shape(14, 320, 576) == (4, 14, 40, 72)
