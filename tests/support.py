"""Test support shared by tests/ (and benchmarks/): tiny toy backbones and "pre-trained-like" weights.

Importable from any test module (``from support import ...``; pytest puts tests/ on ``sys.path`` with
``conftest.py``), and from benchmarks after ``sys.path.insert(0, <repo>/tests)``. The pytest fixtures built
on these live in ``conftest.py``.

Why the filling: a freshly built toy UNet (and a fresh LoRA) has zero-initialised layers — the output conv,
the GroupNorm biases, every ``lora_B``. With a zero output conv no gradient reaches any LoRA matrix, and with
zero ``lora_B`` the adapter changes nothing, so gradient and "the LoRA changed the output" checks would pass
trivially. :func:`fill_zero_init` gives those tensors small random values, as pre-training would have.
"""

from __future__ import annotations

import json

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shiftvdm.backbone.toy import ToyBackbone, ToyConfig

# The toy UNet the trainer tests (SHIFT loop, golden losses, recipes, multi-process runs) use.
TOY_TRAIN: dict[str, Any] = {"num_frames": 4, "size": 16, "block_out_channels": (16, 16), "layers_per_block": 1,
                             "num_mid_blocks": 1, "mid_attention": False}
# The smaller one the backbone-contract, precision and sampling tests use (8- and 16-channel levels).
TOY_SMALL: dict[str, Any] = {"num_frames": 4, "size": 16, "block_out_channels": (8, 16), "layers_per_block": 1,
                             "num_mid_blocks": 1, "norm_num_groups": 4, "num_fourier_freqs": 4,
                             "attention_head_dim": 8, "sigma_data": 0.3}


@torch.no_grad()
def fill_zero_init(target: nn.Module | Iterable[torch.Tensor], *, std: float = 0.05, seed: int = 0,
                   only: str | None = None, reseed_each: bool = False):
    """Give every all-zero parameter of ``target`` N(0, std²) values, in parameter order; returns ``target``.

    ``target`` is a module (its ``named_parameters()``) or an iterable of tensors (e.g. a backbone's
    ``trainable_parameters()``); ``only`` keeps the parameters whose name contains it (modules only), e.g.
    ``"conv_out"`` or ``"lora_B"``. Tensors that are not all zero are left alone.

    Draws: one ``torch.Generator`` seeded ``seed`` walks the tensors in order (``torch.randn(shape) * std``,
    cast to the parameter's dtype). ``reseed_each`` instead draws each tensor with ``normal_`` from a fresh
    generator seeded ``seed`` — how the multi-process tests' saved base model was made; kept so its weights
    stay bit-identical.
    """
    if isinstance(target, nn.Module):
        named = list(target.named_parameters())
    else:
        if only is not None:
            raise ValueError("fill_zero_init: `only` filters by parameter name and needs a module")
        named = [(str(i), p) for i, p in enumerate(target)]
    gen = torch.Generator().manual_seed(seed)
    for name, param in named:
        if (only is not None and only not in name) or param.any():
            continue
        if reseed_each:
            param.normal_(0, std, generator=torch.Generator().manual_seed(seed))
        else:
            param.copy_(torch.randn(param.shape, generator=gen) * std)
    return target


def pretrained_toy(*, std: float = 0.05, seed: int = 0, only: str | None = None, reseed_each: bool = False,
                   **options: Any) -> ToyBackbone:
    """A toy backbone (``TOY_TRAIN`` updated by ``options``) whose zero-initialised layers are filled."""
    backbone = ToyBackbone(ToyConfig(**{**TOY_TRAIN, **options}))
    fill_zero_init(backbone.denoiser, std=std, seed=seed, only=only, reseed_each=reseed_each)
    return backbone


def save_pretrained_toy(path: str | Path, **options: Any) -> Path:
    """The base model folder of the multi-process and CLI training tests: ``TOY_TRAIN`` with 2 sampling steps
    (``options`` override), zero layers filled (``reseed_each``), saved with ``save_pretrained``."""
    toy = pretrained_toy(reseed_each=True, **{"num_inference_steps": 2, **options})
    toy.save_pretrained(Path(path))
    return Path(path)


def small_toy(*, seed: int = 1, **options: Any) -> ToyBackbone:
    """``TOY_SMALL`` (updated by ``options``) with its zero output conv weight filled (std 0.05, ``seed``):
    gradients then reach every layer and the LoRA."""
    backbone = ToyBackbone(ToyConfig(**{**TOY_SMALL, **options}))
    fill_zero_init(backbone.denoiser, std=0.05, seed=seed, only="conv_out.weight")
    return backbone


def tiny_backbone(name: str, **options: Any):
    """A random-init tiny float32 backbone of family ``name`` ("svd", "wan" or "toy") whose LoRA receives gradients:
    4 frames, 2 sampling steps (SVD: latent preset, 32×32; Wan: the TI2V preset, 4 clips per sampling batch; toy:
    :func:`small_toy`). ``options`` override fields of the family's config. No LoRA yet."""
    if name == "svd":
        from shiftvdm.backbone.svd import SVDConfig
        from shiftvdm.backbone.tiny import tiny_svd_backbone

        return tiny_svd_backbone(SVDConfig(**{"num_frames": 4, "height": 32, "width": 32, "num_inference_steps": 2,
                                              **options}))
    if name == "wan":
        from shiftvdm.backbone.tiny import tiny_wan_backbone
        from shiftvdm.backbone.wan import WanConfig

        return tiny_wan_backbone(WanConfig(**{"layout": "ti2v", "dtype": "float32", "num_inference_steps": 2,
                                              "sample_batch_size": 4, **options}))
    if name == "toy":
        return small_toy(**{"num_inference_steps": 2, **options})
    raise ValueError(f"tiny_backbone: unknown family {name!r}; expected svd, wan or toy")


def base_weights(backbone) -> dict[str, torch.Tensor]:
    """Copies of every non-LoRA parameter of ``backbone.denoiser``, by name (for bit-identity checks)."""
    return {n: p.detach().clone() for n, p in backbone.denoiser.named_parameters() if "lora_" not in n}


def lora_weights(backbone) -> dict[str, torch.Tensor]:
    """Copies of every LoRA parameter of ``backbone.denoiser``, by name."""
    return {n: p.detach().clone() for n, p in backbone.denoiser.named_parameters() if "lora_" in n}


__all__ = ["TOY_SMALL", "TOY_TRAIN", "base_weights", "fill_zero_init", "lora_weights", "pretrained_toy",
           "save_pretrained_toy", "small_toy", "tiny_backbone"]


def write_tiny_architectures(root: Path, *, wan: bool = True) -> Path:
    """``root`` laid out like backbone/configs/ (svd_xt/, and wan22_ti2v_5b/ with ``wan``), holding the configs
    of backbone/tiny.py's components: the dry run and the full-size builder read them as they read the shipped
    full-size ones."""
    from shiftvdm.backbone.tiny import tiny_svd_components, tiny_wan_components

    def write(path: Path, data: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({k: v for k, v in data.items() if not k.startswith("_")}, default=list))

    svd = tiny_svd_components(seed=0, num_frames=4)
    write(root / "svd_xt/unet/config.json", dict(svd["unet"].config))
    write(root / "svd_xt/vae/config.json", dict(svd["vae"].config))
    write(root / "svd_xt/image_encoder/config.json", svd["image_encoder"].config.to_dict())
    write(root / "svd_xt/feature_extractor/preprocessor_config.json", svd["feature_extractor"].to_dict())
    write(root / "svd_xt/scheduler/scheduler_config.json", dict(svd["scheduler"].config))
    write(root / "svd_xt/model_index.json", {})
    if wan:
        w = tiny_wan_components("ti2v", seed=0)
        write(root / "wan22_ti2v_5b/transformer/config.json", dict(w["transformer"].config))
        write(root / "wan22_ti2v_5b/vae/config.json", dict(w["vae"].config))
        write(root / "wan22_ti2v_5b/text_encoder/config.json", w["text_encoder"].config.to_dict())
        write(root / "wan22_ti2v_5b/scheduler/scheduler_config.json", dict(w["scheduler"].config))
        write(root / "wan22_ti2v_5b/model_index.json", {"expand_timesteps": True})
    return root
