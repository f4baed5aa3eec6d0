"""The CPU demo backbone (backbone/toy.py): the Backbone contract on a tiny configuration."""

from __future__ import annotations

import json

import pytest
import torch

from shiftvdm.backbone.base import Backbone
from shiftvdm.backbone import detect_backbone, load_backbone_from_path
from shiftvdm.backbone.toy import BACKBONE_CONFIG_NAME, ToyBackbone, ToyConfig, residual_std
from shiftvdm.errors import CheckpointError, ConfigError
from support import fill_zero_init

FRAMES, SIZE = 4, 8


def tiny_config(**overrides) -> ToyConfig:
    kwargs = dict(num_frames=FRAMES, size=SIZE, block_out_channels=(8, 16), layers_per_block=1,
                  num_mid_blocks=1, norm_num_groups=4, num_fourier_freqs=4, attention_head_dim=8, sigma_data=0.3,
                  num_inference_steps=3, eta=0.5)
    kwargs.update(overrides)
    return ToyConfig(**kwargs)


def videos(batch: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, FRAMES, 3, SIZE, SIZE, generator=gen) * 2 - 1


def perturbed(backbone: ToyBackbone, seed: int = 1) -> ToyBackbone:
    """Give the zero-initialised output conv some weight so outputs depend on every layer."""
    fill_zero_init(backbone.denoiser, std=0.1, seed=seed, only="conv_out")
    return backbone



@pytest.fixture
def backbone() -> ToyBackbone:
    return perturbed(ToyBackbone(tiny_config()))


def test_satisfies_protocol_and_shapes(backbone):
    assert isinstance(backbone, Backbone)
    assert backbone.video_shape == (FRAMES, SIZE, SIZE)
    video = videos(2)
    latents = backbone.encode_video(video)
    assert latents.shape == (2, FRAMES, 3, SIZE, SIZE)
    torch.testing.assert_close(latents[:, 0], video[:, 0])
    torch.testing.assert_close(latents[:, 2], video[:, 2] - video[:, 0])
    torch.testing.assert_close(backbone.decode(latents), video)  # exact inverse on [-1, 1] pixels
    cond = backbone.encode_condition(video[:, 0])
    samples = backbone.sample(cond, 3, torch.Generator().manual_seed(0))
    assert samples.shape == (2, 3, FRAMES, 3, SIZE, SIZE)
    # frame 0 of every rollout is its conditioning frame, in (B, P) order
    torch.testing.assert_close(samples[:, :, 0], video[:, None, 0].expand(2, 3, 3, SIZE, SIZE))
    pixels = backbone.decode(samples.flatten(0, 1))
    assert pixels.min() >= -1 and pixels.max() <= 1
    with pytest.raises(ValueError, match="expected shape"):
        backbone.encode_video(torch.zeros(2, FRAMES + 1, 3, SIZE, SIZE))


def test_shared_draw_gives_identical_losses_and_is_per_sample(backbone):
    video = videos(4)
    latents = backbone.encode_video(video)
    cond = backbone.encode_condition(video[:, 0])
    draw = backbone.draw_noise(latents, torch.Generator().manual_seed(3))
    again = backbone.draw_noise(latents, torch.Generator().manual_seed(3))
    torch.testing.assert_close(draw.noise, again.noise)
    torch.testing.assert_close(draw.level, again.level)
    assert draw.noise.shape == latents.shape and draw.level.shape == (4,)
    loss = backbone.denoising_loss(latents, cond, draw)
    assert loss.shape == (4,)
    torch.testing.assert_close(backbone.denoising_loss(latents, cond, again), loss, rtol=0, atol=0)
    # no reduction over B: a sub-batch with the matching sub-draw gives the same per-sample losses
    sub = backbone.denoising_loss(latents[[1, 3]], cond.index([1, 3]), draw.index(torch.tensor([1, 3])))
    torch.testing.assert_close(sub, loss[[1, 3]], rtol=1e-5, atol=1e-6)
    # frame 0 of the noise is pinned out: changing it does not change the loss
    draw.noise[:, 0] = 123.0
    torch.testing.assert_close(backbone.denoising_loss(latents, cond, draw), loss)


def test_loss_matches_hand_computed_edm_loss(backbone):
    video = videos(3, seed=5)
    latents = backbone.encode_video(video)
    cond = backbone.encode_condition(video[:, 0])
    draw = backbone.draw_noise(latents, torch.Generator().manual_seed(9))
    sd = backbone.config.sigma_data
    losses = []
    for b in range(3):
        sigma = float(draw.level[b])
        residual = latents[b, 1:]
        noisy = residual + sigma * draw.noise[b, 1:]
        c_in = 1 / (sigma**2 + sd**2) ** 0.5
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2) ** 0.5
        net_in = torch.cat([(c_in * noisy).reshape(1, -1, SIZE, SIZE), video[b : b + 1, 0]], dim=1)
        with torch.no_grad():
            out = backbone.denoiser(net_in, torch.tensor([0.25 * torch.tensor(sigma).log().item()]))
        denoised = c_skip * noisy + c_out * out.view_as(noisy)
        weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
        losses.append(weight * (denoised - residual).square().mean())
    with torch.no_grad():
        got = backbone.denoising_loss(latents, cond, draw)
    torch.testing.assert_close(got, torch.stack(losses), rtol=1e-4, atol=1e-6)


def test_untrained_loss_is_about_one_at_the_data_scale():
    # zero output conv: D = c_skip x, so E[L] = 1 for residuals with std sigma_data (EDM's unit loss)
    backbone = ToyBackbone(tiny_config(sigma_data=0.5))
    gen = torch.Generator().manual_seed(0)
    first = torch.zeros(256, 1, 3, SIZE, SIZE)
    residual = torch.randn(256, FRAMES - 1, 3, SIZE, SIZE, generator=gen) * 0.5
    latents = torch.cat([first, residual], dim=1)
    cond = backbone.encode_condition(first[:, 0])
    with torch.no_grad():
        loss = backbone.denoising_loss(latents, cond, backbone.draw_noise(latents, gen))
    assert abs(float(loss.mean()) - 1.0) < 0.05


def test_sampler_is_reproducible_and_uses_its_generator(backbone):
    cond = backbone.encode_condition(videos(2)[:, 0])
    for stochastic in (True, False):
        a = backbone.sample(cond, 2, torch.Generator().manual_seed(0), stochastic=stochastic)
        b = backbone.sample(cond, 2, torch.Generator().manual_seed(0), stochastic=stochastic)
        c = backbone.sample(cond, 2, torch.Generator().manual_seed(1), stochastic=stochastic)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert not torch.allclose(a[:, :, 1:], c[:, :, 1:])
    det = backbone.sample(cond, 2, torch.Generator().manual_seed(0), stochastic=False)
    sto = backbone.sample(cond, 2, torch.Generator().manual_seed(0), stochastic=True)
    assert not torch.allclose(det, sto)  # eta = 0.5 adds ancestral noise
    backbone.config.eta = 0.0
    torch.testing.assert_close(backbone.sample(cond, 2, torch.Generator().manual_seed(0), stochastic=True), det)
    one = backbone.sample(cond, 2, torch.Generator().manual_seed(0), stochastic=False, num_inference_steps=1)
    assert not torch.allclose(one, det)


def test_one_deterministic_euler_step_is_the_denoiser_output(backbone):
    # a single Euler step from sigma_max to 0 lands exactly on D(x; sigma_max) (clamped to the pixel range)
    backbone.config.clip_denoised = False
    cond = backbone.encode_condition(videos(2)[:, 0])
    gen = torch.Generator().manual_seed(4)
    out = backbone.sample(cond, 1, gen, stochastic=False, num_inference_steps=1)[:, 0]
    noise = torch.randn((2, FRAMES - 1, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(4))
    sigma = backbone.config.sigma_max
    with torch.no_grad():
        expected = backbone.denoise(noise * sigma, torch.full((2,), sigma), cond.first_frame)
    torch.testing.assert_close(out[:, 1:], expected, rtol=1e-4, atol=1e-5)


def test_save_and_load_reproduce_outputs_exactly(backbone, tmp_path):
    video = videos(2)
    latents = backbone.encode_video(video)
    cond = backbone.encode_condition(video[:, 0])
    opt = torch.optim.Adam(backbone.trainable_parameters(), lr=1e-2)
    for _ in range(2):  # move every weight away from its initial value
        loss = backbone.denoising_loss(latents, cond, backbone.draw_noise(latents, torch.Generator().manual_seed(0)))
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
    backbone.save_pretrained(tmp_path / "model")
    assert {p.name for p in (tmp_path / "model").iterdir()} >= {
        "config.json", "diffusion_pytorch_model.safetensors", BACKBONE_CONFIG_NAME}
    loaded = ToyBackbone.from_pretrained(tmp_path / "model")
    assert loaded.config == backbone.config
    # the Fourier frequencies travel with the weights (a prototype lost them on reload)
    torch.testing.assert_close(loaded.denoiser.noise_embedding.freqs, backbone.denoiser.noise_embedding.freqs)
    a = backbone.sample(cond, 2, torch.Generator().manual_seed(0))
    b = loaded.sample(cond, 2, torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    draw = backbone.draw_noise(latents, torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(loaded.denoising_loss(latents, cond, draw),
                                   backbone.denoising_loss(latents, cond, draw), rtol=0, atol=0)


def test_loaded_model_keeps_its_fields_and_takes_runtime_settings(backbone, tmp_path):
    backbone.save_pretrained(tmp_path / "m")
    assert detect_backbone(tmp_path / "m") == "toy"
    via_registry = load_backbone_from_path(tmp_path / "m")
    assert isinstance(via_registry, ToyBackbone) and via_registry.config == backbone.config
    # model fields come from the folder even when a default-filled ToyConfig is passed; runtime ones from it
    runtime = ToyConfig(eta=0.0, num_inference_steps=2)
    loaded = ToyBackbone.from_pretrained(tmp_path / "m", runtime)
    assert loaded.video_shape == (FRAMES, SIZE, SIZE) and loaded.config.sigma_data == 0.3
    assert loaded.config.eta == 0.0 and loaded.config.num_inference_steps == 2
    with pytest.raises(ConfigError, match="size=32"):
        ToyBackbone.from_pretrained(tmp_path / "m", tiny_config(size=32))


def test_from_pretrained_errors_name_the_folder(tmp_path, backbone):
    with pytest.raises(CheckpointError, match="missing toy_backbone.json"):
        ToyBackbone.from_pretrained(tmp_path)
    backbone.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / BACKBONE_CONFIG_NAME).read_text())
    cfg["num_frames"] = FRAMES + 2
    (tmp_path / "m" / BACKBONE_CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="disagrees"):
        ToyBackbone.from_pretrained(tmp_path / "m")
    # weights missing for a layer the configs ask for: an error, not a silent random init
    plain = ToyBackbone(tiny_config(mid_attention=False))
    plain.save_pretrained(tmp_path / "plain")
    for name in ("config.json", BACKBONE_CONFIG_NAME):
        file = tmp_path / "plain" / name
        file.write_text(file.read_text().replace('"mid_attention": false', '"mid_attention": true'))
    with pytest.raises(CheckpointError, match="missing_keys"):
        ToyBackbone.from_pretrained(tmp_path / "plain")


def test_same_init_seed_same_weights_different_seed_different():
    a, b = ToyBackbone(tiny_config()), ToyBackbone(tiny_config())
    c = ToyBackbone(tiny_config(init_seed=1))
    for (name, pa), pb, pc in zip(a.denoiser.state_dict().items(), b.denoiser.state_dict().values(),
                                  c.denoiser.state_dict().values()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    assert not torch.equal(a.denoiser.conv_in.weight, c.denoiser.conv_in.weight)
    assert not torch.equal(a.denoiser.noise_embedding.freqs, c.denoiser.noise_embedding.freqs)


def test_lora_trains_only_lora_and_round_trips(backbone, tmp_path):
    video = videos(4)
    latents = backbone.encode_video(video)
    cond = backbone.encode_condition(video[:, 0])
    draw = backbone.draw_noise(latents, torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = backbone.denoising_loss(latents, cond, draw)
    base_state = {k: v.clone() for k, v in backbone.denoiser.state_dict().items()}
    backbone.add_lora(rank=2, alpha=2)
    params = backbone.trainable_parameters()
    names = [n for n, p in backbone.denoiser.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names) and len(names) == len(params)
    assert all(("conv1" in n or "conv2" in n) for n in names)  # default targets: the ResBlock convs
    with torch.no_grad():  # LoRA B starts at zero: outputs unchanged
        torch.testing.assert_close(backbone.denoising_loss(latents, cond, draw), before)
    opt = torch.optim.SGD(params, lr=0.5)
    for _ in range(2):
        loss = backbone.denoising_loss(latents, cond, draw).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = {k: v for k, v in backbone.denoiser.state_dict().items()}
    for key, value in base_state.items():  # frozen weights did not move (peft renames them base_layer)
        moved_key = key if key in after else key.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        torch.testing.assert_close(after[moved_key], value, rtol=0, atol=0)
    with torch.no_grad():
        tuned = backbone.denoising_loss(latents, cond, draw)
    assert not torch.allclose(tuned, before)
    backbone.save_lora(tmp_path / "lora.safetensors")

    fresh = ToyBackbone(tiny_config())
    fresh.denoiser.load_state_dict(base_state)
    fresh.load_lora(tmp_path / "lora.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(fresh.denoising_loss(latents, cond, draw), tuned, rtol=0, atol=0)
    fresh.fuse_lora()
    assert not any("lora_" in n for n, _ in fresh.denoiser.named_parameters())
    assert len(fresh.trainable_parameters()) == len(list(fresh.denoiser.parameters()))
    with torch.no_grad():
        torch.testing.assert_close(fresh.denoising_loss(latents, cond, draw), tuned, rtol=1e-4, atol=1e-6)
    with pytest.raises(CheckpointError, match="LoRA file not found"):
        fresh.load_lora(tmp_path / "missing.safetensors")


def test_training_lowers_the_loss_on_a_fixed_batch():
    video = videos(8, seed=2)
    backbone = ToyBackbone(tiny_config(sigma_data=residual_std(video)))
    latents = backbone.encode_video(video)
    cond = backbone.encode_condition(video[:, 0])
    draw = backbone.draw_noise(latents, torch.Generator().manual_seed(0))
    with torch.no_grad():
        start = float(backbone.denoising_loss(latents, cond, draw).mean())
    opt = torch.optim.Adam(backbone.trainable_parameters(), lr=1e-2)
    for _ in range(20):
        loss = backbone.denoising_loss(latents, cond, draw).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.7 * start


def test_config_validation_and_residual_std():
    with pytest.raises(ConfigError, match="size=10"):
        ToyConfig(size=10, block_out_channels=(8, 16, 16), norm_num_groups=4)
    with pytest.raises(ConfigError, match="eta"):
        ToyConfig(eta=1.5)
    clips = torch.zeros(2, 3, 3, 4, 4)
    clips[:, 1:] = 0.5  # every residual 0.5 -> std 0
    assert residual_std(clips) == pytest.approx(0.0)
    clips[1, 1:] = -0.5
    assert residual_std(clips) == pytest.approx(0.5, rel=0.01)


def test_lora_file_that_does_not_fit_is_refused_with_its_name(backbone, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    backbone.add_lora(rank=2, alpha=2)
    good = tmp_path / "lora.safetensors"
    backbone.save_lora(good)
    with safe_open(str(good), framework="pt") as fh:
        metadata, state = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}
    renamed = {(k.replace("conv1", "conv9", 1) if i == 0 else k): v for i, (k, v) in enumerate(sorted(state.items()))}
    save_file(renamed, tmp_path / "renamed.safetensors", metadata=metadata)
    with pytest.raises(CheckpointError, match=r"renamed\.safetensors: LoRA keys do not match the model"):
        ToyBackbone(tiny_config()).load_lora(tmp_path / "renamed.safetensors")
    key = sorted(state)[0]
    reshaped = dict(state, **{key: torch.zeros(state[key].shape[0] + 1, *state[key].shape[1:])})
    save_file(reshaped, tmp_path / "reshaped.safetensors", metadata=metadata)
    with pytest.raises(CheckpointError, match=r"reshaped\.safetensors: LoRA weights do not fit this model"):
        ToyBackbone(tiny_config()).load_lora(tmp_path / "reshaped.safetensors")


def test_registry_applies_options_to_a_saved_toy_folder(tmp_path):
    from shiftvdm.backbone import BackboneConfig, load_backbone

    ToyBackbone(tiny_config(num_inference_steps=5, eta=0.25)).save_pretrained(tmp_path / "model")
    loaded = load_backbone(BackboneConfig(name="toy", pretrained=str(tmp_path / "model"),
                                          options={"num_inference_steps": 3, "eta": 0}))
    assert loaded.config.num_inference_steps == 3 and loaded.config.eta == 0  # given options win
    kept = load_backbone(BackboneConfig(name="toy", pretrained=str(tmp_path / "model"), options={"p_mean": -1.0}))
    assert (kept.config.num_inference_steps, kept.config.eta, kept.config.p_mean) == (5, 0.25, -1.0)  # the rest: folder's
    assert kept.config.block_out_channels == (8, 16)
    bf16 = load_backbone(BackboneConfig(name="toy", pretrained=str(tmp_path / "model"), options={"dtype": "bfloat16"}))
    assert bf16.denoiser.conv_in.weight.dtype == torch.bfloat16
    assert bf16.denoiser.noise_embedding.freqs.dtype == torch.float32  # Fourier phases stay float32
    with pytest.raises(ConfigError, match="backbone.options.guidance_scale: unknown option for backbone 'toy'"):
        load_backbone(BackboneConfig(name="toy", pretrained=str(tmp_path / "model"), options={"guidance_scale": 2.0}))
    with pytest.raises(ConfigError, match="fixed by the saved model"):
        load_backbone(BackboneConfig(name="toy", pretrained=str(tmp_path / "model"), options={"size": 32}))
    with pytest.raises(ConfigError, match="backbone.options.pretrained_path: give the model folder as backbone.pretrained"):
        load_backbone(BackboneConfig(name="svd", pretrained=str(tmp_path / "model"), options={"pretrained_path": "x"}))
