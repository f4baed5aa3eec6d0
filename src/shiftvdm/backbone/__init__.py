"""Backbones: one module per model family, all behind the Backbone protocol (backbone/base.py).

Every backbone module provides a config dataclass, ``from_pretrained(path, config, given)`` (a
diffusers-format folder; ``given`` names the options the user set) and ``latent_layout(options)`` (its latents'
shape per clip, a :class:`~shiftvdm.backbone.base.LatentLayout`, for the memory plan). Random init (to pre-train the tiny CPU
models from scratch) is the tiny preset of each family, built in backbone/tiny.py. The registry maps a short
name to the module and builds every family the same way.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from shiftvdm.backbone.base import Backbone, Condition, LatentLayout, NoiseDraw
from shiftvdm.config import config_from_dict
from shiftvdm.errors import CheckpointError, ConfigError
from shiftvdm.utils.finite import check_loaded_finite

# name -> (module, config dataclass name)
BACKBONES: dict[str, tuple[str, str]] = {
    "svd": ("shiftvdm.backbone.svd", "SVDConfig"),
    "wan": ("shiftvdm.backbone.wan", "WanConfig"),
    "toy": ("shiftvdm.backbone.toy", "ToyConfig"),
}

# model_index.json `_class_name` (or config.json `_class_name`) -> backbone name
_CLASS_TO_BACKBONE = {
    "StableVideoDiffusionPipeline": "svd",
    "WanImageToVideoPipeline": "wan",
    "WanPipeline": "wan",
    "ToyVideoUNet": "toy",
}


@dataclass
class BackboneConfig:
    name: Literal["svd", "wan", "toy"] = "svd"  # model family (svd: EDM/UNet; wan: flow matching; toy: CPU demo)
    pretrained: str | None = None  # diffusers-format folder; None = random init from `options` (pre-training)
    options: dict[str, Any] = field(default_factory=dict)  # fields of the family's config (SVDConfig, WanConfig, ToyConfig)


def backbone_module(name: str) -> Any:
    if name not in BACKBONES:
        raise ConfigError(f"backbone.name: unknown backbone {name!r}; expected one of {', '.join(BACKBONES)}")
    return importlib.import_module(BACKBONES[name][0])


def backbone_config(name: str, options: dict[str, Any], source: str = "backbone.options") -> Any:
    """The family's own config dataclass built strictly from ``options``."""
    module = backbone_module(name)
    cls = getattr(module, BACKBONES[name][1])
    valid = {f.name for f in fields(cls)}
    unknown = [k for k in options if k not in valid]
    if unknown:
        import difflib

        msgs = []
        for k in unknown:
            close = difflib.get_close_matches(k, valid, n=1)
            msgs.append(f"backbone.options.{k}: unknown option for backbone {name!r}"
                        + (f"; did you mean `{close[0]}`?" if close else ""))
        raise ConfigError("\n".join(msgs))
    return config_from_dict(cls, options, source)


def latent_layout(name: str, options: dict[str, Any]) -> LatentLayout:
    """The latent layout of backbone family ``name`` with ``options`` (the family module's ``latent_layout``)."""
    return backbone_module(name).latent_layout(dict(options))


TINY_PRESETS = ("tiny", "tiny-pixel")  # `backbone.pretrained` values that build a random-init tiny SVD


def load_backbone(cfg: BackboneConfig) -> Backbone:
    """Build the backbone a config describes: a model folder, or a random-init tiny preset
    (``pretrained: null`` for the toy/Wan presets, ``tiny`` / ``tiny-pixel`` for SVD).

    Every option in ``cfg.options`` is applied or refused: an unknown one is a ConfigError naming it, and a
    folder's own settings (the toy model's sampler, say) give way to the options given.
    """
    options = dict(cfg.options)
    if "pretrained_path" in options:  # one place names the folder: a second one would be silently overridden
        raise ConfigError(f"backbone.options.pretrained_path: give the model folder as backbone.pretrained "
                          f"(got {options['pretrained_path']!r} here and {cfg.pretrained!r} there)")
    config = backbone_config(cfg.name, options)
    if cfg.pretrained is None or cfg.pretrained in TINY_PRESETS:
        # kept lazy: tiny.py imports every family module (diffusers' SVD and Wan models), which this registry
        # otherwise imports only for the family a config names (backbone_module)
        from shiftvdm.backbone.tiny import random_init

        backbone = random_init(cfg.name, config, cfg.pretrained)
        check_loaded_finite(backbone, f"the {cfg.pretrained or 'random-init'} {cfg.name} backbone")
        return backbone
    path = Path(cfg.pretrained)
    if not path.is_dir():
        raise CheckpointError(f"backbone.pretrained: {path.absolute()} is not a folder (expected a diffusers-format "
                              "model folder)")
    backbone = backbone_module(cfg.name).from_pretrained(path, config, given=set(options))
    check_loaded_finite(backbone, path)  # a damaged file can parse and hold NaN (names the file and tensor)
    return backbone


def detect_backbone(path: str | Path) -> str:
    """The backbone family of a saved model folder, from its model_index.json or config.json."""
    path = Path(path)
    for name in ("model_index.json", "config.json"):
        file = path / name
        if file.is_file():
            try:
                cls = json.loads(file.read_text()).get("_class_name", "")
            except json.JSONDecodeError as exc:
                raise CheckpointError(f"{file}: invalid JSON ({exc})") from exc
            if cls in _CLASS_TO_BACKBONE:
                return _CLASS_TO_BACKBONE[cls]
            raise CheckpointError(f"{file}: unsupported model class {cls!r}; expected one of {', '.join(_CLASS_TO_BACKBONE)}")
    if not path.exists():
        raise CheckpointError(f"{path}: model folder not found")
    raise CheckpointError(f"{path}: not a model folder (no model_index.json or config.json)")


def load_backbone_from_path(path: str | Path, **options: Any) -> Backbone:
    """Load a saved model folder of any family; ``options`` override fields of the family's config."""
    name = detect_backbone(path)
    return load_backbone(BackboneConfig(name=name, pretrained=str(path), options=options))


__all__ = ["BACKBONES", "Backbone", "BackboneConfig", "Condition", "LatentLayout", "NoiseDraw", "backbone_config",
           "detect_backbone", "latent_layout", "load_backbone", "load_backbone_from_path"]
