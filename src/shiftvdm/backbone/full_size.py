"""The real full-size architectures with random weights, on CPU and without a download (`shiftvdm shift --dry-run`).

The diffusers configs shipped in ``backbone/configs/`` (SVD-XT, Wan2.2-TI2V-5B, Wan2.2-I2V-A14B; sources in that
folder's README) are built first on the meta device (parameters only; buffers such as Wan's RoPE tables stay
real), which gives exact parameter counts, the exact LoRA size and the bytes of every component for free. A model
that fits is then materialised: each parameter allocated directly in the preset's dtype (fp32 for the modules the
library keeps in fp32, as ``from_pretrained`` does) and filled with seeded random values, so no fp32 copy of a
5 B model ever exists.

``RandomTextEncoder`` stands in for UMT5-XXL (its width and padding, a fixed random vector per token): a full-size
step needs the embeddings, not the 6.7 B-parameter encoder. The dry run's own parts (its clips, the step, its
printed plan) are in recipes/dry_run/.
Every function takes ``root``, the folder of architecture configs (tests point it at tiny configs).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

from shiftvdm.backbone import backbone_config
from shiftvdm.backbone.base import DTYPES
from shiftvdm.backbone.svd import SVDBackbone
from shiftvdm.backbone.tiny import build_tiny_tokenizer
from shiftvdm.backbone.wan import WanBackbone
from shiftvdm.errors import ConfigError

ARCHITECTURES_DIR = Path(__file__).resolve().parent / "configs"
ARCHITECTURES = ("svd_xt", "wan22_ti2v_5b", "wan22_i2v_a14b")
TEXT_ENCODER_STAND_IN = "text_encoder (not built: random embeddings)"


def architecture_config(arch: str, component: str, root: Path | None = None) -> dict[str, Any]:
    """The shipped config of ``component`` (``unet``, ``vae``, ``transformer``...) without the ``_`` keys."""
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")
    folder = Path(root or ARCHITECTURES_DIR) / arch
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


def family_options(arch: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The backbone family of ``arch`` and ``options`` with the Wan layout that ``arch`` is."""
    if arch == "svd_xt":
        return "svd", dict(options)
    return "wan", {**options, "layout": "ti2v" if arch == "wan22_ti2v_5b" else "i2v_a14b"}


def build_on_meta(arch: str, root: Path | None = None) -> dict[str, nn.Module]:
    """Every weight-carrying component of ``arch`` with its parameters on the meta device (buffers real)."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        if arch == "svd_xt":
            from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
            from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

            return {"unet": UNetSpatioTemporalConditionModel.from_config(architecture_config(arch, "unet", root)),
                    "vae": AutoencoderKLTemporalDecoder.from_config(architecture_config(arch, "vae", root)),
                    "image_encoder": CLIPVisionModelWithProjection(
                        CLIPVisionConfig(**architecture_config(arch, "image_encoder", root)))}
        from diffusers import AutoencoderKLWan, WanTransformer3DModel
        from transformers import UMT5Config, UMT5EncoderModel

        parts = {"transformer": WanTransformer3DModel.from_config(architecture_config(arch, "transformer", root))}
        if arch == "wan22_i2v_a14b":
            parts["transformer_2"] = WanTransformer3DModel.from_config(architecture_config(arch, "transformer_2", root))
        parts["vae"] = AutoencoderKLWan.from_config(architecture_config(arch, "vae", root))
        parts["text_encoder"] = UMT5EncoderModel(UMT5Config(**architecture_config(arch, "text_encoder", root)))
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
def materialize_(module: nn.Module, dtype: torch.dtype, seed: int, device: torch.device | str | None = None) -> nn.Module:
    """Replace every meta parameter by a seeded random one allocated directly in ``dtype`` (on ``device``: a GPU
    draws a 5 B model in a second where the CPU takes a minute; the values then differ from the CPU draw's).

    Weights ~ N(0, 1/fan_in) (fan_in = numel / out dim), biases 0, norm scales 1: activations stay O(1) through
    the normalised blocks, so the step's numerics are finite without pretrained values.
    """
    device = torch.device(device or "cpu")
    gen = torch.Generator(device=device).manual_seed(seed)
    keep = _fp32_modules(module, dtype)
    for name, param in list(module.named_parameters()):
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        target = torch.float32 if _keeps_fp32(keep, name) else dtype
        value = torch.empty(param.shape, dtype=target, device=device)
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
    """Parameters of ``module`` (meta or real)."""
    return sum(p.numel() for p in module.parameters())


def lora_parameter_count(module: nn.Module, rank: int, targets: str | list[str]) -> int:
    """Trainable LoRA parameters peft adds for ``targets`` (regex or name suffixes): r·(in + out) per Linear."""
    total = 0
    for name, child in module.named_modules():
        if not isinstance(child, nn.Linear):
            continue
        hit = (re.fullmatch(targets, name) is not None if isinstance(targets, str)
               else any(name == t or name.endswith("." + t) for t in targets))
        if hit:
            total += rank * (child.in_features + child.out_features)
    return total


@dataclass
class MetaSummary:
    """What the meta-device build of an architecture tells before any weight exists."""

    arch: str
    parameters: dict[str, int]  # per component
    part_bytes: dict[str, int]  # per component, in the dtype it is loaded in
    part_dtype: dict[str, str]  # that dtype's name
    dtype: str  # the denoiser's dtype (backbone.options.dtype)
    lora_rank: int
    lora_parameters: int  # trainable LoRA parameters over the denoiser(s); 0 without LoRA
    lora_targets: Any  # the LoRA target modules counted
    seconds: float  # time of the meta build

    @property
    def plan_sizes(self) -> dict[str, int]:
        """Component bytes of a step here: the text encoder (if any) is replaced by random embeddings."""
        return {(TEXT_ENCODER_STAND_IN if name == "text_encoder" else name): size
                for name, size in self.part_bytes.items()}

    def lines(self) -> list[str]:
        """One line per component (parameters, bytes in its dtype) and one for LoRA."""
        rows = [f"  {name:<15} {n:>16,} parameters  ({self.part_bytes[name] / 1024**3:.2f} GiB in {self.part_dtype[name]})"
                for name, n in self.parameters.items()]
        return rows + [f"  LoRA r={self.lora_rank} on {self.lora_targets!r}: {self.lora_parameters:,} trainable parameters"]


def summarize_on_meta(arch: str, options: dict[str, Any], lora: Any, root: Path | None = None) -> MetaSummary:
    """Counts and bytes of every component of ``arch``, and the LoRA size for ``lora`` (a LoraConfig:
    ``enabled``, ``rank``, ``targets``; targets None = the backbone's default)."""
    t0 = time.perf_counter()
    meta = build_on_meta(arch, root)
    family, fam_options = family_options(arch, options)
    bcfg = backbone_config(family, fam_options)
    denoisers = ("unet",) if family == "svd" else tuple(k for k in ("transformer", "transformer_2") if k in meta)
    targets = lora.targets if lora.targets is not None else bcfg.lora_target_modules
    lora_params = sum(lora_parameter_count(meta[k], lora.rank, targets) for k in denoisers) if lora.enabled else 0
    dtype_name = {name: bcfg.vae_dtype if (family == "wan" and name == "vae") else bcfg.dtype for name in meta}
    return MetaSummary(arch, {name: parameter_count(m) for name, m in meta.items()},
                       {name: component_bytes(m, DTYPES[dtype_name[name]]) for name, m in meta.items()},
                       dtype_name, bcfg.dtype, lora.rank, lora_params, targets, time.perf_counter() - t0)


def conditioning_bytes(arch: str, options: dict[str, Any], height: int, width: int, root: Path | None = None) -> int:
    """Bytes of one stored conditioning at full size: the first frame (fp32) plus SVD's CLIP embedding, or
    Wan's prompt and negative-prompt embeddings (bf16) and TI2V's first-frame latent."""
    cond = 4 * 3 * height * width
    if arch == "svd_xt":
        return cond + 4 * int(architecture_config(arch, "image_encoder", root)["projection_dim"])
    text = architecture_config(arch, "text_encoder", root)
    cond += 2 * 2 * int(options.get("max_sequence_length", 512)) * int(text["d_model"])
    if arch == "wan22_ti2v_5b":
        cond += 4 * 48 * (height // 16) * (width // 16)
    return cond


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


def build_backbone(arch: str, options: dict[str, Any], video_shape: tuple[int, int, int], seed: int,
                   root: Path | None = None, device: torch.device | str | None = None) -> Any:
    """The real-size backbone with random weights, dtypes as ``options`` say, at ``video_shape``
    (an SVDBackbone or WanBackbone; ``root`` = the folder of architecture configs; weights drawn on ``device``,
    default the CPU; the caller moves the backbone there)."""
    frames, height, width = video_shape
    meta = build_on_meta(arch, root)
    if arch == "svd_xt":
        from diffusers import EulerDiscreteScheduler

        cfg = backbone_config("svd", {**options, "num_frames": frames, "height": height, "width": width})
        dtype = DTYPES[cfg.dtype]
        for i, module in enumerate(meta.values()):
            materialize_(module, dtype, seed + i, device)
        try:
            from transformers import CLIPImageProcessorPil as ImageProcessor
        except ImportError:  # pragma: no cover - other transformers versions
            from transformers import CLIPImageProcessor as ImageProcessor
        fe = architecture_config(arch, "feature_extractor", root)
        fe.pop("image_processor_type", None)
        return SVDBackbone(unet=meta["unet"], vae=meta["vae"], image_encoder=meta["image_encoder"].eval(),
                           feature_extractor=ImageProcessor(**fe), config=cfg,
                           scheduler=EulerDiscreteScheduler.from_config(architecture_config(arch, "scheduler", root)))

    from diffusers import UniPCMultistepScheduler

    layout = "ti2v" if arch == "wan22_ti2v_5b" else "i2v_a14b"
    cfg = backbone_config("wan", {**options, "layout": layout, "num_frames": frames, "height": height, "width": width})
    dtype, vae_dtype = DTYPES[cfg.dtype], DTYPES[cfg.vae_dtype]
    for i, key in enumerate(("transformer", "transformer_2")):
        if key in meta:
            materialize_(meta[key], dtype, seed + i, device)
    materialize_(meta["vae"], vae_dtype, seed + 2, device)
    d_model = int(meta.pop("text_encoder").config.d_model)
    tokenizer = build_tiny_tokenizer(model_max_length=cfg.max_sequence_length)
    index = architecture_config(arch, "model_index", root)
    components = dict(tokenizer=tokenizer, text_encoder=RandomTextEncoder(len(tokenizer), d_model, dtype, seed + 3),
                      vae=meta["vae"], scheduler=UniPCMultistepScheduler.from_config(architecture_config(arch, "scheduler", root)),
                      image_processor=None, image_encoder=None, transformer=meta["transformer"],
                      transformer_2=meta.get("transformer_2"), boundary_ratio=index.get("boundary_ratio"),
                      expand_timesteps=bool(index.get("expand_timesteps")))
    return WanBackbone(cfg, components)


__all__ = ["ARCHITECTURES", "ARCHITECTURES_DIR", "MetaSummary", "RandomTextEncoder",
           "architecture_config", "architecture_for", "build_backbone", "build_on_meta", "component_bytes",
           "conditioning_bytes", "family_options", "lora_parameter_count", "materialize_", "parameter_count",
           "summarize_on_meta"]
