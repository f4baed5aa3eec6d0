"""The CPU demo backbone: a tiny pixel-space image-to-video EDM model behind the Backbone interface.

Why not the SVD architecture at tiny size: on 2 CPU cores a 2 M-parameter
``UNetSpatioTemporalConditionModel`` needs 7-11 s per batch-64 training step on 16×16×8 pixel clips
(1.3 s with a 2×2 pixel-unshuffle), while a usable base model needs ~2-3 k such steps (the demo's
prototypes). A 2-D UNet with time folded into channels does a batch-64 step in ~0.1-0.2 s and learns
clean sprite clips in a few minutes. Everything else the demo runs (trainer, rewards, evaluation) is
the code users run at scale; only this file is demo-specific.

Parameterisation (differs from SVD, which diffuses VAE latents of every frame):

* **Latents** are ``(B, F, 3, H, W)`` in pixel units: frame 0 is the clean conditioning frame
  ``x_0``, frames 1..F-1 are the residuals ``x_t - x_0``. Diffusing residuals makes a static clip the
  all-zero latent, so background and sprite identity come from the condition for free and the
  model only has to learn the motion. ``decode`` adds frame 0 back, so it needs no condition.
* **Denoising** touches frames 1..F-1 only; frame 0 of the latents is pinned (never noised, never
  in the loss, copied from ``Condition.first_frame`` by the sampler), like Wan2.2-TI2V's pinned
  first latent frame. ``NoiseDraw.noise`` has the full latent shape (the contract); its frame-0
  slice is drawn but unused.
* **EDM** (Karras et al. 2022): D(x; σ) = c_skip x + c_out F(c_in x, c_noise) with the σ_data of
  the residuals (measure it with :func:`residual_std`), log-normal σ, loss weight
  (σ² + σ_d²)/(σ σ_d)², per-sample mean over the residual frames.
* **No classifier-free guidance** and no conditioning dropout: the condition is the exact first
  frame that the residuals are relative to, so an unconditional branch has no meaning here.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders.peft import PeftAdapterMixin
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from shiftvdm.backbone import lora
from shiftvdm.backbone.base import DTYPES, Condition, LatentLayout, NoiseDraw, cast_frozen
from shiftvdm.backbone.edm import (
    edm_loss_weight,
    edm_scalings,
    euler_ancestral_step,
    euler_step,
    karras_sigmas,
    lognormal_sigma,
)
from shiftvdm.errors import CheckpointError, ConfigError
from shiftvdm.utils.checkpoint import write_text
from shiftvdm.utils.seeding import generator_for

logger = logging.getLogger(__name__)

BACKBONE_CONFIG_NAME = "toy_backbone.json"  # the ToyConfig, next to the diffusers config.json
# Fields that describe the trained model itself: a saved folder's values always win over a passed config.
MODEL_FIELDS = ("num_frames", "size", "block_out_channels", "layers_per_block", "num_mid_blocks", "norm_num_groups",
                "num_fourier_freqs", "fourier_scale", "attention_levels", "mid_attention", "attention_head_dim",
                "sigma_data")


@dataclass
class ToyConfig:
    """Settings of the demo backbone (network, EDM noise levels, sampler, LoRA defaults)."""

    num_frames: int = 8  # F, frames per clip including the conditioning frame 0
    size: int = 16  # H = W in pixels (divisible by 2**(levels-1))
    block_out_channels: tuple[int, ...] = (32, 64, 64)  # UNet width per resolution level (demo prototypes: 32/64/64)
    layers_per_block: int = 2  # ResBlocks per level on the way down (and up)
    num_mid_blocks: int = 2  # ResBlocks at the coarsest level
    attention_levels: tuple[int, ...] = ()  # levels (0 = full size) whose ResBlocks are followed by self-attention
    mid_attention: bool = True  # self-attention between the mid ResBlocks (global mixing at the coarsest grid)
    attention_head_dim: int = 32  # channels per attention head
    norm_num_groups: int = 8  # GroupNorm groups (must divide every width)
    num_fourier_freqs: int = 16  # random Fourier frequencies of the noise embedding (stored as a buffer)
    fourier_scale: float = 1.0  # std of those frequencies (c_noise = ln σ / 4 spans about [-1.6, 1.1])
    init_seed: int = 0  # seed of the weight initialisation and of the Fourier frequencies
    sigma_data: float = 0.228  # σ_d: std of x_t - x_0 in [-1, 1] units of the pre-training clips (residual_std; demo data: 0.227)
    p_mean: float = -1.2  # mean of ln σ during training (EDM P_mean; demo prototypes)
    p_std: float = 1.2  # std of ln σ during training (EDM P_std)
    sigma_min: float = 0.002  # smallest σ of the sampler's Karras schedule (EDM)
    sigma_max: float = 10.0  # largest σ (≈ 90 σ_d, enough to erase any residual)
    rho: float = 7.0  # Karras schedule exponent (EDM)
    num_inference_steps: int = 12  # sampler steps (demo prototype 3: 12 steps)
    eta: float = 0.5  # ancestral noise of the stochastic sampler (0 = deterministic, 1 = full ancestral)
    clip_denoised: bool = True  # clamp each x̂_0 prediction to residuals that keep pixels in [-1, 1]
    lora_target_modules: list[str] = field(default_factory=lambda: ["conv1", "conv2"])  # ResBlock convs
    dtype: str = "float32"  # base weights: float32 | bfloat16 | float16 (LoRA weights and latents stay float32)

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        self.attention_levels = tuple(int(level) for level in self.attention_levels)
        problems = []
        if self.num_frames < 2:
            problems.append(f"num_frames={self.num_frames}: need at least 2 (frame 0 plus one generated frame)")
        levels = len(self.block_out_channels)
        if levels < 1:
            problems.append("block_out_channels is empty: need at least one level")
        elif self.size % (2 ** (levels - 1)) != 0:
            problems.append(f"size={self.size}: must be divisible by 2**(levels-1)={2 ** (levels - 1)}")
        for level in self.attention_levels:
            if not 0 <= level < levels:
                problems.append(f"attention_levels entry {level}: must be a level index in [0, {levels - 1}]")
        attended = set(self.attention_levels) | ({levels - 1} if self.mid_attention and levels else set())
        for level in sorted(attended):
            if 0 <= level < levels and self.block_out_channels[level] % self.attention_head_dim != 0:
                problems.append(f"block_out_channels[{level}]={self.block_out_channels[level]} (a level with attention) "
                                f"is not divisible by attention_head_dim={self.attention_head_dim}")
        for c in self.block_out_channels:
            if c % self.norm_num_groups != 0:
                problems.append(f"block_out_channels entry {c} is not divisible by norm_num_groups={self.norm_num_groups}")
        if self.sigma_data <= 0:
            problems.append(f"sigma_data={self.sigma_data}: must be > 0")
        if not 0 < self.sigma_min < self.sigma_max:
            problems.append(f"sigma_min={self.sigma_min}, sigma_max={self.sigma_max}: need 0 < sigma_min < sigma_max")
        if self.num_inference_steps < 1:
            problems.append(f"num_inference_steps={self.num_inference_steps}: must be >= 1")
        if not 0.0 <= self.eta <= 1.0:
            problems.append(f"eta={self.eta}: must be in [0, 1]")
        if self.dtype not in DTYPES:
            problems.append(f"dtype={self.dtype!r}: expected one of {', '.join(DTYPES)}")
        if problems:
            raise ConfigError("ToyConfig:\n" + "\n".join(problems))


def residual_std(videos: Tensor) -> float:
    """σ_data for :class:`ToyConfig`: the std of ``x_t - x_0`` over frames 1..F-1 of (N, F, 3, H, W) clips in [-1, 1]."""
    residual = videos[:, 1:].float() - videos[:, :1].float()
    return float(residual.std())


# ----------------------------------------------------------------------------------------------
# The network


class FourierNoiseEmbedding(nn.Module):
    """[cos(2π f c), sin(2π f c)] of the scalar noise input c, with fixed random frequencies f.

    The frequencies are a persistent buffer, so they are saved with the weights: a reloaded model
    computes the same embedding (a prototype lost them on reload and produced garbage).
    """

    def __init__(self, num_freqs: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.register_buffer("freqs", torch.zeros(num_freqs))

    def reset_parameters(self, generator: torch.Generator) -> None:
        self.freqs.copy_(torch.randn(self.freqs.shape, generator=generator) * self.scale)

    def forward(self, c_noise: Tensor) -> Tensor:
        phase = 2 * math.pi * c_noise[:, None].float() * self.freqs[None]
        return torch.cat([phase.cos(), phase.sin()], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, noise embedding as a per-channel scale and shift (adaptive GroupNorm)."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb_proj(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        return self.skip(x) + self.conv2(h)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H·W positions (pre-GroupNorm, residual)."""

    def __init__(self, channels: int, head_dim: int, groups: int) -> None:
        super().__init__()
        self.heads = channels // head_dim
        self.norm = nn.GroupNorm(groups, channels)
        self.to_qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.to_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.to_qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.to_out(out.transpose(-1, -2).reshape(b, c, h, w))


class ToyVideoUNet(ModelMixin, ConfigMixin, PeftAdapterMixin):
    """F_θ of EDM: a 2-D UNet over (residual frames + conditioning frame) stacked on channels.

    Input ``(B, 3F, H, W)``: the c_in-scaled noisy residuals of frames 1..F-1 followed by frame 0.
    Output ``(B, 3(F-1), H, W)``. No 3-D convolutions and no temporal attention: time lives in
    channels, which is what makes a batch-64 step cost ~0.1 s on 2 CPU cores. Optional spatial
    self-attention (at the coarsest grid by default) moves a sprite's colour across the frame.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(self, num_frames: int = 8, block_out_channels: tuple[int, ...] = (32, 64, 64),
                 layers_per_block: int = 2, num_mid_blocks: int = 2, norm_num_groups: int = 8,
                 num_fourier_freqs: int = 16, fourier_scale: float = 1.0, attention_levels: tuple[int, ...] = (),
                 mid_attention: bool = True, attention_head_dim: int = 32) -> None:
        super().__init__()
        widths = list(block_out_channels)
        groups = norm_num_groups
        emb_dim = 4 * widths[0]
        out_channels = 3 * (num_frames - 1)
        self.noise_embedding = FourierNoiseEmbedding(num_fourier_freqs, fourier_scale)
        self.emb_mlp = nn.Sequential(nn.Linear(2 * num_fourier_freqs, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # The first conv is wider than its 3F input channels (toy prototype 2: a narrow stem lost detail).
        self.conv_in = nn.Conv2d(3 * num_frames, widths[0], 3, padding=1)

        attention_levels = set(attention_levels)
        self.down_blocks = nn.ModuleList()
        self.down_attentions = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        ch = widths[0]
        for level, width in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(layers_per_block):
                blocks.append(ResBlock(ch, width, emb_dim, groups))
                ch = width
            self.down_blocks.append(blocks)
            self.down_attentions.append(
                SelfAttention(width, attention_head_dim, groups) if level in attention_levels else nn.Identity())
            if level < len(widths) - 1:
                self.downsamplers.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.mid_blocks = nn.ModuleList([ResBlock(ch, ch, emb_dim, groups) for _ in range(num_mid_blocks)])
        self.mid_attn = SelfAttention(ch, attention_head_dim, groups) if mid_attention else nn.Identity()

        self.up_blocks = nn.ModuleList()
        self.up_attentions = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for level in reversed(range(len(widths))):
            width = widths[level]
            blocks = nn.ModuleList()
            for i in range(layers_per_block):
                # the first block of a level takes the skip of the same level, concatenated
                blocks.append(ResBlock(ch + (width if i == 0 else 0), width, emb_dim, groups))
                ch = width
            self.up_blocks.append(blocks)
            self.up_attentions.append(
                SelfAttention(width, attention_head_dim, groups) if level in attention_levels else nn.Identity())
            if level > 0:
                self.upsamplers.append(nn.Conv2d(ch, widths[level - 1], 3, padding=1))
                ch = widths[level - 1]
        self.norm_out = nn.GroupNorm(groups, ch)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)
        self.gradient_checkpointing = False  # set by ModelMixin.enable_gradient_checkpointing

    def _res(self, block: nn.Module, h: Tensor, emb: Tensor) -> Tensor:
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return self._gradient_checkpointing_func(block, h, emb)
        return block(h, emb)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Initialise every weight from ``generator`` (PyTorch's default scheme; zero output conv)."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
                fan_in = module.weight[0].numel()
                bound = 1 / math.sqrt(fan_in)
                nn.init.uniform_(module.bias, -bound, bound, generator=generator)
            elif isinstance(module, nn.GroupNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # Zero output conv: F_θ starts at 0, so D starts at c_skip·x, the EDM optimum for no signal.
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.noise_embedding.reset_parameters(generator)

    def forward(self, sample: Tensor, c_noise: Tensor) -> Tensor:
        """``sample`` (B, 3F, H, W), ``c_noise`` (B,) -> (B, 3(F-1), H, W)."""
        emb = self.emb_mlp(self.noise_embedding(c_noise).to(self.conv_in.weight.dtype))
        h = self.conv_in(sample)
        skips = []
        for level, blocks in enumerate(self.down_blocks):
            for block in blocks:
                h = self._res(block, h, emb)
            h = self.down_attentions[level](h)
            skips.append(h)
            if level < len(self.downsamplers):
                h = self.downsamplers[level](h)
        for i, block in enumerate(self.mid_blocks):
            h = self._res(block, h, emb)
            if i == 0:  # attention after the first mid block
                h = self.mid_attn(h)
        if not self.mid_blocks:
            h = self.mid_attn(h)
        for i, blocks in enumerate(self.up_blocks):
            h = torch.cat([h, skips.pop()], dim=1)
            for block in blocks:
                h = self._res(block, h, emb)
            h = self.up_attentions[i](h)
            if i < len(self.upsamplers):
                h = self.upsamplers[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


# ----------------------------------------------------------------------------------------------
# The backbone


class ToyBackbone:
    """A tiny pixel-space image-to-video EDM model for the CPU demo (see the module docstring).

    Args:
        config: network, noise-level and sampler settings. ``sigma_data`` should be measured on the
            pre-training clips with :func:`residual_std`.
        denoiser: an existing network (used by :meth:`from_pretrained`); a fresh one initialised
            from ``config.init_seed`` when None.
    """

    name = "toy"

    def __init__(self, config: ToyConfig | None = None, denoiser: ToyVideoUNet | None = None) -> None:
        self.config = config or ToyConfig()
        if denoiser is None:
            denoiser = ToyVideoUNet(**self._network_kwargs(self.config))
            denoiser.reset_parameters(generator_for(self.config.init_seed, "toy-backbone-init"))
        if next(denoiser.parameters()).dtype != DTYPES[self.config.dtype]:  # the Fourier phases 2π·f·c stay float32
            cast_frozen(denoiser, DTYPES[self.config.dtype], keep=("noise_embedding",))
        self.denoiser = denoiser

    @staticmethod
    def _network_kwargs(config: ToyConfig) -> dict:
        return dict(num_frames=config.num_frames, block_out_channels=tuple(config.block_out_channels),
                    layers_per_block=config.layers_per_block, num_mid_blocks=config.num_mid_blocks,
                    norm_num_groups=config.norm_num_groups, num_fourier_freqs=config.num_fourier_freqs,
                    fourier_scale=config.fourier_scale, attention_levels=tuple(config.attention_levels),
                    mid_attention=config.mid_attention, attention_head_dim=config.attention_head_dim)

    # --- shapes and encodings --------------------------------------------------------------

    @property
    def video_shape(self) -> tuple[int, int, int]:
        return (self.config.num_frames, self.config.size, self.config.size)

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.config.dtype]  # the base weights' (LoRA weights, latents and σ stay float32)

    def _check_video(self, video: Tensor, what: str) -> None:
        expected = (self.config.num_frames, 3, self.config.size, self.config.size)
        if video.ndim != 5 or tuple(video.shape[1:]) != expected:
            raise ValueError(f"{what}: expected shape (B, {', '.join(map(str, expected))}), got {tuple(video.shape)}")

    def encode_video(self, video: Tensor) -> Tensor:
        """(B, F, 3, H, W) pixels in [-1, 1] -> latents: frame 0 unchanged, frames 1.. as ``x_t - x_0``."""
        self._check_video(video, "encode_video")
        video = video.float()
        return torch.cat([video[:, :1], video[:, 1:] - video[:, :1]], dim=1)

    def decode(self, latents: Tensor) -> Tensor:
        """Latents (B, F, 3, H, W) -> pixels (B, F, 3, H, W) in [-1, 1] (clamped)."""
        self._check_video(latents, "decode")
        first = latents[:, :1]
        return torch.cat([first, first + latents[:, 1:]], dim=1).clamp(-1.0, 1.0)

    def encode_condition(self, first_frame: Tensor, prompts: list[str] | None = None) -> Condition:
        """(B, 3, H, W) first frames -> a Condition carrying just the frame (prompts are ignored)."""
        size = self.config.size
        if first_frame.ndim != 4 or tuple(first_frame.shape[1:]) != (3, size, size):
            raise ValueError(f"encode_condition: expected shape (B, 3, {size}, {size}), got {tuple(first_frame.shape)}")
        if prompts is not None:
            logger.debug("ToyBackbone ignores text prompts (image-to-video only)")
        return Condition(first_frame=first_frame.float(), tensors={}, prompts=None)

    # --- training loss ---------------------------------------------------------------------

    def draw_noise(self, latents: Tensor, generator: torch.Generator) -> NoiseDraw:
        """σ ~ logN(P_mean, P_std²) per clip, then ε ~ N(0, I) of the latents' shape (frame 0 unused)."""
        batch = latents.shape[0]
        level = lognormal_sigma(batch, self.config.p_mean, self.config.p_std, generator)
        noise = torch.randn(latents.shape, generator=generator, device=generator.device)
        return NoiseDraw(noise=noise.to(latents.device, latents.dtype), level=level.to(latents.device, latents.dtype))

    def denoise(self, noisy_residual: Tensor, sigma: Tensor, first_frame: Tensor) -> Tensor:
        """EDM's D(x; σ): the denoised residuals (B, F-1, 3, H, W) from noisy ones and σ (B,)."""
        c_skip, c_out, c_in, c_noise = edm_scalings(sigma, self.config.sigma_data, prediction="edm")
        batch = noisy_residual.shape[0]
        expand = (batch, 1, 1, 1, 1)
        net_in = torch.cat([(c_in.view(expand) * noisy_residual).flatten(1, 2), first_frame], dim=1)
        net_out = self.denoiser(net_in.to(self.dtype), c_noise.to(self.dtype)).float().view_as(noisy_residual)
        return c_skip.view(expand) * noisy_residual + c_out.view(expand) * net_out

    def denoising_loss(self, latents: Tensor, cond: Condition, draw: NoiseDraw) -> Tensor:
        """Per-sample EDM loss λ(σ)·mean‖D(x + σε; σ) − x‖² over the residual frames, shape (B,)."""
        residual = latents[:, 1:]
        sigma = draw.level
        noisy = residual + sigma.view(-1, 1, 1, 1, 1) * draw.noise[:, 1:]
        denoised = self.denoise(noisy, sigma, cond.first_frame)
        weight = edm_loss_weight(sigma, self.config.sigma_data)
        return weight * (denoised - residual).square().flatten(1).mean(dim=1)

    # --- sampling --------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, cond: Condition, num_videos: int, generator: torch.Generator, *,
               stochastic: bool = True, num_inference_steps: int | None = None) -> Tensor:
        """``num_videos`` clips per conditioning as latents (B, P, F, 3, H, W).

        ``stochastic=True``: Euler-ancestral with ``config.eta``; ``False``: deterministic Euler (the
        probability-flow ODE). Both on the Karras σ schedule. No CFG (see the module docstring).
        Draw order: the initial noise of all B·P clips, then each ancestral step's noise (none
        for the final step to σ = 0), so the result depends on B·P and the generator only.
        """
        cfg = self.config
        steps = cfg.num_inference_steps if num_inference_steps is None else int(num_inference_steps)
        if steps < 1:  # 0 is no request for the default
            raise ValueError(f"sample: num_inference_steps must be >= 1 (or None for the default), got {steps}")
        first = cond.first_frame.to(self.device, torch.float32).repeat_interleave(num_videos, 0)
        batch = first.shape[0]
        frames, size = cfg.num_frames, cfg.size
        shape = (batch, frames - 1, 3, size, size)
        sigmas = karras_sigmas(steps, cfg.sigma_min, cfg.sigma_max, cfg.rho)
        x = torch.randn(shape, generator=generator, device=generator.device).to(self.device)
        x = x * float(sigmas[0])
        # x̂_0 bound: x_0 + residual must stay in [-1, 1]
        low, high = (-1.0 - first)[:, None], (1.0 - first)[:, None]
        for i in range(steps):
            sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
            denoised = self.denoise(x, torch.full((batch,), sigma, device=self.device), first)
            if cfg.clip_denoised:
                denoised = torch.maximum(torch.minimum(denoised, high), low)
            if stochastic and cfg.eta > 0 and sigma_next > 0:
                noise = torch.randn(shape, generator=generator, device=generator.device).to(self.device)
                x = euler_ancestral_step(x, denoised, sigma, sigma_next, noise, cfg.eta)
            else:
                x = euler_step(x, denoised, sigma, sigma_next)
        latents = torch.cat([first[:, None], x], dim=1)
        return latents.view(batch // num_videos, num_videos, frames, 3, size, size)

    # --- parameters and LoRA ---------------------------------------------------------------

    @property
    def has_lora(self) -> bool:
        return lora.has_lora(self.denoiser)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The LoRA weights when a LoRA is attached, else every weight (pre-training / full SFT)."""
        return lora.lora_parameters(self.denoiser) if self.has_lora else list(self.denoiser.parameters())

    def add_lora(self, rank: int, alpha: float, target_modules: str | list[str] | None = None) -> None:
        """Attach a fresh float32 LoRA (default targets: ``config.lora_target_modules``, the ResBlock convs)
        and freeze every other weight. LoRA B starts at zero, so outputs are unchanged."""
        if self.has_lora:
            raise ValueError("ToyBackbone already has a LoRA attached; fuse_lora() it first")
        targets = target_modules if target_modules is not None else list(self.config.lora_target_modules)
        lora.add_lora(self.denoiser, rank, alpha, targets, init="kaiming", generator=self._lora_generator(rank))

    def _lora_generator(self, rank: int) -> torch.Generator:
        return generator_for(self.config.init_seed, "toy-lora-init", rank)

    def fuse_lora(self) -> None:
        """Merge the LoRA into the base weights, drop the adapter and make every weight trainable again."""
        if not self.has_lora:
            raise ValueError("ToyBackbone has no LoRA to fuse")
        lora.fuse_lora(self.denoiser)
        self.denoiser.requires_grad_(True)

    def save_lora(self, path: str | Path) -> None:
        """Write the LoRA weights to ``path`` (.safetensors) in diffusers' ``save_lora_adapter`` format:
        unprefixed peft keys and the LoraConfig as JSON under ``lora_adapter_metadata``."""
        if not self.has_lora:
            raise ValueError("ToyBackbone has no LoRA to save")
        lora.save_lora(self.denoiser, path, prefix="")

    def load_lora(self, path: str | Path) -> None:
        """Attach a LoRA with the rank, alpha and targets stored in ``path`` and load its weights."""
        lora.load_lora(self.denoiser, path, prefix="")

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each ResBlock in backward."""
        self.denoiser.enable_gradient_checkpointing()

    # --- full checkpoints ------------------------------------------------------------------

    def save_pretrained(self, path: str | Path) -> None:
        """Write ``config.json`` + ``diffusion_pytorch_model.safetensors`` (the network, diffusers
        layout) and ``toy_backbone.json`` (this ToyConfig). A LoRA, if attached, is not included:
        fuse it first or save it with :meth:`save_lora`."""
        if self.has_lora:
            raise ValueError("save_pretrained with a LoRA attached: fuse_lora() first or use save_lora()")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.denoiser.save_pretrained(str(path), safe_serialization=True)
        text = json.dumps(asdict(self.config), indent=2)
        write_text(path / BACKBONE_CONFIG_NAME, text + "\n")

    @classmethod
    def from_pretrained(cls, path: str | Path, config: ToyConfig | None = None,
                        torch_dtype: torch.dtype | None = None, given: set[str] | None = None) -> "ToyBackbone":
        """Load a folder written by :meth:`save_pretrained`.

        The model's own fields (:data:`MODEL_FIELDS`: architecture and σ_data) come from the folder.
        Every other field (noise-level distribution, sampler, LoRA targets, dtype) comes from ``config`` when
        one is given — only its fields named in ``given`` when that is set (the options a user wrote; the
        rest keep the folder's values) — else from the folder.

        Raises:
            CheckpointError: the folder, its ``toy_backbone.json`` or its weights are missing or unreadable.
            ConfigError: ``config`` sets a model field to a value that is neither the default nor the folder's.
        """
        path = Path(path)
        config_file = path / BACKBONE_CONFIG_NAME
        if not path.is_dir():
            raise CheckpointError(f"{path}: model folder not found")
        if not config_file.is_file():
            raise CheckpointError(f"{path}: not a ToyBackbone folder (missing {BACKBONE_CONFIG_NAME})")
        try:
            raw = json.loads(config_file.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{config_file}: invalid JSON ({exc})") from exc
        unknown = sorted(set(raw) - {f.name for f in fields(ToyConfig)})
        missing = [name for name in MODEL_FIELDS if name not in raw]
        if unknown or missing:
            raise CheckpointError(f"{config_file}: unknown ToyConfig fields {unknown}, missing model fields {missing}")
        stored = ToyConfig(**raw)
        if config is not None:
            default = ToyConfig()
            clashes = [f"{name}={getattr(config, name)!r} (the model has {getattr(stored, name)!r})"
                       for name in MODEL_FIELDS
                       if getattr(config, name) not in (getattr(default, name), getattr(stored, name))]
            if clashes:
                raise ConfigError(f"{path}: these fields are fixed by the saved model and cannot be changed: "
                                  + "; ".join(clashes))
            merged = asdict(stored) if given is not None else asdict(config)
            merged.update({name: getattr(config, name) for name in (given or ()) if name not in MODEL_FIELDS})
            merged.update({name: getattr(stored, name) for name in MODEL_FIELDS})
            stored = ToyConfig(**merged)
        try:
            denoiser, info = ToyVideoUNet.from_pretrained(str(path), torch_dtype=torch_dtype, low_cpu_mem_usage=False,
                                                          output_loading_info=True)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise CheckpointError(f"{path}: cannot load the ToyVideoUNet weights ({exc})") from exc
        # diffusers only warns about missing weights and initialises them randomly: refuse instead
        bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
        if bad:
            raise CheckpointError(f"{path}: weights do not match config.json ({bad})")
        expected = cls._network_kwargs(stored)
        network = {k: denoiser.config[k] for k in expected}
        network["block_out_channels"] = tuple(network["block_out_channels"])
        network["attention_levels"] = tuple(network["attention_levels"])
        if network != expected:
            raise CheckpointError(f"{path}: config.json {network} disagrees with {BACKBONE_CONFIG_NAME} {expected}")
        logger.info("loaded toy backbone from %s (%.2f M params)", path,
                    sum(p.numel() for p in denoiser.parameters()) / 1e6)
        return cls(stored, denoiser)

    def to(self, device: torch.device | str) -> "ToyBackbone":
        """Move the denoiser to ``device``."""
        self.denoiser.to(device)
        return self


def from_config(config: ToyConfig) -> ToyBackbone:
    """A freshly initialised ToyBackbone (weights from ``config.init_seed``), for pre-training."""
    return ToyBackbone(config)


def latent_layout(options: dict[str, Any]) -> LatentLayout:
    """The toy model works in pixel space: its "latents" are the RGB frames."""
    return LatentLayout(channels=3)


def from_pretrained(path: str | Path, config: ToyConfig | None = None, given: set[str] | None = None) -> ToyBackbone:
    """Load a ToyBackbone folder; see :meth:`ToyBackbone.from_pretrained`."""
    return ToyBackbone.from_pretrained(path, config, given=given)
