"""Tiny random-init presets of the SVD architecture: the real diffusers classes at toy widths.

This is the single source of the tiny SVD models used by the tests, the benchmarks, the demo and the tiny
pre-training run (Wan presets live in ``tiny_wan.py``). Sizes follow diffusers' own SVD pipeline test
(``get_dummy_components``) and the measurements in the project's env-feasibility notes:

* latent preset — ``UNetSpatioTemporalConditionModel`` (2.06 M params) + ``AutoencoderKLTemporalDecoder``
  (2× spatial downsampling, 4 latent channels) + a 2-layer ``CLIPVisionModelWithProjection`` at 224 px
  (the pipeline resizes the conditioning image to 224) + ``CLIPImageProcessor``; saved as a
  ``StableVideoDiffusionPipeline`` folder that plain diffusers loads;
* pixel-space preset — the same UNet on pixel-unshuffled frames (``patch_size`` f: 3·f² channels per
  patch), no autoencoder and no CLIP (see ``svd.py`` for why); saved in our own small layout.

Both use SVD's scheduler configuration (Karras σ ∈ [0.002, 700], v-prediction, continuous timesteps).
Weights are drawn inside ``torch.random.fork_rng`` from ``seed``, so building a preset neither reads nor
disturbs the global RNG.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel

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
    from shiftvdm.backbone.svd import SVDBackbone

    path = Path(path)
    backbone = SVDBackbone(**tiny_svd_components(seed=seed, pixel_space=pixel_space, **kwargs))
    backbone.save_pretrained(path)
    logger.info("wrote tiny %s SVD preset (seed %d) to %s", "pixel-space" if pixel_space else "latent", seed, path)
    return path
