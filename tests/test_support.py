"""tests/support.py, the shared test models: the filling that makes LoRA gradient checks meaningful does its job."""

from __future__ import annotations

import pytest
import torch

from support import base_weights, fill_zero_init, lora_weights, tiny_backbone


def test_fill_touches_only_all_zero_tensors_and_is_seeded():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].bias.zero_()
        net[0].bias[0] = 0.0  # partly zero: not a zero-initialised layer, left alone
    kept = net[0].bias.clone()
    fill_zero_init(net, std=0.1, seed=5)
    assert torch.equal(net[0].bias, kept) and net[1].weight.all() and net[1].bias.all()
    gen = torch.Generator().manual_seed(5)
    assert torch.equal(net[1].weight, torch.randn(2, 4, generator=gen) * 0.1)  # one generator, in parameter order
    assert torch.equal(net[1].bias, torch.randn(2, generator=gen) * 0.1)
    only = torch.nn.Linear(2, 2)
    with torch.no_grad():
        only.weight.zero_()
        only.bias.zero_()
    fill_zero_init(only, only="bias")
    assert not only.weight.any() and only.bias.all()
    with pytest.raises(ValueError, match="needs a module"):
        fill_zero_init([only.weight], only="weight")


def test_filled_toy_gives_every_lora_matrix_a_gradient(toy_backbone, small_toy_backbone):
    backbone = toy_backbone
    backbone.add_lora(2, 2)
    video = torch.rand(2, 4, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x = backbone.encode_video(video)
    loss = backbone.denoising_loss(x, backbone.encode_condition(video[:, 0]),
                                   backbone.draw_noise(x, torch.Generator().manual_seed(1))).mean()
    loss.backward()
    lora_b = [(n, p) for n, p in backbone.denoiser.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in lora_b)
    assert set(lora_weights(backbone)) == {n for n, _ in backbone.denoiser.named_parameters() if "lora_" in n}
    assert not any("lora_" in n for n in base_weights(backbone))
    # the small toy: its zero output conv weight is filled, so the output depends on the input
    assert small_toy_backbone.denoiser.conv_out.weight.any()


def test_tiny_svd_and_wan_fixtures(tiny_svd, tiny_wan):
    for backbone in (tiny_svd, tiny_wan):
        assert not backbone.has_lora and backbone.config.num_inference_steps == 2
        assert all(p.dtype == torch.float32 for p in backbone.denoiser.parameters())
    assert tiny_svd.video_shape == (4, 32, 32)


def test_tiny_backbone_families_and_refusal():
    toy = tiny_backbone("toy")
    assert toy.video_shape == (4, 16, 16) and toy.config.num_inference_steps == 2
    with pytest.raises(ValueError, match="unknown family 'sdxl'"):
        tiny_backbone("sdxl")
