"""SHIFT unchanged on Wan: `shiftvdm shift` on the tiny Wan2.2-TI2V preset trains only LoRA weights and logs rewards.

"Only LoRA" is checked on the backbone the run trained, in memory: its base weights are bit-identical to the model
folder after the steps and every LoRA tensor moved; the saved LoRA is the trained one."""

from __future__ import annotations

import json

import numpy as np
import torch
import yaml
from safetensors.torch import load_file

from shiftvdm.backbone.tiny import save_tiny_wan, tiny_video_shape
from shiftvdm.backbone.wan import WanBackbone
from shiftvdm.cli import main as cli
from shiftvdm.data.synthetic import write_synthetic_dataset
from shiftvdm.rewards.critic import CriticConfig, MotionCritic
from shiftvdm.rewards.ic import ICConfig
from shiftvdm.rewards.lc import LCConfig
from support import lora_weights


def base_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s non-LoRA weights under the names of the saved model (peft's ``.base_layer`` dropped)."""
    return {k.replace(".base_layer", ""): v for k, v in module.state_dict().items() if "lora_" not in k}


def test_shift_on_tiny_wan_ti2v(tmp_path, monkeypatch):
    # the backbone the run trains, caught when the recipe attaches its LoRA, with the LoRA's initial values
    trained: list[tuple[WanBackbone, dict[str, torch.Tensor]]] = []
    add_lora = WanBackbone.add_lora

    def add_lora_and_record(self, *args, **kwargs):
        add_lora(self, *args, **kwargs)
        trained.append((self, lora_weights(self)))

    monkeypatch.setattr(WanBackbone, "add_lora", add_lora_and_record)
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
    files = {"transformer": model / "transformer" / "diffusion_pytorch_model.safetensors",
             "vae": model / "vae" / "diffusion_pytorch_model.safetensors",
             "text_encoder": model / "text_encoder" / "model.safetensors"}
    saved = {name: load_file(path) for name, path in files.items()}
    assert cli(["shift", "--config", str(cfg)]) == 0

    rows = [json.loads(l) for l in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert any("reward/fake" in r and np.isfinite(r["reward/fake"]) for r in rows)
    assert any("disc/loss" in r for r in rows)
    assert sum("loss/aw" in r for r in rows) == 4

    # trains only LoRA: after 4 optimizer steps every base weight IN MEMORY is bit-identical to the model
    # folder's (transformer, VAE, text encoder), and every LoRA tensor has moved from its initial value
    assert len(trained) == 1, "the recipe attached one LoRA to one backbone"
    backbone, lora_init = trained[0]
    for name, file_state in saved.items():
        state = base_state(getattr(backbone, name))
        assert file_state.keys() <= state.keys(), name  # (the text encoder also names its tied embedding twice)
        changed = [k for k in file_state if not torch.equal(state[k], file_state[k])]
        assert not changed, f"{name}: base weights changed in memory: {changed[:5]}"
    assert all("lora_" in n for n, p in backbone.transformer.named_parameters() if p.requires_grad)
    lora_now = lora_weights(backbone)
    assert lora_now.keys() == lora_init.keys() and len(lora_now) > 0
    unmoved = [k for k in lora_now if torch.equal(lora_now[k], lora_init[k])]
    assert not unmoved, f"LoRA tensors that never moved: {unmoved[:5]}"
    assert all(lora_now[k].any() for k in lora_now if "lora_B" in k)  # B moved off its zero init

    # the saved LoRA is exactly the trained one, and the base model folder is untouched
    lora = load_file(run / "lora.safetensors")
    assert len(lora) == len(lora_now) and all("lora" in k for k in lora)
    by_shape = sorted((tuple(v.shape), v.sum().item()) for v in lora.values())
    assert by_shape == sorted((tuple(v.shape), v.sum().item()) for v in lora_now.values())
    for name, path in files.items():
        after = load_file(path)
        assert all(torch.equal(saved[name][k], after[k]) for k in saved[name]), name
