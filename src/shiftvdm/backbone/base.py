"""The backbone contract: everything model-specific hides behind these few operations.

The trainer (train/shift.py), the reward pipeline and the recipes only ever call the members of
:class:`Backbone`. SVD (EDM, v-prediction), Wan2.x (flow matching) and the CPU demo backbone differ
only behind it. Shapes: B conditionings, P videos per conditioning, F frames, H×W pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn


def _map_tensors(d: dict[str, Tensor], fn) -> dict[str, Tensor]:
    return {k: fn(v) for k, v in d.items()}


# Weight dtypes a config may name (SVDConfig.dtype, WanConfig.dtype / vae_dtype, ToyConfig.dtype).
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cast_frozen(module: nn.Module, dtype: torch.dtype, keep: tuple[str, ...] = ()) -> nn.Module:
    """Cast a base module's weights to ``dtype``, keeping its ``_keep_in_fp32_modules`` in float32.

    diffusers' ``from_pretrained(torch_dtype=...)`` keeps those submodules (e.g. Wan's time embedder and
    norms) in float32; a plain ``.to(dtype)`` would not, so random-init presets use this to match it. LoRA
    weights are added afterwards and stay float32 (backbone/lora.py).
    """
    keep = (*keep, *(getattr(module, "_keep_in_fp32_modules", None) or ())) if dtype != torch.float32 else ()
    module.to(dtype)
    for name, sub in module.named_modules():
        if keep and any(k in name.split(".") for k in keep):
            sub.to(torch.float32)
    return module


@dataclass(frozen=True)
class LatentLayout:
    """How a family's latents relate to its clips, known from its config alone (train/memory.py counts with it).

    A clip of F frames × H × W pixels is ``channels`` × ((F − 1) // ``temporal`` + 1) × H/``spatial`` × W/``spatial``
    latent elements: ``temporal`` = 1 keeps one latent frame per frame, a causal video VAE (Wan) keeps the first
    frame and one latent frame per ``temporal`` frames after it.
    """

    channels: int  # latent channels
    spatial: int = 1  # pixels per latent cell along each side
    temporal: int = 1  # frames per latent frame after the first

    def shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, latent frames, h, w) of one clip."""
        return (self.channels, (num_frames - 1) // self.temporal + 1, height // self.spatial, width // self.spatial)

    def numel(self, num_frames: int, height: int, width: int) -> int:
        """Latent elements of one clip."""
        return math.prod(self.shape(num_frames, height, width))


@dataclass
class Condition:
    """What a batch of B conditionings gives the denoiser besides the noisy latents.

    Attributes:
        first_frame: (B, 3, H, W) conditioning image in [-1, 1] (pixels, kept for rewards and logs).
        tensors: backbone-specific encodings, each with the batch on dim 0 (e.g. ``image_embeds``,
            ``image_latents``, ``prompt_embeds``). Plain tensors only, so a Condition can be stored
            in a rollout buffer and checkpointed.
        prompts: optional text prompts (TI2V backbones), one per conditioning.
    """

    first_frame: Tensor
    tensors: dict[str, Tensor] = field(default_factory=dict)
    prompts: list[str] | None = None

    @property
    def batch_size(self) -> int:
        return int(self.first_frame.shape[0])

    def index(self, idx: Tensor | list[int] | slice) -> "Condition":
        """The sub-batch ``idx`` (a slice, index list or index tensor)."""
        if isinstance(idx, slice):
            prompts = self.prompts[idx] if self.prompts is not None else None
        else:
            ids = idx.tolist() if isinstance(idx, Tensor) else list(idx)
            prompts = [self.prompts[i] for i in ids] if self.prompts is not None else None
            idx = torch.as_tensor(ids, dtype=torch.long)
        return Condition(self.first_frame[idx], _map_tensors(self.tensors, lambda t: t[idx]), prompts)

    def repeat_interleave(self, n: int) -> "Condition":
        """Each conditioning repeated ``n`` times in a row: (B, ...) -> (B*n, ...)."""
        prompts = [p for p in self.prompts for _ in range(n)] if self.prompts is not None else None
        return Condition(self.first_frame.repeat_interleave(n, 0),
                         _map_tensors(self.tensors, lambda t: t.repeat_interleave(n, 0)), prompts)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Condition":
        def move(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype if (dtype is not None and t.is_floating_point()) else None)
        return Condition(move(self.first_frame), _map_tensors(self.tensors, move), self.prompts)

    @staticmethod
    def cat(conds: list["Condition"]) -> "Condition":
        keys = conds[0].tensors.keys()
        prompts = None if conds[0].prompts is None else [p for c in conds for p in (c.prompts or [])]
        return Condition(torch.cat([c.first_frame for c in conds]),
                         {k: torch.cat([c.tensors[k] for c in conds]) for k in keys}, prompts)

    def state_dict(self) -> dict:
        return {"first_frame": self.first_frame, "tensors": dict(self.tensors), "prompts": self.prompts}

    @classmethod
    def from_state_dict(cls, state: dict) -> "Condition":
        return cls(state["first_frame"], dict(state["tensors"]), state.get("prompts"))


@dataclass
class NoiseDraw:
    """Every random draw of one denoising-loss evaluation, for a batch of B clips.

    Passing the same draw to several ``denoising_loss`` calls makes them share noise, noise level
    and conditioning dropout (METHOD.md step 4, ``match_noise``: common random numbers).

    Attributes:
        noise: ε, same shape as the latents.
        level: (B,) noise level: σ for EDM backbones, the timestep for flow-matching backbones.
        extras: other per-sample draws, e.g. ``cond_sigma`` (B,) and ``dropout_u`` (B,) for SVD.
    """

    noise: Tensor
    level: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> "NoiseDraw":
        return NoiseDraw(self.noise.to(device), self.level.to(device), _map_tensors(self.extras, lambda t: t.to(device)))

    def index(self, idx: Tensor | slice) -> "NoiseDraw":
        return NoiseDraw(self.noise[idx], self.level[idx], _map_tensors(self.extras, lambda t: t[idx]))


@runtime_checkable
class Backbone(Protocol):
    """An image(-and-text)-to-video diffusion model, seen through what Algorithm 1 does with it."""

    name: str
    denoiser: nn.Module  # the module that LoRA wraps, the optimizer trains and Accelerate prepares

    @property
    def video_shape(self) -> tuple[int, int, int]:
        """(num_frames, height, width) of the clips this backbone is configured to generate."""
        ...

    def encode_video(self, video: Tensor) -> Tensor:
        """(B, F, 3, H, W) pixels in [-1, 1] -> latents (B, ...). Deterministic (the posterior mode)."""
        ...

    def decode(self, latents: Tensor) -> Tensor:
        """Latents (B, ...) -> (B, F, 3, H, W) pixels in [-1, 1], decoded in chunks of frames."""
        ...

    def encode_condition(self, first_frame: Tensor, prompts: list[str] | None = None) -> Condition:
        """(B, 3, H, W) conditioning images in [-1, 1] (and prompts) -> a Condition."""
        ...

    def draw_noise(self, latents: Tensor, generator: torch.Generator) -> NoiseDraw:
        """All random draws of one training-loss evaluation for ``latents`` (B, ...)."""
        ...

    def denoising_loss(self, latents: Tensor, cond: Condition, draw: NoiseDraw) -> Tensor:
        """The backbone's ordinary per-sample training loss L(x), shape (B,), no reduction over B."""
        ...

    def sample(self, cond: Condition, num_videos: int, generator: torch.Generator, *,
               stochastic: bool = True, num_inference_steps: int | None = None) -> Tensor:
        """P = ``num_videos`` clips per conditioning, as latents (B, P, ...). No gradients.

        ``stochastic=True`` is the rollout sampler (ancestral / SDE); ``False`` the deterministic
        Euler sampler that matches the diffusers pipeline.
        """
        ...

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the generator optimizer updates (LoRA weights, or all for pre-training)."""
        ...

    def add_lora(self, rank: int, alpha: float, target_modules: str | list[str] | None = None) -> None:
        """Wrap the denoiser with a fresh peft LoRA (None targets = the backbone's default) and
        freeze everything else."""
        ...

    def fuse_lora(self) -> None:
        """Merge the LoRA into the base weights and drop the adapter."""
        ...

    def save_lora(self, path: str | Path) -> None:
        """Write the LoRA weights as a diffusers-loadable .safetensors file."""
        ...

    def load_lora(self, path: str | Path) -> None:
        """Add a LoRA and load its weights from a file written by ``save_lora``."""
        ...

    def save_pretrained(self, path: str | Path) -> None:
        """Write the full model in the diffusers folder layout (what ``from_pretrained`` reads)."""
        ...

    @property
    def device(self) -> torch.device:
        """Where the denoiser's weights live (inputs are moved there)."""
        ...

    def to(self, device: torch.device | str) -> "Backbone":
        """Move every module to ``device`` (dtypes unchanged) and return ``self``."""
        ...

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the denoiser's blocks in the backward pass (memory for time; results unchanged)."""
        ...
