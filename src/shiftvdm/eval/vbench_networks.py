"""The released image networks behind VBench's appearance dimensions, read as data and loaded strictly.

* DINO ViT-B/16 (``dino_vitbase16_pretrain.pth``, facebookresearch/dino): subject consistency, i2v_subject.
  transformers' ``ViTModel`` computes the same function as DINO's ``vision_transformer.VisionTransformer``
  (pre-LN blocks, exact GELU, LayerNorm eps 1e-6, qkv bias, CLS token after the final norm); only the
  position-embedding interpolation differs, so :class:`_DinoEmbeddings` carries DINO's rule.
* CLIP image towers (OpenAI ``ViT-B-32.pt`` / ``ViT-L-14.pt``, or a transformers CLIP folder): background
  consistency (B/32) and aesthetic quality (L/14, with the LAION head ``sa_0_4_vit_l_14_linear.pth``).
  transformers' ``CLIPVisionModelWithProjection`` computes OpenAI's ``model.VisionTransformer``
  (ln_pre, QuickGELU, ln_post on the class token, ``x @ proj``).

The OpenAI files are TorchScript archives. They are read here as tensors only: :func:`read_torchscript_tensors`
unpickles ``data.pkl`` with an unpickler that knows a handful of tensor-rebuilding names and turns every
TorchScript class into an inert attribute holder, so no code of the archive is run.
"""

from __future__ import annotations

import contextlib
import io
import math
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
    ViTConfig,
    ViTModel,
)
from transformers.models.vit.modeling_vit import ViTEmbeddings

from shiftvdm.errors import CheckpointError
from shiftvdm.motion.weights import key_differences, load_strict, read_folder_config, read_state_dict

try:  # skip the random init of a network whose every weight is loaded next (6.5 s -> 0.3 s for CLIP B/32)
    from transformers.initialization import no_init_weights as _no_init
except ImportError:  # pragma: no cover - other transformers 5.x layouts
    _no_init = contextlib.nullcontext

# ----- DINO ViT ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VitShape:
    """A ViT's shape as its state dict shows it; heads = width / 64 in the DINO and CLIP families."""

    width: int
    layers: int
    patch: int
    grid: int  # positions per side of the pre-trained position embedding
    output_dim: int = 0  # CLIP's projection; 0 for DINO

    @property
    def heads(self) -> int:
        return self.width // 64


DINO_VITB16 = VitShape(width=768, layers=12, patch=16, grid=14)
CLIP_VITB32 = VitShape(width=768, layers=12, patch=32, grid=7, output_dim=512)
CLIP_VITL14 = VitShape(width=1024, layers=24, patch=14, grid=16, output_dim=768)


class _DinoEmbeddings(ViTEmbeddings):
    """ViT embeddings with DINO's position interpolation (dino vision_transformer.py,
    ``interpolate_pos_encoding``): bicubic by ``scale_factor = (n + 0.1) / grid`` per axis, not to a target
    size as transformers does; the two differ in the sampling positions for a non-square input (VBench's
    subject consistency resizes the shorter side to 224 and keeps the aspect ratio)."""

    def interpolate_pos_encoding(self, embeddings: Tensor, height: int, width: int) -> Tensor:
        patches = embeddings.shape[1] - 1
        positions = self.position_embeddings.shape[1] - 1
        if patches == positions and height == width:
            return self.position_embeddings
        grid = int(math.sqrt(positions))
        dim = embeddings.shape[-1]
        rows, cols = height // self.patch_size + 0.1, width // self.patch_size + 0.1
        table = self.position_embeddings[:, 1:].reshape(1, grid, grid, dim).permute(0, 3, 1, 2)
        table = nn.functional.interpolate(table, scale_factor=(rows / grid, cols / grid), mode="bicubic")
        table = table.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat((self.position_embeddings[:, :1], table), dim=1)


class DinoViT(nn.Module):
    """DINO's ViT backbone: (B, 3, H, W) normalised images -> (B, width) CLS features (DINO's ``forward``)."""

    def __init__(self, shape: VitShape = DINO_VITB16) -> None:
        super().__init__()
        self.shape = shape
        config = ViTConfig(hidden_size=shape.width, num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                           intermediate_size=4 * shape.width, hidden_act="gelu", layer_norm_eps=1e-6,
                           image_size=shape.grid * shape.patch, patch_size=shape.patch, qkv_bias=True,
                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        self.vit = ViTModel(config, add_pooling_layer=False)
        self.vit.embeddings = _DinoEmbeddings(config)
        self.eval()

    def forward(self, pixels: Tensor) -> Tensor:
        return self.vit(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state[:, 0]


def dino_official_keys(shape: VitShape = DINO_VITB16) -> dict[str, tuple[int, ...]]:
    """Key -> shape of DINO's released ``vit_*`` state dict (``num_classes=0``: no head), in its order."""
    w, n = shape.width, shape.grid ** 2 + 1
    keys: dict[str, tuple[int, ...]] = {"cls_token": (1, 1, w), "pos_embed": (1, n, w),
                                        "patch_embed.proj.weight": (w, 3, shape.patch, shape.patch),
                                        "patch_embed.proj.bias": (w,)}
    for i in range(shape.layers):
        b = f"blocks.{i}."
        keys.update({b + "norm1.weight": (w,), b + "norm1.bias": (w,), b + "attn.qkv.weight": (3 * w, w),
                     b + "attn.qkv.bias": (3 * w,), b + "attn.proj.weight": (w, w), b + "attn.proj.bias": (w,),
                     b + "norm2.weight": (w,), b + "norm2.bias": (w,), b + "mlp.fc1.weight": (4 * w, w),
                     b + "mlp.fc1.bias": (4 * w,), b + "mlp.fc2.weight": (w, 4 * w), b + "mlp.fc2.bias": (w,)})
    keys.update({"norm.weight": (w,), "norm.bias": (w,)})
    return keys


def _shape_error(source: str, network: str, detail: str) -> CheckpointError:
    return CheckpointError(f"{source}: not a {network} checkpoint: {detail}")


def dino_shape_of(state: Mapping[str, Tensor], source: str) -> VitShape:
    """The ViT shape a DINO state dict holds (DINO's released files are plain state dicts)."""
    try:
        width = state["cls_token"].shape[-1]
        patch = state["patch_embed.proj.weight"].shape[-1]
        grid = int(round(math.sqrt(state["pos_embed"].shape[1] - 1)))
    except KeyError as exc:
        raise _shape_error(source, "DINO ViT", f"no {exc.args[0]!r} key (first keys: "
                                               f"{', '.join(list(state)[:3])})") from exc
    layers = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    return VitShape(width=int(width), layers=layers, patch=int(patch), grid=grid)


def convert_dino_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """DINO's key names -> ours (transformers ViT under ``vit.``); the fused qkv is split in q, k, v order."""
    out: dict[str, Tensor] = {}
    block_names = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.o_proj",
                   "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    for key, value in state.items():
        if key == "cls_token":
            out["vit.embeddings.cls_token"] = value
        elif key == "pos_embed":
            out["vit.embeddings.position_embeddings"] = value
        elif key.startswith("patch_embed.proj."):
            out["vit.embeddings.patch_embeddings.projection." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("norm."):
            out["vit.layernorm." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("blocks."):
            _, index, rest = key.split(".", 2)
            module, leaf = rest.rsplit(".", 1)
            prefix = f"vit.layers.{index}."
            if module == "attn.qkv":
                for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                    out[f"{prefix}attention.{name}.{leaf}"] = part.contiguous()
            elif module in block_names:
                out[f"{prefix}{block_names[module]}.{leaf}"] = value
            else:
                out[key] = value  # left unconverted: load_strict names it as unexpected
        else:
            out[key] = value
    return out


def load_dino(path: str | Path, expect: VitShape | None = DINO_VITB16) -> DinoViT:
    """DINO ViT from its released state dict (``dino_vitbase16_pretrain.pth``), strictly.

    Args:
        path: the ``.pth`` file (or a safetensors copy of the same keys).
        expect: the shape the file must hold (ViT-B/16 for VBench); None accepts any DINO ``vit_*`` shape.
    """
    source = str(path)
    state = read_state_dict(path, "DINO ViT checkpoint")
    shape = dino_shape_of(state, source)
    if expect is not None and shape != expect:
        raise _shape_error(source, "DINO ViT-B/16", f"it holds a ViT of width {shape.width}, {shape.layers} "
                                                    f"blocks, patch {shape.patch} (expected width {expect.width}, "
                                                    f"{expect.layers} blocks, patch {expect.patch})")
    expected = dino_official_keys(shape)
    _check_keys(state, expected, source, "DINO ViT")
    with _no_init():
        model = DinoViT(shape)
    load_strict(model, convert_dino_state(state), source, "DINO ViT")
    return model


def _check_keys(state: Mapping[str, Tensor], expected: Mapping[str, tuple[int, ...]], source: str,
                network: str) -> None:
    """The released key list, strictly, before any renaming (so errors name the file's own keys)."""
    parts = key_differences(state, expected)
    if parts:
        raise _shape_error(source, network, "; ".join(parts))


# ----- CLIP image tower -----------------------------------------------------------------------------------


class ClipImageTower(nn.Module):
    """CLIP's image encoder: (B, 3, S, S) normalised images -> (B, output_dim) (OpenAI ``encode_image``)."""

    def __init__(self, shape: VitShape) -> None:
        super().__init__()
        self.shape = shape
        config = CLIPVisionConfig(hidden_size=shape.width, intermediate_size=4 * shape.width,
                                  num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                                  image_size=shape.grid * shape.patch, patch_size=shape.patch,
                                  projection_dim=shape.output_dim, hidden_act="quick_gelu", layer_norm_eps=1e-5)
        self.clip = CLIPVisionModelWithProjection(config)
        self.eval()

    def forward(self, pixels: Tensor) -> Tensor:
        return self.clip(pixel_values=pixels).image_embeds


def openai_visual_keys(shape: VitShape) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the image tower in OpenAI CLIP's state dict (``visual.*``, model.py ``VisionTransformer``)."""
    w = shape.width
    keys: dict[str, tuple[int, ...]] = {"visual.class_embedding": (w,),
                                        "visual.positional_embedding": (shape.grid ** 2 + 1, w),
                                        "visual.proj": (w, shape.output_dim),
                                        "visual.conv1.weight": (w, 3, shape.patch, shape.patch),
                                        "visual.ln_pre.weight": (w,), "visual.ln_pre.bias": (w,)}
    for i in range(shape.layers):
        b = f"visual.transformer.resblocks.{i}."
        keys.update({b + "attn.in_proj_weight": (3 * w, w), b + "attn.in_proj_bias": (3 * w,),
                     b + "attn.out_proj.weight": (w, w), b + "attn.out_proj.bias": (w,),
                     b + "ln_1.weight": (w,), b + "ln_1.bias": (w,), b + "mlp.c_fc.weight": (4 * w, w),
                     b + "mlp.c_fc.bias": (4 * w,), b + "mlp.c_proj.weight": (w, 4 * w),
                     b + "mlp.c_proj.bias": (w,), b + "ln_2.weight": (w,), b + "ln_2.bias": (w,)})
    keys.update({"visual.ln_post.weight": (w,), "visual.ln_post.bias": (w,)})
    return keys


def clip_shape_of(state: Mapping[str, Tensor], source: str) -> VitShape:
    """The image tower's shape, read from the state dict as OpenAI's ``build_model`` does."""
    try:
        conv = state["visual.conv1.weight"]
        grid = int(round(math.sqrt(state["visual.positional_embedding"].shape[0] - 1)))
        output_dim = state["visual.proj"].shape[1]
    except KeyError as exc:
        raise _shape_error(source, "CLIP ViT", f"no {exc.args[0]!r} key (a ResNet CLIP or another network? "
                                               f"first keys: {', '.join(list(state)[:3])})") from exc
    layers = len({k.split(".")[3] for k in state if k.startswith("visual.transformer.resblocks.")})
    return VitShape(width=int(conv.shape[0]), layers=layers, patch=int(conv.shape[-1]), grid=grid,
                    output_dim=int(output_dim))


def convert_openai_visual(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """OpenAI CLIP ``visual.*`` keys -> transformers' ``CLIPVisionModelWithProjection`` (under ``clip.``), fp32."""
    out: dict[str, Tensor] = {}
    vm = "clip.vision_model."
    direct = {"visual.class_embedding": vm + "embeddings.class_embedding",
              "visual.positional_embedding": vm + "embeddings.position_embedding.weight",
              "visual.conv1.weight": vm + "embeddings.patch_embedding.weight",
              "visual.ln_pre.weight": vm + "pre_layrnorm.weight", "visual.ln_pre.bias": vm + "pre_layrnorm.bias",
              "visual.ln_post.weight": vm + "post_layernorm.weight",
              "visual.ln_post.bias": vm + "post_layernorm.bias"}
    block_names = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
                   "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    for key, value in state.items():
        value = value.float()  # the OpenAI archives hold fp16
        if key in direct:
            out[direct[key]] = value
        elif key == "visual.proj":  # x @ proj == Linear with weight proj.T
            out["clip.visual_projection.weight"] = value.t().contiguous()
        elif key.startswith("visual.transformer.resblocks."):
            index, rest = key[len("visual.transformer.resblocks."):].split(".", 1)
            prefix = f"{vm}encoder.layers.{index}."
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
                leaf = "weight" if rest.endswith("weight") else "bias"
                for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                    out[f"{prefix}self_attn.{name}.{leaf}"] = part.contiguous()
            else:
                module, leaf = rest.rsplit(".", 1)
                out[f"{prefix}{block_names.get(module, module)}.{leaf}"] = value
        else:
            out[key] = value
    return out


def load_clip_image_tower(path: str | Path, expect: VitShape | None, network: str) -> ClipImageTower:
    """A CLIP image tower from an OpenAI release (TorchScript archive or plain state dict) or from a
    transformers CLIP folder (``config.json`` + weights), strictly; ``expect`` is the variant VBench uses."""
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise CheckpointError(f"{path}: {network} weights not found (a local file is required; nothing is "
                              "downloaded)")
    if path.is_dir():
        state, shape = _read_transformers_clip(path)
    else:
        full = read_torchscript_tensors(path) if is_torchscript_archive(path) else read_state_dict(path, network)
        full = {k[len("module."):] if k.startswith("module.") else k: v for k, v in full.items()}
        shape = clip_shape_of(full, source)
        visual = {k: v for k, v in full.items() if k.startswith("visual.")}
        _check_keys(visual, openai_visual_keys(shape), source, network)
        state = convert_openai_visual(visual)
    if expect is not None and shape != expect:
        raise _shape_error(source, network, f"it holds a CLIP ViT of width {shape.width}, {shape.layers} blocks, "
                                            f"patch {shape.patch}, {shape.grid * shape.patch} px (expected width "
                                            f"{expect.width}, {expect.layers} blocks, patch {expect.patch}, "
                                            f"{expect.grid * expect.patch} px)")
    with _no_init():
        model = ClipImageTower(shape)
    load_strict(model, state, source, network)
    return model


def _read_transformers_clip(folder: Path) -> tuple[dict[str, Tensor], VitShape]:
    config = read_folder_config(folder) or {}
    vision = config.get("vision_config", config)
    try:
        shape = VitShape(width=int(vision["hidden_size"]), layers=int(vision["num_hidden_layers"]),
                         patch=int(vision["patch_size"]), grid=int(vision["image_size"]) // int(vision["patch_size"]),
                         output_dim=int(config.get("projection_dim", vision.get("projection_dim", 512))))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{folder / 'config.json'}: not a transformers CLIP config (needs vision_config "
                              f"with hidden_size, num_hidden_layers, patch_size, image_size; {exc})") from exc
    if vision.get("num_attention_heads", shape.heads) != shape.heads or \
            vision.get("hidden_act", "quick_gelu") != "quick_gelu":
        raise CheckpointError(f"{folder / 'config.json'}: a CLIP vision config other than OpenAI's "
                              f"(heads {vision.get('num_attention_heads')}, act {vision.get('hidden_act')})")
    full = read_state_dict(folder, "transformers CLIP folder")
    state = {"clip." + k: v.float() for k, v in full.items()
             if k.startswith("vision_model.") and not k.endswith("position_ids") or k == "visual_projection.weight"}
    return state, shape


def aesthetic_head(path: str | Path) -> nn.Linear:
    """LAION's aesthetic predictor ``sa_0_4_vit_l_14_linear.pth``: ``nn.Linear(768, 1)`` on the L2-normalised
    CLIP ViT-L/14 image embedding (VBench aesthetic_quality.py ``get_aesthetic_model``), strictly."""
    head = nn.Linear(768, 1)
    load_strict(head, read_state_dict(path, "LAION aesthetic head"), str(path), "LAION aesthetic head (Linear 768->1)")
    return head.eval()


# ----- TorchScript archives read as data ------------------------------------------------------------------


def is_torchscript_archive(path: Path) -> bool:
    """A zip with TorchScript's ``code/`` or ``constants.pkl`` records (``torch.jit.save``), not ``torch.save``."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.split("/", 1)[-1].startswith("code/") or n.endswith("/constants.pkl") for n in names)


class _ScriptObject:
    """An object of a TorchScript class, kept as the attribute dict it was saved with; it runs nothing."""

    def __init__(self, *args: Any) -> None:
        self.attributes: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        self.attributes = dict(state) if isinstance(state, Mapping) else {}


_DTYPES = {"FloatStorage": torch.float32, "HalfStorage": torch.float16, "DoubleStorage": torch.float64,
           "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
           "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
           "BoolStorage": torch.bool}


def _rebuild_tensor(storage: Tensor, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any) -> Tensor:
    return storage.as_strided(tuple(size), tuple(stride), offset).clone()


def _same(value: Any, *_: Any) -> Any:
    return value


def _rebuild_parameter(data: Tensor, *_: Any) -> Tensor:
    return data


class _TensorOnlyUnpickler(pickle.Unpickler):
    # The only names an archive's data.pkl may refer to: tensor rebuilding and TorchScript's list/type tags,
    # each mapped to a function of ours. Anything else (a reduce of an arbitrary callable) is refused.
    _ALLOWED = {("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
                ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
                ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
                ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
                ("collections", "OrderedDict"): OrderedDict,
                ("torch.jit._pickle", "restore_type_tag"): _same,
                **{("torch.jit._pickle", f"build_{kind}list"): _same
                   for kind in ("int", "double", "bool", "tensor")}}

    def __init__(self, file: io.BytesIO, archive: zipfile.ZipFile, prefix: str, source: str) -> None:
        super().__init__(file)
        self.archive, self.prefix, self.source = archive, prefix, source

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__"):
            return _ScriptObject
        if module == "torch" and name in _DTYPES:
            return _DTYPES[name]
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        raise CheckpointError(f"{self.source}: refused to read the TorchScript archive: its data refers to "
                              f"{module}.{name}, which is not a tensor record; {_convert_hint(self.source)}")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self.source}: unexpected record {str(pid)[:80]} in the TorchScript archive")
        dtype, key = pid[1], str(pid[2])
        if not isinstance(dtype, torch.dtype):
            raise CheckpointError(f"{self.source}: storage {key} has an unknown type {dtype!r}")
        data = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
        return torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)


def _convert_hint(source: str) -> str:
    name = Path(source).name
    return (f"convert it once with the reference code: python -c \"import clip, torch; m, _ = clip.load('{name}', "
            f"device='cpu', jit=False); torch.save(m.state_dict(), '{name}')\" (a plain state dict under the same "
            "name is read as data)")


def read_torchscript_tensors(path: str | Path) -> dict[str, Tensor]:
    """The parameters and buffers of a ``torch.jit.save`` archive as a flat state dict, without running it.

    Raises:
        CheckpointError: not a TorchScript zip, or its data refers to anything but tensors and module
            attributes (then the message gives the one-line conversion with the reference code).
    """
    source = str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                raise CheckpointError(f"{source}: not a TorchScript archive (no top-level data.pkl)")
            prefix = pickles[0][: -len("data.pkl")]
            unpickler = _TensorOnlyUnpickler(io.BytesIO(archive.read(pickles[0])), archive, prefix, source)
            root = unpickler.load()
    except (zipfile.BadZipFile, OSError, KeyError, EOFError, pickle.UnpicklingError, ValueError,
            RuntimeError) as exc:
        raise CheckpointError(f"{source}: not a readable TorchScript archive ({type(exc).__name__}: "
                              f"{str(exc)[:160]})") from exc
    state: dict[str, Tensor] = {}

    def walk(obj: Any, prefix: str) -> None:
        for name, value in obj.attributes.items():
            if isinstance(value, Tensor):
                state[prefix + name] = value
            elif isinstance(value, _ScriptObject):
                walk(value, f"{prefix}{name}.")

    if not isinstance(root, _ScriptObject):
        raise CheckpointError(f"{source}: the TorchScript archive's root is {type(root).__name__}, not a module")
    walk(root, "")
    return state


# ----- weights drawn from a seed (test oracles) ------------------------------------------------------------


def seeded_dino_state(shape: VitShape, seed: int) -> dict[str, Tensor]:
    """A DINO-format state dict drawn from ``seed`` at realistic scales: linear weights ~ N(0, 1/fan_in)
    so activations stay O(1) and different images get clearly different CLS features (DINO's own init,
    std 0.02, makes every image's feature nearly the CLS token, cosine ≈ 1)."""
    return _seeded(dino_official_keys(shape), seed)


def seeded_clip_visual_state(shape: VitShape, seed: int) -> dict[str, Tensor]:
    """An OpenAI-format ``visual.*`` state dict drawn from ``seed`` (see :func:`seeded_dino_state`)."""
    return _seeded(openai_visual_keys(shape), seed)


def seeded_aesthetic_state(seed: int) -> dict[str, Tensor]:
    """A LAION-head-format state dict (``weight`` (1, 768), ``bias`` (1,)) drawn from ``seed`` so that unit
    embeddings score around 5 ± 1, LAION's range (its released head scores photos 1-10)."""
    generator = torch.Generator().manual_seed(seed)
    return {"weight": torch.randn((1, 768), generator=generator), "bias": torch.full((1,), 5.0)}


def _seeded(keys: Mapping[str, tuple[int, ...]], seed: int) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, Tensor] = {}
    for key, shape in keys.items():
        noise = torch.randn(shape, generator=generator, dtype=torch.float32)
        leaf = key.rsplit(".", 1)[-1]
        if "norm" in key or "ln_" in key:
            state[key] = (1.0 + 0.1 * noise) if leaf == "weight" else 0.05 * noise
        elif leaf in ("bias", "in_proj_bias"):
            state[key] = 0.05 * noise
        elif len(shape) >= 2 and key.endswith(("weight", "in_proj_weight")):
            fan_in = math.prod(shape[1:])
            state[key] = noise / math.sqrt(fan_in)
        elif key == "visual.proj":
            state[key] = noise / math.sqrt(shape[0])
        else:  # cls token, class / position embeddings
            state[key] = 0.1 * noise
    return state


__all__ = ["CLIP_VITB32", "CLIP_VITL14", "DINO_VITB16", "ClipImageTower", "DinoViT", "VitShape", "aesthetic_head",
           "clip_shape_of", "convert_dino_state", "convert_openai_visual", "dino_official_keys", "dino_shape_of",
           "is_torchscript_archive", "load_clip_image_tower", "load_dino", "openai_visual_keys",
           "read_torchscript_tensors", "seeded_aesthetic_state", "seeded_clip_visual_state", "seeded_dino_state"]
