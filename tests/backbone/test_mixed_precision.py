"""Mixed precision: frozen base in bf16, trainable LoRA (and so AdamW state) in float32, compute under autocast.

With a bf16 LoRA an AdamW update of ~lr = 1e-5 is below half an ulp of most entries and rounds away (issue 12
measured 53 % / 51 % of entries moving on SVD / Wan after 10 steps). The LoRA is float32 now (backbone/lora.py).
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from shiftvdm.backbone.base import Backbone
from shiftvdm.backbone.svd import SVDConfig
from shiftvdm.backbone.tiny import tiny_svd_backbone, tiny_wan_backbone
from shiftvdm.backbone.wan import WanConfig
from support import small_toy

torch.set_num_threads(1)


def make(name: str, dtype: str) -> Backbone:
    if name == "svd":
        backbone = tiny_svd_backbone(SVDConfig(dtype=dtype, num_frames=4, height=32, width=32))
    elif name == "wan":
        backbone = tiny_wan_backbone(WanConfig(layout="ti2v", dtype=dtype))
    else:
        backbone = small_toy(dtype=dtype)  # a fresh toy's zero output conv, filled: else no gradient reaches the LoRA
    backbone.add_lora(4, 4.0)
    return backbone


def run(backbone: Backbone, steps: int, lr: float, autocast: bool) -> dict:
    """``steps`` AdamW steps on one clip with fixed draws; the losses and the fraction of LoRA entries moved."""
    params = backbone.trainable_parameters()
    start = [p.detach().clone() for p in params]
    had_grad = [torch.zeros_like(p, dtype=torch.bool) for p in params]
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    frames, height, width = backbone.video_shape
    video = torch.rand(1, frames, 3, height, width, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        latents = backbone.encode_video(video)
        cond = backbone.encode_condition(video[:, 0])
    context = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if autocast else contextlib.nullcontext
    losses = []
    for step in range(steps):
        draw = backbone.draw_noise(latents, torch.Generator().manual_seed(100 + step))
        with context():
            loss = backbone.denoising_loss(latents, cond, draw).mean()
        optimizer.zero_grad()
        loss.backward()
        for mask, p in zip(had_grad, params):
            mask |= p.grad.abs() > 1e-8  # above AdamW's eps, a step moves the entry by about lr
        optimizer.step()
        losses.append(float(loss.detach()))
    moved = [p.detach() != s for p, s in zip(params, start)]
    total = sum(m.numel() for m in moved)
    n_grad = sum(int(g.sum()) for g in had_grad)
    return {"losses": losses, "moved": sum(int(m.sum()) for m in moved) / total, "grad_fraction": n_grad / total,
            "moved_of_grad": sum(int((m & g).sum()) for m, g in zip(moved, had_grad)) / n_grad}


@pytest.mark.parametrize("name", ["svd", "wan", "toy"])
def test_bf16_base_with_float32_lora_moves_every_entry(name):
    backbone = make(name, "bfloat16")
    lora = backbone.trainable_parameters()
    assert lora and all(p.dtype == torch.float32 for p in lora)
    base = [(n, p) for n, p in backbone.denoiser.named_parameters() if "lora_" not in n]
    wrapped = [p for n, p in base if n.endswith("base_layer.weight")]  # the frozen layers the LoRA wraps
    assert wrapped and all(p.dtype == torch.bfloat16 for p in wrapped)
    assert sum(p.numel() for _, p in base if p.dtype == torch.bfloat16) > 0.9 * sum(p.numel() for _, p in base)
    # every entry that a float32 run moves, the bf16-base run moves too (lr 1e-5, 4 AdamW steps). The entries
    # neither moves get no gradient: SVD's attn2 to_q/to_k attend to one context token (softmax ≡ 1).
    ref = run(make(name, "float32"), steps=4, lr=1e-5, autocast=False)
    low = run(backbone, steps=4, lr=1e-5, autocast=True)
    # Every entry with a gradient above AdamW's eps moves. Entries whose gradient is tiny move or not by rounding
    # (Adam normalises any non-zero gradient to a step of ~lr), which differs by CPU: on an AMD EPYC the bf16-base
    # SVD run moved 88.65 % against the float32 run's 89.24 % (both 100 % / 99.99 % of the entries with a
    # gradient), where the recording machine had them within 1e-3. A bf16 LoRA moves < 70 % (test below).
    assert low["moved_of_grad"] >= 0.999, low["moved_of_grad"]
    assert ref["moved"] > 0.85 and low["moved"] >= ref["moved"] - 0.01, (ref["moved"], low["moved"])


@pytest.mark.parametrize("name", ["svd", "wan"])
def test_a_bf16_lora_would_not_train(name):
    # the failure this guards against (issue 12): LoRA weights in bf16 lose most lr-1e-5 updates to rounding
    backbone = make(name, "bfloat16")
    for param in backbone.trainable_parameters():
        param.data = param.data.to(torch.bfloat16)
    assert run(backbone, steps=4, lr=1e-5, autocast=True)["moved"] < 0.7


@pytest.mark.parametrize("name", ["svd", "wan", "toy"])
def test_bf16_run_tracks_the_float32_run(name):
    # a short run at lr 1e-3 on the same draws: the bf16-base losses (autocast) stay within
    # 1 % of the float32 run's at every step (measured over 8 steps: <= 0.15 % SVD, 0.06 % Wan, 0.02 % toy)
    ref = run(make(name, "float32"), steps=4, lr=1e-3, autocast=False)
    low = run(make(name, "bfloat16"), steps=4, lr=1e-3, autocast=True)
    gaps = [abs(a - b) / abs(a) for a, b in zip(ref["losses"], low["losses"])]
    assert max(gaps) < 0.01, (ref["losses"], low["losses"])
    assert ref["losses"][-1] != ref["losses"][0]
