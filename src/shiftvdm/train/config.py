"""The training stage's config schema: one dataclass per concern, composed into :class:`TrainConfig`.

SFT, pre-training and every baseline are settings of this one schema (presets in configs/).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from shiftvdm.backbone import BackboneConfig
from shiftvdm.rewards.discriminator_training import DiscriminatorTrainConfig
from shiftvdm.train.advantages import AdvantageConfig
from shiftvdm.train.losses import LossConfig


@dataclass
class DataConfig:
    train: str = ""  # manifest (jsonl/json/csv) or folder of real training clips
    num_frames: int = 24  # frames per clip (24 in the authors' SVD runs)
    height: int = 320  # clip height in pixels (320 SVD / 480 Wan)
    width: int = 576  # clip width in pixels (576 SVD / 832 Wan)
    fps: float | None = None  # resample clips to this frame rate (None = keep the file's frames)
    skip_bad: bool = False  # drop entries that fail the data check instead of stopping
    cache_dir: str | None = None  # cache of decoded clips (None = no cache)
    prompt: str | None = None  # prompt for clips whose manifest entry has none (text-conditioned backbones)


@dataclass
class OptimConfig:
    lr: float = 1e-5  # AdamW learning rate (1e-5 in the authors' configs)
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW betas (authors: 0.9, 0.95)
    weight_decay: float = 0.01  # AdamW weight decay (0.01 SVD / 0.0 Wan)
    eps: float = 1e-8  # AdamW epsilon
    warmup_steps: int = 20  # linear warm-up steps (20 in the authors' configs; starts at lr/warmup, not 0)
    schedule: Literal["constant", "cosine"] = "constant"  # after warm-up
    min_lr_ratio: float = 0.05  # cosine floor as a fraction of lr
    max_grad_norm: float = 1.0  # gradient clipping (1.0)
    ema_decay: float = 0.0  # EMA of the trained weights saved as the final model (0 = off; pre-training uses it)


@dataclass
class LoraSettings:
    enabled: bool = True  # train a LoRA (False = train all denoiser weights, as pre-training does)
    rank: int = 32  # LoRA r (32 in the authors' configs)
    alpha: float = 32.0  # LoRA alpha (32)
    targets: str | list[str] | None = None  # module names or a regex; None = the backbone's default
    init_from: str | None = None  # a LoRA (e.g. the SFT result) fused into the base before training starts


@dataclass
class RolloutConfig:
    group_size: int = 8  # P, rollouts per conditioning (8)
    buffer_size: int = 640  # conditionings per rollout buffer, over all processes (640 SVD / 512 Wan)
    passes_per_buffer: int = 10  # passes over a buffer before it is regenerated (10)
    batch_size: int = 5  # conditionings per generator step per process (5 SVD / 2 Wan)
    rollout_batch_size: int = 2  # conditionings sampled together (memory knob; sample_collect_group_size 2)
    num_inference_steps: int | None = None  # rollout sampler steps (None = the backbone's default, 25)
    stochastic: bool = True  # ancestral/SDE rollouts (the authors' SVD sampler); False = deterministic Euler

    def __post_init__(self) -> None:
        for name in ("group_size", "buffer_size", "passes_per_buffer", "batch_size", "rollout_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"rollout.{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class DiscriminatorConfig:
    critic: str | None = None  # folder of a pre-trained critic (`shiftvdm train-reward`); required for SHIFT
    refresh: bool = True  # adversarial refresh after every buffer (on in the Wan config, off in SVD's)
    d_to_g: float = 1.0  # discriminator steps per generator step of the buffer (reward_model_d_to_g 1)
    batch_size: int = 0  # real clips (and as many fakes) per discriminator step (0 = rollout.batch_size)
    train: DiscriminatorTrainConfig = field(default_factory=DiscriminatorTrainConfig)  # optimizer, EMA, regularisers


@dataclass
class RunConfig:
    out_dir: str = "runs/shift"  # run folder: config.yaml, checkpoints/, logs/, samples/, final weights
    seed: int = 0  # the one seed behind data order, rollouts, noise and discriminator sampling
    max_steps: int = 200  # generator optimizer steps
    time_limit_s: float = 0.0  # also stop after this much training wall time (0 = none; equal-time comparisons)
    log_every: int = 1  # write metrics every N steps
    checkpoint_every: int = 50  # full resumable checkpoint every N steps (0 = only at the end)
    keep_checkpoints: int = 2  # resumable checkpoints kept
    sample_every: int = 0  # write sample clips every N steps (0 = off)
    num_samples: int = 4  # conditionings in the sample grid
    eval_every: int = 0  # call the recipe's evaluation hook every N steps (0 = off)
    max_nonfinite_steps: int = 10  # stop with an error after this many skipped NaN/inf steps
    mixed_precision: Literal["no", "bf16"] = "no"  # autocast for the denoiser (bf16 in the authors' runs)
    gradient_checkpointing: bool = False  # recompute activations in the backward pass
    log_grad_norm_every: int = 10  # split gradient norms into SFT and advantage-weighted parts every N steps
    progress: bool = True  # progress bar on the main process


@dataclass
class TrainConfig:
    mode: Literal["pretrain", "sft", "shift"] = "shift"  # which stage this run is (sets defaults in the recipe)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    run: RunConfig = field(default_factory=RunConfig)
