"""SVD backbone: EDM maths, the per-sample loss and its shared draws, samplers (parity with diffusers), LoRA, I/O.

Everything runs on tiny random-init presets of the real diffusers classes (backbone/tiny.py), saved with
save_pretrained and loaded back offline.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from shiftvdm.backbone.base import Backbone, Condition, NoiseDraw
from shiftvdm.backbone.edm import (
    ancestral_sigmas,
    edm_denoise,
    edm_loss_weight,
    edm_scalings,
    euler_ancestral_step,
    euler_step,
    karras_sigmas,
    lognormal_sigma,
)
from shiftvdm.backbone.lora import lora_config
from shiftvdm.backbone.svd import SVDBackbone, SVDConfig
from shiftvdm.backbone.tiny import save_tiny_svd, svd_scheduler
from shiftvdm.errors import CheckpointError, ConfigError
from support import fill_zero_init

FRAMES = 4  # tiny clips: 4 frames of 32×32 px (16×16 latents, or an 8×8 grid of 4×4 patches in pixel space)
SIZE = 32


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def latent_dir(tmp_path_factory) -> Path:
    return save_tiny_svd(tmp_path_factory.mktemp("svd") / "latent", seed=0, num_frames=FRAMES, sample_size=SIZE // 2)


@pytest.fixture(scope="module")
def pixel_dir(tmp_path_factory) -> Path:
    return save_tiny_svd(tmp_path_factory.mktemp("svd") / "pixel", seed=0, pixel_space=True, num_frames=FRAMES)


@pytest.fixture()
def latent_svd(latent_dir) -> SVDBackbone:
    return SVDBackbone.from_pretrained(latent_dir, SVDConfig(num_inference_steps=2))


@pytest.fixture()
def pixel_svd(pixel_dir) -> SVDBackbone:
    return SVDBackbone.from_pretrained(pixel_dir, SVDConfig(num_inference_steps=2))


def random_video(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, FRAMES, 3, SIZE, SIZE, generator=gen(seed)) * 2 - 1


def pil_like_frame(seed: int) -> tuple[np.ndarray, torch.Tensor]:
    """A uint8 image and its [-1, 1] tensor built with the pipeline's own arithmetic and memory layout."""
    image = np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    tensor = torch.from_numpy((image[None].astype(np.float32) / 255.0).transpose(0, 3, 1, 2)) * 2.0 - 1.0
    return image, tensor


# ---------------------------------------------------------------------- EDM maths (pure functions)
def test_edm_scalings_hand_values():
    sigma = torch.tensor([0.5, 2.0])
    c_skip, c_out, c_in, c_noise = edm_scalings(sigma)  # SVD v-parameterisation
    torch.testing.assert_close(c_skip, torch.tensor([1 / 1.25, 1 / 5.0]))
    torch.testing.assert_close(c_out, torch.tensor([-0.5 / math.sqrt(1.25), -2.0 / math.sqrt(5.0)]))
    torch.testing.assert_close(c_in, torch.tensor([1 / math.sqrt(1.25), 1 / math.sqrt(5.0)]))
    torch.testing.assert_close(c_noise, torch.tensor([0.25 * math.log(0.5), 0.25 * math.log(2.0)]))
    c_skip, c_out, c_in, _ = edm_scalings(torch.tensor(1.0), sigma_data=0.5, prediction="edm")  # EDM Table 1
    torch.testing.assert_close(c_skip, torch.tensor(0.25 / 1.25))
    torch.testing.assert_close(c_out, torch.tensor(0.5 / math.sqrt(1.25)))
    torch.testing.assert_close(c_in, torch.tensor(1 / math.sqrt(1.25)))
    torch.testing.assert_close(edm_loss_weight(sigma), torch.tensor([1.25 / 0.25, 5.0 / 4.0]))
    torch.testing.assert_close(edm_loss_weight(torch.tensor(1.0), 0.5), torch.tensor(1.25 / 0.25))
    x, f = torch.tensor([[3.0]]), torch.tensor([[-1.0]])
    torch.testing.assert_close(edm_denoise(x, f, torch.tensor([2.0])), torch.tensor([[3 / 5 + 2 / math.sqrt(5)]]))
    torch.testing.assert_close(edm_denoise(x, f, torch.tensor([1.0]), 0.5, "edm"),
                               torch.tensor([[3 * 0.25 / 1.25 - 0.5 / math.sqrt(1.25)]]))
    with pytest.raises(ValueError, match="prediction"):
        edm_scalings(sigma, prediction="eps")


def test_karras_grid_equals_svd_scheduler():
    scheduler = svd_scheduler()
    scheduler.set_timesteps(25)
    ours = karras_sigmas(25, 0.002, 700.0)
    assert ours.shape == (26,) and ours[-1] == 0
    torch.testing.assert_close(ours, scheduler.sigmas, rtol=0, atol=0)
    assert ours[0] == pytest.approx(700.0) and ours[24] == pytest.approx(0.002)


def test_euler_and_ancestral_steps_hand_values():
    x, denoised, noise = torch.tensor([2.0]), torch.tensor([0.5]), torch.tensor([-1.0])
    torch.testing.assert_close(euler_step(x, denoised, 3.0, 1.0), torch.tensor([2.0 + (1.5 / 3.0) * (1.0 - 3.0)]))
    sigma_down, sigma_up = ancestral_sigmas(3.0, 1.0)
    up = math.sqrt(1.0 * (9.0 - 1.0) / 9.0)
    torch.testing.assert_close(sigma_up, torch.tensor(up))
    torch.testing.assert_close(sigma_down, torch.tensor(math.sqrt(1.0 - up**2)))
    expected = 2.0 + (1.5 / 3.0) * (math.sqrt(1.0 - up**2) - 3.0) + up * -1.0
    torch.testing.assert_close(euler_ancestral_step(x, denoised, 3.0, 1.0, noise), torch.tensor([expected]))
    # eta = 0 is plain Euler; eta large is capped at σ_up = σ_to (σ_down = 0: jump to the denoised estimate)
    torch.testing.assert_close(euler_ancestral_step(x, denoised, 3.0, 1.0, noise, eta=0.0),
                               euler_step(x, denoised, 3.0, 1.0))
    torch.testing.assert_close(euler_ancestral_step(x, denoised, 3.0, 1.0, noise, eta=10.0), denoised + noise)


def test_lognormal_sigma_follows_generator_and_parameters():
    a = lognormal_sigma(20000, 0.7, 1.6, gen(0))
    assert torch.equal(a, lognormal_sigma(20000, 0.7, 1.6, gen(0)))
    assert not torch.equal(a, lognormal_sigma(20000, 0.7, 1.6, gen(1)))
    assert a.log().mean().item() == pytest.approx(0.7, abs=0.05)
    assert a.log().std().item() == pytest.approx(1.6, abs=0.05)


# ---------------------------------------------------------------------- the per-sample loss
def test_loss_with_zero_network_is_the_closed_form(pixel_svd):
    """F ≡ 0 gives D = z_σ/(σ²+1), so L = mean((1+σ²)/σ² · ((x₀+σε)/(σ²+1) − x₀)²): checks the EDM plumbing
    (noising, c_skip, weighting, per-sample reduction) independently of any network."""

    class Zero(torch.nn.Module):
        def forward(self, sample, timestep, encoder_hidden_states, added_time_ids, return_dict=False):
            return (torch.zeros(sample.shape[0], sample.shape[1], sample.shape[2] // 2, *sample.shape[3:]),)

    pixel_svd.denoiser = Zero()
    x0 = torch.full((2, 1, 48, 1, 1), 0.5)
    x0[1] = -1.0
    cond = pixel_svd.encode_condition(torch.zeros(2, 3, 4, 4))
    draw = NoiseDraw(noise=torch.ones_like(x0), level=torch.tensor([1.0, 2.0]),
                     extras={"cond_sigma": torch.tensor([0.1, 0.1]), "cond_noise": torch.zeros(2, 3, 4, 4),
                             "dropout_u": torch.tensor([0.9, 0.9])})
    loss = pixel_svd.denoising_loss(x0, cond, draw)
    expected = [(1 + s**2) / s**2 * ((x + s) / (s**2 + 1) - x) ** 2 for x, s in ((0.5, 1.0), (-1.0, 2.0))]
    torch.testing.assert_close(loss, torch.tensor(expected))


def test_loss_matches_hand_written_computation(latent_svd):
    """The full SVD loss (VAE conditioning, CLIP embedding, IP2P dropout, time ids) rebuilt by hand."""
    svd = latent_svd
    video = random_video(4, seed=1)
    latents = svd.encode_video(video)
    cond = svd.encode_condition(video[:, 0])
    draw = svd.draw_noise(latents, gen(7))
    # u picks each dropout case: embedding only (u < p), both (p ≤ u < 2p), latents only (2p ≤ u < 3p), none
    draw.extras["dropout_u"] = torch.tensor([0.05, 0.15, 0.25, 0.9])
    loss = svd.denoising_loss(latents, cond, draw)
    assert loss.shape == (4,)

    sigma, cond_sigma = draw.level, draw.extras["cond_sigma"]
    noisy = latents + sigma.view(4, 1, 1, 1, 1) * draw.noise
    with torch.no_grad():
        first = video[:, 0] + cond_sigma.view(4, 1, 1, 1) * draw.extras["cond_noise"]
        cond_latents = svd.vae.encode(first).latent_dist.mode()  # unscaled, as in the pipeline
    cond_latents = cond_latents * torch.tensor([1.0, 0.0, 0.0, 1.0]).view(4, 1, 1, 1)
    embeds = cond.tensors["image_embeds"] * torch.tensor([0.0, 0.0, 1.0, 1.0]).view(4, 1, 1)
    time_ids = torch.stack([torch.full((4,), 6.0), torch.full((4,), 127.0), cond_sigma], dim=1)  # fps 7 → 6
    model_in = torch.cat([noisy / (sigma**2 + 1).sqrt().view(4, 1, 1, 1, 1),
                          cond_latents[:, None].expand(-1, FRAMES, -1, -1, -1)], dim=2)
    with torch.no_grad():
        v = svd.unet(model_in, 0.25 * sigma.log(), encoder_hidden_states=embeds, added_time_ids=time_ids).sample
    s = sigma.view(4, 1, 1, 1, 1)
    denoised = noisy / (s**2 + 1) - s / (s**2 + 1).sqrt() * v
    expected = ((1 + s**2) / s**2 * (denoised - latents) ** 2).mean(dim=(1, 2, 3, 4))
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)


def test_shared_draws_contract(pixel_svd):
    svd = pixel_svd
    video = random_video(2, seed=2)
    latents = svd.encode_video(video)
    cond = svd.encode_condition(video[:, 0])
    draw = svd.draw_noise(latents, gen(3))
    same = svd.draw_noise(latents, gen(3))
    assert set(draw.extras) == {"cond_sigma", "cond_noise", "dropout_u"}
    assert draw.noise.shape == latents.shape and draw.level.shape == (2,)
    assert draw.extras["cond_noise"].shape == (2, 3, SIZE, SIZE)
    assert torch.equal(draw.noise, same.noise) and torch.equal(draw.level, same.level)
    draw.extras["dropout_u"] = torch.tensor([0.9, 0.9])  # no dropout in the reference evaluation
    base = svd.denoising_loss(latents, cond, draw)
    assert torch.equal(base, svd.denoising_loss(latents, cond, draw))  # same draw → identical loss

    def with_(**changes) -> NoiseDraw:
        extras = {**draw.extras, **{k: v for k, v in changes.items() if k in draw.extras}}
        return NoiseDraw(changes.get("noise", draw.noise), changes.get("level", draw.level), extras)

    variants = {
        "other draw": svd.draw_noise(latents, gen(4)),
        "noise": with_(noise=torch.randn(latents.shape, generator=gen(5))),
        "sigma": with_(level=draw.level * 1.5),
        "cond sigma": with_(cond_sigma=draw.extras["cond_sigma"] * 4),
        "cond noise": with_(cond_noise=torch.randn(2, 3, SIZE, SIZE, generator=gen(6))),
        "dropout": with_(dropout_u=torch.tensor([0.15, 0.9])),
    }
    for what, other in variants.items():
        loss = svd.denoising_loss(latents, cond, other)
        assert not torch.allclose(loss, base, rtol=1e-4, atol=0), f"changing the {what} did not change the loss"
    # the dropout draw acts per sample: dropping sample 0's conditioning leaves sample 1's loss untouched
    dropped = svd.denoising_loss(latents, cond, variants["dropout"])
    assert dropped[1] == base[1] and dropped[0] != base[0]


def test_fakes_are_scored_under_the_condition_passed_in(pixel_svd):
    svd = pixel_svd
    real = random_video(1, seed=3)
    fake = random_video(1, seed=4)
    real_cond = svd.encode_condition(real[:, 0])
    fake_latents = svd.encode_video(fake)
    draw = svd.draw_noise(fake_latents, gen(8))
    draw.extras["dropout_u"] = torch.tensor([0.9])
    under_real = svd.denoising_loss(fake_latents, real_cond, draw)
    under_own = svd.denoising_loss(fake_latents, svd.encode_condition(fake[:, 0]), draw)
    # only the conditioning differs between the two calls, and it changes the loss
    assert not torch.allclose(under_real, under_own)
    assert torch.equal(under_real, svd.denoising_loss(fake_latents, real_cond, draw))


def test_encode_decode_shapes_determinism_and_range(latent_svd, pixel_svd):
    video = random_video(2, seed=5)
    latents = latent_svd.encode_video(video)
    assert latents.shape == (2, FRAMES, 4, SIZE // 2, SIZE // 2)
    assert torch.equal(latents, latent_svd.encode_video(video))  # posterior mode: deterministic
    pixels = latent_svd.decode(latents)
    assert pixels.shape == video.shape and pixels.min() >= -1 and pixels.max() <= 1
    assert latent_svd.decode(latents[None]).shape == (1, *video.shape)  # any leading dims
    patches = pixel_svd.encode_video(video)
    assert patches.shape == (2, FRAMES, 48, SIZE // 4, SIZE // 4)
    assert torch.equal(pixel_svd.decode(patches), video)  # pixel space: exact round trip
    with pytest.raises(ValueError, match="divisible by 4"):
        pixel_svd.encode_video(torch.zeros(1, 2, 3, 30, 32))


def test_backbone_protocol_and_video_shape(latent_svd, pixel_svd):
    assert isinstance(latent_svd, Backbone) and isinstance(pixel_svd, Backbone)
    assert latent_svd.video_shape == (FRAMES, SIZE, SIZE) and pixel_svd.video_shape == (FRAMES, SIZE, SIZE)
    cond = pixel_svd.encode_condition(random_video(3)[:, 0])
    assert isinstance(cond, Condition) and cond.tensors["image_embeds"].shape == (3, 1, 32)
    assert torch.count_nonzero(cond.tensors["image_embeds"]) == 0  # no CLIP in pixel space: a zero token
    assert len(latent_svd.trainable_parameters()) == len(list(latent_svd.unet.parameters()))


# ---------------------------------------------------------------------- samplers
def test_euler_sampler_reproduces_stable_video_diffusion_pipeline(latent_dir):
    from diffusers import StableVideoDiffusionPipeline
    from PIL import Image

    settings = dict(num_inference_steps=3, fps=9, motion_bucket_id=100, noise_aug_strength=0.05)
    image, first = pil_like_frame(0)
    pipe = StableVideoDiffusionPipeline.from_pretrained(latent_dir)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(Image.fromarray(image), height=SIZE, width=SIZE, num_frames=FRAMES, min_guidance_scale=1.5,
                    max_guidance_scale=2.5, decode_chunk_size=2, num_videos_per_prompt=2,
                    generator=torch.Generator("cpu").manual_seed(11), output_type="np", **settings).frames
    svd = SVDBackbone.from_pretrained(latent_dir, SVDConfig(min_guidance_scale=1.5, max_guidance_scale=2.5,
                                                            decode_chunk_size=2, **settings))
    latents = svd.sample(svd.encode_condition(first), 2, torch.Generator("cpu").manual_seed(11), stochastic=False)
    assert latents.shape == (1, 2, FRAMES, 4, SIZE // 2, SIZE // 2)
    frames = (svd.decode(latents[0]) * 0.5 + 0.5).clamp(0, 1).permute(0, 1, 3, 4, 2).numpy()
    assert expected.shape == frames.shape == (2, FRAMES, SIZE, SIZE, 3)
    np.testing.assert_allclose(frames, expected, rtol=0, atol=1e-5)
    assert np.abs(frames[0] - frames[1]).max() > 1e-3  # the two videos of the prompt really differ


def test_ancestral_sampler_is_seeded_by_its_generator(pixel_svd):
    cond = pixel_svd.encode_condition(random_video(2, seed=6)[:, 0])
    a = pixel_svd.sample(cond, 2, gen(1), stochastic=True)
    assert a.shape == (2, 2, FRAMES, 48, SIZE // 4, SIZE // 4)
    assert torch.equal(a, pixel_svd.sample(cond, 2, gen(1), stochastic=True))
    assert not torch.allclose(a, pixel_svd.sample(cond, 2, gen(2), stochastic=True))
    assert not torch.allclose(a[:, 0], a[:, 1])
    # same seed, deterministic sampler: same start, different path
    assert not torch.allclose(a, pixel_svd.sample(cond, 2, gen(1), stochastic=False))


def test_sample_batch_size_bounds_memory_not_results(pixel_svd):
    """Rollouts in UNet calls of one clip each (the memory bound at full size) give the same clips: the
    draws do not depend on the chunking, only rounding can."""
    cond = pixel_svd.encode_condition(random_video(2, seed=6)[:, 0])
    whole = pixel_svd.sample(cond, 2, gen(1), stochastic=True)
    pixel_svd.config.sample_batch_size = 1
    try:
        chunked = pixel_svd.sample(cond, 2, gen(1), stochastic=True)
    finally:
        pixel_svd.config.sample_batch_size = 0
    # batch-size-dependent float32 kernels round differently; over the whole sampler that stays ~1e-4 of the scale
    assert (whole - chunked).abs().max() <= 1e-3 * whole.abs().max(), (whole - chunked).abs().max()


# ---------------------------------------------------------------------- LoRA
def test_lora_trains_only_lora_weights(latent_svd):
    svd = latent_svd
    svd.add_lora(4, 4)
    params = svd.trainable_parameters()
    names = {n for n, p in svd.unet.named_parameters() if p.requires_grad}
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    assert all("temporal_transformer_blocks" in n for n in names)
    assert len(params) == len(names) == 56 * 2  # to_q/k/v/out.0 of attn1+attn2 in 7 temporal blocks
    base_before = {n: p.detach().clone() for n, p in svd.unet.named_parameters() if not p.requires_grad}
    lora_before = {n: p.detach().clone() for n, p in svd.unet.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    video = random_video(1, seed=7)
    latents, cond = svd.encode_video(video), svd.encode_condition(video[:, 0])
    # lora_B starts at zero, so lora_A receives gradient from the second step on: take two steps
    for seed in (0, 1):
        draw = svd.draw_noise(latents, gen(seed))
        draw.extras["dropout_u"] = torch.tensor([0.9])
        svd.denoising_loss(latents, cond, draw).mean().backward()
        grads = {n: p.grad.abs().max().item() for n, p in svd.unet.named_parameters() if p.requires_grad}
        optimizer.step()
        optimizer.zero_grad()
    after = dict(svd.unet.named_parameters())
    # The temporal cross-attention (attn2) attends to ONE token (the image embedding), so its softmax is
    # identically 1 and to_q/to_k cannot affect the output: their LoRA gets zero gradient up to rounding.
    # (The same holds for full-size SVD and the reference's default targets.)
    inert = {n for n in lora_before if ".attn2.to_q." in n or ".attn2.to_k." in n}
    assert len(inert) == 28
    largest = max(grads.values())
    assert all(grads[n] <= 1e-6 * largest for n in inert)
    unchanged = [n for n, v in lora_before.items() if n not in inert and torch.equal(after[n], v)]
    assert not unchanged, f"LoRA tensors did not change: {unchanged}"
    assert all(grads[n] > 1e-4 * largest for n in lora_before if n not in inert)
    assert all(torch.equal(after[n], v) for n, v in base_before.items()), "a base tensor changed"
    assert all(not p.requires_grad for p in svd.vae.parameters())


def _randomise_lora(svd: SVDBackbone, seed: int) -> None:
    fill_zero_init(svd.unet, std=0.3, seed=seed, only="lora_B")  # a fresh LoRA's zero B matrices


def test_save_load_lora_and_fuse_keep_outputs(latent_dir, tmp_path):
    svd = SVDBackbone.from_pretrained(latent_dir, SVDConfig(num_inference_steps=2))
    svd.add_lora(4, 8)
    _randomise_lora(svd, 0)
    video = random_video(2, seed=8)
    latents, cond = svd.encode_video(video), svd.encode_condition(video[:, 0])
    draw = svd.draw_noise(latents, gen(9))
    loss = svd.denoising_loss(latents, cond, draw)
    sample = svd.sample(cond.index(slice(0, 1)), 1, gen(10), stochastic=False)
    path = tmp_path / "lora.safetensors"
    svd.save_lora(path)

    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
        assert handle.metadata()["lora_adapter_metadata"]
    assert len(keys) == 112 and all(k.startswith("unet.") and (".lora_A." in k or ".lora_B." in k) for k in keys)

    fresh = SVDBackbone.from_pretrained(latent_dir, SVDConfig(num_inference_steps=2))
    base_loss = fresh.denoising_loss(latents, cond, draw)
    fresh.load_lora(path)
    assert lora_config(fresh.unet).r == 4 and lora_config(fresh.unet).lora_alpha == 8
    assert torch.equal(fresh.denoising_loss(latents, cond, draw), loss)
    assert torch.equal(fresh.sample(cond.index(slice(0, 1)), 1, gen(10), stochastic=False), sample)
    assert not torch.allclose(base_loss, loss)  # the LoRA matters

    fresh.fuse_lora()
    assert not any("lora" in n for n, _ in fresh.unet.named_parameters())
    torch.testing.assert_close(fresh.denoising_loss(latents, cond, draw), loss, rtol=1e-4, atol=1e-6)


def test_lora_errors_name_the_file(latent_svd, pixel_svd, tmp_path):
    with pytest.raises(CheckpointError, match="missing.safetensors"):
        latent_svd.load_lora(tmp_path / "missing.safetensors")
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="garbage.safetensors"):
        latent_svd.load_lora(bad)
    pixel_svd.add_lora(2, 2)
    other = tmp_path / "pixel_lora.safetensors"
    pixel_svd.save_lora(other)
    latent_svd.add_lora(4, 4)  # rank 4 adapter, file has rank 2
    with pytest.raises(CheckpointError, match="pixel_lora.safetensors"):
        latent_svd.load_lora(other)
    pixel_svd.fuse_lora()
    with pytest.raises(ConfigError, match="match no module"):
        pixel_svd.add_lora(2, 2, r".*no_such_module")
    with pytest.raises(ValueError, match="fuse_lora"):
        latent_svd.save_pretrained(tmp_path / "unfused")


# ---------------------------------------------------------------------- save / load
def test_pixel_space_round_trip(pixel_svd, tmp_path):
    pixel_svd.add_lora(2, 2)
    _randomise_lora(pixel_svd, 1)
    pixel_svd.fuse_lora()
    pixel_svd.save_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / "shiftvdm_backbone.json").is_file()
    assert not (tmp_path / "model" / "model_index.json").exists()
    again = SVDBackbone.from_pretrained(tmp_path / "model")
    assert again.pixel_space and again.patch_size == 4
    video = random_video(1, seed=9)
    latents, cond = pixel_svd.encode_video(video), pixel_svd.encode_condition(video[:, 0])
    draw = pixel_svd.draw_noise(latents, gen(1))
    assert torch.equal(again.denoising_loss(latents, cond, draw), pixel_svd.denoising_loss(latents, cond, draw))


def test_from_pretrained_errors_name_the_folder(latent_dir, tmp_path):
    with pytest.raises(CheckpointError, match="nowhere.*model folder not found"):
        SVDBackbone.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="empty.*model_index.json"):
        SVDBackbone.from_pretrained(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text((latent_dir / "model_index.json").read_text())
    with pytest.raises(CheckpointError, match="unet"):
        SVDBackbone.from_pretrained(broken)
    with pytest.raises(ConfigError, match="pixel_space"):
        SVDBackbone.from_pretrained(latent_dir, SVDConfig(pixel_space=True))
    with pytest.raises(ConfigError, match="conditioning_dropout_prob"):
        SVDConfig(conditioning_dropout_prob=0.5)
