"""VBench++ i2v_background (issue 30 item 3): the DreamSim ensemble from its released formats, loaded strictly,
golden parity with the official code (ssundaram21/dreamsim v0.2.1 ``dreamsim(pretrained=True)`` reading
seeded files in its cache layout, VBench@45e79ec's ``dreamsim_transform`` and ``i2v_background`` rule, run in a
throwaway environment; outputs in tests/fixtures/vbench/dreamsim_golden.npz), and the rule on hand-built clips."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from shiftvdm.errors import CheckpointError, DataError
from shiftvdm.eval.dreamsim import (
    CLIP_VITB16,
    DreamSim,
    convert_dreamsim_clip,
    dreamsim_clip_keys,
    dreamsim_lora_keys,
    load_dreamsim,
    seeded_dreamsim_clip_state,
    seeded_lora_state,
)
from shiftvdm.eval.vbench_dimensions import (
    VBENCH_DIMENSIONS,
    I2VBackgroundScorer,
    dreamsim_frames,
    dreamsim_image,
)
from shiftvdm.eval.vbench_networks import (
    DINO_VITB16,
    VitShape,
    convert_dino_state,
    dino_official_keys,
    seeded_dino_state,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "vbench"
# the golden run's shapes: every branch at width 128 (2 heads) with ViT-B's 12 blocks (dreamsim reads block 11)
DINO_SMALL = VitShape(width=128, layers=12, patch=16, grid=14)
CLIP_SMALL = VitShape(width=128, layers=12, patch=16, grid=14, output_dim=32)
SEEDS = {"dino": 31, "clip": 32, "open_clip": 33, "lora": 34}
# dreamsim's ensemble adapter_config.json, the fields that set the function (r 16, alpha 0.5: scaling 1/32)
LORA_CONFIG = {"peft_type": "LORA", "r": 16, "lora_alpha": 0.5, "lora_dropout": 0.3, "bias": "none",
               "target_modules": ["qkv"], "fan_in_fan_out": False}


def listing(name: str) -> list[tuple[str, tuple[int, ...]]]:
    rows = [line.split("\t") for line in (FIXTURES / name).read_text().splitlines() if line.strip()]
    return [(row[0], tuple(int(d) for d in row[1].strip("()").split(",") if d.strip())) for row in rows]


def write_release(root: Path, lora_config: dict | None = None) -> dict[str, Path]:
    """Seeded files in dreamsim's released layout (the golden run read the same files)."""
    paths = {"dino": root / "dino_vitbase16_pretrain.pth", "clip": root / "clip_vitb16_pretrain.pth.tar",
             "open_clip": root / "open_clip_vitb16_pretrain.pth.tar", "lora": root / "ensemble_lora" / "adapter_model.bin"}
    torch.save(seeded_dino_state(DINO_SMALL, SEEDS["dino"]), paths["dino"])
    for branch in ("clip", "open_clip"):
        torch.save({"state_dict": seeded_dreamsim_clip_state(CLIP_SMALL, SEEDS[branch])}, paths[branch])
    paths["lora"].parent.mkdir()
    torch.save(seeded_lora_state(16, (128,) * 3, (12,) * 3, SEEDS["lora"]), paths["lora"])
    (paths["lora"].parent / "adapter_config.json").write_text(json.dumps(lora_config or LORA_CONFIG))
    return paths


def load(paths: dict[str, Path], **kwargs) -> DreamSim:
    return load_dreamsim(paths["dino"], paths["clip"], paths["open_clip"], paths["lora"], **kwargs)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_release(tmp_path_factory.mktemp("dreamsim"))


@pytest.fixture(scope="module")
def model(release):
    return load(release, expect=None)


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(FIXTURES / "dreamsim_golden.npz", allow_pickle=False))


def embedder(model):
    def embed(pixels):
        with torch.no_grad():
            return model(pixels)
    return embed


def test_key_lists_equal_the_official_files_and_convert_onto_ours():
    clip_keys = listing("dreamsim_clip_vitb16_keys.tsv")  # load_clip_as_dino's vit_base + ln_pre + proj
    assert dreamsim_clip_keys(CLIP_VITB16) == dict(clip_keys)
    assert list(dreamsim_lora_keys(16, (128,) * 3, (12,) * 3).items()) == listing("dreamsim_lora_keys.tsv")
    with torch.device("meta"):  # the full-size ensemble without weights: every converted key lands, with its shape
        ensemble = DreamSim()
    meta = {k: torch.empty(s, device="meta") for k, s in clip_keys}
    ours = {k: tuple(v.shape) for k, v in ensemble.clip.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in convert_dreamsim_clip(meta).items()} == ours
    dino = {k: torch.empty(s, device="meta") for k, s in dino_official_keys(DINO_VITB16).items()}
    assert {k: tuple(v.shape) for k, v in convert_dino_state(dino).items()} == \
        {k: tuple(v.shape) for k, v in ensemble.dino.dino.state_dict().items()}
    # DINO's ViT-B/16 count (with the patch-conv bias) + ln_pre + proj
    assert sum(math.prod(s) for _, s in clip_keys) == 85_798_656 + 2 * 768 + 768 * 512


def test_embeddings_and_i2v_background_equal_the_official_code(model, golden, release):
    frames, image = golden["frames"], golden["image"]
    np.testing.assert_allclose(dreamsim_frames(frames)[:, :, ::8, ::8].numpy(), golden["frame_pixels"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(dreamsim_image(image)[:, :, ::8, ::8].numpy(), golden["image_pixels"], rtol=0, atol=1e-6)
    embed = embedder(model)
    # unit 192-d embeddings (entries up to 0.24; raw branch features up to 8): max |Δ| 1.9e-7
    np.testing.assert_allclose(embed(dreamsim_frames(frames)).numpy(), golden["frame_embeds"], rtol=0, atol=2e-6)
    np.testing.assert_allclose(embed(dreamsim_image(image)).numpy(), golden["image_embed"], rtol=0, atol=2e-6)
    value = I2VBackgroundScorer(embed).score(frames, image)
    assert value == pytest.approx(float(golden["i2v_background"]), abs=1e-6) and 0.5 < value < 0.95
    # the LoRA is merged with dreamsim's scaling alpha / r on each third of the fused qkv update
    adapter = torch.load(release["lora"], weights_only=True)
    prefix = "base_model.model.extractor_list.1.model.blocks.3.attn.qkv."
    base = seeded_dreamsim_clip_state(CLIP_SMALL, SEEDS["clip"])["blocks.3.attn.qkv.weight"]
    update = (adapter[prefix + "lora_B.weight"] @ adapter[prefix + "lora_A.weight"]) * (0.5 / 16)
    merged = model.clip.clip.vision_model.encoder.layers[3].self_attn.k_proj.weight
    torch.testing.assert_close(merged, (base + update)[128:256], rtol=0, atol=1e-6)
    assert update.abs().max() > 0.05


def _scene(seed: int, height: int = 48, width: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width]).reshape(2, 1, 1)
    base = np.stack([np.sin(6 * xx + rng.uniform(0, 6)) * 90 + 128, np.cos(5 * yy + rng.uniform(0, 6)) * 90 + 128,
                     (xx + yy) * 100 + rng.uniform(0, 50)], -1)
    for _ in range(5):
        y, x = rng.integers(0, height - 12), rng.integers(0, width - 16)
        base[y:y + 12, x:x + 16] = rng.uniform(0, 255, 3)
    return np.clip(base, 0, 255).astype(np.uint8)


def test_same_background_scores_one_and_a_changed_background_scores_lower(model):
    scorer = I2VBackgroundScorer(embedder(model))
    scene, other = _scene(1), _scene(2)
    static = np.stack([scene] * 3)
    assert scorer.score(static, scene) == pytest.approx(1.0, abs=1e-5)
    moving = static.copy()
    for t in range(3):  # a subject crosses the unchanged background
        moving[t, 18:30, 8 + 16 * t:20 + 16 * t] = (230, 40, 50)
    changed = np.stack([scene, other, other])  # the background is replaced after the first frame
    values = {name: scorer.score(clip, scene) for name, clip in (("moving", moving), ("changed", changed))}
    assert values["changed"] < values["moving"] < 1.0
    assert scorer.score(static, other) < values["moving"]  # an unrelated conditioning image
    with pytest.raises(DataError, match="i2v_background needs the clip's conditioning image"):
        scorer.score(static, None)
    with pytest.raises(DataError, match=r"conditioning image: expected uint8 \(H, W, 3\)"):
        scorer.score(static, scene[..., :2].copy())


def test_strict_loading_names_the_file_and_the_fault(tmp_path, release):
    state = seeded_dreamsim_clip_state(CLIP_SMALL, 0)
    for name, broken, expected in (
            ("no_ln_pre.pth.tar", {k: v for k, v in state.items() if k != "pos_drop.bias"}, "missing 1 keys"),
            ("shape.pth.tar", {**state, "proj": torch.zeros(128, 7), "norm.bias": torch.zeros(5)},
             "norm.bias (5,) (expected (128,))")):
        torch.save({"state_dict": broken}, tmp_path / name)
        with pytest.raises(CheckpointError, match=re.escape(expected)) as info:
            load({**release, "clip": tmp_path / name}, expect=None)
        assert name in str(info.value)
    with pytest.raises(CheckpointError, match=r"no 2-d 'proj' key"):  # a DINO backbone given as a CLIP branch
        load({**release, "open_clip": release["dino"]}, expect=None)
    with pytest.raises(CheckpointError, match="absent.pth: DINO ViT-B/16 backbone weights not found"):
        load({**release, "dino": tmp_path / "absent.pth"}, expect=None)
    folder = tmp_path / "ensemble_lora"
    folder.mkdir()
    adapter = torch.load(release["lora"], weights_only=True)
    torch.save(adapter, folder / "adapter_model.bin")
    with pytest.raises(CheckpointError, match="adapter_config.json: not found"):
        load({**release, "lora": folder / "adapter_model.bin"}, expect=None)
    (folder / "adapter_config.json").write_text(json.dumps({**LORA_CONFIG, "target_modules": ["qkv", "proj"]}))
    with pytest.raises(CheckpointError, match=r"expected dreamsim's LoRA \(target_modules \['qkv'\]"):
        load({**release, "lora": folder}, expect=None)
    (folder / "adapter_config.json").write_text(json.dumps({**LORA_CONFIG, "r": 8}))
    with pytest.raises(CheckpointError, match=r"adapter_model.bin: not a dreamsim ensemble LoRA adapter checkpoint: "
                                              r"wrong shapes: .*lora_A.weight \(16, 128\) \(expected \(8, 128\)\)"):
        load({**release, "lora": folder}, expect=None)


def test_the_dimension_names_its_released_files(release):
    spec = VBENCH_DIMENSIONS["i2v_background"]
    assert spec.needs_image and spec.name == "i2v_background"
    assert [w.name for w in spec.weights] == ["dino_vitbase16_pretrain.pth", "clip_vitb16_pretrain.pth.tar",
                                              "open_clip_vitb16_pretrain.pth.tar", "ensemble_lora/adapter_model.bin"]
    assert all("dreamsim_ensemble_checkpoint.zip" in w.source for w in spec.weights[1:])
    files = {w.name: release[k] for w, k in zip(spec.weights, ("dino", "clip", "open_clip", "lora"))}
    with pytest.raises(CheckpointError, match=r"dino_vitbase16_pretrain.pth: not a ViT-B/16 checkpoint: it holds a ViT "
                                              r"of width 128"):  # reduced files: refused for VBench
        spec.build(files, torch.device("cpu"))
