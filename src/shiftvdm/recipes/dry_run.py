"""`shiftvdm shift --config <preset> --dry-run`: the preset's real architecture at full size, on CPU, no download.

The model is built from the diffusers configs shipped in ``backbone/configs/`` (SVD-XT, Wan2.2-TI2V-5B,
Wan2.2-I2V-A14B; sources in that folder's README) with random weights:

1. every component is first built on the meta device (parameters only; buffers such as Wan's RoPE tables stay
   real), which gives exact parameter counts, the exact LoRA size and the static memory plan for free;
2. if the frozen weights fit in this machine's available memory, each parameter is then allocated directly in the
   preset's dtype (bf16 here, fp32 for the modules diffusers keeps in fp32, as ``from_pretrained`` does) and
   filled with seeded random values — no fp32 copy of a 5 B model ever exists;
3. one full SHIFT step runs through the real trainer (``train.shift.train``): rollouts, rewards, the 1 + P
   backward passes of Eq. 12, the optimizer step and one discriminator refresh, at a small clip size and with
   few sampler steps, once per group size P, with the peak resident memory of each step measured on its own.

Text encoders are replaced by cached random embeddings of the real width (UMT5-XXL's 4096, the real 512-token
padding): a fixed random vector per token of a small word-level tokenizer. The critic is a random-init
``MotionCritic`` unless ``discriminator.critic`` names an existing folder. A model whose frozen weights do not
fit (Wan2.2-A14B: two 14 B experts) is reported from the meta device only, with the reason.

Options are dotted overrides under ``dry_run.`` (see :class:`DryRunConfig`), e.g.
``shiftvdm shift --config svd_shift_davis --dry-run dry_run.group_sizes=[2,8] dry_run.height=64``.
"""

from __future__ import annotations

import gc
import json
import logging
import resource
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

from shiftvdm.backbone.base import DTYPES
from shiftvdm.errors import ConfigError

logger = logging.getLogger(__name__)

ARCHITECTURES_DIR = Path(__file__).resolve().parents[1] / "backbone" / "configs"
ARCHITECTURES = ("svd_xt", "wan22_ti2v_5b", "wan22_i2v_a14b")
# Small clip sizes that still pass every component's size rules (SVD: 8× VAE, 3 UNet downsamplings;
# Wan: 4k+1 frames, multiples of VAE stride × patch).
_SMALL_SIZE = {"svd_xt": (8, 64, 64), "wan22_ti2v_5b": (9, 64, 64), "wan22_i2v_a14b": (9, 32, 32)}
GIB = 1024**3


@dataclass
class DryRunConfig:
    """Settings of the dry run (``dry_run.<field>=value`` on the command line)."""

    group_sizes: list[int] = field(default_factory=lambda: [2, 8])  # P values, one SHIFT step each
    num_frames: int | None = None  # clip frames of the step; None = a small size per model (SVD 8, Wan 9)
    height: int | None = None  # clip height; None = 64 (Wan2.2-A14B: 32)
    width: int | None = None  # clip width; None = 64 (Wan2.2-A14B: 32)
    inference_steps: int = 2  # rollout sampler steps (the presets' 25 would take hours on 2 CPU cores)
    meta_only: bool = False  # only the meta-device build: parameter counts and the memory plan
    memory_fraction: float = 0.9  # materialise only if the frozen weights fit in this share of MemAvailable
    seed: int = 0  # random weights, clips and embeddings
    out_dir: str | None = None  # run folder of the steps; None = a temporary folder, removed afterwards
    report_json: str | None = None  # also write the figures to this JSON file (benchmarks/bench_full_size.py)
    world_size: int = 8  # ranks of the full-size plan (train/memory.py), as the presets' launch lines (8 GPUs)

    def __post_init__(self) -> None:
        if not self.group_sizes or any(int(p) < 1 for p in self.group_sizes):
            raise ConfigError(f"dry_run.group_sizes: expected a list of integers >= 1, got {self.group_sizes}")
        if self.inference_steps < 1:
            raise ConfigError(f"dry_run.inference_steps: expected >= 1, got {self.inference_steps}")
        if not 0 < self.memory_fraction <= 1:
            raise ConfigError(f"dry_run.memory_fraction: expected a value in (0, 1], got {self.memory_fraction}")


# ---------------------------------------------------------------------- shipped architecture configs
def architecture_config(arch: str, component: str) -> dict[str, Any]:
    """The shipped config of ``component`` (``unet``, ``vae``, ``transformer``...) without the ``_`` keys."""
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")
    folder = ARCHITECTURES_DIR / arch
    files = {"model_index": "model_index.json", "feature_extractor": "feature_extractor/preprocessor_config.json",
             "scheduler": "scheduler/scheduler_config.json"}
    path = folder / files.get(component, f"{component}/config.json")
    if not path.is_file():
        raise ConfigError(f"{path}: no shipped config for component {component!r} of {arch}")
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}


def architecture_for(backbone_name: str, options: dict[str, Any]) -> str:
    """Which shipped architecture a preset's backbone is (SVD → SVD-XT; Wan by ``options.layout``)."""
    if backbone_name == "svd":
        return "svd_xt"
    if backbone_name == "wan":
        layout = options.get("layout", "auto")
        table = {"ti2v": "wan22_ti2v_5b", "i2v_a14b": "wan22_i2v_a14b"}
        if layout in table:
            return table[layout]
        raise ConfigError(f"backbone.options.layout={layout!r}: the dry run ships Wan2.2-TI2V-5B (ti2v) and "
                          "Wan2.2-I2V-A14B (i2v_a14b); set one of them")
    raise ConfigError(f"backbone.name={backbone_name!r}: the dry run covers the real SVD and Wan architectures, "
                      "not the toy backbone (it is full size already)")


def build_on_meta(arch: str) -> dict[str, nn.Module]:
    """Every weight-carrying component of ``arch`` with its parameters on the meta device (buffers real)."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        if arch == "svd_xt":
            from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
            from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

            return {"unet": UNetSpatioTemporalConditionModel.from_config(architecture_config(arch, "unet")),
                    "vae": AutoencoderKLTemporalDecoder.from_config(architecture_config(arch, "vae")),
                    "image_encoder": CLIPVisionModelWithProjection(
                        CLIPVisionConfig(**architecture_config(arch, "image_encoder")))}
        from diffusers import AutoencoderKLWan, WanTransformer3DModel
        from transformers import UMT5Config, UMT5EncoderModel

        parts = {"transformer": WanTransformer3DModel.from_config(architecture_config(arch, "transformer"))}
        if arch == "wan22_i2v_a14b":
            parts["transformer_2"] = WanTransformer3DModel.from_config(architecture_config(arch, "transformer_2"))
        parts["vae"] = AutoencoderKLWan.from_config(architecture_config(arch, "vae"))
        parts["text_encoder"] = UMT5EncoderModel(UMT5Config(**architecture_config(arch, "text_encoder")))
        return parts


def _fp32_modules(module: nn.Module, dtype: torch.dtype) -> set[str]:
    """Module names the library's ``from_pretrained`` keeps in fp32 when loading in ``dtype``.

    diffusers: ``_keep_in_fp32_modules`` always. transformers: ``_keep_in_fp32_modules_strict`` for fp16 and bf16,
    ``_keep_in_fp32_modules`` for fp16 only (``PreTrainedModel._get_dtype_plan``; UMT5's ``wo`` stays bf16).
    """
    if dtype == torch.float32:
        return set()
    if hasattr(module, "_keep_in_fp32_modules_strict"):  # a transformers model
        names = set(getattr(module, "_keep_in_fp32_modules_strict", None) or ())
        if dtype == torch.float16:
            names |= set(getattr(module, "_keep_in_fp32_modules", None) or ())
        return names
    return set(getattr(module, "_keep_in_fp32_modules", None) or ())


def _keeps_fp32(keep: set[str], name: str) -> bool:
    """A parameter whose dotted name has a kept-in-fp32 module as one of its parts (diffusers' matching rule)."""
    return any(part in keep for part in name.split("."))


def component_bytes(module: nn.Module, dtype: torch.dtype) -> int:
    """Bytes of ``module``'s parameters once loaded in ``dtype`` (fp32 for the modules kept in fp32)."""
    size = torch.tensor([], dtype=dtype).element_size()
    keep = _fp32_modules(module, dtype)
    return sum(p.numel() * (4 if _keeps_fp32(keep, n) else size) for n, p in module.named_parameters())


@torch.no_grad()
def materialize_(module: nn.Module, dtype: torch.dtype, seed: int) -> nn.Module:
    """Replace every meta parameter by a seeded random one allocated directly in ``dtype``.

    Weights ~ N(0, 1/fan_in) (fan_in = numel / out dim), biases 0, norm scales 1: activations stay O(1) through
    the normalised blocks, so the step's numerics are finite without pretrained values.
    """
    gen = torch.Generator().manual_seed(seed)
    keep = _fp32_modules(module, dtype)
    for name, param in list(module.named_parameters()):
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        target = torch.float32 if _keeps_fp32(keep, name) else dtype
        value = torch.empty(param.shape, dtype=target)
        if leaf == "bias":
            value.zero_()
        elif leaf == "gamma" or "norm" in name.rsplit(".", 2)[-2:][0] or (param.ndim == 1 and leaf == "weight"):
            value.fill_(1.0)
        else:
            fan_in = max(1, param.numel() // max(1, param.shape[0]))
            value.normal_(0.0, fan_in ** -0.5, generator=gen)
        owner._parameters[leaf] = nn.Parameter(value, requires_grad=False)
    return module


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def lora_parameter_count(module: nn.Module, rank: int, targets: str | list[str]) -> int:
    """Trainable LoRA parameters peft adds for ``targets`` (regex or name suffixes): r·(in + out) per Linear."""
    import re

    total = 0
    for name, child in module.named_modules():
        if not isinstance(child, nn.Linear):
            continue
        hit = (re.fullmatch(targets, name) is not None if isinstance(targets, str)
               else any(name == t or name.endswith("." + t) for t in targets))
        if hit:
            total += rank * (child.in_features + child.out_features)
    return total


# ---------------------------------------------------------------------- random text encoder
class RandomTextEncoder(nn.Module):
    """Stands in for UMT5-XXL: one fixed random ``d_model`` vector per token id (the width and the padding of the
    real encoder, no 6.7 B-parameter forward). The Wan backbone caches each prompt's embeddings as usual."""

    def __init__(self, vocab_size: int, d_model: int, dtype: torch.dtype, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        table = torch.randn(vocab_size, d_model, generator=gen) * 0.1  # UMT5 outputs are O(0.1) after its final norm
        self.embed = nn.Embedding.from_pretrained(table.to(dtype), freeze=True)
        self.config = SimpleNamespace(d_model=d_model)

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> SimpleNamespace:
        return SimpleNamespace(last_hidden_state=self.embed(input_ids))


# ---------------------------------------------------------------------- backbones
def build_backbone(arch: str, options: dict[str, Any], video_shape: tuple[int, int, int], seed: int):
    """The real-size backbone with random weights, dtypes as ``options`` say, at ``video_shape``."""
    from shiftvdm.backbone import backbone_config

    frames, height, width = video_shape
    meta = build_on_meta(arch)
    if arch == "svd_xt":
        from diffusers import EulerDiscreteScheduler

        from shiftvdm.backbone.svd import SVDBackbone

        cfg = backbone_config("svd", {**options, "num_frames": frames, "height": height, "width": width})
        dtype = DTYPES[cfg.dtype]
        for i, module in enumerate(meta.values()):
            materialize_(module, dtype, seed + i)
        try:
            from transformers import CLIPImageProcessorPil as ImageProcessor
        except ImportError:  # pragma: no cover - other transformers versions
            from transformers import CLIPImageProcessor as ImageProcessor
        fe = architecture_config(arch, "feature_extractor")
        fe.pop("image_processor_type", None)
        return SVDBackbone(unet=meta["unet"], vae=meta["vae"], image_encoder=meta["image_encoder"].eval(),
                           feature_extractor=ImageProcessor(**fe), config=cfg,
                           scheduler=EulerDiscreteScheduler.from_config(architecture_config(arch, "scheduler")))

    from diffusers import UniPCMultistepScheduler

    from shiftvdm.backbone.tiny import build_tiny_tokenizer
    from shiftvdm.backbone.wan import WanBackbone

    layout = "ti2v" if arch == "wan22_ti2v_5b" else "i2v_a14b"
    cfg = backbone_config("wan", {**options, "layout": layout, "num_frames": frames, "height": height, "width": width})
    dtype, vae_dtype = DTYPES[cfg.dtype], DTYPES[cfg.vae_dtype]
    for i, key in enumerate(("transformer", "transformer_2")):
        if key in meta:
            materialize_(meta[key], dtype, seed + i)
    materialize_(meta["vae"], vae_dtype, seed + 2)
    d_model = int(meta.pop("text_encoder").config.d_model)
    tokenizer = build_tiny_tokenizer(model_max_length=cfg.max_sequence_length)
    index = architecture_config(arch, "model_index")
    components = dict(tokenizer=tokenizer, text_encoder=RandomTextEncoder(len(tokenizer), d_model, dtype, seed + 3),
                      vae=meta["vae"], scheduler=UniPCMultistepScheduler.from_config(architecture_config(arch, "scheduler")),
                      image_processor=None, image_encoder=None, transformer=meta["transformer"],
                      transformer_2=meta.get("transformer_2"), boundary_ratio=index.get("boundary_ratio"),
                      expand_timesteps=bool(index.get("expand_timesteps")))
    return WanBackbone(cfg, components)


# ---------------------------------------------------------------------- memory
def _meminfo(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _mem_available() -> int:
    return _meminfo("MemAvailable")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so the next reading covers only what follows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def static_memory_plan(component_sizes: dict[str, int], lora_params: int, lora_bytes_each: int,
                       weight_ema: bool) -> list[tuple[str, int]]:
    """Per-rank static memory: frozen components, LoRA weights, their gradients and AdamW moments (fp32)."""
    rows = [(f"frozen {name}", size) for name, size in component_sizes.items()]
    rows += [("LoRA weights", lora_params * lora_bytes_each), ("LoRA gradients", lora_params * lora_bytes_each),
             ("AdamW moments (2 × fp32)", lora_params * 8)]
    if weight_ema:
        rows.append(("weight EMA", lora_params * lora_bytes_each))
    return rows


def full_size_plan(cfg: Any, arch: str, frozen_bytes: int, lora_params: int, world_size: int) -> Any:
    """train/memory.py's per-rank plan of the preset at its *full* clip size (None when that module is absent).

    ``frozen_bytes`` counts every frozen component a real run holds (the text encoder included); the stored
    conditioning is the first frame (fp32) plus SVD's CLIP embedding or Wan's prompt and negative-prompt
    embeddings (512 × 4096, bf16) and TI2V's first-frame latent.
    """
    try:
        from shiftvdm.train.memory import ModelSizes, latent_numel, memory_plan
    except ImportError:
        return None
    from shiftvdm.rewards.critic import CriticConfig

    d, options = cfg.data, dict(cfg.backbone.options)
    family = "svd" if arch == "svd_xt" else "wan"
    cond = 4 * 3 * d.height * d.width
    if family == "svd":
        cond += 4 * int(architecture_config(arch, "image_encoder")["projection_dim"])
    else:
        text = architecture_config(arch, "text_encoder")
        cond += 2 * 2 * int(options.get("max_sequence_length", 512)) * int(text["d_model"])
        if arch == "wan22_ti2v_5b":
            cond += 4 * 48 * (d.height // 16) * (d.width // 16)
        options = {**options, "layout": "ti2v" if arch == "wan22_ti2v_5b" else "i2v_a14b"}
    sizes = ModelSizes(frozen_bytes=frozen_bytes, trainable_params=lora_params,
                       latent_numel=latent_numel(family, options, d.num_frames, d.height, d.width), cond_bytes=cond)
    return memory_plan(cfg, sizes, world_size, CriticConfig(), device_capacity=None)


# ---------------------------------------------------------------------- data
class MovingSquares:
    """Deterministic clips in [-1, 1]: a bright square moving over a smooth gradient (a few px per frame)."""

    def __init__(self, count: int, shape: tuple[int, int, int], prompt: str = "a white square moves right") -> None:
        self.count, self.shape, self.prompt = count, shape, prompt

    def __len__(self) -> int:
        return self.count

    def load(self, indices: list[int]) -> tuple[Tensor, list[str]]:
        frames, height, width = self.shape
        ys = torch.linspace(-1, 1, height).view(height, 1)
        xs = torch.linspace(-1, 1, width).view(1, width)
        clips = []
        for i in indices:
            video = torch.empty(frames, 3, height, width)
            side = max(2, height // 4)
            for f in range(frames):
                background = 0.5 * (xs * torch.cos(torch.tensor(0.3 * i)) + ys * 0.5).expand(height, width)
                video[f] = background
                x0 = (2 * f + 3 * i) % max(1, width - side)
                y0 = (f + i) % max(1, height - side)
                video[f, :, y0:y0 + side, x0:x0 + side] = 0.9
            clips.append(video)
        return torch.stack(clips), [self.prompt] * len(indices)


# ---------------------------------------------------------------------- the step
def step_config(cfg: Any, group_size: int, dry: DryRunConfig, video_shape: tuple[int, int, int], out_dir: Path):
    """The preset's TrainConfig, cut to one SHIFT step on one conditioning (everything else as the preset)."""
    frames, height, width = video_shape
    return replace(
        cfg,
        data=replace(cfg.data, num_frames=frames, height=height, width=width),
        rollout=replace(cfg.rollout, group_size=group_size, buffer_size=1, batch_size=1, rollout_batch_size=1,
                        passes_per_buffer=1, num_inference_steps=dry.inference_steps),
        discriminator=replace(cfg.discriminator, refresh=True, d_to_g=1.0, batch_size=1),
        run=replace(cfg.run, out_dir=str(out_dir), max_steps=1, checkpoint_every=0, sample_every=0, eval_every=0,
                    progress=False, seed=dry.seed),
    )


def run_step(cfg: Any, backbone: Any, critic: Any, clips: Any, accelerator: Any) -> dict[str, Any]:
    """One full SHIFT step through the real trainer; its wall time, its own peak RSS and its metrics."""
    from shiftvdm.train.runtime import Runtime
    from shiftvdm.train.shift import train

    gc.collect()
    reset = _reset_peak_rss()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    first = clips.load([0])
    rt = Runtime(cfg, backbone, critic, Path(cfg.run.out_dir), accelerator=accelerator, features_from_state=None,
                 sample_frames=first[0][:, 0], sample_prompts=first[1])
    result = train(cfg, backbone, critic, clips, rt)
    seconds = time.perf_counter() - t0
    out = {"group_size": cfg.rollout.group_size, "seconds": seconds, "peak_rss": _peak_rss(),
           "peak_is_step_only": reset, "steps": result.steps, "timers": dict(result.timers),
           "metrics": dict(result.last_metrics)}
    if torch.cuda.is_available():  # on a GPU machine the step's device peak is the figure that matters
        out["peak_device_memory"] = torch.cuda.max_memory_allocated()
    del rt
    gc.collect()
    return out


# ---------------------------------------------------------------------- the report
def _fmt_gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


def dry_run(cfg: Any, dry: DryRunConfig, echo=print) -> dict[str, Any]:
    """Build the preset's real architecture, print counts and the memory plan, run one SHIFT step per P."""
    from shiftvdm.rewards.critic import CriticConfig, MotionCritic

    options = dict(cfg.backbone.options)
    arch = architecture_for(cfg.backbone.name, options)
    small = _SMALL_SIZE[arch]
    video_shape = (dry.num_frames or small[0], dry.height or small[1], dry.width or small[2])
    report: dict[str, Any] = {"architecture": arch, "video_shape": video_shape}

    # 1. Meta-device build: exact counts and the static plan, for every model including those that cannot run here.
    t0 = time.perf_counter()
    meta = build_on_meta(arch)
    family = "svd" if arch == "svd_xt" else "wan"
    from shiftvdm.backbone import backbone_config

    bcfg = backbone_config(family, {**options, **({"layout": "ti2v" if arch == "wan22_ti2v_5b" else "i2v_a14b"}
                                                  if family == "wan" else {})})
    dtype = DTYPES[bcfg.dtype]
    counts = {name: parameter_count(m) for name, m in meta.items()}
    report["parameters"] = counts
    denoisers = ("unet",) if family == "svd" else tuple(k for k in ("transformer", "transformer_2") if k in meta)
    targets = cfg.lora.targets if cfg.lora.targets is not None else bcfg.lora_target_modules
    lora = sum(lora_parameter_count(meta[k], cfg.lora.rank, targets) for k in denoisers) if cfg.lora.enabled else 0
    report["lora_parameters"] = lora
    sizes = {}
    for name, module in meta.items():
        part_dtype = DTYPES[bcfg.vae_dtype] if (family == "wan" and name == "vae") else dtype
        sizes[name] = component_bytes(module, part_dtype)
    if family == "wan":  # the dry run replaces UMT5 by random embeddings; a real run holds it (or caches its outputs)
        sizes["text_encoder (not built: random embeddings)"] = sizes.pop("text_encoder")
    report["meta_build_seconds"] = time.perf_counter() - t0

    echo(f"== {arch}: real architecture from {ARCHITECTURES_DIR / arch} (random weights, no download)")
    for name, n in counts.items():
        echo(f"  {name:<15} {n:>16,} parameters  ({_fmt_gib(component_bytes(meta[name], DTYPES[bcfg.vae_dtype] if family == 'wan' and name == 'vae' else dtype))} "
             f"in {bcfg.vae_dtype if family == 'wan' and name == 'vae' else bcfg.dtype})")
    echo(f"  LoRA r={cfg.lora.rank} on {targets!r}: {lora:,} trainable parameters")

    frozen_needed = sum(v for k, v in sizes.items() if not k.startswith("text_encoder"))
    available = _mem_available()
    fits = frozen_needed <= dry.memory_fraction * available
    report["frozen_bytes_to_materialise"] = frozen_needed
    report["mem_available"] = available
    del meta
    gc.collect()

    steps: list[dict[str, Any]] = []
    lora_bytes_each = 4  # the plan assumes fp32 LoRA weights (mixed precision done right); measured below when run
    if dry.meta_only or not fits:
        reason = ("dry_run.meta_only=true" if dry.meta_only else
                  f"its frozen weights need {_fmt_gib(frozen_needed)} in {bcfg.dtype} but this machine has "
                  f"{_fmt_gib(_meminfo('MemTotal'))} of RAM, {_fmt_gib(available)} available now (× "
                  f"{dry.memory_fraction}); built on the meta device only: no step was run")
        report["not_run"] = reason
        echo(f"  step: NOT RUN — {reason}")
    else:
        import accelerate

        t0 = time.perf_counter()
        backbone = build_backbone(arch, options, video_shape, dry.seed)
        if cfg.lora.enabled:
            backbone.add_lora(cfg.lora.rank, cfg.lora.alpha, cfg.lora.targets)
        if cfg.run.gradient_checkpointing and hasattr(backbone.denoiser, "enable_gradient_checkpointing"):
            backbone.denoiser.enable_gradient_checkpointing()
        trainable = backbone.trainable_parameters()
        report["build_seconds"] = time.perf_counter() - t0
        report["build_peak_rss"] = _peak_rss()
        lora_dtypes = sorted({str(p.dtype).replace("torch.", "") for p in trainable})
        report["lora_dtype"] = lora_dtypes
        report["trainable_parameters_built"] = sum(p.numel() for p in trainable)
        lora_bytes_each = max(p.element_size() for p in trainable)
        base_dtypes = sorted({str(p.dtype).replace("torch.", "") for p in backbone.denoiser.parameters()
                              if not p.requires_grad})
        echo(f"  built in {report['build_seconds']:.0f} s, peak RSS {_fmt_gib(report['build_peak_rss'])}; "
             f"frozen denoiser dtypes {base_dtypes}, trainable LoRA {report['trainable_parameters_built']:,} "
             f"in {lora_dtypes}")
        if cfg.discriminator.critic and Path(cfg.discriminator.critic).is_dir():
            critic = MotionCritic.load(cfg.discriminator.critic)
            report["critic"] = str(cfg.discriminator.critic)
        else:
            critic = MotionCritic(CriticConfig())
            report["critic"] = "random-init MotionCritic(CriticConfig())"
        clips = MovingSquares(1, video_shape)
        accelerator = accelerate.Accelerator(cpu=not torch.cuda.is_available())
        if accelerator.device.type != "cpu":  # as build_training does: the model lives on the rollouts' device
            backbone.to(accelerator.device)
        with tempfile.TemporaryDirectory(prefix="shiftvdm-dry-run-") as tmp:
            root = Path(dry.out_dir) if dry.out_dir else Path(tmp)
            for P in dry.group_sizes:
                scfg = step_config(cfg, int(P), dry, video_shape, root / f"P{P}")
                echo(f"  step at P={P}: {video_shape[0]}×{video_shape[1]}×{video_shape[2]} clips, "
                     f"{dry.inference_steps} sampler steps, 1 conditioning ...")
                step = run_step(scfg, backbone, critic, clips, accelerator)
                steps.append(step)
                loss = step["metrics"].get("loss/total", step["metrics"].get("loss/real", float("nan")))
                echo(f"    {step['seconds']:.1f} s/step, peak RSS of the step {_fmt_gib(step['peak_rss'])}"
                     f"{'' if step['peak_is_step_only'] else ' (process peak: VmHWM could not be reset)'}, "
                     f"loss {loss:.4g}, grad_norm {step['metrics'].get('grad_norm', float('nan')):.3g}")
        report["steps"] = steps

    plan = static_memory_plan(sizes, lora, lora_bytes_each, cfg.optim.ema_decay > 0)
    report["memory_plan"] = plan
    echo("  static memory plan per rank (model and optimizer; activations and the buffer come on top):")
    for name, size in plan:
        echo(f"    {name:<48} {_fmt_gib(size):>12}")
    total = sum(size for name, size in plan if "not built" not in name)
    echo(f"    {'total (without the text encoder)':<48} {_fmt_gib(total):>12}")
    report["static_total"] = total
    plan = full_size_plan(cfg, arch, sum(sizes.values()), lora, dry.world_size)
    if plan is not None:
        echo(f"  full-size plan of the preset ({cfg.data.num_frames}×{cfg.data.height}×{cfg.data.width} clips, "
             f"text encoder held, CriticConfig() defaults; train/memory.py):")
        echo("\n".join("    " + line for line in plan.table().splitlines()))
        report["full_size_plan"] = [(r.where, r.name, r.bytes) for r in plan.rows]
    if len(steps) >= 2:
        lo, hi = steps[0], steps[-1]
        echo(f"  peak RSS P={lo['group_size']}: {_fmt_gib(lo['peak_rss'])}   P={hi['group_size']}: "
             f"{_fmt_gib(hi['peak_rss'])}   (ratio {hi['peak_rss'] / lo['peak_rss']:.3f})")
    return report


def resolve_dry_run(mode: str, config: str | None, overrides: list[str]) -> tuple[Any, DryRunConfig]:
    """The preset's TrainConfig (without the folder and critic checks a real run needs) and the dry-run options."""
    from shiftvdm.config import config_from_dict, parse_overrides
    from shiftvdm.recipes.train import merge_train_config

    mine = [o for o in overrides if o.startswith("dry_run.")]
    rest = [o for o in overrides if not o.startswith("dry_run.")]
    dry = config_from_dict(DryRunConfig, parse_overrides(mine).get("dry_run", {}), "dry_run.*")
    return merge_train_config(mode, config, rest)[0], dry


def run_dry_run(mode: str, config: str | None, overrides: list[str], echo=print) -> int:
    """Entry point of ``shiftvdm <stage> --config X --dry-run [dry_run.field=value ...]``."""
    torch.manual_seed(0)
    cfg, dry = resolve_dry_run(mode, config, overrides)
    report = dry_run(cfg, dry, echo=echo)
    if dry.report_json:
        Path(dry.report_json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0 if report.get("steps") or report.get("not_run") else 1


__all__ = ["ARCHITECTURES", "DryRunConfig", "RandomTextEncoder", "architecture_config", "architecture_for",
           "build_backbone", "build_on_meta", "dry_run", "lora_parameter_count", "materialize_", "run_dry_run"]
