"""Tiny random-init presets of the real architectures (SVD and Wan2.x): the diffusers classes at toy widths.

This is the single source of the tiny models used by the tests, the benchmarks, the demo and the tiny
pre-training runs, and of random init in the registry (:func:`random_init`). It sits above svd.py and wan.py
(it imports them; they never import it).

SVD. Sizes follow diffusers' own SVD pipeline test (``get_dummy_components``) and the measurements in the
project's env-feasibility notes:

* latent preset — ``UNetSpatioTemporalConditionModel`` (2.06 M params) + ``AutoencoderKLTemporalDecoder``
  (2× spatial downsampling, 4 latent channels) + a 2-layer ``CLIPVisionModelWithProjection`` at 224 px
  (the pipeline resizes the conditioning image to 224) + ``CLIPImageProcessor``; saved as a
  ``StableVideoDiffusionPipeline`` folder that plain diffusers loads;
* pixel-space preset — the same UNet on pixel-unshuffled frames (``patch_size`` f: 3·f² channels per
  patch), no autoencoder and no CLIP (see ``svd.py`` for why); saved in our own small layout.

Both use SVD's scheduler configuration (Karras σ ∈ [0.002, 700], v-prediction, continuous timesteps).
Weights are drawn inside ``torch.random.fork_rng`` from ``seed``, so building a preset neither reads nor
disturbs the global RNG.

Wan. One preset per layout, mirroring a released checkpoint at toy size (sizes follow diffusers'
``get_dummy_components`` for Wan: 2 heads × 12 dims, 2 layers):

- ``ti2v``: Wan2.2-TI2V-5B — ``expand_timesteps``, z_dim-48 residual VAE (16× spatial), no image encoder.
- ``i2v_a14b``: Wan2.2-I2V-A14B — two experts (``transformer`` high noise, ``transformer_2`` low noise)
  switched at ``boundary_ratio``, mask + image-latent channels concatenated, no image encoder.
- ``i2v_21``: Wan2.1-I2V — one transformer with a CLIP image branch (``image_dim``), channel concat.

Each folder ships ``UniPCMultistepScheduler`` in flow mode, as the released Diffusers folders do. Nothing is
downloaded: the tokenizer is a word-level ``tokenizers`` model built in code (env-feasibility.md §3), so
``save_tiny_wan`` + ``WanImageToVideoPipeline.from_pretrained`` work with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel

from shiftvdm.backbone.base import DTYPES, Backbone, cast_frozen
from shiftvdm.backbone.svd import SVDBackbone, SVDConfig
from shiftvdm.backbone.toy import ToyBackbone
from shiftvdm.backbone.wan import LAYOUTS, WanBackbone, WanConfig, write_video_shape
from shiftvdm.errors import ConfigError

logger = logging.getLogger(__name__)

# EulerDiscreteScheduler settings of stabilityai/stable-video-diffusion-img2vid(-xt) (scheduler_config.json).
SVD_SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "sigma_max": 700.0,
    "sigma_min": 0.002,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "timestep_type": "continuous",
    "trained_betas": None,
    "use_karras_sigmas": True,
}


def svd_scheduler(sigma_min: float = 0.002, sigma_max: float = 700.0) -> EulerDiscreteScheduler:
    """SVD's EulerDiscreteScheduler (optionally with another σ range)."""
    return EulerDiscreteScheduler(**{**SVD_SCHEDULER_CONFIG, "sigma_min": sigma_min, "sigma_max": sigma_max})


def tiny_svd_components(seed: int = 0, pixel_space: bool = False, *, num_frames: int = 8,
                        block_out_channels: tuple[int, ...] = (32, 64), layers_per_block: int = 1,
                        num_attention_heads: tuple[int, ...] = (2, 4), cross_attention_dim: int = 32,
                        patch_size: int = 4, sample_size: int | None = None,
                        sigma_max: float = 700.0) -> dict[str, Any]:
    """Random-init tiny SVD components.

    Args:
        seed: weight-init seed (same seed, same weights).
        pixel_space: no autoencoder and no CLIP; the UNet works on pixel-unshuffled frames.
        num_frames: the UNet's default clip length (``unet.config.num_frames``).
        block_out_channels: UNet widths (multiples of 32: the blocks use GroupNorm with 32 groups).
        layers_per_block: resnet/attention layers per UNet block.
        num_attention_heads: heads per UNet block.
        cross_attention_dim: width of the image embedding the UNet cross-attends to (= CLIP projection dim).
        patch_size: pixel-space only: pixel-unshuffle factor f (the UNet sees 3·f² channels per frame). The
            default 4 puts 32×32 clips on an 8×8 grid (use 2 for 16×16 clips): on CPU the step time grows
            with the grid area, not with the channel count.
        sample_size: the UNet's default grid side; None = 32 for the latent preset (64 px clips) and 8 for
            the pixel-space preset (8·f px clips).
        sigma_max: largest σ of the sampling grid.

    Returns:
        ``{"unet", "scheduler", "vae", "image_encoder", "feature_extractor", "patch_size"}``; the last three
        components are None in pixel space and ``patch_size`` is 1 for the latent preset.
    """
    latent_channels = 3 * patch_size**2 if pixel_space else 4
    if sample_size is None:
        sample_size = 8 if pixel_space else 32
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNetSpatioTemporalConditionModel(
            sample_size=sample_size,
            in_channels=2 * latent_channels,  # noisy latents ‖ conditioning-frame latents
            out_channels=latent_channels,
            down_block_types=("CrossAttnDownBlockSpatioTemporal",) * len(block_out_channels),
            up_block_types=("CrossAttnUpBlockSpatioTemporal",) * len(block_out_channels),
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            cross_attention_dim=cross_attention_dim,
            num_attention_heads=tuple(num_attention_heads),
            addition_time_embed_dim=32,
            projection_class_embeddings_input_dim=3 * 32,  # 3 added time ids: fps−1, motion bucket, noise aug
            num_frames=num_frames,
        )
        vae = image_encoder = feature_extractor = None
        if not pixel_space:
            vae = AutoencoderKLTemporalDecoder(
                block_out_channels=(32, 64), in_channels=3, out_channels=3,
                down_block_types=("DownEncoderBlock2D",) * 2, latent_channels=latent_channels, layers_per_block=1)
            image_encoder, feature_extractor = _tiny_clip(cross_attention_dim)
    return {"unet": unet, "scheduler": svd_scheduler(sigma_max=sigma_max), "vae": vae,
            "image_encoder": image_encoder, "feature_extractor": feature_extractor,
            "patch_size": patch_size if pixel_space else 1}


def _tiny_clip(projection_dim: int):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    try:  # transformers 5 without torchvision: the PIL backend, imported directly to avoid its fallback warning
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # pragma: no cover - other transformers versions
        from transformers import CLIPImageProcessor as ImageProcessor
    config = CLIPVisionConfig(hidden_size=32, projection_dim=projection_dim, num_hidden_layers=2,
                              num_attention_heads=4, image_size=224, patch_size=32, intermediate_size=37)
    # image_size 224: the SVD pipeline resizes the conditioning image to 224×224 before CLIP.
    return CLIPVisionModelWithProjection(config).eval(), ImageProcessor(crop_size=224, size={"shortest_edge": 224})


def save_tiny_svd(path: str | Path, seed: int = 0, pixel_space: bool = False, **kwargs: Any) -> Path:
    """Build a tiny preset and save it in the diffusers folder layout (loadable offline).

    The latent preset is written by ``StableVideoDiffusionPipeline.save_pretrained`` (so plain diffusers
    loads it); the pixel-space preset by :meth:`SVDBackbone.save_pretrained` (our layout, see ``svd.py``).
    ``kwargs`` go to :func:`tiny_svd_components`.

    Returns:
        The folder written.
    """
    path = Path(path)
    backbone = SVDBackbone(**tiny_svd_components(seed=seed, pixel_space=pixel_space, **kwargs))
    backbone.save_pretrained(path)
    logger.info("wrote tiny %s SVD preset (seed %d) to %s", "pixel-space" if pixel_space else "latent", seed, path)
    return path


# ---------------------------------------------------------------------- Wan
# Word-level vocabulary of the tiny tokenizer: 3 special tokens + 61 words = the tiny UMT5 vocab size (64).
_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
_WORDS = (
    "a an the of and with in on at to from by is are up down left right fast slow big small "
    "red green blue white black yellow dog cat bird car ball person man woman child tree water "
    "sky road river wave wind runs walks jumps flies rolls falls spins moves "
    "turns dances swims camera pans zooms static video motion"
).split()
_TINY_VOCAB_SIZE = 64
_TEXT_DIM = 32  # UMT5 d_model of the tiny text encoder = transformer text_dim


def build_tiny_tokenizer(model_max_length: int = 512):
    """A T5-like fast tokenizer (lower-case, whitespace split, ``</s>`` appended) built without downloads."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(_SPECIAL_TOKENS + tuple(_WORDS))}
    assert len(vocab) == _TINY_VOCAB_SIZE, len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=model_max_length)


def _tiny_transformer(in_channels: int, out_channels: int, image_dim: int | None, seed: int):
    from diffusers import WanTransformer3DModel

    heads, head_dim = 2, 12
    torch.manual_seed(seed)  # inside tiny_wan_components' forked RNG state
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=head_dim, in_channels=in_channels,
        out_channels=out_channels, text_dim=_TEXT_DIM, freq_dim=32, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32, image_dim=image_dim,
        # Wan2.1-I2V attends to the CLIP tokens through separate add_k/add_v projections (as the real model).
        added_kv_proj_dim=heads * head_dim if image_dim is not None else None,
    )


def tiny_wan_components(layout: str, seed: int = 0) -> dict[str, Any]:
    """Random-init tiny components of ``layout``: the keyword arguments of ``WanImageToVideoPipeline``.

    Args:
        layout: ``"ti2v"``, ``"i2v_a14b"`` or ``"i2v_21"``.
        seed: initialisation seed (each component is seeded from it, so presets are reproducible).
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown Wan layout `{layout}`; expected one of {', '.join(LAYOUTS)}")
    # diffusers and transformers modules initialise from the global RNG and take no generator: seed it inside
    # a forked RNG state, so presets are reproducible and the caller's global RNG is left untouched.
    with torch.random.fork_rng(devices=[]):
        return _build_components(layout, seed)


def _build_components(layout: str, seed: int) -> dict[str, Any]:
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=_TINY_VOCAB_SIZE, d_model=_TEXT_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1))
    tokenizer = build_tiny_tokenizer()

    torch.manual_seed(seed + 1)
    if layout == "ti2v":
        z_dim = 48
        # Non-trivial latents_mean/std so the normalisation is exercised (the real ones are per channel too).
        vae = AutoencoderKLWan(
            base_dim=3, decoder_base_dim=3, z_dim=z_dim, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
            temperal_downsample=[False, True, True], is_residual=True, patch_size=2, in_channels=12, out_channels=12,
            latents_mean=torch.linspace(-0.2, 0.2, z_dim).tolist(),
            latents_std=torch.linspace(0.5, 1.5, z_dim).tolist(),
            scale_factor_spatial=16)
    else:
        z_dim = 16
        vae = AutoencoderKLWan(base_dim=3, z_dim=z_dim, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                               temperal_downsample=[False, True, True])  # Wan2.1 VAE: real latents_mean/std defaults

    # The released Wan checkpoints ship UniPC in flow mode (Wan2.2: flow_shift 5; Wan2.1-480P: 3).
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        num_train_timesteps=1000, flow_shift=3.0 if layout == "i2v_21" else 5.0)
    components: dict[str, Any] = dict(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                                      image_processor=None, image_encoder=None, transformer=None, transformer_2=None,
                                      boundary_ratio=None, expand_timesteps=False)
    if layout == "ti2v":
        components.update(transformer=_tiny_transformer(z_dim, z_dim, None, seed + 2), expand_timesteps=True)
    elif layout == "i2v_a14b":
        in_channels = z_dim + 4 + z_dim  # noisy latents + 4 mask channels + first-frame condition latents
        components.update(transformer=_tiny_transformer(in_channels, z_dim, None, seed + 2),
                          transformer_2=_tiny_transformer(in_channels, z_dim, None, seed + 3),
                          boundary_ratio=0.9)  # Wan2.2-I2V-A14B's value
    else:
        from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

        clip_hidden = 8
        torch.manual_seed(seed + 4)
        components.update(
            transformer=_tiny_transformer(z_dim + 4 + z_dim, z_dim, clip_hidden, seed + 2),
            image_encoder=CLIPVisionModel(CLIPVisionConfig(
                hidden_size=clip_hidden, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
                image_size=32, patch_size=4)),
            image_processor=CLIPImageProcessor(crop_size=32, size={"shortest_edge": 32}))
    return components


def tiny_video_shape(layout: str) -> tuple[int, int, int]:
    """(num_frames, height, width) that suit the tiny preset of ``layout``: 3 latent frames of 2×2 tokens."""
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown Wan layout `{layout}`; expected one of {', '.join(LAYOUTS)}")
    return (9, 64, 64) if layout == "ti2v" else (9, 32, 32)


def save_tiny_wan(path: str | Path, layout: str, seed: int = 0) -> Path:
    """Write a tiny random ``WanImageToVideoPipeline`` of ``layout`` to ``path`` (diffusers folder layout)."""
    from diffusers import WanImageToVideoPipeline

    path = Path(path)
    pipe = WanImageToVideoPipeline(**tiny_wan_components(layout, seed))
    pipe.save_pretrained(path)
    write_video_shape(path, tiny_video_shape(layout))  # so from_pretrained picks the preset's clip size
    logger.info("wrote tiny Wan %s pipeline to %s", layout, path)
    return path


# ---------------------------------------------------------------------- random init (the registry's)
TINY_PRESETS = ("tiny", "tiny-pixel")  # `backbone.pretrained` values that build a random-init tiny SVD


def tiny_svd_backbone(config: SVDConfig, preset: str = "tiny") -> SVDBackbone:
    """A random-init tiny SVD (``preset`` tiny = latent, tiny-pixel = pixel space) with ``config``'s settings."""
    if preset not in TINY_PRESETS:
        raise ConfigError(f"backbone.pretrained: {preset!r} is not a tiny preset; expected one of {', '.join(TINY_PRESETS)}")
    pixel = preset == "tiny-pixel"
    kwargs = {"num_frames": config.num_frames} if config.num_frames else {}
    parts = tiny_svd_components(seed=0, pixel_space=pixel, **kwargs)
    patch = parts.pop("patch_size", 2 if pixel else 1)
    return SVDBackbone(**parts, config=config, patch_size=patch)


def tiny_wan_backbone(config: WanConfig) -> WanBackbone:
    """A random-init *tiny* Wan of ``config.layout``, seeded by ``config.seed``.

    A random full-size Wan is of no use on its own, so random init means the tiny preset; its video shape is
    the preset's unless the config sets one. Weights are cast as ``from_pretrained(dtype=...)`` would
    (``_keep_in_fp32_modules`` stay float32).
    """
    from dataclasses import replace

    if config.layout == "auto":
        raise ConfigError("layout: random init (no pretrained folder) needs an explicit layout: "
                          "ti2v, i2v_a14b or i2v_21")
    frames, height, width = tiny_video_shape(config.layout)
    config = replace(config, num_frames=config.num_frames or frames, height=config.height or height,
                     width=config.width or width)
    components = tiny_wan_components(config.layout, seed=config.seed)
    dtype = DTYPES[config.dtype]
    for key in ("text_encoder", "transformer", "transformer_2", "image_encoder"):
        if components.get(key) is not None:
            cast_frozen(components[key], dtype)
    cast_frozen(components["vae"], DTYPES[config.vae_dtype])
    return WanBackbone(config, components)


def random_init(name: str, config: Any, preset: str | None) -> Backbone:
    """The random-init model of family ``name`` for the registry: the tiny preset of the real architecture
    (SVD, Wan) or a fresh toy model. ``preset`` is ``backbone.pretrained`` (None, ``tiny`` or ``tiny-pixel``)."""
    if name == "svd" and preset is None:
        raise ConfigError("backbone.pretrained: SVD needs a model folder, or `tiny` / `tiny-pixel` to pre-train "
                          "the tiny random-init preset from scratch")
    builders = {"svd": lambda: tiny_svd_backbone(config, preset or "tiny"),
                "wan": lambda: tiny_wan_backbone(config),
                "toy": lambda: ToyBackbone(config)}
    if preset == "tiny-pixel" and name != "svd":
        raise ConfigError(f"backbone.pretrained: `tiny-pixel` is an SVD preset, not one of backbone {name!r}")
    return builders[name]()
