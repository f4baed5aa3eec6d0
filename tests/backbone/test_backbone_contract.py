"""One contract, every backbone: what train/shift.py and the recipes rely on, checked on tiny SVD, Wan and toy."""

from __future__ import annotations

import pytest
import torch

from shiftvdm.backbone.base import Backbone, NoiseDraw
from support import fill_zero_init, tiny_backbone

torch.set_num_threads(1)
NAMES = ("svd", "wan", "toy")


def make(name: str) -> Backbone:
    """A tiny float32 backbone of family ``name`` whose LoRA receives gradients (the toy's zero output conv is
    filled, a pre-trained stand-in: otherwise no gradient reaches anything)."""
    return tiny_backbone(name)


def clip(backbone: Backbone, batch: int = 2, seed: int = 0) -> torch.Tensor:
    frames, height, width = backbone.video_shape
    return torch.rand(batch, frames, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def perturb_lora(backbone: Backbone, seed: int = 3) -> None:
    """Give lora_B non-zero values so the adapter changes the output."""
    fill_zero_init(backbone.trainable_parameters(), std=0.05, seed=seed)


@pytest.fixture(scope="module", params=NAMES)
def case(request):
    backbone = make(request.param)
    video = clip(backbone)
    with torch.no_grad():
        latents = backbone.encode_video(video)
        cond = backbone.encode_condition(video[:, 0])
    return request.param, backbone, video, latents, cond


def test_protocol_members_and_device(case):
    name, backbone, *_ = case
    assert isinstance(backbone, Backbone) and backbone.name == name
    assert backbone.to("cpu") is backbone and backbone.device == torch.device("cpu")


def test_encode_decode_shapes_and_range(case):
    _, backbone, video, latents, cond = case
    assert latents.shape[0] == 2 and latents.dtype == torch.float32
    assert torch.equal(backbone.encode_video(video), latents)  # deterministic
    pixels = backbone.decode(latents)
    assert pixels.shape == video.shape and pixels.dtype == torch.float32
    assert pixels.min() >= -1 and pixels.max() <= 1
    assert cond.batch_size == 2 and cond.index([1]).batch_size == 1


def test_denoising_loss_is_per_sample_and_follows_the_draw(case):
    _, backbone, _, latents, cond = case
    draw = backbone.draw_noise(latents, torch.Generator().manual_seed(0))
    assert isinstance(draw, NoiseDraw) and draw.noise.shape == latents.shape and draw.level.shape == (2,)
    with torch.no_grad():
        loss = backbone.denoising_loss(latents, cond, draw)
        again = backbone.denoising_loss(latents, cond, draw)
        other = backbone.denoising_loss(latents, cond, backbone.draw_noise(latents, torch.Generator().manual_seed(1)))
        first = backbone.denoising_loss(latents[:1], cond.index([0]), draw.index(slice(0, 1)))
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    assert torch.equal(loss, again)
    assert (loss - other).abs().min() > 1e-6
    torch.testing.assert_close(first, loss[:1], rtol=1e-4, atol=1e-6)  # no reduction across the batch


def test_sample_is_seeded_by_its_generator(case):
    _, backbone, _, latents, cond = case
    a = backbone.sample(cond, 2, torch.Generator().manual_seed(7), num_inference_steps=2)
    b = backbone.sample(cond, 2, torch.Generator().manual_seed(7), num_inference_steps=2)
    c = backbone.sample(cond, 2, torch.Generator().manual_seed(8), num_inference_steps=2)
    assert a.shape == (2, 2, *latents.shape[1:])
    assert torch.equal(a, b) and (a - c).abs().max() > 1e-4
    d = backbone.sample(cond, 1, torch.Generator().manual_seed(7), stochastic=False, num_inference_steps=2)
    assert torch.equal(d, backbone.sample(cond, 1, torch.Generator().manual_seed(7), stochastic=False,
                                          num_inference_steps=2))


def test_lora_step_save_load_and_fuse(case, tmp_path):
    name, _, _, latents, cond = case
    backbone = make(name)
    base = {n: p.detach().clone() for n, p in backbone.denoiser.named_parameters()}
    backbone.add_lora(4, 4.0)
    params = backbone.trainable_parameters()
    assert params and all(p.dtype == torch.float32 and p.requires_grad for p in params)
    assert all(not p.requires_grad for n, p in backbone.denoiser.named_parameters() if "lora_" not in n)
    draw = backbone.draw_noise(latents, torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(backbone.denoising_loss(latents, cond, draw),
                                   make(name).denoising_loss(latents, cond, draw))  # B = 0: unchanged model
    perturb_lora(backbone)

    # one optimizer step: every LoRA tensor with a gradient changes, no base weight does
    before = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    backbone.denoising_loss(latents, cond, draw).mean().backward()
    with_grad = [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params]
    optimizer.step()
    assert sum(with_grad) >= 0.9 * len(params)  # SVD: attn2 to_q/to_k see one context token, so no gradient
    assert all(not torch.equal(p, b) for p, b, g in zip(params, before, with_grad) if g)
    for n, p in backbone.denoiser.named_parameters():
        if "lora_" not in n:
            key = n.replace(".base_layer", "")
            assert torch.equal(p, base[key]), n

    # save -> load into a fresh model restores the outputs; fuse keeps them
    with torch.no_grad():
        expected = backbone.denoising_loss(latents, cond, draw)
    backbone.save_lora(tmp_path / "lora.safetensors")
    fresh = make(name)
    fresh.load_lora(tmp_path / "lora.safetensors")
    assert all(p.dtype == torch.float32 for p in fresh.trainable_parameters())
    with torch.no_grad():
        torch.testing.assert_close(fresh.denoising_loss(latents, cond, draw), expected, rtol=0, atol=0)
        fresh.fuse_lora()
        torch.testing.assert_close(fresh.denoising_loss(latents, cond, draw), expected, rtol=1e-4, atol=1e-6)
    assert not fresh.has_lora


def test_gradient_checkpointing_changes_nothing(case):
    name, _, _, latents, cond = case
    plain, checkpointed = make(name), make(name)
    for b in (plain, checkpointed):
        b.add_lora(4, 4.0)
        perturb_lora(b)
    checkpointed.enable_gradient_checkpointing()
    draw = plain.draw_noise(latents, torch.Generator().manual_seed(0))
    grads = []
    for b in (plain, checkpointed):
        b.denoiser.train()
        b.denoising_loss(latents, cond, draw).mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in b.trainable_parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-7)
