"""LoRA for every backbone: add, fuse, save and load peft adapters, with trainable weights in float32.

One adapter (peft's ``"default"``) per wrapped module (the SVD UNet, each Wan expert, the toy UNet). Modules
with diffusers' ``PeftAdapterMixin`` (Wan, toy) get it through their own ``add_adapter`` / ``fuse_lora`` /
``unload_lora``; the SVD UNet has no such mixin in diffusers 0.42, so it goes through peft directly (what
``add_adapter`` does inside).

Precision: peft creates adapter weights in the dtype of the layer they wrap (``inject_adapter_in_model`` does
not upcast; only ``PeftModel`` does, via ``autocast_adapter_dtype``). With a bf16 base that makes the LoRA
and its AdamW state bf16, where an update of lr·1 = 1e-5 is below half an ulp of most entries and is rounded
away. So :func:`add_lora` casts the adapter to float32 (peft's ``cast_adapter_dtype``) before any optimizer
sees it; peft's LoRA layers cast their input to the adapter dtype and the sum back to the base dtype.

Files: safetensors in the diffusers/peft key format — ``<prefix>.<module>.lora_A.weight`` /
``lora_B.weight`` — with the ``LoraConfig`` as JSON under the ``lora_adapter_metadata`` header key (keys
prefixed the same way), which is what diffusers' ``save_lora_weights`` writes and ``lora_state_dict`` reads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from shiftvdm.errors import CheckpointError, ConfigError
from shiftvdm.utils.checkpoint import save_safetensors
from shiftvdm.utils.finite import check_loaded_finite

ADAPTER = "default"
LORA_METADATA_KEY = "lora_adapter_metadata"  # diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY
Init = Literal["gaussian", "kaiming"]


def has_lora(module: nn.Module) -> bool:
    return bool(getattr(module, "peft_config", None))


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    return [p for n, p in module.named_parameters() if "lora_" in n]


def lora_config(module: nn.Module) -> Any:
    """The attached ``LoraConfig``."""
    return module.peft_config[ADAPTER]


def add_lora(module: nn.Module, rank: int, alpha: float, target_modules: str | list[str], *,
             generator: torch.Generator, init: Init = "gaussian") -> None:
    """Wrap ``target_modules`` of ``module`` with a fresh float32 LoRA and freeze every other weight.

    Args:
        rank: r. alpha: lora_alpha (the update is scaled by alpha / r).
        target_modules: a regex matched against full module names, or a list of module-name suffixes.
        generator: draws lora_A (on CPU); lora_B starts at zero, so the model's output is unchanged.
        init: ``gaussian`` A ~ N(0, 1/r²) (the reference's and peft's "gaussian"), or ``kaiming`` (peft's
            default: kaiming-uniform with a = √5).

    Raises:
        ConfigError: the targets match no module.
    """
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.tuners_utils import cast_adapter_dtype

    if has_lora(module):
        raise ValueError(f"add_lora: {type(module).__name__} already has a LoRA; fuse_lora() it before adding another")
    config = LoraConfig(r=int(rank), lora_alpha=alpha, target_modules=target_modules, init_lora_weights=False)
    devices = [module_device(module)] if module_device(module).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # layer construction draws from the global RNG: leave it alone
        try:
            if hasattr(module, "add_adapter"):  # diffusers' PeftAdapterMixin
                module.add_adapter(config, adapter_name=ADAPTER)
            else:
                inject_adapter_in_model(config, module, adapter_name=ADAPTER)
        except ValueError as exc:  # peft: "Target modules ... not found in the base model"
            raise ConfigError(f"lora target_modules {target_modules!r} match no module of the "
                              f"{type(module).__name__} ({exc})") from exc
    cast_adapter_dtype(module, adapter_name=ADAPTER)  # bf16/fp16 adapter weights -> float32
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "lora_A" in name:
                weight = torch.empty(param.shape, dtype=torch.float32)
                if init == "gaussian":
                    weight.normal_(0.0, 1.0 / rank, generator=generator)
                else:
                    nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
                param.copy_(weight)
            elif "lora_B" in name:
                param.zero_()
            param.requires_grad_("lora_" in name)


def fuse_lora(module: nn.Module) -> None:
    """Merge W ← W + (α/r)·B·A into every wrapped layer and put the plain layers back (adapter dropped)."""
    from peft.tuners.lora import LoraLayer

    if not has_lora(module):
        raise ValueError(f"fuse_lora: {type(module).__name__} has no LoRA")
    if hasattr(module, "fuse_lora") and hasattr(module, "unload_lora"):  # diffusers' PeftAdapterMixin
        module.fuse_lora(safe_fusing=True)
        module.unload_lora()  # keeps the merged base layers
        return
    for name, layer in list(module.named_modules()):
        if isinstance(layer, LoraLayer):
            layer.merge(safe_merge=True)
            parent_name, _, child = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            parent._modules[child] = layer.get_base_layer()
    del module.peft_config


def lora_state(module: nn.Module, prefix: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors, LoraConfig dict) of ``module``'s adapter, keys prefixed ``<prefix>.`` (none for "")."""
    from peft.utils import get_peft_model_state_dict

    if not has_lora(module):
        raise ValueError(f"save_lora: {type(module).__name__} has no LoRA (call add_lora or load_lora first)")
    head = f"{prefix}." if prefix else ""
    tensors = {head + k: v for k, v in get_peft_model_state_dict(module, adapter_name=ADAPTER).items()}
    spec = {head + k: (sorted(v) if isinstance(v, (set, frozenset)) else v)
            for k, v in lora_config(module).to_dict().items()}
    return tensors, spec


def save_lora(module: nn.Module, path: str | Path, prefix: str) -> None:
    """Write ``module``'s LoRA to ``path`` (.safetensors) in the diffusers/peft format (module docstring)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: a LoRA file must end in .safetensors")
    tensors, spec = lora_state(module, prefix)
    metadata = {"format": "pt", LORA_METADATA_KEY: json.dumps(spec, indent=2, sort_keys=True, default=str)}
    save_safetensors(tensors, path, metadata=metadata)


def read_lora(path: str | Path, prefix: str,
              reader: Callable[[Path], tuple[dict[str, Tensor], dict | None]] | None = None
              ) -> tuple[dict[str, Tensor], int, float, str | list[str]]:
    """(state without the prefix, rank, alpha, target_modules) of a LoRA file.

    ``reader`` (path -> tensors, metadata dict) lets a backbone use diffusers' own ``lora_state_dict``, which
    also converts other published key formats; the default reads our files. Without metadata the rank comes
    from the weights, alpha = rank and the targets are exactly the modules the file has weights for.

    Raises:
        CheckpointError: the file is missing, unreadable, has no ``<prefix>`` LoRA weights or mixed ranks.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: LoRA file not found")
    try:
        tensors, metadata = (reader or _read_file)(path)
    except CheckpointError:
        raise
    except Exception as exc:  # safetensors and diffusers' key converters raise several types
        raise CheckpointError(f"{path}: not a readable LoRA safetensors file ({exc})") from exc
    head = f"{prefix}." if prefix else ""
    state = {k[len(head):]: v for k, v in tensors.items() if k.startswith(head) and "lora_" in k}
    if not state:
        raise CheckpointError(f"{path}: no LoRA weights (expected keys '{head}<module>.lora_A.weight')")
    check_loaded_finite(state, path, "LoRA weights")
    spec = {k[len(head):]: v for k, v in (metadata or {}).items() if k.startswith(head)}
    if spec.get("r"):
        rank = int(spec["r"])  # a tensor of another shape is then refused by load_lora_state, naming the file
    else:
        ranks = {int(v.shape[0]) for k, v in state.items() if k.endswith("lora_A.weight")}
        if len(ranks) != 1:
            raise CheckpointError(f"{path}: expected one LoRA rank, found {sorted(ranks)}")
        rank = ranks.pop()
    alpha = float(spec.get("lora_alpha") or rank)
    targets = spec.get("target_modules") or sorted({k.split(".lora_")[0] for k in state})
    return state, rank, alpha, targets


def load_lora_state(module: nn.Module, state: dict[str, Tensor], source: str | Path) -> None:
    """Copy LoRA weights into ``module``'s attached adapter, strictly: a missing, unexpected or misshapen
    key is a CheckpointError naming ``source``. The adapter keeps its dtype (float32)."""
    from peft import set_peft_model_state_dict

    try:
        result = set_peft_model_state_dict(module, state, adapter_name=ADAPTER)
    except RuntimeError as exc:  # shape mismatches from load_state_dict
        raise CheckpointError(f"{source}: LoRA weights do not fit this model ({exc})") from exc
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    unexpected = list(getattr(result, "unexpected_keys", []))
    if missing or unexpected:
        raise CheckpointError(f"{source}: LoRA keys do not match the model (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")


def load_lora(module: nn.Module, path: str | Path, prefix: str, *, reader: Callable | None = None) -> tuple[int, float]:
    """Load a LoRA file into ``module``, adding the adapter (rank, alpha, targets from the file) when there is
    none. Returns (rank, alpha).

    Raises:
        CheckpointError: see :func:`read_lora`; also a rank that differs from the attached adapter's, targets
            that match no module, or keys that do not fit (all name the file).
    """
    state, rank, alpha, targets = read_lora(path, prefix, reader)
    if not has_lora(module):
        try:
            # the init is overwritten by the file's weights right below
            add_lora(module, rank, alpha, targets, generator=torch.Generator().manual_seed(0))
        except ConfigError as exc:
            raise CheckpointError(f"{path}: its LoRA targets do not fit this model ({exc})") from exc
    elif lora_config(module).r != rank:
        raise CheckpointError(f"{path}: LoRA rank {rank} differs from the attached adapter's {lora_config(module).r}")
    load_lora_state(module, state, path)
    return rank, alpha


def module_device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _read_file(path: Path) -> tuple[dict[str, Tensor], dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata() or {}
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    metadata: dict = {}
    if LORA_METADATA_KEY in header:
        try:
            metadata = json.loads(header[LORA_METADATA_KEY])
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{path}: malformed {LORA_METADATA_KEY} header ({exc})") from exc
    return tensors, metadata
