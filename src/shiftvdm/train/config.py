"""The training stage's config schema: one dataclass per concern, composed into :class:`TrainConfig`.

SFT, pre-training and every baseline are settings of this one schema (presets in configs/).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from shiftvdm.backbone import BackboneConfig
from shiftvdm.rewards.critic_training import CriticTrainConfig
from shiftvdm.train.advantages import AdvantageConfig
from shiftvdm.train.losses import LossConfig, needs_rollouts


def _finite(name: str, value: float, *, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False, what: str = "") -> None:
    """Range check of a config number; the message names the dotted field, the value and the range."""
    ok = math.isfinite(value)
    ok = ok and (low is None or (value > low if low_open else value >= low))
    ok = ok and (high is None or (value < high if high_open else value <= high))
    if not ok:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
        bounds = " and ".join(b for b in (lo, hi) if b)
        raise ValueError(f"{name} must be a finite number{' ' + bounds if bounds else ''}{what}, got {value!r}")


def _at_least(name: str, value: int, low: int, what: str = "") -> None:
    if value < low:
        raise ValueError(f"{name} must be >= {low}{what}, got {value!r}")


@dataclass
class DataConfig:
    train: str = ""  # manifest (jsonl/json/csv) or folder of real training clips
    num_frames: int = 24  # frames per clip (24 in the authors' SVD runs)
    height: int = 320  # clip height in pixels (320 SVD / 480 Wan)
    width: int = 576  # clip width in pixels (576 SVD / 832 Wan)
    fps: float | None = None  # resample clips to this frame rate (None = keep the file's frames)
    skip_bad: bool = False  # drop entries that fail the data check instead of stopping
    cache_dir: str | None = None  # cache of decoded clips (None = no cache)
    cache: str | None = None  # latents + conditioning from `shiftvdm data encode` (None = encode while training)
    prompt: str | None = None  # prompt for clips whose manifest entry has none (text-conditioned backbones)

    def __post_init__(self) -> None:
        for name in ("num_frames", "height", "width"):
            _at_least(f"data.{name}", getattr(self, name), 1)
        if self.fps is not None:
            _finite("data.fps", self.fps, low=0, low_open=True, what=" (or null to keep each file's frames)")


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

    def __post_init__(self) -> None:
        _finite("optim.lr", self.lr, low=0, low_open=True)
        for i, beta in enumerate(self.betas):
            _finite(f"optim.betas[{i}]", beta, low=0, high=1, high_open=True)
        _finite("optim.weight_decay", self.weight_decay, low=0)
        _finite("optim.eps", self.eps, low=0, low_open=True)
        _at_least("optim.warmup_steps", self.warmup_steps, 0)
        _finite("optim.min_lr_ratio", self.min_lr_ratio, low=0, high=1)
        if math.isnan(self.max_grad_norm) or self.max_grad_norm <= 0:  # inf is allowed: no clipping
            raise ValueError(f"optim.max_grad_norm must be > 0 (inf = no clipping), got {self.max_grad_norm!r}")
        _finite("optim.ema_decay", self.ema_decay, low=0, high=1, high_open=True, what=" (0 = off)")


@dataclass
class LoraSettings:
    enabled: bool = True  # train a LoRA (False = train all denoiser weights, as pre-training does)
    rank: int = 32  # LoRA r (32 in the authors' configs)
    alpha: float = 32.0  # LoRA alpha (32)
    targets: str | list[str] | None = None  # module names or a regex; None = the backbone's default
    init_from: str | None = None  # a LoRA (e.g. the SFT result) fused into the base before training starts

    def __post_init__(self) -> None:
        _at_least("lora.rank", self.rank, 1)
        _finite("lora.alpha", self.alpha, low=0, low_open=True)
        targets = [self.targets] if isinstance(self.targets, str) else self.targets
        if targets is not None and (not targets or not all(isinstance(t, str) and t.strip() for t in targets)):
            raise ValueError("lora.targets must be null (the backbone's default), a regex, or a non-empty list of "
                             "module names")


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
class CriticSettings:
    """The ``critic`` section: which critic scores rollouts and how the refresh trains it (was ``discriminator``)."""

    path: str | None = None  # folder of a pre-trained critic (`shiftvdm train-critic`); required for SHIFT
    refresh: bool = True  # adversarial refresh after every buffer (on in the Wan config, off in SVD's)
    d_to_g: float = 1.0  # critic training steps per generator step of the buffer (reward_model_d_to_g 1)
    batch_size: int = 0  # real clips (and as many fakes) per critic training step (0 = rollout.batch_size)
    refresh_features: Literal["stored", "recompute"] = "stored"  # where the refresh gets the fakes' features:
    #   stored = kept in the buffer from scoring (host memory: n·P clips of features, train/memory.py);
    #   recompute = decoded from the buffer's rollout latents and featurised again on the device at each refresh
    #   step (only the n real clips' features are kept; the same update, more decode + feature time)
    train: CriticTrainConfig = field(default_factory=CriticTrainConfig)  # optimizer, EMA, regularisers

    def __post_init__(self) -> None:
        _finite("critic.d_to_g", self.d_to_g, low=0)
        _at_least("critic.batch_size", self.batch_size, 0, " (0 = rollout.batch_size)")


@dataclass
class RunConfig:
    out_dir: str = "runs/shift"  # run folder: config.yaml, checkpoints/, logs/, samples/, final weights
    seed: int = 0  # the one seed behind data order, rollouts, noise and discriminator sampling
    max_steps: int = 200  # generator optimizer steps
    time_limit_s: float = 0.0  # also stop after this much training time (0 = none; equal-time comparisons)
    time_limit_clock: Literal["wall", "cpu"] = "wall"  # time_limit_s in wall seconds, or in this process's CPU seconds
    log_every: int = 1  # write metrics every N steps
    checkpoint_every: int = 50  # full resumable checkpoint every N steps (0 = only at the end)
    keep_checkpoints: int = 2  # resumable checkpoints kept
    checkpoint_buffer: bool = True  # keep the rollout buffer in checkpoints (False: keep the weights and RNG state it
    #   was rolled out with instead, and roll it out again on resume: still bit-exact, costs one collection;
    #   see train/memory.py for the buffer's size)
    sample_every: int = 0  # write sample clips every N steps (0 = off)
    num_samples: int = 4  # conditionings in the sample grid
    eval_every: int = 0  # call the recipe's evaluation hook every N steps (0 = off)
    max_nonfinite_steps: int = 10  # stop with an error after this many skipped NaN/inf steps
    mixed_precision: Literal["no", "bf16"] = "no"  # autocast for the denoiser (bf16 in the authors' runs)
    gradient_checkpointing: bool = False  # recompute activations in the backward pass
    log_grad_norm_every: int = 10  # split gradient norms into SFT and advantage-weighted parts every N steps
    progress: bool = True  # progress bar on the main process
    distributed: Literal["ddp", "fsdp2", "deepspeed"] = "ddp"  # gradient sync on >1 process: DDP; FSDP2 `fully_shard`
    #   of the whole denoiser (Wan2.2-A14B; checkpoints keep each rank's shards); DeepSpeed ZeRO-2 (the authors'
    #   engine; optional extra shiftvdm[deepspeed]). One process ignores it
    find_unused_parameters: bool = False  # DDP: allow trainable weights that a forward does not reach

    def __post_init__(self) -> None:
        if not str(self.out_dir).strip():
            raise ValueError("run.out_dir must name a folder, got ''")
        _at_least("run.max_steps", self.max_steps, 1)
        _finite("run.time_limit_s", self.time_limit_s, low=0, what=" (0 = no limit)")
        _at_least("run.log_every", self.log_every, 1)
        for name in ("checkpoint_every", "sample_every", "eval_every", "log_grad_norm_every", "max_nonfinite_steps"):
            _at_least(f"run.{name}", getattr(self, name), 0, " (0 = off)" if name != "max_nonfinite_steps" else "")
        _at_least("run.keep_checkpoints", self.keep_checkpoints, 1)
        _at_least("run.num_samples", self.num_samples, 1)


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
    critic: CriticSettings = field(default_factory=CriticSettings)
    run: RunConfig = field(default_factory=RunConfig)

    def rule_violations(self, num_clips: int | None = None) -> list[str]:
        """What :data:`RULES` refuses in this combination of settings (checked when a config is read; the rules
        that need the dataset's size are checked again with ``num_clips`` when it is opened)."""
        return [rule.message() for rule in RULES if not rule.warning and rule.broken(self, num_clips)]

    def rule_warnings(self, num_clips: int | None = None) -> list[str]:
        """What :data:`RULES` only warns about (the run still trains, differently from what its settings say)."""
        return [rule.message() for rule in RULES if rule.warning and rule.broken(self, num_clips)]

    @property
    def uses_rollouts(self) -> bool:
        """Whether the run samples rollouts and scores them (λ_aw > 0 or the asymmetric real term): the one
        place this is decided. Without them a run is SFT: the buffer holds real clips only, no critic is loaded."""
        return needs_rollouts(self.loss)


@dataclass(frozen=True)
class Rule:
    """A combination of settings that makes a run meaningless or inverted: the keys it reads, why, and the fix.
    ``broken(config, num_clips)`` gets the dataset's size when it is known (None when the config is read)."""

    keys: tuple[str, ...]
    broken: Callable[[TrainConfig, int | None], bool]
    why: str
    fix: str
    warning: bool = False  # the run still trains something, so a warning (logged) rather than a refusal

    def message(self) -> str:
        return f"{', '.join(self.keys)}: {self.why}; {self.fix}"


# One rule per combination; each config read from a file, an override or a checkpoint passes through them
# (config_from_dict), and the run checks them again once the dataset is open (recipes/train.py). Refusals when a
# setting makes the run train nothing, or the opposite of what its name says; warnings (warning=True) when the run
# still trains, differently from what the settings say:
# - warm-up >= run: the learning rate never reaches optim.lr, but every step still trains (short debugging runs
#   and smoke tests do this on purpose);
# - a batch larger than the dataset: each step holds some clips twice (with their own noise draws); a tiny
#   dataset still trains, as more epochs would.
RULES: tuple[Rule, ...] = (
    Rule(("mode", "loss.lambda_aw", "loss.asymmetric"),
         lambda c, n: c.mode in ("pretrain", "sft") and c.uses_rollouts,
         "pre-training and SFT train without rollouts, but these settings ask for them",
         "use `shiftvdm shift` (mode shift) instead, or set loss.lambda_aw=0 and loss.asymmetric=false"),
    Rule(("loss.lambda_sft", "loss.lambda_aw", "loss.asymmetric"),
         lambda c, n: c.loss.lambda_sft == 0 and not c.uses_rollouts,
         "both loss weights are 0, so no step would change the weights",
         "set loss.lambda_sft > 0 (SFT) and/or loss.lambda_aw > 0 (SHIFT)"),
    Rule(("rollout.group_size", "advantage.center", "loss.lambda_aw"),
         lambda c, n: c.loss.lambda_aw > 0 and c.rollout.group_size == 1 and c.advantage.center == "group",
         "one rollout per group has the advantage r̃ − r̄ = 0, so the advantage-weighted term is 0 at every step "
         "(SFT that pays for rollouts)",
         "set rollout.group_size >= 2 (8 in the paper), or advantage.center=none for raw rewards"),
    Rule(("advantage.positive_weight",),
         lambda c, n: not (math.isfinite(c.advantage.positive_weight) and c.advantage.positive_weight >= 0),
         "a negative or non-finite weight of positive advantages inverts or breaks them",
         "set advantage.positive_weight >= 0 (1 = off)"),
    Rule(("advantage.std_eps",),
         lambda c, n: not (math.isfinite(c.advantage.std_eps) and c.advantage.std_eps > 0),
         "the epsilon added to the group std must be > 0, or a group of equal rewards divides by zero",
         "set advantage.std_eps > 0 (1e-8, the reference's)"),
    Rule(("rollout.num_inference_steps",),
         lambda c, n: c.rollout.num_inference_steps is not None and c.rollout.num_inference_steps < 1,
         "a sampler needs at least one step (0 does not mean the default)",
         "set rollout.num_inference_steps >= 1, or null for the backbone's default"),
    Rule(("critic.refresh", "critic.d_to_g"),
         lambda c, n: c.uses_rollouts and c.critic.refresh and c.critic.d_to_g == 0,
         "the refresh is on but takes 0 critic steps per buffer", "set critic.d_to_g > 0, or critic.refresh=false"),
    Rule(("optim.warmup_steps", "run.max_steps"),
         lambda c, n: c.optim.warmup_steps >= c.run.max_steps,
         "the warm-up is as long as the run or longer, so the learning rate never reaches optim.lr",
         "set optim.warmup_steps < run.max_steps (20 in the authors' configs)", warning=True),
    Rule(("rollout.batch_size", "data.train"),
         lambda c, n: n is not None and c.rollout.batch_size > n,
         "a step's batch is larger than the dataset, so every step holds some clips more than once",
         "set rollout.batch_size <= the number of clips, or add clips", warning=True),
)
