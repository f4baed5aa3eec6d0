"""Wan2.x image(-and-text)-to-video backbone: flow matching behind the Backbone contract.

Three layouts of diffusers' ``WanImageToVideoPipeline`` are config branches of one class (style §B.2.1):

- ``ti2v`` (Wan2.2-TI2V-5B, ``expand_timesteps``): latent frame 0 is *replaced* by the clean latent of the
  conditioning image and gets timestep 0 on its tokens (per-token timesteps), the other frames carry t.
- ``i2v_a14b`` (Wan2.2-I2V-A14B): two experts, ``transformer`` for t ≥ boundary_ratio·1000 (high noise) and
  ``transformer_2`` below; the input is [noisy latents ‖ 4 mask channels ‖ latents of (first frame, zeros…)].
- ``i2v_21`` (Wan2.1-I2V): one transformer, the same channel concatenation, plus CLIP image tokens
  (penultimate hidden states of ``CLIPVisionModel``) in the cross-attention.

Latents are the pipeline's normalised VAE latents ((z − latents_mean)/latents_std), shape (B, C, F', h, w) with
F' = (F − 1)/4 + 1 (the Wan VAE compresses time 4× after a causal first frame).

Training loss (the reference's DiffSynth flow matching, shift-reference-trainer.md §3.4): x_t = (1 − σ)x₀ + σε,
target ε − x₀, t = 1000σ drawn from the shifted *inference* grid, per-sample MSE times a Gaussian-bump weight
w(t). Differences from the reference, each a config flag: one t per sample instead of one per batch
(``share_timestep_across_batch``), and for TI2V the pinned frame-0 tokens are left out of the loss
(``loss_on_first_frame``: their input is the clean condition, so ε − x₀ there is unpredictable noise — an
irreducible term the reference trains on, §9.7).

Samplers: ``euler`` (``FlowMatchEulerDiscreteScheduler(shift=sigma_shift)``, step for step what
``WanImageToVideoPipeline`` does with that scheduler), ``pipeline`` (the folder's own scheduler, e.g. UniPC; what
the reference's rollouts use) and ``sde`` (Flow-GRPO's SDE on the Euler grid, see :func:`flow_sde_step`).
Classifier-free guidance uses the negative prompt; text embeddings are computed once per prompt and cached.
"""

from __future__ import annotations

import json
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from shiftvdm.backbone import lora
from shiftvdm.backbone.base import DTYPES, Condition, LatentLayout, NoiseDraw
from shiftvdm.errors import CheckpointError, ConfigError, DataError
from shiftvdm.utils.checkpoint import write_text
from shiftvdm.utils.seeding import generator_for

logger = logging.getLogger(__name__)

Layout = Literal["ti2v", "i2v_a14b", "i2v_21"]
LAYOUTS: tuple[str, ...] = ("ti2v", "i2v_a14b", "i2v_21")

# Wan's standard negative prompt (Wan2.x sample configs; the reference's `sampling.negative_prompt`).
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，"
    "多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，"
    "倒着走"
)
VIDEO_SHAPE_FILE = "shiftvdm_wan.json"  # (num_frames, height, width) saved next to model_index.json
LORA_PREFIX = "transformer"  # key prefix WanLoraLoaderMixin.load_lora_weights filters on
NUM_TRAIN_TIMESTEPS = 1000  # t = 1000·σ (Wan, DiffSynth and diffusers' flow schedulers)
_DEFAULT_VIDEO_SHAPE = (49, 480, 832)  # reference Wan2.2 run: target_vid_size [49, 480, 832]


@dataclass
class WanConfig:
    """Settings of the Wan backbone (model folder, clip size, samplers, training draws, LoRA defaults)."""

    pretrained_path: str | None = None  # diffusers Wan folder (WanImageToVideoPipeline layout); a path argument wins
    layout: Literal["auto", "ti2v", "i2v_a14b", "i2v_21"] = "auto"  # model variant; auto = detect from the folder
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"  # transformer(s), text/image encoders (ref. bf16)
    vae_dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # Wan VAE (fp32 as in diffusers' Wan examples)
    num_frames: int | None = None  # F (4k+1); None = the folder's shiftvdm_wan.json, else 49 (reference)
    height: int | None = None  # pixels; None = the folder's value, else 480 (reference)
    width: int | None = None  # pixels; None = the folder's value, else 832 (reference)
    num_inference_steps: int = 25  # sampling steps (reference sampling.num_inference_steps)
    guidance_scale: float = 5.0  # CFG scale (reference sampling.guidance_scale); <= 1 turns CFG off
    guidance_scale_2: float | None = None  # A14B low-noise expert's scale; None = guidance_scale (pipeline default)
    negative_prompt: str = WAN_NEGATIVE_PROMPT  # CFG's unconditional prompt (Wan's standard negative prompt)
    max_sequence_length: int = 512  # UMT5 tokens per prompt (reference; Wan2.1-I2V's image branch needs 512)
    sigma_shift: float = 5.0  # flow shift σ' = sσ/(1+(s−1)σ) of the Euler/SDE and training grids (reference: 5)
    train_grid_steps: int | None = None  # points of the training t grid; None = num_inference_steps (DiffSynth)
    min_timestep_boundary: float = 0.0  # training t drawn from grid[int(min·N):int(max·N)] (reference keys, 0/1)
    max_timestep_boundary: float = 1.0  # upper end of that slice (grid runs from high to low noise)
    timestep_weighting: Literal["diffsynth", "none"] = "diffsynth"  # loss weight w(t): DiffSynth bump or 1
    share_timestep_across_batch: bool = False  # True: one t for the whole batch, as the reference; False: per sample
    loss_on_first_frame: bool = False  # TI2V: keep the pinned frame-0 tokens in the loss (True = reference)
    sampler: Literal["sde", "euler", "pipeline"] = "sde"  # rollouts, sample(stochastic=True); reference = pipeline
    deterministic_sampler: Literal["euler", "pipeline"] = "euler"  # sample(stochastic=False): eval and `sample`
    sde_noise_level: float = 0.7  # a in the SDE's σ_t = a·sqrt(t/(1−t)) (Flow-GRPO default)
    boundary_ratio: float | None = None  # A14B expert switch t/1000; None = the folder's value (A14B I2V: 0.9)
    # Default LoRA targets: to_q/to_k/to_v/to_out.0 of every attention, self and cross (reference).
    lora_target_modules: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    sample_batch_size: int = 2  # videos per denoiser call while sampling (memory only: same results up to rounding)
    vae_batch_size: int = 1  # clips per VAE encode/decode call (memory only)
    prompt_cache_size: int = 4096  # distinct prompts whose UMT5 embeddings stay cached (on CPU)
    # false: no tokenizer / UMT5 (≈ 11 GB bf16 at 5B) in memory; every prompt's embedding must come from a
    # data.cache (`shiftvdm data encode`); training sets it when every clip is cached
    load_text_encoder: bool = True
    gradient_checkpointing: bool = False  # recompute transformer blocks in backward (the reference: off)
    seed: int = 0  # seed of from_config's random init and of the LoRA init

    def __post_init__(self) -> None:
        problems = []
        if self.num_frames is not None and (self.num_frames < 1 or (self.num_frames - 1) % 4 != 0):
            problems.append(f"num_frames={self.num_frames}: must be 4k+1 (the Wan VAE compresses time 4×)")
        for name in ("height", "width"):
            value = getattr(self, name)
            if value is not None and (value <= 0 or value % 16 != 0):
                problems.append(f"{name}={value}: must be a positive multiple of 16")
        if self.num_inference_steps < 1:
            problems.append(f"num_inference_steps={self.num_inference_steps}: must be >= 1")
        if self.train_grid_steps is not None and self.train_grid_steps < 1:
            problems.append(f"train_grid_steps={self.train_grid_steps}: must be >= 1")
        if not 0.0 <= self.min_timestep_boundary < self.max_timestep_boundary <= 1.0:
            problems.append(f"min/max_timestep_boundary={self.min_timestep_boundary}/{self.max_timestep_boundary}: "
                            "need 0 <= min < max <= 1")
        if self.sigma_shift <= 0:
            problems.append(f"sigma_shift={self.sigma_shift}: must be > 0")
        if self.sde_noise_level < 0:
            problems.append(f"sde_noise_level={self.sde_noise_level}: must be >= 0")
        if self.boundary_ratio is not None and not 0.0 < self.boundary_ratio < 1.0:
            problems.append(f"boundary_ratio={self.boundary_ratio}: must be in (0, 1)")
        for name in ("sample_batch_size", "vae_batch_size", "prompt_cache_size", "max_sequence_length"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)}: must be >= 1")
        if problems:
            raise ConfigError("WanConfig:\n" + "\n".join(problems))


# ----------------------------------------------------------------------------------------------
# Flow-matching maths (pure functions)


def shift_sigmas(sigmas: Tensor, shift: float) -> Tensor:
    """The flow shift σ' = s·σ / (1 + (s − 1)·σ) (SD3/Wan), which spends more steps at high noise for s > 1."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def flow_training_grid(num_steps: int, shift: float) -> tuple[Tensor, Tensor]:
    """DiffSynth's training grid: the inference sigmas it trains on (reference ``set_timesteps_wan``).

    σ_k = shift(s_k) with s = linspace(1, 0, N + 1)[:-1] (so σ_0 = 1, no σ = 0), t_k = 1000·σ_k.

    Returns:
        (sigmas, timesteps), each (N,) float32, from high to low noise.
    """
    s = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float32)[:-1]
    sigmas = shift_sigmas(s, shift)
    return sigmas, sigmas * NUM_TRAIN_TIMESTEPS


def diffsynth_timestep_weights(timesteps: Tensor) -> Tensor:
    """DiffSynth's per-timestep loss weight over a training grid (the reference's ``set_training_weight``).

    y = exp(−2((t − 500)/1000)²), shifted so min y = 0 and scaled to sum 1000; for a grid of N ≠ 1000 points
    the weights are then scaled by N/1000 (mean 1 before the offset) and offset by the weight of the grid's
    second point (a DiffSynth quirk kept for fidelity: it keeps the extreme t's weight above zero).
    """
    t = timesteps.to(torch.float32)
    total = float(NUM_TRAIN_TIMESTEPS)
    y = torch.exp(-2 * ((t - total / 2) / total) ** 2)
    y = y - y.min()
    weights = y * (total / y.sum())
    if len(t) != NUM_TRAIN_TIMESTEPS:
        weights = weights * (len(t) / total)
        weights = weights + weights[1]
    return weights


def flow_matching_loss(prediction: Tensor, latents: Tensor, noise: Tensor, weight: Tensor,
                       skip_first_frame: bool = False) -> Tensor:
    """Per-sample weighted flow-matching loss w(t)·mean((v̂ − (ε − x₀))²), shape (B,).

    Args:
        prediction: v̂, (B, C, F', h, w).
        latents: x₀, same shape.
        noise: ε, same shape.
        weight: (B,) loss weight w(t).
        skip_first_frame: average over latent frames 1.. only (TI2V's pinned frame 0 is not learnable).
    """
    error = (prediction.float() - (noise.float() - latents.float())).square()
    if skip_first_frame:
        error = error[:, :, 1:]
    return error.flatten(1).mean(dim=1) * weight.float()


def flow_sde_step(sample: Tensor, velocity: Tensor, sigma: float, sigma_next: float, noise: Tensor,
                  noise_level: float, sigma_for_std: float | None = None) -> Tensor:
    """One Euler–Maruyama step of Flow-GRPO's reverse SDE (Liu et al. 2025, arXiv 2505.05470, Eq. 9).

    For x_σ = (1 − σ)x₀ + σε with velocity v = ε − x₀, the SDE
    dx = [v + σ_t²/(2σ)·(x + (1 − σ)v)] dσ + σ_t dw, σ_t = a·sqrt(σ/(1 − σ)),
    has the same marginals as the flow ODE dx = v dσ for every a; a = ``noise_level`` sets the
    stochasticity (a = 0 is the Euler step). With dσ = σ_next − σ < 0:
    x' = x + [v + σ_t²/(2σ)(x + (1 − σ)v)]·dσ + σ_t·sqrt(−dσ)·z.

    Args:
        sample: x at σ. velocity: the (guided) model output v̂ at σ. noise: z ~ N(0, I), same shape.
        sigma, sigma_next: current and next noise level, sigma_next < sigma.
        noise_level: a.
        sigma_for_std: σ used inside σ_t (Flow-GRPO uses the next grid σ at σ = 1, where σ_t diverges).
    The step into σ_next = 0 is the plain Euler step (x' = x̂₀): the returned sample carries no fresh noise.
    """
    dt = sigma_next - sigma
    if sigma_next <= 0 or noise_level == 0:
        return sample + dt * velocity
    s = sigma if sigma_for_std is None else sigma_for_std
    std = noise_level * math.sqrt(s / (1 - s))
    drift = velocity + (std**2 / (2 * sigma)) * (sample + (1 - sigma) * velocity)
    return sample + drift * dt + std * math.sqrt(-dt) * noise


# ----------------------------------------------------------------------------------------------
# The denoiser: one or two WanTransformer3DModel experts behind one module


class WanDenoiser(nn.Module):
    """The module the optimizer trains: ``transformer`` and, for A14B, ``transformer_2``.

    ``forward`` picks the expert per sample exactly as ``WanImageToVideoPipeline`` does per step:
    ``transformer`` when t ≥ boundary (high noise), ``transformer_2`` otherwise. A batch that mixes noise
    levels runs each expert on its sub-batch in the same call, so a distributed wrapper sees one forward.
    """

    def __init__(self, transformer: nn.Module, transformer_2: nn.Module | None = None,
                 boundary_timestep: float | None = None) -> None:
        super().__init__()
        if (transformer_2 is None) != (boundary_timestep is None):
            raise ValueError("WanDenoiser: transformer_2 and boundary_timestep go together")
        self.transformer = transformer
        self.transformer_2 = transformer_2
        self.boundary_timestep = boundary_timestep

    @property
    def experts(self) -> list[nn.Module]:
        return [self.transformer] + ([self.transformer_2] if self.transformer_2 is not None else [])

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    def enable_gradient_checkpointing(self) -> None:
        for expert in self.experts:
            expert.enable_gradient_checkpointing()

    def high_noise(self, timestep: Tensor) -> Tensor:
        """(B,) bool: which samples go to ``transformer`` (all, with one expert)."""
        level = timestep if timestep.ndim == 1 else timestep.amax(dim=1)  # TI2V: frame-0 tokens have t = 0
        if self.boundary_timestep is None:
            return torch.ones_like(level, dtype=torch.bool)
        return level >= self.boundary_timestep

    def forward(self, hidden_states: Tensor, timestep: Tensor, encoder_hidden_states: Tensor,
                encoder_hidden_states_image: Tensor | None = None) -> Tensor:
        """The velocity prediction (B, C_out, F', h, w) for model input (B, C_in, F', h, w) and t (B,) or (B, seq)."""
        def run(expert: nn.Module, idx: Tensor | slice) -> Tensor:
            image = encoder_hidden_states_image[idx] if encoder_hidden_states_image is not None else None
            return expert(hidden_states=hidden_states[idx], timestep=timestep[idx],
                          encoder_hidden_states=encoder_hidden_states[idx], encoder_hidden_states_image=image,
                          return_dict=False)[0]

        high = self.high_noise(timestep)
        if bool(high.all()):
            return run(self.transformer, slice(None))
        if not bool(high.any()):
            return run(self.transformer_2, slice(None))
        out_high = run(self.transformer, high)
        out_low = run(self.transformer_2, ~high)
        out = out_high.new_empty((hidden_states.shape[0], *out_high.shape[1:]))
        out[high] = out_high
        out[~high] = out_low
        return out


# ----------------------------------------------------------------------------------------------
# The backbone


def _read_model_index(path: Path) -> dict[str, Any]:
    index_file = path / "model_index.json"
    if not index_file.is_file():
        raise CheckpointError(f"{path}: not a diffusers pipeline folder (no model_index.json)")
    try:
        index = json.loads(index_file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{index_file}: invalid JSON ({exc})") from exc
    if not str(index.get("_class_name", "")).startswith("Wan"):
        raise CheckpointError(f"{index_file}: _class_name {index.get('_class_name')!r} is not a Wan pipeline")
    return index


def detect_layout(components: dict[str, Any]) -> str:
    """The layout of a set of ``WanImageToVideoPipeline`` components (see the module docstring)."""
    if components.get("expand_timesteps"):
        return "ti2v"
    if components.get("transformer_2") is not None:
        return "i2v_a14b"
    if components.get("image_encoder") is not None or components["transformer"].config.image_dim is not None:
        return "i2v_21"
    raise CheckpointError("cannot tell the Wan layout: no expand_timesteps, no transformer_2 and no image encoder "
                          "(a text-to-video folder?); expected Wan2.2-TI2V, Wan2.2-I2V-A14B or Wan2.1-I2V")


class WanBackbone:
    """Wan2.x behind the Backbone protocol (see the module docstring for the three layouts).

    Args:
        config: backbone settings; ``num_frames``/``height``/``width`` must be resolved (not None).
        components: ``WanImageToVideoPipeline`` keyword arguments (tokenizer, text_encoder, vae, scheduler,
            image_processor, image_encoder, transformer, transformer_2, boundary_ratio, expand_timesteps).
    """

    name = "wan"

    def __init__(self, config: WanConfig, components: dict[str, Any]) -> None:
        if None in (config.num_frames, config.height, config.width):
            raise ConfigError("WanBackbone: num_frames, height and width must be set (from_pretrained fills them)")
        self.config = config
        layout = detect_layout(components)
        if config.layout not in ("auto", layout):
            raise ConfigError(f"layout: the model folder is a {layout!r} model, "
                              f"but the config asks for {config.layout!r}")
        self.layout: str = layout
        for required in ("tokenizer", "text_encoder", "vae", "scheduler", "transformer"):
            if required in ("tokenizer", "text_encoder") and not config.load_text_encoder:
                components = {**components, required: None}  # dropped: embeddings come from a latent cache
                continue
            if components.get(required) is None:
                raise CheckpointError(f"the Wan pipeline has no `{required}` component "
                                      f"(needed by the {layout} backbone)")
        if layout == "i2v_21" and None in (components.get("image_encoder"), components.get("image_processor")):
            raise CheckpointError("Wan2.1-I2V needs `image_encoder` and `image_processor` components (CLIP)")
        if config.boundary_ratio is not None and layout != "i2v_a14b":
            raise ConfigError(f"boundary_ratio={config.boundary_ratio}: only the two-expert i2v_a14b layout has one")

        self.tokenizer = components["tokenizer"]
        self.text_encoder = components["text_encoder"]
        self.vae = components["vae"]
        self.scheduler = components["scheduler"]  # the folder's own scheduler (sampler "pipeline")
        self.image_processor = components.get("image_processor")
        self.image_encoder = components.get("image_encoder")
        self.boundary_ratio: float | None = None
        if layout == "i2v_a14b":
            ratio = config.boundary_ratio if config.boundary_ratio is not None else components.get("boundary_ratio")
            if ratio is None:
                raise CheckpointError("the two-expert Wan folder has no boundary_ratio in model_index.json; set "
                                      "backbone.options.boundary_ratio (Wan2.2-I2V-A14B: 0.9)")
            self.boundary_ratio = float(ratio)
        boundary = None if self.boundary_ratio is None else self.boundary_ratio * NUM_TRAIN_TIMESTEPS
        self.denoiser = WanDenoiser(components["transformer"], components.get("transformer_2"), boundary)
        self.transformer = components["transformer"]  # kept apart from `denoiser` in case a trainer wraps it
        self.transformer_2 = components.get("transformer_2")

        for module in (self.text_encoder, self.vae, self.image_encoder):
            if module is not None:
                module.requires_grad_(False)
                module.eval()
        self.denoiser.eval()  # Wan has no dropout; eval just makes that explicit
        if config.gradient_checkpointing:
            self.enable_gradient_checkpointing()

        vae_cfg = self.vae.config
        self.z_dim = int(vae_cfg.z_dim)
        self.vae_scale_temporal = int(vae_cfg.scale_factor_temporal)
        self.vae_scale_spatial = int(vae_cfg.scale_factor_spatial)
        self.patch_size = tuple(int(p) for p in self.transformer.config.patch_size)
        expected_in = self.z_dim if layout == "ti2v" else 2 * self.z_dim + 4
        if int(self.transformer.config.in_channels) != expected_in:
            raise CheckpointError(f"transformer in_channels={self.transformer.config.in_channels}, expected "
                                  f"{expected_in} for the {layout} layout with a z_dim={self.z_dim} VAE")
        has_image_branch = getattr(self.transformer.config, "added_kv_proj_dim", None) is not None
        if has_image_branch and config.max_sequence_length != 512:
            raise ConfigError(f"max_sequence_length={config.max_sequence_length}: Wan2.1-I2V's image cross-attention "
                              "splits its context at 512 text tokens (diffusers' WanAttnProcessor); use 512")
        F, H, W = self.video_shape
        multiple = self.vae_scale_spatial * self.patch_size[1]
        if (F - 1) % self.vae_scale_temporal != 0 or H % multiple != 0 or W % multiple != 0:
            raise ConfigError(f"video shape {F}×{H}×{W}: need num_frames = {self.vae_scale_temporal}k+1 and height, "
                              f"width multiples of {multiple} "
                              f"(VAE {self.vae_scale_spatial}× · patch {self.patch_size[1]})")

        grid_steps = config.train_grid_steps or config.num_inference_steps
        self.train_sigmas, self.train_timesteps = flow_training_grid(grid_steps, config.sigma_shift)
        self.train_weights = diffsynth_timestep_weights(self.train_timesteps)
        self._prompt_cache: OrderedDict[str, Tensor] = OrderedDict()

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, config: WanConfig | None = None) -> "WanBackbone":
        """Load a diffusers Wan folder (``WanImageToVideoPipeline.save_pretrained`` layout), offline-capable.

        ``path`` defaults to ``config.pretrained_path``. Transformer(s), text and image encoders load in
        ``config.dtype``, the VAE in ``config.vae_dtype``.
        """
        from diffusers import AutoencoderKLWan, WanImageToVideoPipeline

        config = config or WanConfig()
        if path is None and config.pretrained_path is None:
            raise ConfigError("Wan backbone: no model folder (give a path or set pretrained_path)")
        path = Path(path if path is not None else config.pretrained_path)
        if not path.exists():
            raise CheckpointError(f"{path}: model folder not found")
        _read_model_index(path)
        config = _with_video_shape(config, path)
        try:
            vae = AutoencoderKLWan.from_pretrained(str(path), subfolder="vae", dtype=DTYPES[config.vae_dtype])
            skip = {} if config.load_text_encoder else {"text_encoder": None, "tokenizer": None}
            pipe = WanImageToVideoPipeline.from_pretrained(str(path), vae=vae, dtype=DTYPES[config.dtype], **skip)
        except (OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: cannot load the Wan pipeline ({exc})") from exc
        components = dict(pipe.components)
        components.update(boundary_ratio=pipe.config.boundary_ratio, expand_timesteps=pipe.config.expand_timesteps)
        backbone = cls(config, components)
        logger.info("loaded Wan %s backbone from %s (%s, video %s)", backbone.layout, path, config.dtype,
                    "×".join(map(str, backbone.video_shape)))
        return backbone

    def pipeline(self):
        """A ``WanImageToVideoPipeline`` over this backbone's modules (shared, not copied)."""
        from diffusers import WanImageToVideoPipeline

        return WanImageToVideoPipeline(
            tokenizer=self.tokenizer, text_encoder=self.text_encoder, vae=self.vae, scheduler=self.scheduler,
            image_processor=self.image_processor, image_encoder=self.image_encoder, transformer=self.transformer,
            transformer_2=self.transformer_2, boundary_ratio=self.boundary_ratio,
            expand_timesteps=self.layout == "ti2v")

    def enable_gradient_checkpointing(self) -> None:
        """Recompute every expert's transformer blocks in backward."""
        self.denoiser.enable_gradient_checkpointing()

    def to(self, device: torch.device | str) -> "WanBackbone":
        """Move every module to ``device`` (dtypes unchanged)."""
        for module in (self.denoiser, self.vae, self.text_encoder, self.image_encoder):
            if module is not None:
                module.to(device)
        return self

    # --- shapes ----------------------------------------------------------------------------

    @property
    def video_shape(self) -> tuple[int, int, int]:
        return (int(self.config.num_frames), int(self.config.height), int(self.config.width))

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """(C, F', h, w) of one clip's latents."""
        F, H, W = self.video_shape
        s = self.vae_scale_spatial
        return (self.z_dim, (F - 1) // self.vae_scale_temporal + 1, H // s, W // s)

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.config.dtype]  # the base weights' (LoRA weights are float32)

    def _check_pixels(self, x: Tensor, what: str, frames: bool) -> None:
        F, H, W = self.video_shape
        expected = (F, 3, H, W) if frames else (3, H, W)
        if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected:
            dims = "B, " + ", ".join(map(str, expected))
            raise DataError(f"{what}: expected pixels of shape ({dims}) for this Wan backbone "
                            f"(num_frames={F}, height={H}, width={W}), got {tuple(x.shape)}")

    # --- VAE -------------------------------------------------------------------------------

    def _latent_stats(self, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
        """latents_mean and 1/latents_std as (1, C, 1, 1, 1), computed as the pipeline does."""
        shape = (1, self.z_dim, 1, 1, 1)
        mean = torch.tensor(self.vae.config.latents_mean).view(shape).to(device, dtype)
        inv_std = (1.0 / torch.tensor(self.vae.config.latents_std).view(shape)).to(device, dtype)
        return mean, inv_std

    @torch.no_grad()
    def _vae_encode(self, video_bcfhw: Tensor) -> Tensor:
        """(N, 3, F, H, W) in [-1, 1] -> normalised posterior-mode latents (N, C, F', h, w), float32."""
        vae_device = next(self.vae.parameters()).device
        chunks = []
        for start in range(0, video_bcfhw.shape[0], self.config.vae_batch_size):
            x = video_bcfhw[start:start + self.config.vae_batch_size].to(vae_device, self.vae.dtype)
            chunks.append(self.vae.encode(x).latent_dist.mode())
        latents = torch.cat(chunks).to(self.device, torch.float32)
        mean, inv_std = self._latent_stats(torch.float32, latents.device)
        return (latents - mean) * inv_std

    def encode_video(self, video: Tensor) -> Tensor:
        """(B, F, 3, H, W) pixels in [-1, 1] -> normalised latents (B, C, F', h, w), float32 (posterior mode)."""
        self._check_pixels(video, "encode_video", frames=True)
        return self._vae_encode(video.permute(0, 2, 1, 3, 4).float())

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Normalised latents (B, C, F', h, w) -> pixels (B, F, 3, H, W) in [-1, 1] (clamped), float32.

        The Wan VAE decodes causally one latent frame at a time; ``vae_batch_size`` clips per call.
        """
        if latents.ndim != 5 or tuple(latents.shape[1:]) != self.latent_shape:
            raise DataError(f"decode: expected latents of shape (B, {', '.join(map(str, self.latent_shape))}), "
                            f"got {tuple(latents.shape)}")
        vae_device = next(self.vae.parameters()).device
        mean, inv_std = self._latent_stats(self.vae.dtype, vae_device)
        out = []
        for start in range(0, latents.shape[0], self.config.vae_batch_size):
            z = latents[start:start + self.config.vae_batch_size].to(vae_device, self.vae.dtype)
            video = self.vae.decode(z / inv_std + mean, return_dict=False)[0]  # (n, 3, F, H, W)
            out.append(video.float().clamp(-1.0, 1.0).permute(0, 2, 1, 3, 4))
        return torch.cat(out).to(latents.device)

    # --- conditioning ----------------------------------------------------------------------

    @torch.no_grad()
    def _prompt_embeds(self, prompts: list[str]) -> Tensor:
        """(B, L, D) UMT5 embeddings zero-padded after each prompt's tokens (the pipeline's
        ``_get_t5_prompt_embeds``), in the transformer dtype. Each distinct prompt is encoded once (LRU cache)."""
        from diffusers.pipelines.wan.pipeline_wan_i2v import prompt_clean

        missing = list(dict.fromkeys(p for p in prompts if p not in self._prompt_cache))
        if missing and self.text_encoder is None:
            raise ConfigError(f"prompt {missing[0]!r}: no embedding for it and no text encoder loaded "
                              "(backbone.options.load_text_encoder=false); encode it with `shiftvdm data encode` "
                              "or load the text encoder")
        if missing:
            tokens = self.tokenizer([prompt_clean(p) for p in missing], padding="max_length",
                                    max_length=self.config.max_sequence_length, truncation=True,
                                    add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
            enc_device = next(self.text_encoder.parameters()).device
            hidden = self.text_encoder(tokens.input_ids.to(enc_device),
                                       tokens.attention_mask.to(enc_device)).last_hidden_state
            lengths = tokens.attention_mask.gt(0).sum(dim=1).tolist()
            for prompt, h, n in zip(missing, hidden, lengths):
                self._prompt_cache[prompt] = h[:n].to("cpu", self.text_encoder.dtype).clone()
        known = self._prompt_cache[prompts[0]] if prompts else None
        L = self.config.max_sequence_length
        D = int(self.text_encoder.config.d_model) if self.text_encoder is not None else known.shape[-1]
        out = torch.zeros(len(prompts), L, D, dtype=self.text_encoder.dtype if self.text_encoder is not None
                          else known.dtype)
        for i, prompt in enumerate(prompts):
            emb = self._prompt_cache[prompt]
            self._prompt_cache.move_to_end(prompt)
            out[i, :emb.shape[0]] = emb
        while len(self._prompt_cache) > self.config.prompt_cache_size:
            self._prompt_cache.popitem(last=False)
        return out.to(self.device, self.dtype)

    @torch.no_grad()
    def _clip_image_embeds(self, first_frame: Tensor) -> Tensor:
        """Wan2.1: CLIP penultimate hidden states of the first frames, (B, N, D), transformer dtype.

        Frames go to the CLIP processor as 8-bit images, as the pipeline's PIL inputs do.
        """
        images = ((first_frame.float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        pixels = self.image_processor(images=list(images), return_tensors="pt").pixel_values
        enc_device = next(self.image_encoder.parameters()).device
        out = self.image_encoder(pixel_values=pixels.to(enc_device), output_hidden_states=True)
        return out.hidden_states[-2].to(self.device, self.dtype)

    def encode_condition(self, first_frame: Tensor, prompts: list[str] | None = None) -> Condition:
        """(B, 3, H, W) first frames in [-1, 1] and prompts -> a Condition.

        ``tensors``: ``prompt_embeds`` and ``negative_prompt_embeds`` (B, L, D); TI2V ``image_latents``
        (B, C, 1, h, w), the normalised latent of the first frame; I2V ``image_condition`` (B, 4 + C, F', h, w),
        the mask (1 on latent frame 0) and the latents of (first frame, zeros…); Wan2.1 ``image_embeds``.
        ``prompts=None`` means the empty prompt for every conditioning.
        """
        self._check_pixels(first_frame, "encode_condition", frames=False)
        B = first_frame.shape[0]
        if prompts is None:
            prompts = [""] * B
        if len(prompts) != B:
            raise DataError(f"encode_condition: {len(prompts)} prompts for {B} conditioning images")
        image = first_frame.to(self.device, torch.float32)
        tensors = {"prompt_embeds": self._prompt_embeds(list(prompts)),
                   "negative_prompt_embeds": self._prompt_embeds([self.config.negative_prompt] * B)}
        if self.layout == "ti2v":
            tensors["image_latents"] = self._vae_encode(image[:, :, None])
        else:
            F = self.video_shape[0]
            video = torch.cat([image[:, :, None], image.new_zeros(B, 3, F - 1, *image.shape[-2:])], dim=2)
            latents = self._vae_encode(video)
            mask = torch.zeros(B, 4, *latents.shape[2:], device=latents.device)
            mask[:, :, 0] = 1.0  # the 4 pixel frames of latent frame 0 are "given" (the first frame, repeated)
            tensors["image_condition"] = torch.cat([mask, latents], dim=1)
            if self.layout == "i2v_21":
                tensors["image_embeds"] = self._clip_image_embeds(first_frame)
        return Condition(first_frame=first_frame.float(), tensors=tensors, prompts=list(prompts))

    # --- model input -----------------------------------------------------------------------

    def _token_mask(self, num_latent_frames: int, h: int, w: int, device: torch.device) -> Tensor:
        """(seq,) float32: 0 on latent frame 0's tokens, 1 elsewhere (TI2V per-token timesteps)."""
        p_t, p_h, p_w = self.patch_size
        mask = torch.ones(num_latent_frames // p_t, h // p_h, w // p_w, dtype=torch.float32, device=device)
        mask[0] = 0.0
        return mask.flatten()

    def _model_input(self, latents: Tensor, cond: Condition, t: Tensor) -> tuple[Tensor, Tensor]:
        """Transformer input and timestep for noisy ``latents`` at t (a 0-dim tensor or (B,))."""
        B = latents.shape[0]
        if self.layout == "ti2v":
            # expand_timesteps: frame 0 is the clean condition latent, its tokens get t = 0.
            first = cond.tensors["image_latents"].to(latents.device, torch.float32)
            hidden = torch.cat([first, latents[:, :, 1:].to(torch.float32)], dim=2)
            mask = self._token_mask(*latents.shape[2:], device=latents.device)
            timestep = (mask * t).unsqueeze(0).expand(B, -1) if t.ndim == 0 else mask[None] * t[:, None]
        else:
            hidden = torch.cat([latents, cond.tensors["image_condition"].to(latents.device, latents.dtype)], dim=1)
            timestep = t.expand(B) if t.ndim == 0 else t
        return hidden.to(self.dtype), timestep

    def _velocity(self, hidden: Tensor, timestep: Tensor, cond: Condition, negative: bool = False) -> Tensor:
        key = "negative_prompt_embeds" if negative else "prompt_embeds"
        image_embeds = cond.tensors.get("image_embeds")
        return self.denoiser(hidden, timestep, cond.tensors[key].to(hidden.device, self.dtype),
                             image_embeds.to(hidden.device, self.dtype) if image_embeds is not None else None)

    # --- training loss ---------------------------------------------------------------------

    def draw_noise(self, latents: Tensor, generator: torch.Generator) -> NoiseDraw:
        """t from the training grid (per sample, or one per batch with ``share_timestep_across_batch``), then ε.

        ``level`` is the timestep t = 1000σ (B,). Draws happen on the generator's device.
        """
        cfg, B = self.config, latents.shape[0]
        n = len(self.train_timesteps)
        lo, hi = int(cfg.min_timestep_boundary * n), int(cfg.max_timestep_boundary * n)
        if hi <= lo:
            raise ConfigError(f"min/max_timestep_boundary={cfg.min_timestep_boundary}/{cfg.max_timestep_boundary} "
                              f"select no point of the {n}-point training grid")
        # Differs from the reference (one t per batch, shift-reference-trainer.md §3.4): one t per sample gives
        # every batch a spread of noise levels; share_timestep_across_batch restores the reference's draw.
        count = 1 if cfg.share_timestep_across_batch else B
        idx = torch.randint(lo, hi, (count,), generator=generator, device=generator.device).cpu().expand(B)
        noise = torch.randn(latents.shape, generator=generator, device=generator.device, dtype=torch.float32)
        return NoiseDraw(noise=noise.to(latents.device), level=self.train_timesteps[idx].to(latents.device))

    def timestep_weight(self, timestep: Tensor) -> Tensor:
        """w(t) (B,): the DiffSynth weight of the nearest training-grid point (1 with ``timestep_weighting: none``)."""
        if self.config.timestep_weighting == "none":
            return torch.ones_like(timestep, dtype=torch.float32)
        grid = self.train_timesteps.to(timestep.device)
        idx = (timestep.float()[:, None] - grid[None]).abs().argmin(dim=1)
        return self.train_weights.to(timestep.device)[idx]

    def denoising_loss(self, latents: Tensor, cond: Condition, draw: NoiseDraw) -> Tensor:
        """Per-sample flow-matching loss w(t)·mean((v̂(x_t, t) − (ε − x₀))²), shape (B,).

        x_t = (1 − σ)x₀ + σε with σ = t/1000. TI2V: frame 0 of the input is the condition latent with t = 0
        on its tokens, and (unless ``loss_on_first_frame``) frame 0 is left out of the mean.
        """
        x0 = latents.float()
        noise = draw.noise.to(x0.device, torch.float32)
        t = draw.level.to(x0.device, torch.float32)
        sigma = (t / NUM_TRAIN_TIMESTEPS).view(-1, 1, 1, 1, 1)
        noisy = (1 - sigma) * x0 + sigma * noise
        hidden, timestep = self._model_input(noisy, cond, t)
        prediction = self._velocity(hidden, timestep, cond)
        # Differs from the reference (§9.7), which averages over frame 0 too: there the input is the clean
        # condition at t = 0, so ε − x₀ is unpredictable noise (an irreducible term). loss_on_first_frame keeps it.
        skip = self.layout == "ti2v" and not self.config.loss_on_first_frame
        return flow_matching_loss(prediction, x0, noise, self.timestep_weight(t), skip_first_frame=skip)

    # --- sampling --------------------------------------------------------------------------

    def _make_scheduler(self, sampler: str):
        from diffusers import FlowMatchEulerDiscreteScheduler

        if sampler == "pipeline":
            return type(self.scheduler).from_config(self.scheduler.config)  # fresh state every call
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=self.config.sigma_shift)

    @torch.no_grad()
    def sample(self, cond: Condition, num_videos: int, generator: torch.Generator, *,
               stochastic: bool = True, num_inference_steps: int | None = None) -> Tensor:
        """``num_videos`` clips per conditioning as normalised latents (B, P, C, F', h, w), float32.

        ``stochastic=True`` uses ``config.sampler`` (default the SDE), ``False`` ``config.deterministic_sampler``.
        Draw order: the initial noise of all B·P clips in one (B·P, …) tensor, b-major — exactly the pipeline's
        ``randn_tensor`` draw for B = 1 — then, for the SDE only, one seed per clip for its step noise, so results
        do not depend on ``sample_batch_size``.
        """
        cfg = self.config
        steps = cfg.num_inference_steps if num_inference_steps is None else int(num_inference_steps)
        if steps < 1:  # 0 is no request for the default
            raise ValueError(f"sample: num_inference_steps must be >= 1 (or None for the default), got {steps}")
        sampler = cfg.sampler if stochastic else cfg.deterministic_sampler
        total = cond.batch_size * num_videos
        noise = torch.randn((total, *self.latent_shape), generator=generator, device=generator.device,
                            dtype=torch.float32)
        seeds = (torch.randint(0, 2**62, (total,), generator=generator, device=generator.device).tolist()
                 if sampler == "sde" else [None] * total)
        cond_all = cond.repeat_interleave(num_videos).to(self.device)
        out = []
        for start in range(0, total, cfg.sample_batch_size):
            ids = list(range(start, min(total, start + cfg.sample_batch_size)))
            out.append(self._denoise(noise[ids].to(self.device), cond_all.index(ids), steps, sampler,
                                     [seeds[i] for i in ids]))
        latents = torch.cat(out)
        return latents.view(cond.batch_size, num_videos, *latents.shape[1:])

    def _denoise(self, latents: Tensor, cond: Condition, steps: int, sampler: str, seeds: list[int | None]) -> Tensor:
        """The denoising loop of ``WanImageToVideoPipeline.__call__`` (or the SDE) for one batch of clips."""
        cfg = self.config
        scheduler = self._make_scheduler(sampler)
        scheduler.set_timesteps(steps, device=latents.device)
        timesteps = scheduler.timesteps
        do_cfg = cfg.guidance_scale > 1.0
        scale_2 = cfg.guidance_scale_2 if cfg.guidance_scale_2 is not None else cfg.guidance_scale
        boundary = self.denoiser.boundary_timestep
        generators = [torch.Generator().manual_seed(s) for s in seeds] if sampler == "sde" else []
        for i, t in enumerate(timesteps):
            hidden, timestep = self._model_input(latents, cond, t)
            scale = cfg.guidance_scale if boundary is None or t >= boundary else scale_2
            velocity = self._velocity(hidden, timestep, cond)
            if do_cfg:
                uncond = self._velocity(hidden, timestep, cond, negative=True)
                velocity = uncond + scale * (velocity - uncond)
            if sampler == "sde":
                sigma, sigma_next = float(scheduler.sigmas[i]), float(scheduler.sigmas[i + 1])
                z = torch.stack([torch.randn(latents.shape[1:], generator=g) for g in generators]).to(latents.device)
                latents = flow_sde_step(latents.float(), velocity.float(), sigma, sigma_next, z, cfg.sde_noise_level,
                                        sigma_for_std=sigma_next if sigma >= 1.0 else None)
            else:
                latents = scheduler.step(velocity, t, latents, return_dict=False)[0]
        latents = latents.float()
        if self.layout == "ti2v":  # the pipeline's final merge: frame 0 is the condition latent
            latents = torch.cat([cond.tensors["image_latents"].to(latents.device, torch.float32), latents[:, :, 1:]], 2)
        return latents

    # --- parameters and LoRA ---------------------------------------------------------------

    @property
    def has_lora(self) -> bool:
        return any(lora.has_lora(e) for e in self.denoiser.experts)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The LoRA weights when a LoRA is attached, else every transformer weight (full fine-tuning)."""
        if self.has_lora:
            return [p for e in self.denoiser.experts for p in lora.lora_parameters(e)]
        return list(self.denoiser.parameters())

    def add_lora(self, rank: int, alpha: float, target_modules: str | list[str] | None = None) -> None:
        """Attach a fresh float32 LoRA to every expert (default targets: every attention's to_q/to_k/to_v/to_out.0)
        and freeze everything else. Init as the reference (``gaussian``: A ~ N(0, 1/r²), B = 0), drawn from
        ``generator_for(config.seed, "wan-lora-init", expert)``."""
        if self.has_lora:
            raise ValueError("add_lora: the Wan backbone already has a LoRA; fuse_lora() it before adding another")
        targets = target_modules if target_modules is not None else list(self.config.lora_target_modules)
        for index, expert in enumerate(self.denoiser.experts):
            lora.add_lora(expert, rank, alpha, targets, generator=self._lora_generator(index))
        logger.info("LoRA r=%d alpha=%g on %s of %d expert(s): %d trainable parameters", rank, alpha, targets,
                    len(self.denoiser.experts), sum(p.numel() for p in self.trainable_parameters()))

    def _lora_generator(self, expert: int) -> torch.Generator:
        return generator_for(self.config.seed, "wan-lora-init", expert)

    def fuse_lora(self) -> None:
        """Merge the LoRA into the base weights of every expert, drop the adapters, make all weights trainable."""
        if not self.has_lora:
            raise ValueError("fuse_lora: the Wan backbone has no LoRA")
        for expert in self.denoiser.experts:
            lora.fuse_lora(expert)
        self.denoiser.requires_grad_(True)

    @staticmethod
    def expert_lora_path(path: str | Path, expert: int) -> Path:
        """Where ``save_lora(path)`` writes expert ``expert``'s LoRA: ``path`` itself for ``transformer``,
        ``<stem>.transformer_2.safetensors`` next to it for A14B's ``transformer_2``."""
        path = Path(path)
        return path if expert == 0 else path.with_name(f"{path.stem}.transformer_2{path.suffix}")

    def save_lora(self, path: str | Path) -> None:
        """Write the LoRA as diffusers-loadable safetensors (keys ``transformer.<peft key>``, what
        ``WanImageToVideoPipeline.load_lora_weights`` reads).

        A14B: ``transformer_2``'s LoRA goes to :meth:`expert_lora_path` (load it into a pipeline with
        ``load_lora_weights(that_file, load_into_transformer_2=True)``).
        """
        if not self.has_lora:
            raise ValueError("save_lora: the Wan backbone has no LoRA (call add_lora or load_lora first)")
        for index, expert in enumerate(self.denoiser.experts):
            lora.save_lora(expert, self.expert_lora_path(path, index), LORA_PREFIX)

    def load_lora(self, path: str | Path) -> None:
        """Load a LoRA from ``path`` (and, for A14B, its ``transformer_2`` file), adding the adapter first when
        there is none.

        Reads our ``save_lora`` files and other diffusers-format Wan LoRAs (through diffusers'
        ``lora_state_dict``, which converts the original Wan and musubi key formats); without metadata, rank
        comes from the weights and alpha = rank.

        Raises:
            CheckpointError: a file is missing, unreadable, or does not fit this model (names the file).
        """
        files = [self.expert_lora_path(path, index) for index in range(len(self.denoiser.experts))]
        for index, file in enumerate(files):
            if not file.is_file():
                what = "" if index == 0 else " (the transformer_2 LoRA of a two-expert model)"
                raise CheckpointError(f"{file}: LoRA file not found{what}")
        for expert, file in zip(self.denoiser.experts, files):
            lora.load_lora(expert, file, LORA_PREFIX, reader=_diffusers_reader)

    # --- full checkpoints ------------------------------------------------------------------

    def save_pretrained(self, path: str | Path) -> None:
        """Write the whole pipeline (``WanImageToVideoPipeline.save_pretrained`` layout) plus the video shape.

        A LoRA, if attached, is not included: fuse it first or save it with :meth:`save_lora`.
        """
        if self.has_lora:
            raise ValueError("save_pretrained with a LoRA attached: fuse_lora() first or use save_lora()")
        path = Path(path)
        self.pipeline().save_pretrained(str(path), safe_serialization=True)
        write_video_shape(path, self.video_shape)


def write_video_shape(path: str | Path, video_shape: tuple[int, int, int]) -> None:
    """Record (num_frames, height, width) next to a saved pipeline, used when the config leaves them None."""
    text = json.dumps(dict(zip(("num_frames", "height", "width"), map(int, video_shape))), indent=2)
    write_text(Path(path) / VIDEO_SHAPE_FILE, text + "\n")


def _with_video_shape(config: WanConfig, path: Path | None) -> WanConfig:
    """``config`` with unset num_frames/height/width filled from ``path``'s record, else the reference's."""
    from dataclasses import replace

    saved: dict[str, Any] = {}
    if path is not None and (path / VIDEO_SHAPE_FILE).is_file():
        try:
            saved = json.loads((path / VIDEO_SHAPE_FILE).read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{path / VIDEO_SHAPE_FILE}: invalid JSON ({exc})") from exc
    values = {}
    for name, default in zip(("num_frames", "height", "width"), _DEFAULT_VIDEO_SHAPE):
        values[name] = getattr(config, name) if getattr(config, name) is not None else int(saved.get(name, default))
    return replace(config, **values)


def latent_layout(options: dict[str, Any]) -> LatentLayout:
    """Wan's causal video VAE: Wan2.2-TI2V 48 channels at 16× each side; the other layouts 16 channels at 8×; both
    keep the first frame and one latent frame per 4 after it. ``options`` without a layout count as TI2V (the
    5 B preset's)."""
    if options.get("layout", "ti2v") == "ti2v":
        return LatentLayout(channels=48, spatial=16, temporal=4)
    return LatentLayout(channels=16, spatial=8, temporal=4)


def from_pretrained(path: str | Path, config: WanConfig | None = None, given: set[str] | None = None) -> WanBackbone:
    """Load a diffusers-format Wan folder (see :meth:`WanBackbone.from_pretrained`). (``given``, the option names a
    user set, is part of the registry's call; the folder's only settings, the clip shape, fill fields left None.)"""
    return WanBackbone.from_pretrained(path, config)


def _diffusers_reader(file: Path) -> tuple[dict[str, Tensor], dict | None]:
    from diffusers import WanImageToVideoPipeline

    return WanImageToVideoPipeline.lora_state_dict(str(file), use_safetensors=True, return_lora_metadata=True)
