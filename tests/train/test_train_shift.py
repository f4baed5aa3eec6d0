"""The SHIFT trainer (Algorithm 1) on the tiny CPU backbone and the real motion critic.

What a user relies on: the hybrid loss is Eq. 12, draws are shared under match_noise, each rollout is
reused exactly passes_per_buffer times, the generator and discriminator never update each other,
a killed run resumes bit for bit, and non-finite steps are skipped then stop the run cleanly.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch

from shiftvdm.data.synthetic import make_sprite_clips
from shiftvdm.errors import CheckpointError, TrainingError
from shiftvdm.rewards.critic import MotionCritic
from shiftvdm.train import shift as shift_mod
from shiftvdm.train.buffer import RolloutBuffer
from shiftvdm.train.clips import TensorClips
from shiftvdm.train.config import TrainConfig
from shiftvdm.recipes.train import TrainingParts, assemble
from shiftvdm.train.checkpointing import resume as resume_run
from shiftvdm.train.shift import chunk_indices, shift_step, train
from support import pretrained_toy
import tiny_run
from tiny_run import critic_config

@pytest.fixture(scope="module")
def clips() -> TensorClips:
    data = make_sprite_clips(12, 4, 16, seed=3, num_sprites=1, sprite_size=(3.0, 4.0), speed=(1.5, 2.5),
                             background="flat")
    return TensorClips(torch.from_numpy(data.videos))


def make_cfg(out: Path, **sections) -> TrainConfig:
    """tiny_run's SHIFT config, checkpointed and with the split gradient norms logged at every step."""
    return tiny_run.make_cfg(out, **{**sections, "run": {"checkpoint_every": 1, "log_grad_norm_every": 1,
                                                         **sections.get("run", {})}})


def make_parts(cfg: TrainConfig, clips: TensorClips):
    # zero-initialised layers filled, as after pre-training: otherwise every LoRA gradient is exactly zero
    backbone = pretrained_toy(norm_num_groups=8, num_inference_steps=3)
    if cfg.lora.enabled:
        backbone.add_lora(cfg.lora.rank, cfg.lora.alpha)
    critic = MotionCritic(critic_config())
    return backbone, critic, assemble(cfg, backbone, critic)


def weights(rt: TrainingParts) -> list[torch.Tensor]:
    return [p.detach().clone() for p in rt.state.params]


def collect(backbone, critic, clips, indices, cfg, rt: TrainingParts):
    return shift_mod.collect_buffer(backbone, critic, clips, indices, cfg, rt.state, rt.dist.device)


def step(backbone, batch, cfg, rt: TrainingParts):
    return shift_step(backbone, batch, cfg, rt.state, rt.engine, rt.dist)


def run_train(cfg, backbone, clips, rt: TrainingParts):
    return train(cfg, backbone, clips, rt.state, rt.engine, rt.dist, rt.hooks)


def use_sgd(rt: TrainingParts) -> None:
    """θ' = θ − ∇J: the update is the gradient itself."""
    rt.state.optimizer = torch.optim.SGD(rt.state.params, lr=1.0)
    rt.state.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(rt.state.optimizer, lambda s: 1.0)


def test_chunks_are_disjoint_across_processes_and_cover_the_data():
    cfg = make_cfg(Path("unused"), rollout={"buffer_size": 8, "batch_size": 2})
    seen = []
    for chunk in range(2):
        shares = [chunk_indices(16, cfg, epoch=0, chunk=chunk, rank=r, world=2) for r in range(2)]
        assert not set(shares[0]) & set(shares[1])
        assert len(shares[0]) == len(shares[1]) == 4
        seen += shares[0] + shares[1]
    assert sorted(seen) == list(range(16))  # one epoch = every clip exactly once


def test_hybrid_loss_and_gradient_match_a_hand_computation(tmp_path, clips):
    cfg = make_cfg(tmp_path, optim={"lr": 1.0, "weight_decay": 0.0, "max_grad_norm": 1e9}, loss={"lambda_aw": 0.3})
    backbone, critic, rt = make_parts(cfg, clips)
    use_sgd(rt)  # θ' = θ − ∇J exposes the gradient
    buffer = collect(backbone, critic, clips, [0, 1], cfg, rt)
    buffer.adv_fake = torch.tensor([[1.5, -1.5], [-0.5, 0.5]])  # a fresh critic's rewards are ~1e-4: set Ã
    batch = buffer.batch(torch.tensor([0, 1]))
    before = weights(rt)

    # J by hand, with the same draw the step will use (the "noise" stream at step 0)
    draw = backbone.draw_noise(batch.x, rt.state.generator("noise", 0))
    L_real = backbone.denoising_loss(batch.x, batch.cond, draw)
    L_fake = torch.stack([backbone.denoising_loss(batch.x_fake[:, p], batch.cond, draw) for p in range(2)], 1)
    J = L_real.mean() + 0.3 * (batch.adv_fake * L_fake).mean()
    grads = torch.autograd.grad(J, rt.state.params)

    assert all(g.abs().sum() > 0 for g in grads[1::2])  # every lora_B tensor gets a gradient
    metrics = step(backbone, batch, cfg, rt)
    assert metrics["loss/real"] == pytest.approx(L_real.mean().item(), rel=1e-6)
    assert metrics["loss/total"] == pytest.approx(J.item(), rel=1e-5)
    for b, a, g in zip(before, weights(rt), grads):
        torch.testing.assert_close(b - a, g, rtol=1e-4, atol=1e-7)
    assert metrics["grad_norm/aw"] > 0 and metrics["grad_norm/sft"] > 0


def test_match_noise_shares_one_draw(tmp_path, clips, monkeypatch):
    for match in (True, False):
        cfg = make_cfg(tmp_path / str(match), loss={"match_noise": match})
        backbone, critic, rt = make_parts(cfg, clips)
        buffer = collect(backbone, critic, clips, [0, 1], cfg, rt)
        buffer.adv_fake = torch.ones_like(buffer.adv_fake)  # every fake term runs
        used = []
        real_loss = backbone.denoising_loss
        monkeypatch.setattr(backbone, "denoising_loss", lambda x, c, d: used.append(d) or real_loss(x, c, d))
        step(backbone, buffer.batch(torch.tensor([0, 1])), cfg, rt)
        assert len(used) == 3  # real + P = 2 fakes
        same = [u is used[0] for u in used[1:]]
        assert all(same) if match else not any(same)


def test_zero_advantages_make_shift_equal_sft(tmp_path, clips):
    """Ã = 0 adds no gradient. All zero: the SHIFT step is the SFT step. Inside a rollout that does run (so
    not the skip of all-zero rollouts), a zero-advantage clip's fake may be anything: the update is the same;
    the same swap under a non-zero advantage changes it (the check can fail)."""
    def sgd_step(name: str, adv: torch.Tensor | None, swap_fake: bool = False) -> list[torch.Tensor]:
        cfg = make_cfg(tmp_path / name, loss={"lambda_aw": 0.0 if adv is None else 0.5},
                       optim={"weight_decay": 0.0, "max_grad_norm": 1e9})
        backbone, critic, rt = make_parts(cfg, clips)
        use_sgd(rt)
        buffer = collect(backbone, critic, clips, [0, 1], cfg, rt)
        if adv is not None:
            buffer.adv_fake = adv
            if swap_fake:  # clip 0's first rollout replaced by an unrelated latent
                buffer.x_fake[0, 0] = torch.randn(buffer.x_fake[0, 0].shape, generator=torch.Generator().manual_seed(1))
        assert step(backbone, buffer.batch(torch.tensor([0, 1])), cfg, rt) is not None
        return weights(rt)

    sft = sgd_step("sft", None)
    for a, b in zip(sft, sgd_step("zeros", torch.zeros(2, 2))):
        assert torch.equal(a, b)
    mixed = torch.tensor([[0.0, 1.0], [0.7, -0.4]])  # rollout 0 runs (clip 1), but clip 0 has Ã = 0 there
    kept, swapped = sgd_step("mixed", mixed), sgd_step("mixed-swap", mixed, swap_fake=True)
    for a, b in zip(kept, swapped):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    assert any(not torch.equal(a, b) for a, b in zip(kept, sft))  # the non-zero terms do move the weights
    live = torch.tensor([[0.9, 1.0], [0.7, -0.4]])
    moved = [a - b for a, b in zip(sgd_step("live", live), sgd_step("live-swap", live, swap_fake=True))]
    assert max(d.abs().max().item() for d in moved) > 1e-5  # Ã ≠ 0: the same swap changes the update


def test_rollouts_are_reused_exactly_passes_per_buffer_times(tmp_path, clips, monkeypatch):
    cfg = make_cfg(tmp_path, rollout={"passes_per_buffer": 3}, run={"max_steps": 12})
    backbone, critic, rt = make_parts(cfg, clips)
    uses: dict[int, dict[int, int]] = {}
    buffers = []
    original = RolloutBuffer.batch

    def counting_batch(self, index):
        if self not in buffers:
            buffers.append(self)
        counts = uses.setdefault(buffers.index(self), {})
        for i in index.tolist():
            counts[i] = counts.get(i, 0) + 1
        return original(self, index)

    monkeypatch.setattr(RolloutBuffer, "batch", counting_batch)
    calls = []
    real_sample = backbone.sample
    monkeypatch.setattr(backbone, "sample", lambda *a, **k: calls.append(1) or real_sample(*a, **k))
    run_train(cfg, backbone, clips, rt)
    assert len(buffers) == 2  # 12 steps = 2 buffers × 3 passes × 2 minibatches
    for counts in uses.values():
        assert counts == {0: 3, 1: 3, 2: 3, 3: 3}
    assert len(calls) == 2 * 2  # rollouts only when a buffer is made (2 sampler calls of 2 conditionings)


def test_generator_and_discriminator_never_update_each_other(tmp_path, clips, monkeypatch):
    cfg = make_cfg(tmp_path, run={"max_steps": 4})
    backbone, critic, rt = make_parts(cfg, clips)
    d_before = [p.detach().clone() for p in critic.parameters()]
    frozen_before = {k: v.clone() for k, v in critic.state_dict().items() if "ema" not in k}
    real_refresh = shift_mod.refresh_critic
    seen = {}

    def watched_refresh(trainer, buffer, n, cfg_, state_, dist_, *rest):  # rest: the backbone (recompute mode)
        seen["d_after_g"] = [p.detach().clone() for p in trainer.critic.parameters()]
        g = weights(rt)
        out = real_refresh(trainer, buffer, n, cfg_, state_, dist_, *rest)
        seen["g_changed_by_d"] = any(not torch.equal(a, b) for a, b in zip(g, weights(rt)))
        return out

    monkeypatch.setattr(shift_mod, "refresh_critic", watched_refresh)
    g_before = weights(rt)
    run_train(cfg, backbone, clips, rt)
    assert all(torch.equal(a, b) for a, b in zip(d_before, seen["d_after_g"]))  # G steps left D untouched
    assert not seen["g_changed_by_d"]  # D steps left G untouched
    assert any(not torch.equal(a, b) for a, b in zip(g_before, weights(rt)))
    changed = [k for k, v in critic.state_dict().items() if k in frozen_before and not torch.equal(v, frozen_before[k])]
    assert changed and all(k.startswith(("ic.", "lc.")) for k in changed)  # only the discriminator heads train
    base = [p for n, p in backbone.denoiser.named_parameters() if "lora_" not in n]
    assert not any(p.requires_grad for p in base)


def run_to(cfg: TrainConfig, clips, stop_at: int | None = None, resume: bool = False):
    backbone, critic, rt = make_parts(cfg, clips)
    if resume:
        assert resume_run(rt.checkpointer, rt.state)

    def killer(_b, step):
        if stop_at is not None and step == stop_at:
            raise KeyboardInterrupt  # dies before this step's checkpoint is written
        return {}

    cfg.run.eval_every = 1
    rt.hooks.evaluate = killer
    try:
        run_train(cfg, backbone, clips, rt)
    except KeyboardInterrupt:
        pass
    return rt


REGULARISED = {"train": {"lr": 1e-3, "r1_gamma": 1.0, "label_smoothing": 0.1, "replay_size": 6}}


def test_kill_and_resume_is_bit_exact(tmp_path, clips):
    # with the demo's discriminator regularisers, including the replay of older fakes
    run = {"max_steps": 8}
    straight = run_to(make_cfg(tmp_path / "a", critic=REGULARISED, run=run), clips)
    cfg_b = make_cfg(tmp_path / "b", critic=REGULARISED, run=run)
    run_to(cfg_b, clips, stop_at=7)  # killed mid-buffer; step 6's checkpoint holds a refreshed D and its replay
    assert (tmp_path / "b" / "checkpoints" / "step-0000006").is_dir()
    assert not (tmp_path / "b" / "checkpoints" / "step-0000007").exists()
    saved = torch.load(tmp_path / "b" / "checkpoints" / "step-0000006" / "trainer_state.pt", weights_only=True)
    assert saved["critic"]["replay"] is not None and saved["buffer"] is not None
    resumed = run_to(make_cfg(tmp_path / "b", critic=REGULARISED, run=run), clips, resume=True)
    assert resumed.state.counters.step == straight.state.counters.step == 8
    for a, b in zip(weights(straight), weights(resumed)):
        assert torch.equal(a, b)
    for (ka, va), (kb, vb) in zip(straight.state.critic.state_dict().items(), resumed.state.critic.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka  # discriminator and its EMA
    assert straight.state.counters.d_steps == resumed.state.counters.d_steps > 0
    sa, sb = straight.state.optimizer.state_dict()["state"], resumed.state.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"]) for k in sa)


def test_resume_without_the_buffer_in_the_checkpoint_is_bit_exact(tmp_path, clips):
    # run.checkpoint_buffer=false: the checkpoint keeps the weights and RNG the buffer was rolled out with, and the
    # resume rolls it out again from them (with the regularisers and replay of the test above)
    run = {"max_steps": 8, "checkpoint_buffer": False}
    straight = run_to(make_cfg(tmp_path / "a", critic=REGULARISED, run=run), clips)
    run_to(make_cfg(tmp_path / "b", critic=REGULARISED, run=run), clips, stop_at=7)  # mid-buffer 2
    saved = torch.load(tmp_path / "b" / "checkpoints" / "step-0000006" / "trainer_state.pt", weights_only=True)
    assert saved["buffer"] is None and saved["buffer_origin"]["params"] is not None
    resumed = run_to(make_cfg(tmp_path / "b", critic=REGULARISED, run=run), clips, resume=True)
    assert resumed.state.counters.step == straight.state.counters.step == 8
    for a, b in zip(weights(straight), weights(resumed)):
        assert torch.equal(a, b)
    for (ka, va), (kb, vb) in zip(straight.state.critic.state_dict().items(), resumed.state.critic.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    logged = [l for l in (tmp_path / "b" / "logs" / "buffers-rank0.jsonl").read_text().splitlines()]
    assert len(logged) == 2  # the re-rolled buffer is not recorded twice


def test_resume_refuses_a_changed_run(tmp_path, clips):
    run_to(make_cfg(tmp_path, run={"max_steps": 2}), clips)
    backbone, critic, rt = make_parts(make_cfg(tmp_path, loss={"lambda_aw": 0.9}), clips)
    with pytest.raises(CheckpointError, match="loss.lambda_aw"):
        resume_run(rt.checkpointer, rt.state)


def test_resume_refuses_a_changed_cosine_length(tmp_path, clips):
    cosine = {"schedule": "cosine", "lr": 1e-3, "warmup_steps": 0}
    run_to(make_cfg(tmp_path, optim=cosine, run={"max_steps": 2}), clips)
    backbone, critic, rt = make_parts(make_cfg(tmp_path, optim=cosine, run={"max_steps": 4}), clips)
    with pytest.raises(CheckpointError, match=r"run.max_steps was 2, now 4; the cosine"):
        resume_run(rt.checkpointer, rt.state)
    backbone, critic, rt = make_parts(make_cfg(tmp_path, run={"max_steps": 4}), clips)  # constant: may extend
    with pytest.raises(CheckpointError, match="optim.schedule"):  # (the schedule itself may not change)
        resume_run(rt.checkpointer, rt.state)


def test_interrupted_checkpoint_write_keeps_the_previous_one(tmp_path, clips, monkeypatch):
    rt = run_to(make_cfg(tmp_path, run={"max_steps": 2}), clips)
    good = sorted((tmp_path / "checkpoints").iterdir())
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    rt.state.counters.step = 3
    with pytest.raises(OSError, match="disk full"):
        rt.hooks.save_checkpoint()
    assert sorted((tmp_path / "checkpoints").iterdir()) == good  # no partial folder, old ones intact
    monkeypatch.undo()
    fresh = make_parts(rt.hooks.cfg, clips)[2]
    assert resume_run(fresh.checkpointer, fresh.state)


def test_nonfinite_steps_are_skipped_then_stop_the_run(tmp_path, clips, monkeypatch):
    cfg = make_cfg(tmp_path, loss={"lambda_aw": 0.0}, critic={"refresh": False},
                   run={"max_steps": 8, "max_nonfinite_steps": 2})
    backbone, critic, rt = make_parts(cfg, clips)
    real_loss = backbone.denoising_loss
    monkeypatch.setattr(backbone, "denoising_loss",
                        lambda x, c, d: real_loss(x, c, d) * (float("nan") if rt.state.counters.step >= 3 else 1.0))
    with pytest.raises(TrainingError, match="non-finite"):
        run_train(cfg, backbone, clips, rt)
    assert rt.state.counters.nonfinite_steps == 3
    last = sorted((tmp_path / "checkpoints").iterdir())[-1]
    assert last.name == "step-0000005"  # checkpoints of skipped steps hold the last good weights
    state = torch.load(last / "trainer_state.pt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in state["params"].values())


def test_outputs_of_a_finished_run(tmp_path, clips):
    rt = run_to(make_cfg(tmp_path, run={"max_steps": 4}), clips)
    for name in ("config.yaml", "lora.safetensors", "summary.json", "logs/metrics.jsonl", "critic",
                 "logs/buffers-rank0.jsonl", "logs/final-rank0.json"):
        assert (tmp_path / name).exists(), name
    lines = (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()
    keys = set().union(*[set(__import__("json").loads(l)) for l in lines])
    for k in ("loss/real", "loss/aw", "reward/fake", "reward/real", "adv/abs_mean", "disc/loss", "lambda_aw",
              "grad_norm/sft", "grad_norm/aw", "lr"):
        assert k in keys, k
    assert rt.state.counters.timers["generator"] > 0 and rt.state.counters.timers["rollout"] > 0
    shutil.rmtree(tmp_path / "checkpoints")
    copy.deepcopy(rt.state.counters)


@pytest.mark.parametrize("critic_decay, train_decay, expected", [(0.5, None, 0.5), (0.9, None, 0.9), (0.5, 0.0, 0.0)])
def test_critic_ema_decay_takes_effect(clips, critic_decay, train_decay, expected):
    """CriticConfig.ema_decay is the EMA rate unless the stage sets critic.train.ema_decay."""
    from dataclasses import replace

    from shiftvdm.rewards.critic_training import CriticTrainConfig, CriticTrainer

    critic = MotionCritic(replace(critic_config(), ema_decay=critic_decay))
    real, fake = critic.features(clips.load([0, 1])[0]), critic.features(clips.load([2, 3])[0])
    before = [p.detach().clone() for p in critic.ema_ic.parameters()]
    CriticTrainer(critic, CriticTrainConfig(lr=1e-2, ema_decay=train_decay)).step(real, fake,
                                                                                  torch.Generator().manual_seed(0))
    live = [p.detach() for p in critic.ic.parameters()]
    assert any(not torch.equal(b, l) for b, l in zip(before, live))  # the step moved the live weights
    for b, l, e in zip(before, live, critic.ema_ic.parameters()):
        torch.testing.assert_close(e.detach(), b * expected + l * (1 - expected))


def test_the_algorithm_file_reaches_no_part_through_another():
    """train/shift.py takes its parts explicitly: no attribute chain deeper than two names (``state.x``,
    ``engine.step``), so nothing is reached through a service object (``rt.engine.term``, ``cfg.run.seed``)."""
    import ast

    tree = ast.parse(Path(shift_mod.__file__).read_text())
    deep = []
    for node in ast.walk(tree):
        names, inner = 1, node
        while isinstance(inner, ast.Attribute):
            names, inner = names + 1, inner.value
        if isinstance(node, ast.Attribute) and isinstance(inner, ast.Name) and names > 2:
            deep.append(f"line {node.lineno}: {ast.unparse(node)}")
    assert not deep, deep
