"""A tiny SHIFT run's parts for the direct tests of train/ (state, hooks, checkpointing, numerics): the toy
backbone with a rank-2 LoRA, a small motion critic refreshed online, and the parts ``recipes.train.assemble``
builds. Not a test module (no ``test_`` prefix); the test files beside it import it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from shiftvdm.config import config_from_dict
from shiftvdm.data.synthetic import make_sprite_clips
from shiftvdm.recipes.train import TrainingParts, assemble
from shiftvdm.rewards.critic import CriticConfig, MotionCritic
from shiftvdm.rewards.ic import ICConfig
from shiftvdm.rewards.lc import LCConfig
from shiftvdm.train.clips import TensorClips
from shiftvdm.train.config import TrainConfig
from shiftvdm.train.shift import collect_buffer
from support import pretrained_toy


def critic_config() -> CriticConfig:
    return CriticConfig(num_queries=16, ic=ICConfig(encoder="cnn", image_size=(16, 16), cnn_channels=(8, 16)),
                        lc=LCConfig(dim=16, depth=1, heads=2))


def tiny_clips(n: int = 4) -> TensorClips:
    data = make_sprite_clips(n, 4, 16, seed=3, num_sprites=1, sprite_size=(3.0, 4.0), speed=(1.5, 2.5),
                             background="flat")
    return TensorClips(torch.from_numpy(data.videos))


def make_cfg(out: Path, **sections: Any) -> TrainConfig:
    data: dict[str, Any] = {
        "mode": "shift",
        "lora": {"enabled": True, "rank": 2, "alpha": 2},
        "optim": {"lr": 1e-3, "warmup_steps": 0},
        "loss": {"lambda_aw": 0.5},
        "rollout": {"group_size": 2, "buffer_size": 4, "passes_per_buffer": 2, "batch_size": 2,
                    "rollout_batch_size": 2, "num_inference_steps": 2},
        "critic": {"path": "in-memory", "refresh": True, "d_to_g": 0.5, "train": {"lr": 1e-3}},
        "run": {"out_dir": str(out), "seed": 7, "max_steps": 6, "checkpoint_every": 0, "keep_checkpoints": 3,
                "progress": False, "log_grad_norm_every": 0},
    }
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values} if isinstance(values, dict) else values
    return config_from_dict(TrainConfig, data)


def make_parts(cfg: TrainConfig, *, seed: int = 0, **assemble_kw: Any):
    """(backbone, critic, parts) for ``cfg``: the toy backbone (LoRA when ``cfg.lora.enabled``), a fresh critic."""
    torch.manual_seed(seed)
    backbone = pretrained_toy(norm_num_groups=8, num_inference_steps=2)
    if cfg.lora.enabled:
        backbone.add_lora(cfg.lora.rank, cfg.lora.alpha)
    critic = MotionCritic(critic_config())
    return backbone, critic, assemble(cfg, backbone, critic, **assemble_kw)


def fill_buffer(backbone, critic, cfg: TrainConfig, parts: TrainingParts, clips: TensorClips | None = None,
                indices: list[int] | None = None):
    """A scored rollout buffer (with the refresh's features) put into ``parts.state``."""
    clips = clips if clips is not None else tiny_clips()
    buffer = collect_buffer(backbone, critic, clips, indices or [0, 1], cfg, parts.state, parts.dist.device)
    parts.state.buffer = buffer
    return buffer


def train_one_step(backbone, parts: TrainingParts, cfg: TrainConfig) -> dict[str, float]:
    """One generator step on the state's buffer (its first minibatch), counters advanced as the loop does."""
    from shiftvdm.train.shift import shift_step

    state = parts.state
    batch = state.buffer.batch(torch.arange(min(2, len(state.buffer))))
    metrics = shift_step(backbone, batch, cfg, state, parts.engine, parts.dist)
    state.counters.step += 1
    state.counters.batch_index += 1
    return metrics


__all__ = ["critic_config", "fill_buffer", "make_cfg", "make_parts", "tiny_clips", "train_one_step"]


def write_run_inputs(root: Path, base: Path) -> dict[str, Path]:
    """What a command-line run of the toy needs under ``root``: 8 sprite clips (npy) and a small saved critic;
    with ``base`` (a saved toy model) as the returned dict the CLI tests write their configs from."""
    from shiftvdm.data.synthetic import write_synthetic_dataset

    sprites = root / "sprites"
    write_synthetic_dataset(sprites, 8, 4, 16, seed=1, format="npy", num_sprites=1, sprite_size=(3.0, 4.0),
                            speed=(1.5, 2.5), background="flat", overwrite=True)
    MotionCritic(CriticConfig(num_queries=8, ic=ICConfig(encoder="cnn", image_size=(16, 16), cnn_channels=(8, 8)),
                              lc=LCConfig(dim=16, depth=1, heads=2))).save(root / "critic")
    return {"root": root, "sprites": sprites, "base": base, "critic": root / "critic"}
