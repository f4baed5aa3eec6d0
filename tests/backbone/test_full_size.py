"""backbone/full_size.py: the real architectures from the shipped configs, without weights (the dry run's base).

What a user relies on: the shipped configs are read (and an unknown architecture or component refused by
name); a preset's backbone maps to its architecture; the counts and bytes the memory plan prints are exact
(LoRA r·(in+out) per targeted Linear; bf16 except the modules the libraries keep in fp32); materialised
weights are seeded, in the asked dtype, with zero biases and unit norm scales; a stored conditioning's size
follows the config. The full-size parameter counts themselves are pinned in tests/recipes/test_dry_run.py.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from shiftvdm.backbone import full_size as fs
from shiftvdm.errors import ConfigError
from support import write_tiny_architectures


def test_architecture_config_reads_the_shipped_json_without_private_keys():
    unet = fs.architecture_config("svd_xt", "unet")
    assert unet["num_frames"] == 25 and unet["in_channels"] == 8  # SVD-XT: 25 frames, latent + image latent
    assert not any(k.startswith("_") for k in unet)
    assert fs.architecture_config("wan22_ti2v_5b", "text_encoder")["d_model"] == 4096
    with pytest.raises(ConfigError, match="unknown architecture 'svd'; expected one of svd_xt, wan22_ti2v_5b"):
        fs.architecture_config("svd", "unet")
    with pytest.raises(ConfigError, match=r"svd_xt/transformer/config.json: no shipped config for component "
                                          r"'transformer' of svd_xt"):
        fs.architecture_config("svd_xt", "transformer")


def test_a_presets_backbone_maps_to_its_architecture():
    assert fs.architecture_for("svd", {}) == "svd_xt"
    assert fs.architecture_for("wan", {"layout": "ti2v"}) == "wan22_ti2v_5b"
    assert fs.architecture_for("wan", {"layout": "i2v_a14b"}) == "wan22_i2v_a14b"
    with pytest.raises(ConfigError, match=r"backbone.options.layout='auto'"):
        fs.architecture_for("wan", {})
    with pytest.raises(ConfigError, match=r"backbone.name='toy'"):
        fs.architecture_for("toy", {})
    assert fs.family_options("svd_xt", {"dtype": "bfloat16"}) == ("svd", {"dtype": "bfloat16"})
    assert fs.family_options("wan22_i2v_a14b", {"layout": "auto", "x": 1}) == ("wan", {"layout": "i2v_a14b", "x": 1})


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.to_q, self.to_k = nn.Linear(8, 16), nn.Linear(8, 4, bias=False)
        self.norm = nn.LayerNorm(16)
        self.proj = nn.Linear(16, 8)


class Model(nn.Module):
    _keep_in_fp32_modules = ["norm"]  # a diffusers-style model: kept in fp32 whatever the dtype

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(), Block()])


def test_lora_and_parameter_counts_are_exact():
    model = Model()
    per_block = (8 * 16 + 16) + 8 * 4 + 2 * 16 + (16 * 8 + 8)
    assert fs.parameter_count(model) == 2 * per_block
    r = 4
    assert fs.lora_parameter_count(model, r, ["to_q", "to_k"]) == 2 * r * ((8 + 16) + (8 + 4))
    assert fs.lora_parameter_count(model, r, r"blocks\.0\.(to_q|proj)") == r * ((8 + 16) + (16 + 8))  # a regex
    assert fs.lora_parameter_count(model, r, ["norm"]) == 0  # not a Linear


def test_component_bytes_keep_the_fp32_modules_in_fp32():
    model = Model()
    n = fs.parameter_count(model)
    norm = sum(p.numel() for name, p in model.named_parameters() if ".norm." in name)
    assert fs.component_bytes(model, torch.float32) == 4 * n
    assert fs.component_bytes(model, torch.bfloat16) == 2 * (n - norm) + 4 * norm

    class TransformersStyle(Model):  # transformers: the strict list for bf16, both lists for fp16
        _keep_in_fp32_modules = ["to_k"]
        _keep_in_fp32_modules_strict = ["norm"]

    t = TransformersStyle()
    to_k = sum(p.numel() for name, p in t.named_parameters() if ".to_k." in name)
    assert fs.component_bytes(t, torch.bfloat16) == 2 * (n - norm) + 4 * norm
    assert fs.component_bytes(t, torch.float16) == 2 * (n - norm - to_k) + 4 * (norm + to_k)


def test_materialize_fills_meta_weights_seeded_in_the_asked_dtype():
    def built(seed: int) -> Model:
        with torch.device("meta"):
            model = Model()
        assert all(p.is_meta for p in model.parameters())
        return fs.materialize_(model, torch.bfloat16, seed)

    a, b, c = built(3), built(3), built(4)
    assert not any(p.is_meta for p in a.parameters())
    block = a.blocks[0]
    assert block.to_q.weight.dtype == torch.bfloat16 and block.norm.weight.dtype == torch.float32  # kept fp32
    assert torch.equal(block.to_q.bias, torch.zeros(16, dtype=torch.bfloat16))
    assert torch.equal(block.norm.weight, torch.ones(16)) and torch.equal(block.norm.bias, torch.zeros(16))
    assert all(not p.requires_grad for p in a.parameters())  # frozen base weights
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))  # seeded
    assert not torch.equal(a.blocks[0].to_q.weight, c.blocks[0].to_q.weight)
    with torch.device("meta"):
        big = nn.Linear(400, 300)
    std = fs.materialize_(big, torch.float32, 0).weight.std().item()
    assert std == pytest.approx(400 ** -0.5, rel=0.05)  # N(0, 1/fan_in)


def test_conditioning_bytes_follow_the_shipped_configs():
    h, w = 320, 576
    assert fs.conditioning_bytes("svd_xt", {}, h, w) == 4 * 3 * h * w + 4 * 1024  # frame + CLIP embedding
    text = 2 * 2 * 512 * 4096  # prompt and negative prompt, bf16, 512 tokens of UMT5-XXL width
    assert fs.conditioning_bytes("wan22_i2v_a14b", {}, h, w) == 4 * 3 * h * w + text
    assert fs.conditioning_bytes("wan22_ti2v_5b", {"max_sequence_length": 64}, h, w) == \
        4 * 3 * h * w + 2 * 2 * 64 * 4096 + 4 * 48 * (h // 16) * (w // 16)  # + TI2V's first-frame latent


def test_the_random_text_encoder_has_the_width_dtype_and_fixed_vectors():
    enc = fs.RandomTextEncoder(vocab_size=50, d_model=12, dtype=torch.bfloat16, seed=1)
    ids = torch.tensor([[3, 7, 3, 0]])
    out = enc(ids).last_hidden_state
    assert out.shape == (1, 4, 12) and out.dtype == torch.bfloat16 == enc.dtype and enc.config.d_model == 12
    assert torch.equal(out[0, 0], out[0, 2])  # one fixed vector per token id
    again = fs.RandomTextEncoder(50, 12, torch.bfloat16, seed=1)(ids).last_hidden_state
    assert torch.equal(out, again)
    assert not any(p.requires_grad for p in enc.parameters())


@pytest.fixture(scope="module")
def tiny_svd_root(tmp_path_factory) -> Path:
    """An architecture folder with a tiny SVD-XT (backbone/tiny.py's components' configs)."""

    return write_tiny_architectures(tmp_path_factory.mktemp("arch"), wan=False)


@pytest.fixture(scope="module")
def tiny_svd_meta(tiny_svd_root) -> dict[str, nn.Module]:
    return fs.build_on_meta("svd_xt", tiny_svd_root)


def test_summary_on_meta_counts_every_component_and_the_lora(tiny_svd_root, tiny_svd_meta):
    meta = tiny_svd_meta
    assert set(meta) == {"unet", "vae", "image_encoder"}
    assert all(p.is_meta for m in meta.values() for p in m.parameters())
    lora = SimpleNamespace(enabled=True, rank=2, targets=["to_q", "to_v"])
    s = fs.summarize_on_meta("svd_xt", {"dtype": "bfloat16"}, lora, tiny_svd_root)
    assert s.parameters == {name: fs.parameter_count(m) for name, m in meta.items()}
    assert s.lora_parameters == fs.lora_parameter_count(meta["unet"], 2, ["to_q", "to_v"]) > 0
    assert s.part_dtype == {"unet": "bfloat16", "vae": "bfloat16", "image_encoder": "bfloat16"} and s.dtype == "bfloat16"
    assert s.part_bytes["image_encoder"] == fs.component_bytes(meta["image_encoder"], torch.bfloat16)
    assert len(s.lines()) == 4 and "LoRA r=2" in s.lines()[-1]
    off = fs.summarize_on_meta("svd_xt", {}, SimpleNamespace(enabled=False, rank=2, targets=None), tiny_svd_root)
    assert off.lora_parameters == 0 and off.part_bytes["unet"] == 4 * off.parameters["unet"]  # float32 default


def test_build_backbone_materialises_the_architecture(tiny_svd_root, tiny_svd_meta):
    a = fs.build_backbone("svd_xt", {"dtype": "bfloat16"}, (4, 32, 32), seed=5, root=tiny_svd_root)
    assert a.video_shape == (4, 32, 32)
    assert fs.parameter_count(a.denoiser) == fs.parameter_count(tiny_svd_meta["unet"])
    params = dict(a.denoiser.named_parameters())
    assert not any(p.is_meta for p in params.values())
    assert {p.dtype for p in params.values()} == {torch.bfloat16}  # the preset's dtype (the UNet keeps none in fp32)
    assert all(not p.any() for n, p in params.items() if n.endswith(".bias"))  # biases 0, weights seeded random
    assert params["conv_in.weight"].float().std() > 0
