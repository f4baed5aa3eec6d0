"""Stable Video Diffusion behind the Backbone contract (EDM v-prediction, image-to-video).

Components are diffusers' ``UNetSpatioTemporalConditionModel`` (the denoiser), ``AutoencoderKLTemporalDecoder``,
``CLIPVisionModelWithProjection`` (+ its ``CLIPImageProcessor`` statistics) and SVD's ``EulerDiscreteScheduler``
configuration (which only supplies the Karras σ grid here: the sampling loop is ours, so the same loop serves the
deterministic Euler sampler — identical to ``StableVideoDiffusionPipeline`` — and the stochastic EDM
Euler-ancestral rollout sampler of the reference trainer).

Latents are (B, F, C, h, w): VAE posterior modes × ``scaling_factor``. Conditioning, as in the pipeline and in
SVD's training: a CLIP embedding of the clean first frame (cross-attention) and the *unscaled* VAE latent of the
noise-augmented first frame, concatenated to every frame's channels, plus the added time ids
[fps − 1, motion bucket, noise-aug σ]. Noise augmentation happens in pixel space before the VAE, so the
conditioning latents depend on each draw and are encoded where they are used (``denoising_loss`` and
``sample``); a :class:`Condition` holds only what is fixed per conditioning image: ``first_frame`` and
``tensors["image_embeds"]`` (B, 1, D).

Pixel-space variant (``vae=None``): the "latents" are the frames themselves, pixel-unshuffled by ``patch_size``
f into (3·f²)-channel patches of (H/f)×(W/f) (f = 1 keeps raw RGB); the UNet takes 2 × 3·f² input channels.
Such a model is trained from scratch, so a CLIP encoder brings nothing the concatenated first frame does not
already carry: without an image encoder the cross-attention context is a constant zero token (which is also the
CFG/dropout "unconditional" embedding, so CFG then acts through the conditioning frame only). A pixel-space
folder is written in our own layout — ``unet/``, ``scheduler/`` and ``shiftvdm_backbone.json`` — and has no
``model_index.json``, because no diffusers pipeline can run it.

LoRA: backbone/lora.py (float32 adapters on the UNet, keys ``unet.<module>.lora_A.weight``). In
diffusers 0.42.1 ``StableVideoDiffusionPipeline`` has no ``load_lora_weights`` and the UNet's ``load_attn_procs``
only reads Custom-Diffusion processors, so no diffusers loader reads an SVD LoRA: :meth:`SVDBackbone.load_lora`
(peft ``set_peft_model_state_dict``) reads it, and ``shiftvdm export`` (fuse + save) is the supported route to
plain diffusers.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shiftvdm.backbone import lora
from shiftvdm.backbone.base import (
    DTYPES,
    Condition,
    LatentLayout,
    NoiseDraw,
    cast_frozen,
)
from shiftvdm.backbone.edm import (
    append_dims,
    edm_denoise,
    edm_loss_weight,
    edm_scale_input,
    edm_scalings,
    euler_ancestral_step,
    euler_step,
    lognormal_sigma,
)
from shiftvdm.errors import CheckpointError, ConfigError
from shiftvdm.utils.checkpoint import save_json
from shiftvdm.utils.seeding import generator_for

logger = logging.getLogger(__name__)

# Temporal self- and cross-attention projections only (reference: `only_lora_on_temporal_module: true`).
DEFAULT_LORA_TARGETS = r".*temporal_transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)"
BACKBONE_CONFIG_NAME = "shiftvdm_backbone.json"
LORA_PREFIX = "unet"  # key prefix of the UNet's weights in a LoRA file (diffusers pipeline format)


@dataclass
class SVDConfig:
    """Settings of the SVD backbone (model folder, conditioning, EDM training draws, samplers)."""

    # Model folder: StableVideoDiffusionPipeline.save_pretrained layout, or our pixel-space layout.
    pretrained_path: str | None = None
    # Weights dtype: float32 | bfloat16 | float16 (the reference trains SVD in bf16). Sampler state stays fp32.
    dtype: str = "float32"
    # Frames per clip; None = unet.config.num_frames (25 for SVD-xt; the reference trains on 24).
    num_frames: int | None = None
    # Clip height in pixels; None = unet.config.sample_size × spatial factor (reference: 320).
    height: int | None = None
    # Clip width in pixels; None = unet.config.sample_size × spatial factor (reference: 576).
    width: int | None = None
    # Clip frame rate; the UNet is conditioned on fps − 1 like the pipeline (diffusers default 7; authors' SVD: 14).
    fps: int = 7
    # SVD motion micro-conditioning (pipeline default and the reference's constant: 127).
    motion_bucket_id: int = 127
    # σ of the Gaussian noise added to the conditioning frame when sampling (reference sample_noise_aug_strength).
    noise_aug_strength: float = 0.02
    # Mean of ln σ of the training noise levels (SVD_Xtend / reference: 0.7).
    p_mean: float = 0.7
    # Std of ln σ of the training noise levels (SVD_Xtend / reference: 1.6).
    p_std: float = 1.6
    # Mean of ln σ_c, the conditioning-frame noise augmentation in training (reference: −3.0).
    cond_p_mean: float = -3.0
    # Std of ln σ_c (reference: 0.5).
    cond_p_std: float = 0.5
    # p of InstructPix2Pix-style conditioning dropout: u < 2p drops the image embedding, p ≤ u < 3p the
    # conditioning latents (both for p ≤ u < 2p); reference conditioning_dropout_prob 0.1.
    conditioning_dropout_prob: float = 0.1
    # Denoising steps of both samplers (reference and pipeline: 25).
    num_inference_steps: int = 25
    # Classifier-free guidance scale on the first frame (per-frame linear ramp; reference/pipeline 1.0).
    min_guidance_scale: float = 1.0
    # Guidance scale on the last frame (reference/pipeline 3.0); CFG is off when this is ≤ 1.
    max_guidance_scale: float = 3.0
    # Ancestral noise of the stochastic sampler: 1 = EDM Euler-ancestral of the reference, 0 = Euler.
    sampler_eta: float = 1.0
    # Clips per UNet call while sampling (0 = all B·P at once, as the pipeline). Memory only: the draws are the
    # same, so only rounding can differ; with CFG each call holds twice this many. Bounds the rollout peak in P.
    sample_batch_size: int = 0
    # Frames per VAE decode call (reference sample_decode_chunk_size 8); the temporal decoder mixes a chunk.
    decode_chunk_size: int = 8
    # Frames per VAE encode call (memory only: the encoder works frame by frame).
    encode_chunk_size: int = 16
    # Default LoRA targets (regex, full match): q/k/v/out of the temporal transformer blocks (reference).
    lora_target_modules: str = DEFAULT_LORA_TARGETS
    # None: whatever the folder holds; True/False: require a pixel-space / latent model (a mismatch is an error).
    pixel_space: bool | None = None
    # Gradient checkpointing in the UNet (the reference enables it; costs ~50% more time per step).
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        problems = []
        if self.dtype not in DTYPES:
            problems.append(f"dtype: expected one of {sorted(DTYPES)}, got {self.dtype!r}")
        for name in ("num_frames", "height", "width"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name}: expected a positive integer or null, got {value}")
        for name in ("num_inference_steps", "decode_chunk_size", "encode_chunk_size", "fps"):
            if getattr(self, name) < 1:
                problems.append(f"{name}: expected >= 1, got {getattr(self, name)}")
        if not 0 <= self.conditioning_dropout_prob <= 1 / 3:
            problems.append("conditioning_dropout_prob: expected a value in [0, 1/3] (the IP2P scheme uses 3p), "
                            f"got {self.conditioning_dropout_prob}")
        if self.p_std <= 0 or self.cond_p_std < 0:
            problems.append(f"p_std / cond_p_std: expected > 0 / >= 0, got {self.p_std} / {self.cond_p_std}")
        if self.min_guidance_scale < 0 or self.max_guidance_scale < 0:
            problems.append("min_guidance_scale / max_guidance_scale: expected >= 0, got "
                            f"{self.min_guidance_scale} / {self.max_guidance_scale}")
        if self.sample_batch_size < 0:
            problems.append(f"sample_batch_size: expected >= 0 (0 = all clips in one call), got {self.sample_batch_size}")
        if self.sampler_eta < 0:
            problems.append(f"sampler_eta: expected >= 0, got {self.sampler_eta}")
        if problems:
            raise ConfigError("invalid SVDConfig:\n  " + "\n  ".join(problems))


class SVDBackbone:
    """SVD (or its pixel-space variant) seen through the :class:`~shiftvdm.backbone.base.Backbone` operations.

    ``denoiser`` is the module called for every UNet evaluation; the trainer may replace it by a wrapper
    (e.g. Accelerate's DDP) — configuration and LoRA bookkeeping use ``unet``, the bare module.
    """

    name = "svd"

    def __init__(self, unet: nn.Module, scheduler: Any, vae: nn.Module | None = None,
                 image_encoder: nn.Module | None = None, feature_extractor: Any = None,
                 config: SVDConfig | None = None, patch_size: int = 1) -> None:
        self.config = config or SVDConfig()
        self.unet = unet
        self.denoiser: nn.Module = unet
        self.scheduler = scheduler
        self.vae = vae
        self.image_encoder = image_encoder
        self.feature_extractor = feature_extractor
        self.patch_size = 1 if vae is not None else int(patch_size)
        self._check_components()

        dtype = DTYPES[self.config.dtype]
        for module in (self.unet, self.vae, self.image_encoder):  # the frozen base; LoRA weights stay float32
            if module is not None and next(module.parameters()).dtype != dtype:
                cast_frozen(module, dtype)
        for frozen in (self.vae, self.image_encoder):
            if frozen is not None:
                frozen.eval().requires_grad_(False)
        if self.config.gradient_checkpointing:
            self.enable_gradient_checkpointing()
        if image_encoder is not None:  # CLIP normalisation; OpenAI CLIP's statistics without a feature extractor
            mean = getattr(feature_extractor, "image_mean", None) or [0.48145466, 0.4578275, 0.40821073]
            std = getattr(feature_extractor, "image_std", None) or [0.26862954, 0.26130258, 0.27577711]
            self._clip_mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
            self._clip_std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    # ------------------------------------------------------------------ construction and I/O
    def _check_components(self) -> None:
        cfg = self.unet.config
        if self.config.pixel_space is not None and self.config.pixel_space != self.pixel_space:
            want = "pixel-space" if self.config.pixel_space else "latent (VAE)"
            have = "pixel-space" if self.pixel_space else "latent (VAE)"
            raise ConfigError(f"pixel_space: config asks for a {want} model but the model is {have}")
        if cfg.in_channels != 2 * self.latent_channels or cfg.out_channels != self.latent_channels:
            raise CheckpointError(
                f"unet has in/out channels {cfg.in_channels}/{cfg.out_channels}, expected "
                f"{2 * self.latent_channels}/{self.latent_channels} for {self.latent_channels}-channel latents "
                f"({'pixel-space, patch_size ' + str(self.patch_size) if self.pixel_space else 'VAE latents'})")
        if self.image_encoder is not None:
            proj = self.image_encoder.config.projection_dim
            if proj != cfg.cross_attention_dim:
                raise CheckpointError(f"image_encoder projection_dim {proj} != unet cross_attention_dim "
                                      f"{cfg.cross_attention_dim}")

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, config: SVDConfig | None = None) -> SVDBackbone:
        """Load a model folder: ``StableVideoDiffusionPipeline.save_pretrained``'s layout or our pixel-space one.

        Args:
            path: the folder (default: ``config.pretrained_path``).
            config: backbone settings (default: ``SVDConfig()``).

        Raises:
            CheckpointError: the folder or one of its components is missing or unreadable (the message names it).
        """
        config = config or SVDConfig()
        if path is None:
            path = config.pretrained_path
        if path is None:
            raise ConfigError("pretrained_path: no model folder given")
        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"{path}: model folder not found (expected a folder written by "
                                  "StableVideoDiffusionPipeline.save_pretrained or shiftvdm)")
        dtype = DTYPES[config.dtype]
        if (path / BACKBONE_CONFIG_NAME).is_file():
            meta = _read_json(path / BACKBONE_CONFIG_NAME)
            if meta.get("_class_name") != "SVDBackbone":
                raise CheckpointError(f"{path / BACKBONE_CONFIG_NAME}: _class_name is {meta.get('_class_name')!r}, "
                                      "expected 'SVDBackbone'")
            components = dict(meta.get("components", {}))
            patch_size = int(meta.get("patch_size", 1))
        elif (path / "model_index.json").is_file():
            index = _read_json(path / "model_index.json")
            if index.get("_class_name") != "StableVideoDiffusionPipeline":
                raise CheckpointError(f"{path / 'model_index.json'}: _class_name is {index.get('_class_name')!r}, "
                                      "expected 'StableVideoDiffusionPipeline'")
            components = {name: index.get(name, [None])[0] is not None
                          for name in ("unet", "scheduler", "vae", "image_encoder", "feature_extractor")}
            patch_size = 1
        else:
            raise CheckpointError(f"{path}: not a model folder (found neither model_index.json nor "
                                  f"{BACKBONE_CONFIG_NAME})")
        from diffusers import (
            AutoencoderKLTemporalDecoder,
            EulerDiscreteScheduler,
            UNetSpatioTemporalConditionModel,
        )

        parts: dict[str, Any] = {}
        parts["unet"] = _load_part(path, "unet", lambda p: UNetSpatioTemporalConditionModel.from_pretrained(
            p, torch_dtype=dtype))
        parts["scheduler"] = _load_part(path, "scheduler", EulerDiscreteScheduler.from_pretrained)
        if components.get("vae"):
            parts["vae"] = _load_part(path, "vae", lambda p: AutoencoderKLTemporalDecoder.from_pretrained(
                p, torch_dtype=dtype))
        if components.get("image_encoder"):
            from transformers import CLIPVisionModelWithProjection

            parts["image_encoder"] = _load_part(path, "image_encoder", lambda p: (
                CLIPVisionModelWithProjection.from_pretrained(p, dtype=dtype)))
        if components.get("feature_extractor"):
            parts["feature_extractor"] = _load_part(path, "feature_extractor", _load_image_processor)
        backbone = cls(**parts, config=config, patch_size=patch_size)
        logger.info("loaded SVD backbone from %s (%s, %.2f M UNet params)", path,
                    f"pixel space, patch {patch_size}" if backbone.pixel_space else "latent",
                    sum(p.numel() for p in backbone.unet.parameters()) / 1e6)
        return backbone

    def save_pretrained(self, path: str | Path) -> None:
        """Write the model folder that :meth:`from_pretrained` reads.

        With a VAE and a CLIP image encoder this is ``StableVideoDiffusionPipeline.save_pretrained``'s layout, so
        plain ``StableVideoDiffusionPipeline.from_pretrained(path)`` loads it. Otherwise (pixel space) it is
        ``unet/``, ``scheduler/`` (and any image encoder) plus ``shiftvdm_backbone.json``.

        Raises:
            ValueError: a LoRA is still attached (``fuse_lora()`` it first, or ``save_lora`` the adapter alone).
        """
        if self.has_lora:
            raise ValueError("save_pretrained: the UNet still carries a LoRA adapter; call fuse_lora() first "
                             "(or save_lora() to write the adapter alone)")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.vae is not None and self.image_encoder is not None and self.feature_extractor is not None:
            from diffusers import StableVideoDiffusionPipeline

            pipe = StableVideoDiffusionPipeline(vae=self.vae, image_encoder=self.image_encoder, unet=self.unet,
                                                scheduler=self.scheduler, feature_extractor=self.feature_extractor)
            pipe.save_pretrained(path)
            return
        components = {"unet": True, "scheduler": True, "vae": self.vae is not None,
                      "image_encoder": self.image_encoder is not None,
                      "feature_extractor": self.feature_extractor is not None}
        self.unet.save_pretrained(path / "unet")
        self.scheduler.save_pretrained(path / "scheduler")
        for name in ("vae", "image_encoder", "feature_extractor"):
            if getattr(self, name) is not None:
                getattr(self, name).save_pretrained(path / name)
        save_json({"_class_name": "SVDBackbone", "format_version": 1, "pixel_space": self.pixel_space,
                   "patch_size": self.patch_size, "components": components}, path / BACKBONE_CONFIG_NAME)

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the UNet's blocks in backward (the reference enables it)."""
        self.unet.enable_gradient_checkpointing()

    def to(self, device: torch.device | str) -> SVDBackbone:
        """Move every module (and the CLIP statistics) to ``device``."""
        for module in (self.unet, self.vae, self.image_encoder):
            if module is not None:
                module.to(device)
        if self.image_encoder is not None:
            self._clip_mean, self._clip_std = self._clip_mean.to(device), self._clip_std.to(device)
        return self

    # ------------------------------------------------------------------ geometry
    @property
    def pixel_space(self) -> bool:
        return self.vae is None

    @property
    def latent_channels(self) -> int:
        return 3 * self.patch_size**2 if self.vae is None else int(self.vae.config.latent_channels)

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent cell along each side (VAE downsampling, or the pixel-unshuffle patch)."""
        if self.vae is None:
            return self.patch_size
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.config.dtype]  # the base weights' (LoRA weights are float32)

    @property
    def video_shape(self) -> tuple[int, int, int]:
        """(num_frames, height, width): the config's values, else the UNet's defaults."""
        sample_size = self.unet.config.sample_size
        if isinstance(sample_size, (list, tuple)):
            default_h, default_w = (int(s) * self.spatial_factor for s in sample_size)
        else:
            default_h = default_w = int(sample_size or 8) * self.spatial_factor
        return (self.config.num_frames or int(self.unet.config.num_frames),
                self.config.height or default_h, self.config.width or default_w)

    # ------------------------------------------------------------------ encoding and decoding
    def _check_pixels(self, video: Tensor, what: str) -> None:
        height, width = video.shape[-2:]
        if video.shape[-3] != 3 or height % self.spatial_factor or width % self.spatial_factor:
            raise ValueError(f"{what}: expected (..., 3, H, W) pixels with H and W divisible by "
                             f"{self.spatial_factor}, got shape {tuple(video.shape)}")

    @torch.no_grad()
    def _encode_frames(self, frames: Tensor) -> Tensor:
        """(N, 3, H, W) in [-1, 1] -> (N, C, h, w) *unscaled* latents (VAE posterior mode / pixel patches)."""
        if self.vae is None:
            return F.pixel_unshuffle(frames.float(), self.patch_size)
        chunk = self.config.encode_chunk_size
        vae_dtype = next(self.vae.parameters()).dtype
        out = [self.vae.encode(frames[i:i + chunk].to(vae_dtype)).latent_dist.mode()
               for i in range(0, frames.shape[0], chunk)]
        return torch.cat(out).float()

    def encode_video(self, video: Tensor) -> Tensor:
        """(..., F, 3, H, W) pixels in [-1, 1] -> latents (..., F, C, h, w), float32.

        Deterministic: the VAE posterior mode × ``scaling_factor``. Differs from the reference, which encodes
        with ``.sample()`` (a fresh latent on every call, in bf16).
        """
        self._check_pixels(video, "encode_video")
        lead, (num_frames, _, height, width) = video.shape[:-4], video.shape[-4:]
        latents = self._encode_frames(video.reshape(-1, 3, height, width).to(self.device))
        if self.vae is not None:
            latents = latents * self.vae.config.scaling_factor
        return latents.reshape(*lead, num_frames, *latents.shape[1:])

    def decode(self, latents: Tensor) -> Tensor:
        """Latents (..., F, C, h, w) -> (..., F, 3, H, W) pixels in [-1, 1], float32.

        Each clip is decoded in chunks of ``decode_chunk_size`` frames (the temporal decoder mixes frames within
        a chunk). The pipeline instead chunks the flattened batch, so a chunk can straddle two clips when B > 1
        and F is not a multiple of the chunk size; for one clip the two agree exactly.
        """
        lead, (num_frames, channels, h, w) = latents.shape[:-4], latents.shape[-4:]
        if channels != self.latent_channels:
            raise ValueError(f"decode: expected {self.latent_channels} latent channels, got shape "
                             f"{tuple(latents.shape)}")
        clips = latents.reshape(-1, num_frames, channels, h, w).to(self.device)
        if self.vae is None:
            frames = F.pixel_shuffle(clips.flatten(0, 1).float(), self.patch_size)
            return frames.clamp(-1, 1).reshape(*lead, num_frames, *frames.shape[1:])
        vae_dtype = next(self.vae.parameters()).dtype
        chunk = self.config.decode_chunk_size
        decoded = []
        for clip in clips:
            clip = (1 / self.vae.config.scaling_factor * clip).to(vae_dtype)
            parts = [self.vae.decode(clip[i:i + chunk], num_frames=clip[i:i + chunk].shape[0]).sample
                     for i in range(0, num_frames, chunk)]
            decoded.append(torch.cat(parts).float())
        frames = torch.stack(decoded).clamp(-1, 1)
        return frames.reshape(*lead, num_frames, *frames.shape[2:])

    @torch.no_grad()
    def _image_embeds(self, first_frame: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 1, D) CLIP image embeddings, preprocessed as the SVD pipeline does."""
        batch = first_frame.shape[0]
        if self.image_encoder is None:
            dim = int(self.unet.config.cross_attention_dim)
            return torch.zeros(batch, 1, dim, device=self.device, dtype=torch.float32)
        from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
            _resize_with_antialiasing,
        )

        size = int(self.image_encoder.config.image_size)  # 224 for SVD's CLIP ViT-H/14, as the pipeline assumes
        image = _resize_with_antialiasing(first_frame.float().to(self.device), (size, size))
        image = (image + 1.0) / 2.0
        image = (image - self._clip_mean.to(image.device)) / self._clip_std.to(image.device)
        clip_dtype = next(self.image_encoder.parameters()).dtype
        return self.image_encoder(image.to(clip_dtype)).image_embeds.unsqueeze(1).float()

    def encode_condition(self, first_frame: Tensor, prompts: list[str] | None = None) -> Condition:
        """(B, 3, H, W) conditioning images in [-1, 1] -> Condition with ``tensors["image_embeds"]`` (B, 1, D).

        SVD is image-only: ``prompts`` are kept on the Condition (for logs) and otherwise unused.
        """
        self._check_pixels(first_frame, "encode_condition")
        if first_frame.ndim != 4:
            raise ValueError(f"encode_condition: expected (B, 3, H, W), got shape {tuple(first_frame.shape)}")
        return Condition(first_frame=first_frame, tensors={"image_embeds": self._image_embeds(first_frame)},
                         prompts=prompts)

    def _conditioning_latents(self, first_frame: Tensor, cond_sigma: Tensor | float, noise: Tensor) -> Tensor:
        """(B, C, h, w) unscaled latents of the noise-augmented first frame x₀ + σ_c·n (SVD's conditioning).

        Encoded once per draw: the 1 + P loss passes of a SHIFT step share one draw (``match_noise``) and the
        real clip's Condition, so the last result is kept and reused while the very same tensors come back
        (identity, not values: the VAE is frozen, and a new draw is a new tensor)."""
        inputs = (first_frame, cond_sigma, noise)
        memo = getattr(self, "_cond_latents_memo", None)
        if memo is not None and len(memo[0]) == 3 and all(a is b for a, b in zip(memo[0], inputs)):
            return memo[1]
        latents = self._encode_augmented(first_frame, cond_sigma, noise)
        self._cond_latents_memo = (inputs, latents)
        self.conditioning_encodes = getattr(self, "conditioning_encodes", 0) + 1  # counted for tests/benchmarks
        return latents

    def _encode_augmented(self, first_frame: Tensor, cond_sigma: Tensor | float, noise: Tensor) -> Tensor:
        first_frame = first_frame.to(self.device)
        if isinstance(cond_sigma, Tensor):
            cond_sigma = append_dims(cond_sigma.to(first_frame.device, first_frame.dtype), 4)
        image = first_frame + cond_sigma * noise.to(first_frame.device, first_frame.dtype)
        return self._encode_frames(image)

    def _added_time_ids(self, noise_aug: Tensor) -> Tensor:
        """(N,) noise-aug σ -> (N, 3) added time ids [fps − 1, motion bucket, σ] (SVD was conditioned on fps − 1)."""
        fps_id = torch.full_like(noise_aug, float(self.config.fps - 1))
        bucket = torch.full_like(noise_aug, float(self.config.motion_bucket_id))
        return torch.stack([fps_id, bucket, noise_aug], dim=1)

    # ------------------------------------------------------------------ training loss
    def draw_noise(self, latents: Tensor, generator: torch.Generator) -> NoiseDraw:
        """All draws of one loss evaluation for latents (B, F, C, h, w), in this order from ``generator``:
        ε (like the latents), σ ~ LogNormal(p_mean, p_std) (B,), σ_c ~ LogNormal(cond_p_mean, cond_p_std) (B,),
        the conditioning-frame pixel noise n (B, 3, H, W) and the dropout uniform u (B,)."""
        if latents.ndim != 5:
            raise ValueError(f"draw_noise: expected latents (B, F, C, h, w), got shape {tuple(latents.shape)}")
        batch, height, width = latents.shape[0], latents.shape[-2], latents.shape[-1]
        gen_device = generator.device
        noise = torch.randn(latents.shape, generator=generator, device=gen_device, dtype=torch.float32)
        sigma = lognormal_sigma(batch, self.config.p_mean, self.config.p_std, generator)
        cond_sigma = lognormal_sigma(batch, self.config.cond_p_mean, self.config.cond_p_std, generator)
        pixel_shape = (batch, 3, height * self.spatial_factor, width * self.spatial_factor)
        cond_noise = torch.randn(pixel_shape, generator=generator, device=gen_device, dtype=torch.float32)
        dropout_u = torch.rand(batch, generator=generator, device=gen_device, dtype=torch.float32)
        draw = NoiseDraw(noise=noise, level=sigma,
                         extras={"cond_sigma": cond_sigma, "cond_noise": cond_noise, "dropout_u": dropout_u})
        return draw.to(latents.device)

    def denoising_loss(self, latents: Tensor, cond: Condition, draw: NoiseDraw) -> Tensor:
        """Per-sample EDM v-prediction loss L(x), shape (B,) (reference §3.1, SVD_Xtend style).

        z_σ = x₀ + σ·ε; F = UNet([c_in·z_σ ‖ E(x₀ᶜ + σ_c·n)], ¼ln σ, CLIP(x₀ᶜ), [fps−1, bucket, σ_c]);
        D = c_skip·z_σ + c_out·F; L = mean((1+σ²)/σ² · (D − x₀)²) over (F, C, h, w).

        ``cond`` is the conditioning the clip is scored under: for rollouts, pass the *real* clip's Condition
        (differs from the reference, which re-encodes each fake's own first frame). Conditioning dropout follows
        the draw's u (IP2P scheme, see SVDConfig). The noise-aug time id is per sample (the reference uses the
        first sample's σ_c for the whole batch).
        """
        x0 = latents.to(self.device, torch.float32)
        if x0.ndim != 5 or x0.shape[2] != self.latent_channels:
            raise ValueError(f"denoising_loss: expected latents (B, F, {self.latent_channels}, h, w), got "
                             f"{tuple(x0.shape)}")
        batch, num_frames = x0.shape[:2]
        if cond.batch_size != batch or draw.noise.shape != x0.shape or draw.level.shape != (batch,):
            raise ValueError(f"denoising_loss: latents {tuple(x0.shape)}, condition batch {cond.batch_size}, "
                             f"noise {tuple(draw.noise.shape)} and level {tuple(draw.level.shape)} disagree")
        draw = draw.to(self.device)
        sigma = draw.level.float()
        noisy = x0 + append_dims(sigma, 5) * draw.noise.float()  # (B, F, C, h, w)
        c_noise = edm_scalings(sigma)[3]

        cond_latents = self._conditioning_latents(cond.first_frame, draw.extras["cond_sigma"],
                                                  draw.extras["cond_noise"])  # (B, C, h, w)
        image_embeds = cond.tensors["image_embeds"].to(self.device, torch.float32)  # (B, 1, D)
        p = self.config.conditioning_dropout_prob
        u = draw.extras["dropout_u"]
        drop_embeds = u < 2 * p
        drop_latents = (u >= p) & (u < 3 * p)
        image_embeds = torch.where(append_dims(drop_embeds, 3), torch.zeros_like(image_embeds), image_embeds)
        cond_latents = torch.where(append_dims(drop_latents, 4), torch.zeros_like(cond_latents), cond_latents)
        cond_latents = cond_latents.unsqueeze(1).expand(-1, num_frames, -1, -1, -1)  # (B, F, C, h, w)

        dtype = self.dtype
        model_input = torch.cat([edm_scale_input(noisy, sigma), cond_latents], dim=2).to(dtype)
        added_time_ids = self._added_time_ids(draw.extras["cond_sigma"].float()).to(dtype)
        model_output = self.denoiser(model_input, c_noise, encoder_hidden_states=image_embeds.to(dtype),
                                     added_time_ids=added_time_ids, return_dict=False)[0].float()
        denoised = edm_denoise(noisy, model_output, sigma)
        weight = append_dims(edm_loss_weight(sigma), 5)
        return (weight * (denoised - x0) ** 2).flatten(1).mean(1)

    # ------------------------------------------------------------------ sampling
    def sigma_grid(self, num_inference_steps: int) -> tuple[Tensor, float]:
        """(σ₀ > … > σ_{N−1}, 0) and the initial-noise scale, from the saved scheduler configuration."""
        from diffusers import EulerDiscreteScheduler

        scheduler = EulerDiscreteScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(num_inference_steps)
        return scheduler.sigmas.to(torch.float32), float(scheduler.init_noise_sigma)

    @torch.no_grad()
    def sample(self, cond: Condition, num_videos: int, generator: torch.Generator, *, stochastic: bool = True,
               num_inference_steps: int | None = None) -> Tensor:
        """P = ``num_videos`` clips per conditioning as latents (B, P, F, C, h, w), float32.

        ``stochastic=False``: Euler over the scheduler's Karras σ grid, step for step what
        ``StableVideoDiffusionPipeline`` does (the same draws from ``generator``: conditioning-frame noise
        (B, 3, H, W), then initial latents (B·P, F, C, h, w); CFG with zero image embedding and zero
        conditioning latents as the unconditional branch, per-frame guidance ramp, batched).
        ``stochastic=True``: EDM Euler-ancestral over the same grid (reference rollout sampler; η =
        ``config.sampler_eta``), with one fresh N(0, I) draw per step except the last.
        """
        cfg = self.config
        steps = cfg.num_inference_steps if num_inference_steps is None else int(num_inference_steps)
        if steps < 1:  # 0 is no request for the default
            raise ValueError(f"sample: num_inference_steps must be >= 1 (or None for the default), got {steps}")
        batch, P = cond.batch_size, int(num_videos)
        if P < 1:
            raise ValueError(f"sample: num_videos must be >= 1, got {num_videos}")
        num_frames = self.video_shape[0]
        first_frame = cond.first_frame.to(self.device, torch.float32)
        self._check_pixels(first_frame, "sample (conditioning image)")
        height, width = first_frame.shape[-2:]
        h, w = height // self.spatial_factor, width // self.spatial_factor
        device, dtype = self.device, self.dtype

        aug_noise = _randn(first_frame.shape, generator, device)
        cond_latents = self._conditioning_latents(first_frame, cfg.noise_aug_strength, aug_noise)
        cond_latents = cond_latents.repeat_interleave(P, 0)  # (B·P, C, h, w)
        image_embeds = cond.tensors["image_embeds"].to(device, torch.float32).repeat_interleave(P, 0)
        added_time_ids = self._added_time_ids(torch.full((batch * P,), cfg.noise_aug_strength, device=device))

        sigmas, init_sigma = self.sigma_grid(steps)
        latents = _randn((batch * P, num_frames, self.latent_channels, h, w), generator, device) * init_sigma

        do_cfg = cfg.max_guidance_scale > 1
        if do_cfg:
            guidance = torch.linspace(cfg.min_guidance_scale, cfg.max_guidance_scale, num_frames)
            guidance = guidance.to(device).view(1, num_frames, 1, 1, 1)
        cond_latents = cond_latents.unsqueeze(1).expand(-1, num_frames, -1, -1, -1).to(dtype)
        image_embeds, added_time_ids = image_embeds.to(dtype), added_time_ids.to(dtype)
        total = batch * P
        chunk = cfg.sample_batch_size or total

        def velocity(model_input: Tensor, c_noise: Tensor, ids: slice) -> Tensor:
            """The guided UNet output for clips ``ids``; the unconditional branch has zero image embedding
            and zero conditioning latents (pipeline order: unconditional half first)."""
            embeds, latents_c, time_ids = image_embeds[ids], cond_latents[ids], added_time_ids[ids]
            if do_cfg:
                model_input = torch.cat([model_input] * 2)
                embeds = torch.cat([torch.zeros_like(embeds), embeds])
                latents_c = torch.cat([torch.zeros_like(latents_c), latents_c])
                time_ids = torch.cat([time_ids, time_ids])
            model_input = torch.cat([model_input, latents_c], dim=2).to(dtype)
            out = self.denoiser(model_input, c_noise.to(device), encoder_hidden_states=embeds,
                                added_time_ids=time_ids, return_dict=False)[0].float()
            if do_cfg:
                uncond, conditional = out.chunk(2)
                out = uncond + guidance * (conditional - uncond)
            return out

        for i in range(steps):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            c_noise = edm_scalings(sigma)[3]
            scaled = edm_scale_input(latents, sigma)
            model_output = torch.cat([velocity(scaled[s:s + chunk], c_noise, slice(s, s + chunk))
                                      for s in range(0, total, chunk)])
            denoised = edm_denoise(latents, model_output, sigma.to(device))
            if stochastic and sigma_next > 0:
                noise = _randn(latents.shape, generator, device)
                latents = euler_ancestral_step(latents, denoised, sigma.to(device), sigma_next.to(device), noise,
                                               eta=cfg.sampler_eta)
            else:
                latents = euler_step(latents, denoised, sigma.to(device), sigma_next.to(device))
        return latents.reshape(batch, P, num_frames, self.latent_channels, h, w)

    # ------------------------------------------------------------------ parameters and LoRA
    @property
    def has_lora(self) -> bool:
        return lora.has_lora(self.unet)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The LoRA weights after :meth:`add_lora`, else every UNet parameter (pre-training / full SFT).

        The returned parameters are switched to ``requires_grad=True``.
        """
        params = lora.lora_parameters(self.unet) if self.has_lora else list(self.unet.parameters())
        for param in params:
            param.requires_grad_(True)
        return params

    def add_lora(self, rank: int, alpha: float, target_modules: str | list[str] | None = None, *,
                 seed: int = 0) -> None:
        """Add a fresh float32 LoRA to the UNet and freeze every base weight (backbone/lora.py).

        Args:
            rank: r (reference: 32).
            alpha: lora_alpha (reference: 32); the update is scaled by alpha / r.
            target_modules: a regex matched against full module names, or a list of module-name suffixes;
                None = ``config.lora_target_modules`` (temporal to_q/to_k/to_v/to_out.0).
            seed: seed of the Gaussian init of lora_A (lora_B starts at zero, so the model is unchanged).
        """
        targets = target_modules if target_modules is not None else self.config.lora_target_modules
        lora.add_lora(self.unet, rank, alpha, targets, generator=generator_for(seed, "svd-lora-init"))
        logger.info("LoRA r=%d alpha=%g (%d trainable params)", rank, alpha,
                    sum(p.numel() for p in lora.lora_parameters(self.unet)))

    def fuse_lora(self) -> None:
        """Merge W ← W + (α/r)·B·A into every wrapped layer, put the plain layers back and drop the adapter."""
        lora.fuse_lora(self.unet)

    def save_lora(self, path: str | Path) -> None:
        """Write the LoRA as ``.safetensors`` (keys ``unet.<module>.lora_A.weight``, LoraConfig in the header).
        Read by :meth:`load_lora`; see the module docstring for diffusers."""
        lora.save_lora(self.unet, path, LORA_PREFIX)

    def load_lora(self, path: str | Path) -> None:
        """Load a LoRA file written by :meth:`save_lora` (adding the adapter first when there is none).

        Raises:
            CheckpointError: the file is missing, malformed, or does not fit this UNet (names the file).
        """
        rank, alpha = lora.load_lora(self.unet, path, LORA_PREFIX)
        logger.info("loaded LoRA (r=%d, alpha=%g) from %s", rank, alpha, path)


def latent_layout(options: dict[str, Any]) -> LatentLayout:
    """SVD's VAE latents: 4 channels, 8× smaller each side, one latent frame per frame. Given for every SVD config:
    the tiny pixel-space preset's "latents" are its pixels (3·f² channels per f×f patch, 48× as many elements),
    which the memory plan undercounts by that factor (bytes that matter little at that preset's tiny clip sizes)."""
    return LatentLayout(channels=4, spatial=8)


def from_pretrained(path: str | Path | None = None, config: SVDConfig | None = None,
                    given: set[str] | None = None) -> SVDBackbone:
    """Load an SVD model folder; see :meth:`SVDBackbone.from_pretrained`. (``given``, the option names a user
    set, is part of the registry's call; an SVD folder holds no settings, so every field comes from ``config``.)"""
    return SVDBackbone.from_pretrained(path, config)


# ---------------------------------------------------------------------- helpers
def _randn(shape: tuple[int, ...] | torch.Size, generator: torch.Generator, device: torch.device) -> Tensor:
    """N(0, I) float32 drawn on the generator's device (like diffusers' randn_tensor), then moved."""
    return torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=torch.float32).to(device)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable JSON ({exc})") from exc


def _load_part(root: Path, name: str, load) -> Any:
    folder = root / name
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: missing component folder '{name}'")
    try:
        return load(str(folder))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{folder}: cannot load '{name}' ({exc})") from exc


def _load_image_processor(folder: str) -> Any:
    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # pragma: no cover - other transformers versions
        from transformers import CLIPImageProcessor as ImageProcessor
    return ImageProcessor.from_pretrained(folder)
