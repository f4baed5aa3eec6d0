"""Tiny random-init Wan pipelines of the real diffusers classes, one per layout, for CPU tests and demos.

Each layout mirrors the structure of a released checkpoint at toy size (sizes follow diffusers'
``get_dummy_components`` for Wan: 2 heads × 12 dims, 2 layers):

- ``ti2v``: Wan2.2-TI2V-5B — ``expand_timesteps``, z_dim-48 residual VAE (16× spatial), no image encoder.
- ``i2v_a14b``: Wan2.2-I2V-A14B — two experts (``transformer`` high noise, ``transformer_2`` low noise)
  switched at ``boundary_ratio``, mask + image-latent channels concatenated, no image encoder.
- ``i2v_21``: Wan2.1-I2V — one transformer with a CLIP image branch (``image_dim``), channel concat.

Each folder ships ``UniPCMultistepScheduler`` in flow mode, as the released Diffusers folders do.

Nothing is downloaded: the tokenizer is a word-level ``tokenizers`` model built in code
(env-feasibility.md §3), so ``save_tiny_wan`` + ``WanImageToVideoPipeline.from_pretrained`` work with
``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from shiftvdm.errors import ConfigError

logger = logging.getLogger(__name__)

LAYOUTS = ("ti2v", "i2v_a14b", "i2v_21")

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

    from shiftvdm.backbone.wan import write_video_shape

    path = Path(path)
    pipe = WanImageToVideoPipeline(**tiny_wan_components(layout, seed))
    pipe.save_pretrained(path)
    write_video_shape(path, tiny_video_shape(layout))  # so from_pretrained picks the preset's clip size
    logger.info("wrote tiny Wan %s pipeline to %s", layout, path)
    return path
