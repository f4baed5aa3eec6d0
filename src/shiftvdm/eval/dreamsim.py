"""DreamSim's ensemble (ssundaram21/dreamsim, ``dreamsim(pretrained=True)``), the network behind VBench++'s
i2v_background, read from its released files as data and loaded strictly.

The ensemble embeds a 224x224 image in [0, 1] with three ViT-B/16 branches, each after its own normalisation
(dreamsim model.py ``PerceptualModel._preprocess``: ImageNet mean/std for DINO, OpenAI CLIP's for both CLIPs):

* DINO ViT-B/16: the CLS token of the *last block's output*, before the final LayerNorm (``_extract_cls`` hooks
  block 11); its backbone is ``dino_vitbase16_pretrain.pth``, which dreamsim loads through
  ``torch.hub.load('facebookresearch/dino:main', 'dino_vitb16')`` (the file subject consistency reads too).
  The DINO head in dreamsim's ``dino_vitb16_pretrain.pth`` feeds only the 'embedding' feature, which the
  ensemble does not use, so that file is not needed.
* CLIP ViT-B/16 (``clip_vitb16_pretrain.pth.tar``) and OpenCLIP ViT-B/16 LAION-400M
  (``open_clip_vitb16_pretrain.pth.tar``): the image towers re-saved by dreamsim in DINO's key layout
  (``load_clip_as_dino`` / ``load_open_clip_as_dino``: ``pos_drop`` is CLIP's ln_pre, LayerNorm eps 1e-5,
  QuickGELU for CLIP, exact GELU for OpenCLIP, the patch conv has a bias, ``proj`` maps the post-LN class
  token to 512). transformers' ``CLIPVisionModelWithProjection`` computes that function; the conv bias is
  folded into the patch position embeddings (conv(x) + b + pos == conv(x) + (pos + b)).
* LoRA on every block's fused ``qkv`` (``ensemble_lora/``: ``adapter_config.json`` + ``adapter_model.bin``,
  dreamsim >= 0.2.0's checkpoint): applied with peft on our separate q / k / v projections (the fused
  update B·A split by rows: each of q, k, v gets the shared A and its third of B), then merged. dreamsim
  0.1.x's per-branch adapters (peft 0.1.0 ``MergedLinear``: LoRA on q and v only) are not read.

The embedding is the concatenation (768 + 512 + 512), centred and scaled to unit length (``normalize_embeds``;
dreamsim 0.1.x divides by the norm before centring, 0.2.1 after: the two differ by a positive factor per
image, so cosines, and VBench's rule, are the same).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from shiftvdm.errors import CheckpointError
from shiftvdm.eval.vbench_networks import (
    DINO_VITB16,
    DinoViT,
    VitShape,
    _check_keys,
    _no_init,
    _seeded,
    _shape_error,
    dino_official_keys,
    dino_shape_of,
)
from shiftvdm.motion.weights import load_strict, read_state_dict

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)

CLIP_VITB16 = VitShape(width=768, layers=12, patch=16, grid=14, output_dim=512)
BRANCHES = ("dino_vitb16", "clip_vitb16", "open_clip_vitb16")  # dreamsim's order, also the embedding's


# ----- the CLIP branches in dreamsim's DINO key layout ----------------------------------------------------


def dreamsim_clip_keys(shape: VitShape = CLIP_VITB16) -> dict[str, tuple[int, ...]]:
    """Key -> shape of dreamsim's ``clip_vitb16_pretrain.pth.tar`` / ``open_clip_vitb16_pretrain.pth.tar``
    ``state_dict``: DINO's ViT keys with ``pos_drop`` (ln_pre) and ``proj``."""
    keys = dino_official_keys(shape)
    keys = {"cls_token": keys.pop("cls_token"), "pos_embed": keys.pop("pos_embed"), **keys}
    w = shape.width
    out: dict[str, tuple[int, ...]] = {}
    for key, value in keys.items():
        out[key] = value
        if key == "patch_embed.proj.bias":
            out.update({"pos_drop.weight": (w,), "pos_drop.bias": (w,)})
    out["proj"] = (w, shape.output_dim)
    return out


def dreamsim_clip_shape_of(state: Mapping[str, Tensor], source: str) -> VitShape:
    base = dino_shape_of(state, source)
    if "proj" not in state or state["proj"].ndim != 2:
        raise _shape_error(source, "dreamsim CLIP branch", "no 2-d 'proj' key (a DINO backbone or another file?)")
    return VitShape(base.width, base.layers, base.patch, base.grid, output_dim=int(state["proj"].shape[1]))


def convert_dreamsim_clip(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """dreamsim's DINO-layout CLIP tower -> transformers' ``CLIPVisionModelWithProjection`` (under ``clip.``)."""
    vm = "clip.vision_model."
    out: dict[str, Tensor] = {}
    names = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.proj": "self_attn.out_proj",
             "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    for key, value in state.items():
        value = value.float()
        if key == "cls_token":
            out[vm + "embeddings.class_embedding"] = value.reshape(-1)
        elif key == "pos_embed":
            table = value[0].clone()
            table[1:] += state["patch_embed.proj.bias"].float()  # the conv bias reaches every patch token only
            out[vm + "embeddings.position_embedding.weight"] = table
        elif key == "patch_embed.proj.weight":
            out[vm + "embeddings.patch_embedding.weight"] = value
        elif key == "patch_embed.proj.bias":
            continue
        elif key.startswith("pos_drop."):
            out[vm + "pre_layrnorm." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("norm."):
            out[vm + "post_layernorm." + key.rsplit(".", 1)[1]] = value
        elif key == "proj":
            out["clip.visual_projection.weight"] = value.t().contiguous()
        elif key.startswith("blocks."):
            _, index, rest = key.split(".", 2)
            module, leaf = rest.rsplit(".", 1)
            prefix = f"{vm}encoder.layers.{index}."
            if module == "attn.qkv":
                for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                    out[f"{prefix}self_attn.{name}.{leaf}"] = part.contiguous()
            else:
                out[f"{prefix}{names.get(module, module)}.{leaf}"] = value
        else:
            out[key] = value  # load_strict names it as unexpected
    return out


class ClipBranch(nn.Module):
    """A dreamsim CLIP / OpenCLIP branch: (B, 3, 224, 224) normalised -> (B, output_dim), as
    ``ViTExtractor.forward(x, is_proj=True)``: ``norm(blocks(ln_pre(tokens)))[:, 0] @ proj``."""

    def __init__(self, shape: VitShape, quick_gelu: bool) -> None:
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        config = CLIPVisionConfig(hidden_size=shape.width, intermediate_size=4 * shape.width,
                                  num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                                  image_size=shape.grid * shape.patch, patch_size=shape.patch,
                                  projection_dim=shape.output_dim, layer_norm_eps=1e-5,
                                  hidden_act="quick_gelu" if quick_gelu else "gelu")
        self.clip = CLIPVisionModelWithProjection(config)

    def forward(self, pixels: Tensor) -> Tensor:
        return self.clip(pixel_values=pixels).image_embeds


class DinoBranch(nn.Module):
    """dreamsim's DINO branch: the CLS token after the last block (dreamsim hooks block 11, ViT-B/16's last),
    before DINO's final LayerNorm."""

    def __init__(self, shape: VitShape) -> None:
        super().__init__()
        self.dino = DinoViT(shape)

    def forward(self, pixels: Tensor) -> Tensor:
        vit = self.dino.vit
        hidden = vit.embeddings(pixels, interpolate_pos_encoding=True)
        for layer in vit.layers:
            hidden = layer(hidden)
        return hidden[:, 0]


def _normalizer(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[Tensor, Tensor]:
    return torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)


class DreamSim(nn.Module):
    """The ensemble: (B, 3, 224, 224) images in [0, 1] -> (B, 1792) centred unit embeddings (``embed``)."""

    def __init__(self, dino: VitShape = DINO_VITB16, clip: VitShape = CLIP_VITB16,
                 open_clip: VitShape = CLIP_VITB16) -> None:
        super().__init__()
        self.dino = DinoBranch(dino)
        self.clip = ClipBranch(clip, quick_gelu=True)
        self.open_clip = ClipBranch(open_clip, quick_gelu=False)
        for name, (mean, std) in (("imagenet", (IMAGENET_MEAN, IMAGENET_STD)), ("clip", (CLIP_MEAN, CLIP_STD))):
            m, s = _normalizer(mean, std)
            self.register_buffer(f"{name}_mean", m, persistent=False)
            self.register_buffer(f"{name}_std", s, persistent=False)
        self.eval()

    def forward(self, images: Tensor) -> Tensor:
        dino = self.dino((images - self.imagenet_mean) / self.imagenet_std)
        clip_in = (images - self.clip_mean) / self.clip_std
        embed = torch.cat([dino, self.clip(clip_in), self.open_clip(clip_in)], dim=-1)
        embed = embed - embed.mean(dim=-1, keepdim=True)
        return embed / embed.norm(dim=-1, keepdim=True)


# ----- LoRA ---------------------------------------------------------------------------------------------

# where each branch's blocks sit in dreamsim's PerceptualModel (extractor_list.i.model is the DINO-style ViT)
_LORA_PREFIX = "base_model.model.extractor_list."


def dreamsim_lora_keys(rank: int, widths: tuple[int, int, int] = (768, 768, 768),
                       layers: tuple[int, int, int] = (12, 12, 12)) -> dict[str, tuple[int, ...]]:
    """Key -> shape of ``ensemble_lora/adapter_model.bin`` (peft's adapter of the whole PerceptualModel,
    ``target_modules=['qkv']``)."""
    keys: dict[str, tuple[int, ...]] = {}
    for branch, (w, n) in enumerate(zip(widths, layers)):
        for i in range(n):
            stem = f"{_LORA_PREFIX}{branch}.model.blocks.{i}.attn.qkv."
            keys[stem + "lora_A.weight"] = (rank, w)
            keys[stem + "lora_B.weight"] = (3 * w, rank)
    return keys


def read_lora_config(folder: Path) -> tuple[int, float]:
    """(r, lora_alpha) of ``ensemble_lora/adapter_config.json``; refuses a config other than plain LoRA on qkv."""
    path = folder / "adapter_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        rank, alpha = int(config["r"]), float(config["lora_alpha"])
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: not found (dreamsim's ensemble_lora folder holds adapter_config.json and "
                              "adapter_model.bin)") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable peft LoRA config with r and lora_alpha ({exc})") from exc
    targets = config.get("target_modules")
    targets = sorted(targets) if isinstance(targets, list) else targets
    odd = {k: config.get(k) for k in ("use_rslora", "use_dora") if config.get(k)}
    if targets not in (["qkv"], "qkv") or odd or config.get("bias", "none") != "none" or rank < 1:
        raise CheckpointError(f"{path}: expected dreamsim's LoRA (target_modules ['qkv'], bias none, plain "
                              f"scaling), got target_modules {targets}, r {rank}, bias {config.get('bias')}"
                              f"{', ' + ', '.join(odd) if odd else ''}")
    return rank, alpha


def lora_files(lora: Path) -> tuple[Path, Path]:
    """(folder, weights file) of dreamsim's ``ensemble_lora`` given the folder or its ``adapter_model.bin``."""
    if lora.is_file():
        return lora.parent, lora
    for name in ("adapter_model.bin", "adapter_model.safetensors"):
        if (lora / name).is_file():
            return lora, lora / name
    raise CheckpointError(f"{lora}: no adapter_model.bin (dreamsim's ensemble_lora folder from "
                          "dreamsim_ensemble_checkpoint.zip)")


def convert_lora(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """dreamsim's fused-qkv LoRA -> peft LoRA on our q / k / v projections (A shared, B split by rows)."""
    targets = ("dino.dino.vit.layers.{i}.attention.{p}", "clip.clip.vision_model.encoder.layers.{i}.self_attn.{p}",
               "open_clip.clip.vision_model.encoder.layers.{i}.self_attn.{p}")
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        branch, rest = key[len(_LORA_PREFIX):].split(".", 1)
        index = int(rest.split(".")[2])
        which = rest.rsplit(".", 2)[1]  # lora_A / lora_B
        parts = [value] * 3 if which == "lora_A" else list(value.chunk(3, dim=0))
        for proj, part in zip(("q_proj", "k_proj", "v_proj"), parts):
            name = targets[int(branch)].format(i=index, p=proj)
            out[f"{name}.{which}.weight"] = part.float().contiguous()
    return out


def apply_lora(model: DreamSim, state: Mapping[str, Tensor], rank: int, alpha: float, source: str) -> DreamSim:
    """Inject peft LoRA (scaling alpha / r, as dreamsim's peft adapters) into q / k / v, load, merge."""
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from peft.tuners.tuners_utils import BaseTunerLayer

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, bias="none",
                        target_modules=r".*\.(attention|self_attn)\.(q_proj|k_proj|v_proj)")
    model = inject_adapter_in_model(config, model)
    converted = convert_lora(state)
    result = set_peft_model_state_dict(model, converted)
    lora_keys = {k for k in model.state_dict() if ".lora_" in k}
    missing = sorted(k for k in lora_keys if k.replace(".default", "") not in converted)
    unexpected = list(getattr(result, "unexpected_keys", []))
    if missing or unexpected:
        raise CheckpointError(f"{source}: the LoRA adapter does not fit the ensemble (missing {len(missing)}, "
                              f"unexpected {len(unexpected)}; first: {(missing + unexpected)[:2]})")
    for module in list(model.modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
    for parent in list(model.modules()):  # the merged layers back to plain nn.Linear
        for name, child in list(parent.named_children()):
            if isinstance(child, BaseTunerLayer):
                setattr(parent, name, child.get_base_layer())
    return model


# ----- loading ------------------------------------------------------------------------------------------


def _read_branch(path: Path, network: str) -> dict[str, Tensor]:
    if not path.exists():
        raise CheckpointError(f"{path}: {network} weights not found (a local file is required; nothing is "
                              "downloaded)")
    return read_state_dict(path, network)


def load_dreamsim(dino_path: str | Path, clip_path: str | Path, open_clip_path: str | Path,
                  lora: str | Path, expect: VitShape | None = CLIP_VITB16) -> DreamSim:
    """The DreamSim ensemble from its released files, each loaded strictly.

    Args:
        dino_path: ``dino_vitbase16_pretrain.pth`` (DINO's released backbone).
        clip_path: dreamsim's ``clip_vitb16_pretrain.pth.tar``; open_clip_path: ``open_clip_vitb16_pretrain.pth.tar``.
        lora: dreamsim's ``ensemble_lora`` folder (``adapter_config.json``, ``adapter_model.bin``), or the
            ``adapter_model.bin`` in it.
        expect: the ViT-B/16 shape every branch must hold (None accepts other sizes, for tests).
    """
    from shiftvdm.eval.vbench_networks import convert_dino_state

    dino_path, clip_path, open_clip_path = map(Path, (dino_path, clip_path, open_clip_path))
    if not Path(lora).exists():
        raise CheckpointError(f"{lora}: dreamsim ensemble LoRA adapter not found (a local file is required; "
                              "nothing is downloaded)")
    lora_dir, lora_file = lora_files(Path(lora))
    dino_state = _read_branch(dino_path, "DINO ViT-B/16 backbone")
    dino_shape = dino_shape_of(dino_state, str(dino_path))
    _check_keys(dino_state, dino_official_keys(dino_shape), str(dino_path), "DINO ViT")
    shapes, states = [], []
    for path, network in ((clip_path, "dreamsim CLIP ViT-B/16 branch"),
                          (open_clip_path, "dreamsim OpenCLIP ViT-B/16 branch")):
        state = _read_branch(path, network)
        shape = dreamsim_clip_shape_of(state, str(path))
        _check_keys(state, dreamsim_clip_keys(shape), str(path), network)
        shapes.append(shape)
        states.append(state)
    if expect is not None:
        for path, shape, want in ((dino_path, dino_shape, DINO_VITB16), (clip_path, shapes[0], expect),
                                  (open_clip_path, shapes[1], expect)):
            if shape != want:
                raise _shape_error(str(path), "ViT-B/16", f"it holds a ViT of width {shape.width}, {shape.layers} "
                                                          f"blocks, patch {shape.patch} (expected width {want.width}, "
                                                          f"{want.layers} blocks, patch {want.patch})")
    with _no_init():
        model = DreamSim(dino_shape, shapes[0], shapes[1])
    load_strict(model.dino.dino, convert_dino_state(dino_state), str(dino_path), "DINO ViT")
    load_strict(model.clip, convert_dreamsim_clip(states[0]), str(clip_path), "dreamsim CLIP branch")
    load_strict(model.open_clip, convert_dreamsim_clip(states[1]), str(open_clip_path), "dreamsim OpenCLIP branch")
    rank, alpha = read_lora_config(lora_dir)
    adapter = read_state_dict(lora_file, "dreamsim LoRA adapter")
    widths = (dino_shape.width, shapes[0].width, shapes[1].width)
    layers = (dino_shape.layers, shapes[0].layers, shapes[1].layers)
    _check_keys(adapter, dreamsim_lora_keys(rank, widths, layers), str(lora_file), "dreamsim ensemble LoRA adapter")
    return apply_lora(model, adapter, rank, alpha, str(lora_file)).eval().requires_grad_(False)


# ----- weights drawn from a seed (test oracles) ----------------------------------------------------------


def seeded_dreamsim_clip_state(shape: VitShape, seed: int) -> dict[str, Tensor]:
    """A dreamsim-layout CLIP branch (``{'state_dict': ...}`` content) drawn from ``seed`` at realistic
    scales (see ``seeded_dino_state``); ``proj`` ~ N(0, 1/width)."""
    state = _seeded(dreamsim_clip_keys(shape), seed)
    generator = torch.Generator().manual_seed(seed + 1)
    state["proj"] = torch.randn(state["proj"].shape, generator=generator) / math.sqrt(shape.width)
    state["pos_drop.weight"] = 1.0 + 0.1 * torch.randn(shape.width, generator=generator)  # ln_pre, as a norm
    state["pos_drop.bias"] = 0.05 * torch.randn(shape.width, generator=generator)
    return state


def seeded_lora_state(rank: int, widths: tuple[int, int, int], layers: tuple[int, int, int],
                      seed: int) -> dict[str, Tensor]:
    """An ``adapter_model.bin`` drawn from ``seed``: A ~ N(0, 1/width), B ~ N(0, 1), so that at dreamsim's
    scaling (alpha / r = 0.5 / 16) the update moves the embedding clearly (peft's own init, B = 0, would not)."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, Tensor] = {}
    for key, shape in dreamsim_lora_keys(rank, widths, layers).items():
        noise = torch.randn(shape, generator=generator)
        state[key] = noise / math.sqrt(shape[1]) if key.endswith("lora_A.weight") else noise
    return state


__all__ = ["BRANCHES", "CLIP_VITB16", "ClipBranch", "DinoBranch", "DreamSim", "apply_lora", "convert_dreamsim_clip",
           "convert_lora", "dreamsim_clip_keys", "dreamsim_clip_shape_of", "dreamsim_lora_keys", "load_dreamsim",
           "lora_files", "read_lora_config", "seeded_dreamsim_clip_state", "seeded_lora_state"]
