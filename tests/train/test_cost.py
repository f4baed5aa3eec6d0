"""The cost model (train/cost.py) against counted denoiser calls, the measured time split in the logs, and the
refresh with recomputed fake features (critic.refresh_features=recompute) against the stored ones."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from support import pretrained_toy
from tiny_run import critic_config, make_cfg, make_parts, tiny_clips

from shiftvdm.backbone.svd import SVDBackbone, SVDConfig
from shiftvdm.backbone.tiny import tiny_svd_components
from shiftvdm.backbone.wan import WanConfig
from shiftvdm.recipes.train import assemble, resolve_train_config, startup_cost
from shiftvdm.rewards.critic import MotionCritic
from shiftvdm.train.cost import BACKWARD_FORWARDS, cfg_factor, cost_model
from shiftvdm.train.shift import collect_buffer, refresh_critic, shift_step, train


@pytest.fixture(autouse=True)
def one_thread():
    """Toy-sized kernels: one thread is faster than several fighting over shared cores (as the golden losses)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_svd() -> SVDBackbone:
    """The tiny pixel-space SVD of the golden losses (CFG on: its guidance ramp goes 1 → 3)."""
    torch.manual_seed(0)
    model = SVDBackbone(**tiny_svd_components(seed=0, pixel_space=True, num_frames=4, patch_size=2),
                        config=SVDConfig(num_inference_steps=2))
    model.add_lora(2, 2)
    return model


def toy():
    torch.manual_seed(0)
    model = pretrained_toy(norm_num_groups=8, num_inference_steps=2)
    model.add_lora(2, 2)
    return model


class Counter:
    """Clips through the denoiser's forward (the first input's batch size, whatever the call's form)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.clips = self.calls = 0
        self.handle = module.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        first = args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor))
        self.clips += int(first.shape[0])
        self.calls += 1

    def take(self) -> int:
        clips, self.clips = self.clips, 0
        return clips


@pytest.mark.parametrize("name", ["svd", "toy"])
def test_cost_model_counts_equal_counted_denoiser_calls(name, tmp_path):
    cfg = make_cfg(tmp_path, rollout={"rollout_batch_size": 1, "buffer_size": 2}, critic={"refresh": False})
    backbone = tiny_svd() if name == "svd" else toy()
    critic = MotionCritic(critic_config())
    parts = assemble(cfg, backbone, critic)
    model = startup_cost(cfg, backbone, world_size=1)
    assert model.cfg_factor == (2 if name == "svd" else 1)
    counter = Counter(backbone.denoiser)
    decodes = []
    decode = backbone.decode
    backbone.decode = lambda lat: decodes.append(len(lat)) or decode(lat)
    indices = list(range(model.buffer_share))
    buffer = collect_buffer(backbone, critic, tiny_clips(), indices, cfg, parts.state, parts.dist.device)
    assert counter.take() == model.rollout_forwards_per_buffer == 2 * 2 * 2 * model.cfg_factor  # n · P · S · CFG
    assert sum(decodes) == model.decodes_per_buffer
    shift_step(backbone, buffer.batch(torch.arange(cfg.rollout.batch_size)), cfg, parts.state, parts.engine,
               parts.dist)
    assert counter.take() == model.training_forwards_per_step == (1 + 2) * 2
    assert model.steps_per_buffer == 2 * 1  # passes × ⌈n / B⌉
    assert model.fe_per_step == pytest.approx(6 * (1 + BACKWARD_FORWARDS) + model.rollout_forwards_per_buffer / 2)
    counter.handle.remove()


def test_cost_model_ratios_and_sft():
    wan = WanConfig(layout="ti2v", guidance_scale=5.0)
    assert cfg_factor(wan) == 2 and cfg_factor(WanConfig(layout="ti2v", guidance_scale=1.0)) == 1
    cfg = resolve_train_config("shift", "svd_shift_davis", ["critic.path=x"])
    svd = SVDConfig(**{k: v for k, v in cfg.backbone.options.items()})
    m = cost_model(cfg, svd, 64)  # the authors' 64 ranks: 10 conditionings per rank, 20 G-steps per buffer
    assert (m.buffer_share, m.steps_per_buffer, m.fb_cost) == (10, 20, 4.0)  # gradient checkpointing: 1 + 2 + 1
    assert m.rollout_forwards_per_buffer == 10 * 8 * 25 * 2
    assert m.ratio_per_step == pytest.approx((9 * 5 * 4 + 4000 / 20) / (5 * 4))
    assert m.ratio_per_run == pytest.approx(m.ratio_per_step)  # the same step count by default
    sft = resolve_train_config("sft", "svd_sft_davis", [])
    assert cost_model(sft, svd, 64).ratio_per_step == 1.0
    assert "predicted SHIFT / SFT" in m.table()


def test_run_logs_the_measured_split(tmp_path):
    cfg = make_cfg(tmp_path, run={"max_steps": 4})
    backbone, _, parts = make_parts(cfg)
    train(cfg, backbone, tiny_clips(), parts.state, parts.engine, parts.dist, parts.hooks)
    records = [json.loads(line) for line in (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if "time/training" in r][-1]
    timers = parts.state.counters.timers
    assert last["time/rollouts"] == pytest.approx(timers["rollout"] + timers["decode"])
    assert last["time/rewards"] == pytest.approx(timers["reward"]) and last["time/rewards"] > 0
    assert last["time/training"] > 0 and "time/refresh" in last


@pytest.mark.parametrize("name", ["toy", "svd"])
def test_refresh_with_recomputed_fake_features_makes_the_same_update(name, tmp_path):
    stored_cfg = make_cfg(tmp_path / "a")
    recompute_cfg = make_cfg(tmp_path / "b", critic={"refresh_features": "recompute"})
    backbone = tiny_svd() if name == "svd" else toy()
    critics = [MotionCritic(critic_config()) for _ in range(2)]

    results = []
    for cfg, critic in zip((stored_cfg, recompute_cfg), critics):
        parts = assemble(cfg, backbone, critic)
        buffer = collect_buffer(backbone, critic, tiny_clips(), [0, 2], cfg, parts.state, parts.dist.device)
        metrics = refresh_critic(parts.state.critic_trainer, buffer, 3, cfg, parts.state, parts.dist, backbone)
        results.append((buffer, metrics, copy.deepcopy(critic.state_dict())))
    (stored, m_stored, w_stored), (recomputed, m_recomputed, w_recomputed) = results
    assert stored.features_fake is not None and recomputed.features_fake is None  # only the real clips' kept
    assert recomputed.features_real.ic.shape == stored.features_real.ic.shape
    for key in ("r_fake", "r_real"):
        torch.testing.assert_close(recomputed.rewards[key], stored.rewards[key], rtol=0, atol=0)
    assert m_recomputed.keys() == m_stored.keys()
    for key, value in m_stored.items():
        assert m_recomputed[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    for key, value in w_stored.items():
        torch.testing.assert_close(w_recomputed[key], value, rtol=1e-5, atol=1e-6)
    fresh = MotionCritic(critic_config()).state_dict()
    assert any(not torch.equal(w_stored[k], v) for k, v in fresh.items())  # the refresh did move the weights


def test_memory_plan_keeps_only_the_real_clips_features_when_the_refresh_recomputes(tmp_path):
    from shiftvdm.train.memory import ModelSizes, memory_plan

    sizes = ModelSizes(frozen_bytes=1000, trainable_params=10, latent_numel=4 * 4 * 16 * 16)
    plans = {mode: memory_plan(make_cfg(tmp_path, critic={"refresh_features": mode}), sizes, 1, critic_config(),
                               device_capacity=None, host_capacity=None, local_ranks=1)
             for mode in ("stored", "recompute")}
    feature_rows = {mode: sum(r.bytes for r in p.rows if r.where == "host" and "refresh" in r.name)
                    for mode, p in plans.items()}
    # 4 conditionings, P = 2: stored keeps 4 · (1 + 2) clips' features, recompute the 4 real clips'
    assert feature_rows["stored"] == 3 * feature_rows["recompute"] > 0
    assert any(r.where == "device" and r.name.startswith("refresh: fakes") for r in plans["recompute"].rows)
    assert not any(r.name.startswith("refresh: fakes") for r in plans["stored"].rows)
