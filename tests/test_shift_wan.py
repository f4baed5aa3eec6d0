"""SHIFT unchanged on Wan: `shiftvdm shift` on the tiny Wan2.2-TI2V preset trains only LoRA weights and logs rewards."""

from __future__ import annotations

import json

import numpy as np
import torch
import yaml
from safetensors.torch import load_file

from shiftvdm.backbone.tiny import save_tiny_wan, tiny_video_shape
from shiftvdm.cli import main as cli
from shiftvdm.data.synthetic import write_synthetic_dataset
from shiftvdm.rewards.critic import CriticConfig, MotionCritic
from shiftvdm.rewards.ic import ICConfig
from shiftvdm.rewards.lc import LCConfig


def test_shift_on_tiny_wan_ti2v(tmp_path):
    frames, h, w = tiny_video_shape("ti2v")
    model = save_tiny_wan(tmp_path / "wan", "ti2v", seed=0)
    data = tmp_path / "data"
    write_synthetic_dataset(data, 4, frames, h, seed=2, format="npy", num_sprites=1, overwrite=True)
    critic = tmp_path / "critic"
    MotionCritic(CriticConfig(num_queries=8, ic=ICConfig(encoder="cnn", image_size=(16, 16), cnn_channels=(8, 8)),
                              ic_size=(16, 16), lc=LCConfig(dim=16, depth=1, heads=2))).save(critic)
    run = tmp_path / "run"
    cfg = tmp_path / "wan.yaml"
    cfg.write_text(yaml.safe_dump({
        "base": "wan22_ti2v5b_shift_wisa",
        "backbone": {"pretrained": str(model), "options": {"dtype": "float32", "num_frames": frames, "height": h,
                                                           "width": w, "num_inference_steps": 2, "sampler": "sde"}},
        "data": {"train": str(data), "num_frames": frames, "height": h, "width": w, "fps": None, "prompt": "a sprite"},
        "lora": {"rank": 2, "alpha": 2},
        "optim": {"lr": 1e-3, "warmup_steps": 0},
        "loss": {"lambda_aw": 1.0},
        "rollout": {"group_size": 2, "buffer_size": 2, "passes_per_buffer": 2, "batch_size": 1, "rollout_batch_size": 2,
                    "num_inference_steps": 2},
        "critic": {"path": str(critic), "d_to_g": 1.0},
        "run": {"out_dir": str(run), "max_steps": 4, "checkpoint_every": 0, "progress": False,
                "mixed_precision": "no"},
    }))
    before = {k: v.clone() for k, v in load_file(model / "transformer" / "diffusion_pytorch_model.safetensors").items()}
    assert cli(["shift", "--config", str(cfg)]) == 0

    rows = [json.loads(l) for l in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert any("reward/fake" in r and np.isfinite(r["reward/fake"]) for r in rows)
    assert any("disc/loss" in r for r in rows)
    assert sum("loss/aw" in r for r in rows) == 4
    lora = load_file(run / "lora.safetensors")
    assert lora and all("lora" in k for k in lora)
    assert any(v.abs().sum() > 0 for k, v in lora.items() if "lora_B" in k or "lora.up" in k)  # LoRA B moved from 0
    after = load_file(model / "transformer" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)  # the base model folder is untouched
