"""The Wan backbone on tiny random pipelines of the three layouts (TI2V-5B, I2V-A14B, Wan2.1-I2V).

Parity is against diffusers' own ``WanImageToVideoPipeline`` loaded from the same saved folder, with the same
generator, steps and guidance, and our prompt embeddings passed in.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline
from PIL import Image

from shiftvdm.backbone.base import Backbone, NoiseDraw
from shiftvdm.backbone.tiny import LAYOUTS, save_tiny_wan, tiny_video_shape
from shiftvdm.backbone.tiny import tiny_wan_backbone as from_config
from shiftvdm.backbone.wan import (
    WanBackbone,
    WanConfig,
    diffsynth_timestep_weights,
    flow_sde_step,
    flow_training_grid,
    from_pretrained,
)
from shiftvdm.errors import CheckpointError, ConfigError, DataError
from support import fill_zero_init

STEPS = 3
GUIDANCE = 5.0
PROMPT = "a red ball rolls left"



@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_wan")
    return {layout: save_tiny_wan(root / layout, layout, seed=0) for layout in LAYOUTS}


def load(tiny_dirs, layout: str, **options) -> WanBackbone:
    options = {"dtype": "float32", "num_inference_steps": STEPS, "guidance_scale": GUIDANCE, **options}
    return from_pretrained(tiny_dirs[layout], WanConfig(**options))


def first_frame(layout: str, seed: int = 0) -> tuple[Image.Image, torch.Tensor]:
    """A random 8-bit image and the same image as a (1, 3, H, W) tensor in [-1, 1] (as the pipeline converts it)."""
    _, H, W = tiny_video_shape(layout)
    pixels = torch.randint(0, 256, (H, W, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8).numpy()
    tensor = torch.from_numpy(pixels.astype(np.float32) / 255.0) * 2 - 1
    return Image.fromarray(pixels), tensor.permute(2, 0, 1)[None]


def diffusers_pipeline(tiny_dirs, layout: str, sampler: str = "euler") -> WanImageToVideoPipeline:
    pipe = WanImageToVideoPipeline.from_pretrained(tiny_dirs[layout])
    if sampler == "euler":
        pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=5.0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_pipeline(pipe, image, cond, layout: str, num_videos: int, seed: int = 0, output_type: str = "latent"):
    """The pipeline on one image with our prompt embeddings, ``num_videos`` clips (batch of repeated embeds)."""
    F, H, W = tiny_video_shape(layout)
    return pipe(image=image, prompt_embeds=cond.tensors["prompt_embeds"].repeat(num_videos, 1, 1),
                negative_prompt_embeds=cond.tensors["negative_prompt_embeds"].repeat(num_videos, 1, 1),
                height=H, width=W, num_frames=F, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                generator=torch.Generator().manual_seed(seed), output_type=output_type).frames


def random_lora_b(backbone: WanBackbone, seed: int = 3) -> None:
    """Give the (zero-initialised) LoRA B matrices random values so the LoRA changes outputs."""
    fill_zero_init(backbone.denoiser, std=0.3, seed=seed, only="lora_B")


# --- parity with diffusers ---------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["euler", "pipeline"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_deterministic_sampling_matches_wan_pipeline(tiny_dirs, layout, sampler):
    backbone = load(tiny_dirs, layout, deterministic_sampler=sampler)
    image, frame = first_frame(layout)
    cond = backbone.encode_condition(frame, [PROMPT])
    ours = backbone.sample(cond, 2, torch.Generator().manual_seed(0), stochastic=False)
    assert ours.shape == (1, 2, *backbone.latent_shape)
    pipe = diffusers_pipeline(tiny_dirs, layout, sampler)  # "pipeline": the folder's own UniPC scheduler
    theirs = run_pipeline(pipe, image, cond, layout, num_videos=2)
    assert (ours[0] - theirs).abs().max().item() <= 1e-5
    assert theirs.abs().max().item() > 0.5  # a real sample, not zeros


@pytest.mark.parametrize("layout", LAYOUTS)
def test_decoded_video_and_embeddings_match_pipeline(tiny_dirs, layout):
    backbone = load(tiny_dirs, layout)
    image, frame = first_frame(layout, seed=1)
    cond = backbone.encode_condition(frame, [PROMPT])
    pipe = diffusers_pipeline(tiny_dirs, layout)
    with torch.no_grad():
        prompt_embeds, negative_embeds = pipe.encode_prompt(PROMPT, negative_prompt=backbone.config.negative_prompt,
                                                            max_sequence_length=512)
    assert torch.equal(cond.tensors["prompt_embeds"], prompt_embeds)
    assert torch.equal(cond.tensors["negative_prompt_embeds"], negative_embeds)
    if layout == "i2v_21":
        with torch.no_grad():
            assert torch.equal(cond.tensors["image_embeds"], pipe.encode_image(image))

    video = backbone.decode(backbone.sample(cond, 1, torch.Generator().manual_seed(4), stochastic=False)[:, 0])
    F, H, W = backbone.video_shape
    assert video.shape == (1, F, 3, H, W) and video.min() >= -1 and video.max() <= 1
    theirs = run_pipeline(pipe, image, cond, layout, num_videos=1, seed=4, output_type="pt")  # in [0, 1]
    assert ((video + 1) / 2 - theirs).abs().max().item() <= 1e-5


def test_prompt_embeddings_are_computed_once_and_cached(tiny_dirs):
    backbone = load(tiny_dirs, "ti2v", prompt_cache_size=3)
    calls = []
    backbone.text_encoder.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    _, frame = first_frame("ti2v")
    frames = frame.repeat(2, 1, 1, 1)
    first = backbone.encode_condition(frames, [PROMPT, PROMPT])
    assert calls == [1, 1]  # the prompt once, the negative prompt once
    again = backbone.encode_condition(frames, [PROMPT, PROMPT])
    assert calls == [1, 1]  # all cached
    assert torch.equal(first.tensors["prompt_embeds"], again.tensors["prompt_embeds"])
    backbone.encode_condition(frames, ["a cat jumps", "a dog swims"])
    assert calls == [1, 1, 2]  # both new prompts in one text-encoder call
    assert len(backbone._prompt_cache) == 3  # bounded: the oldest entry was evicted


# --- training loss -----------------------------------------------------------------------------


def test_training_grid_and_diffsynth_weights_by_hand():
    sigmas, timesteps = flow_training_grid(25, 5.0)
    s = [1 - k / 25 for k in range(25)]
    expected_sigma = [5 * v / (1 + 4 * v) for v in s]
    assert torch.allclose(sigmas, torch.tensor(expected_sigma), atol=1e-6)
    assert timesteps[0].item() == pytest.approx(1000.0)
    assert timesteps[1].item() == pytest.approx(1000 * 4.8 / 4.84, rel=1e-6)
    y = [math.exp(-2 * ((1000 * v - 500) / 1000) ** 2) for v in expected_sigma]
    y = [v - min(y) for v in y]
    w = [v * 1000 / sum(y) * 25 / 1000 for v in y]
    w = [v + w[1] for v in w]
    weights = diffsynth_timestep_weights(timesteps)
    assert torch.allclose(weights, torch.tensor(w), atol=1e-5)
    assert int(weights.argmax()) == int((timesteps - 500).abs().argmin())  # the bump peaks at t = 500


@pytest.mark.parametrize("first_frame_in_loss", [False, True])
def test_ti2v_loss_matches_hand_computation(tiny_dirs, first_frame_in_loss):
    backbone = load(tiny_dirs, "ti2v", loss_on_first_frame=first_frame_in_loss, train_grid_steps=25)
    gen = torch.Generator().manual_seed(5)
    _, frame = first_frame("ti2v")
    cond = backbone.encode_condition(frame.repeat(2, 1, 1, 1), [PROMPT, "a cat jumps"])
    C, Fl, h, w = backbone.latent_shape
    x0 = torch.randn(2, C, Fl, h, w, generator=gen)
    eps = torch.randn(2, C, Fl, h, w, generator=gen)
    t = backbone.train_timesteps[[2, 17]]
    loss = backbone.denoising_loss(x0, cond, NoiseDraw(noise=eps, level=t))

    sigma = (t / 1000).view(2, 1, 1, 1, 1)
    noisy = (1 - sigma) * x0 + sigma * eps
    noisy[:, :, 0] = cond.tensors["image_latents"][:, :, 0]  # frame 0 replaced by the clean condition latent
    tokens_per_frame = (h // 2) * (w // 2)
    timestep = torch.stack([torch.cat([torch.zeros(tokens_per_frame), torch.full(((Fl - 1) * tokens_per_frame,), v)])
                            for v in t.tolist()])
    with torch.no_grad():
        pred = backbone.transformer(hidden_states=noisy, timestep=timestep,
                                    encoder_hidden_states=cond.tensors["prompt_embeds"], return_dict=False)[0]
    sq = (pred - (eps - x0)) ** 2
    mse = sq.flatten(1).mean(1) if first_frame_in_loss else sq[:, :, 1:].flatten(1).mean(1)
    expected = mse * backbone.train_weights[[2, 17]]
    assert loss.shape == (2,)
    assert torch.allclose(loss.detach(), expected, rtol=1e-5, atol=1e-6)


def test_a14b_loss_routes_each_sample_to_its_expert(tiny_dirs):
    backbone = load(tiny_dirs, "i2v_a14b", timestep_weighting="none")
    assert backbone.boundary_ratio == pytest.approx(0.9)
    gen = torch.Generator().manual_seed(6)
    _, frame = first_frame("i2v_a14b")
    cond = backbone.encode_condition(frame.repeat(2, 1, 1, 1), None)
    x0 = torch.randn(2, *backbone.latent_shape, generator=gen)
    eps = torch.randn(2, *backbone.latent_shape, generator=gen)
    t = torch.tensor([1000.0, 500.0])  # high-noise expert, then low-noise expert
    loss = backbone.denoising_loss(x0, cond, NoiseDraw(noise=eps, level=t))
    expected = []
    for b, expert in enumerate([backbone.transformer, backbone.transformer_2]):
        sigma = t[b] / 1000
        noisy = (1 - sigma) * x0[b:b + 1] + sigma * eps[b:b + 1]
        hidden = torch.cat([noisy, cond.tensors["image_condition"][b:b + 1]], dim=1)
        with torch.no_grad():
            pred = expert(hidden_states=hidden, timestep=t[b:b + 1],
                          encoder_hidden_states=cond.tensors["prompt_embeds"][b:b + 1], return_dict=False)[0]
        expected.append(((pred - (eps[b:b + 1] - x0[b:b + 1])) ** 2).mean())
    assert torch.allclose(loss.detach(), torch.stack(expected), rtol=1e-5, atol=1e-6)


def test_shared_draws_give_identical_losses(tiny_dirs):
    backbone = load(tiny_dirs, "ti2v")
    _, frame = first_frame("ti2v")
    cond = backbone.encode_condition(frame.repeat(4, 1, 1, 1), [PROMPT] * 4)
    x = torch.randn(4, *backbone.latent_shape, generator=torch.Generator().manual_seed(0))
    draw = backbone.draw_noise(x, torch.Generator().manual_seed(1))
    same = backbone.draw_noise(x, torch.Generator().manual_seed(1))
    other = backbone.draw_noise(x, torch.Generator().manual_seed(2))
    assert draw.noise.shape == x.shape and draw.level.shape == (4,)
    assert torch.equal(draw.noise, same.noise) and torch.equal(draw.level, same.level)
    assert all(float(v) in backbone.train_timesteps.tolist() for v in draw.level)
    first, second = backbone.denoising_loss(x, cond, draw), backbone.denoising_loss(x, cond, same)
    assert torch.equal(first, second)
    assert not torch.allclose(first, backbone.denoising_loss(x, cond, other))
    # the same draw applied to a different clip (a rollout) still gives a per-sample loss of shape (B,)
    assert backbone.denoising_loss(x.flip(0), cond, draw).shape == (4,)

    big = torch.zeros(16, *backbone.latent_shape)
    assert len(set(backbone.draw_noise(big, torch.Generator().manual_seed(3)).level.tolist())) > 1  # one t per sample
    shared = load(tiny_dirs, "ti2v", share_timestep_across_batch=True)
    assert len(set(shared.draw_noise(big, torch.Generator().manual_seed(3)).level.tolist())) == 1  # the reference's


# --- samplers ----------------------------------------------------------------------------------


def test_sde_sampler_is_seeded_batch_independent_and_reduces_to_euler(tiny_dirs):
    backbone = load(tiny_dirs, "ti2v", sampler="sde", sample_batch_size=1)
    _, frame = first_frame("ti2v")
    cond = backbone.encode_condition(frame.repeat(2, 1, 1, 1), [PROMPT, "a cat jumps"])
    a = backbone.sample(cond, 2, torch.Generator().manual_seed(0))
    b = backbone.sample(cond, 2, torch.Generator().manual_seed(0))
    c = backbone.sample(cond, 2, torch.Generator().manual_seed(1))
    assert a.shape == (2, 2, *backbone.latent_shape)
    assert torch.equal(a, b) and (a - c).abs().max() > 0.1
    backbone.config.sample_batch_size = 4  # memory knob only
    assert (backbone.sample(cond, 2, torch.Generator().manual_seed(0)) - a).abs().max() <= 1e-5
    euler = backbone.sample(cond, 2, torch.Generator().manual_seed(0), stochastic=False)
    assert (euler - a).abs().max() > 0.05  # the SDE's noise matters
    backbone.config.sde_noise_level = 0.0
    assert (backbone.sample(cond, 2, torch.Generator().manual_seed(0)) - euler).abs().max() <= 1e-5
    assert torch.equal(a[:, :, :, 0], euler[:, :, :, 0])  # TI2V: frame 0 is the condition latent in both


def test_sde_step_keeps_the_flow_marginals():
    """With the exact velocity of Gaussian data N(m, s²), the SDE ends at N(m, s²) for any noise level."""
    m, s, steps = 1.5, 0.5, 200
    scheduler = FlowMatchEulerDiscreteScheduler(shift=5.0)
    scheduler.set_timesteps(steps)
    sigmas = scheduler.sigmas.double()

    def velocity(x, t):
        var = (1 - t) ** 2 * s**2 + t**2  # x_t = (1 - t)x0 + tε: E[ε − x0 | x_t]
        r = x - (1 - t) * m
        return t / var * r - (m + (1 - t) * s**2 / var * r)

    for level in (0.7, 1.0):
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(20000, generator=gen, dtype=torch.float64)
        for i in range(steps):
            sg, sn = float(sigmas[i]), float(sigmas[i + 1])
            z = torch.randn(20000, generator=gen, dtype=torch.float64)
            x = flow_sde_step(x, velocity(x, sg), sg, sn, z, level, sigma_for_std=sn if sg >= 1 else None)
        assert abs(x.mean().item() - m) < 0.02 and abs(x.std().item() - s) < 0.02
    x = torch.randn(5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    v = torch.randn(5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert torch.allclose(flow_sde_step(x, v, 0.6, 0.4, torch.randn(5, dtype=torch.float64), 0.0), x - 0.2 * v)


# --- LoRA --------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["ti2v", "i2v_a14b"])
def test_lora_trains_only_lora_weights(tiny_dirs, layout):
    backbone = load(tiny_dirs, layout)
    backbone.add_lora(rank=4, alpha=4)
    params = backbone.trainable_parameters()
    experts = len(backbone.denoiser.experts)
    # 2 blocks × (self + cross attention) × (to_q, to_k, to_v, to_out.0) × (A, B) per expert
    assert len(params) == experts * 2 * 2 * 4 * 2
    names = [n for n, p in backbone.denoiser.named_parameters() if p.requires_grad]
    assert all("lora_" in n for n in names) and len(names) == len(params)
    before = {n: p.detach().clone() for n, p in backbone.denoiser.named_parameters()}
    frozen = {n: p.detach().clone() for n, p in backbone.vae.named_parameters()}
    _, frame = first_frame(layout)
    cond = backbone.encode_condition(frame.repeat(2, 1, 1, 1), [PROMPT, "a cat jumps"])
    x = torch.randn(2, *backbone.latent_shape, generator=torch.Generator().manual_seed(0))
    draw = backbone.draw_noise(x, torch.Generator().manual_seed(0))
    draw.level = torch.tensor([1000.0, 500.0])  # both experts of A14B get a sample
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    for _ in range(3):
        backbone.denoising_loss(x, cond, draw).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    for n, p in backbone.denoiser.named_parameters():
        changed = not torch.equal(p, before[n])
        assert changed == ("lora_" in n), n
    assert all(torch.equal(p, frozen[n]) for n, p in backbone.vae.named_parameters())


# For Wan2.1, diffusers pads a LoRA without image-branch weights with zero add_k/add_v LoRAs, and peft warns.
@pytest.mark.filterwarnings("ignore:While injecting the PEFT adapters:RuntimeWarning")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_lora_roundtrip_and_diffusers_pipeline_loads_it(tiny_dirs, layout, tmp_path):
    backbone = load(tiny_dirs, layout)
    image, frame = first_frame(layout)
    cond = backbone.encode_condition(frame, [PROMPT])
    backbone.add_lora(rank=4, alpha=8)
    random_lora_b(backbone)
    ours = backbone.sample(cond, 1, torch.Generator().manual_seed(0), stochastic=False)
    file = tmp_path / "lora.safetensors"
    backbone.save_lora(file)
    assert file.is_file() and WanBackbone.expert_lora_path(file, 1).is_file() == (layout == "i2v_a14b")

    reloaded = load(tiny_dirs, layout)
    reloaded.load_lora(file)
    assert torch.equal(reloaded.sample(cond, 1, torch.Generator().manual_seed(0), stochastic=False), ours)

    pipe = diffusers_pipeline(tiny_dirs, layout)
    base = run_pipeline(pipe, image, cond, layout, num_videos=1)
    pipe.load_lora_weights(str(file))
    if layout == "i2v_a14b":
        pipe.load_lora_weights(str(WanBackbone.expert_lora_path(file, 1)), load_into_transformer_2=True)
    with_lora = run_pipeline(pipe, image, cond, layout, num_videos=1)
    assert (with_lora - base).abs().max() > 0.1  # the LoRA changes the pipeline's output...
    assert (with_lora - ours[0]).abs().max() <= 1e-5  # ...into exactly our LoRA model's output (alpha/rank kept)


def test_fuse_lora_keeps_outputs_and_drops_adapters(tiny_dirs, tmp_path):
    backbone = load(tiny_dirs, "i2v_a14b")
    _, frame = first_frame("i2v_a14b")
    cond = backbone.encode_condition(frame, [PROMPT])
    backbone.add_lora(rank=4, alpha=4)
    random_lora_b(backbone)
    with pytest.raises(ValueError, match="fuse_lora"):
        backbone.save_pretrained(tmp_path / "model")
    before = backbone.sample(cond, 1, torch.Generator().manual_seed(0), stochastic=False)
    backbone.fuse_lora()
    assert not any("lora" in n for n, _ in backbone.denoiser.named_parameters())
    assert len(backbone.trainable_parameters()) == len(list(backbone.denoiser.parameters()))
    assert (backbone.sample(cond, 1, torch.Generator().manual_seed(0), stochastic=False) - before).abs().max() <= 1e-4


# --- loading, saving, errors -------------------------------------------------------------------


def test_save_pretrained_roundtrip_and_protocol(tiny_dirs, tmp_path):
    backbone = load(tiny_dirs, "i2v_21")
    assert isinstance(backbone, Backbone)
    assert backbone.layout == "i2v_21" and backbone.video_shape == tiny_video_shape("i2v_21")
    _, frame = first_frame("i2v_21")
    cond = backbone.encode_condition(frame, [PROMPT])
    ours = backbone.sample(cond, 1, torch.Generator().manual_seed(0), stochastic=False)
    backbone.save_pretrained(tmp_path / "model")
    again = from_pretrained(tmp_path / "model", WanConfig(dtype="float32", num_inference_steps=STEPS))
    assert again.video_shape == backbone.video_shape  # read back from shiftvdm_wan.json
    assert torch.equal(again.sample(cond, 1, torch.Generator().manual_seed(0), stochastic=False), ours)


def test_registry_loads_wan_folders(tiny_dirs):
    from shiftvdm.backbone import BackboneConfig, load_backbone, load_backbone_from_path

    backbone = load_backbone_from_path(tiny_dirs["i2v_a14b"], dtype="float32", sampler="euler")
    assert isinstance(backbone, WanBackbone) and backbone.layout == "i2v_a14b"
    assert backbone.video_shape == tiny_video_shape("i2v_a14b") and backbone.config.sampler == "euler"
    cfg = BackboneConfig(name="wan", pretrained=str(tiny_dirs["ti2v"]),
                         options={"layout": "ti2v", "lora_target_modules": ["to_q", "to_v"], "num_inference_steps": 2})
    backbone = load_backbone(cfg)
    backbone.add_lora(2, 2)
    assert len(backbone.trainable_parameters()) == 2 * 2 * 2 * 2  # blocks × attentions × (to_q, to_v) × (A, B)
    with pytest.raises(ConfigError, match="sampler"):
        load_backbone(BackboneConfig(name="wan", pretrained=str(tiny_dirs["ti2v"]), options={"sampler": "ddim"}))


def test_encode_video_latents_and_first_frame_condition(tiny_dirs):
    backbone = load(tiny_dirs, "ti2v")
    F, H, W = backbone.video_shape
    video = torch.rand(2, F, 3, H, W, generator=torch.Generator().manual_seed(0)) * 2 - 1
    latents = backbone.encode_video(video)
    assert latents.shape == (2, *backbone.latent_shape) == (2, 48, 3, H // 16, W // 16)
    cond = backbone.encode_condition(video[:, 0], None)
    # the causal VAE encodes frame 0 on its own: the clip's first latent frame is the condition latent
    assert (latents[:, :, :1] - cond.tensors["image_latents"]).abs().max() <= 1e-5
    decoded = backbone.decode(latents)
    assert decoded.shape == video.shape and decoded.min() >= -1 and decoded.max() <= 1


def test_bfloat16_weights_and_random_init(tiny_dirs):
    backbone = load(tiny_dirs, "i2v_a14b", dtype="bfloat16")
    assert backbone.transformer_2.dtype == torch.bfloat16 and backbone.vae.dtype == torch.float32
    _, frame = first_frame("i2v_a14b")
    cond = backbone.encode_condition(frame.repeat(2, 1, 1, 1), None)
    x = torch.randn(2, *backbone.latent_shape, generator=torch.Generator().manual_seed(0))
    draw = backbone.draw_noise(x, torch.Generator().manual_seed(0))
    assert torch.isfinite(backbone.denoising_loss(x, cond, draw)).all()

    tiny = from_config(WanConfig(layout="ti2v", dtype="float32", num_inference_steps=2))
    assert tiny.layout == "ti2v" and tiny.video_shape == tiny_video_shape("ti2v")
    lat = tiny.sample(tiny.encode_condition(first_frame("ti2v")[1], [PROMPT]), 1, torch.Generator().manual_seed(0))
    assert lat.shape == (1, 1, *tiny.latent_shape)
    with pytest.raises(ConfigError, match="explicit layout"):
        from_config(WanConfig())


def test_errors_name_the_problem(tiny_dirs, tmp_path):
    with pytest.raises(CheckpointError, match="model folder not found"):
        from_pretrained(tmp_path / "nowhere", WanConfig())
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no model_index.json"):
        from_pretrained(tmp_path / "empty", WanConfig())
    with pytest.raises(ConfigError, match="'ti2v' model, but the config asks for 'i2v_21'"):
        from_pretrained(tiny_dirs["ti2v"], WanConfig(layout="i2v_21"))
    with pytest.raises(ConfigError, match="num_frames=10: must be 4k\\+1"):
        WanConfig(num_frames=10)
    backbone = load(tiny_dirs, "ti2v")
    with pytest.raises(DataError, match="num_frames=9, height=64, width=64"):
        backbone.encode_video(torch.zeros(1, 8, 3, 64, 64))
    with pytest.raises(CheckpointError, match="LoRA file not found"):
        backbone.load_lora(tmp_path / "missing.safetensors")
    with pytest.raises(ConfigError, match="match no module"):
        backbone.add_lora(2, 2, ["to_qkv_nowhere"])
