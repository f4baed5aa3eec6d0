"""recipes/export.py: `shiftvdm export` fuses a LoRA into its base model and writes a self-contained folder.

Checked on the toy backbone (the SVD/Wan folders' diffusers loading is covered in test_sample_export.py). What a
user relies on: the written model samples exactly what base + LoRA sampled, it has no adapter left, an existing
OUT is kept unless --overwrite, nothing half-written is left beside OUT, and bad paths are refused by name.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shiftvdm.backbone.toy import ToyBackbone
from shiftvdm.errors import ConfigError, DataError, OutputError
from shiftvdm.recipes.export import main
from support import fill_zero_init, small_toy


@pytest.fixture(scope="module")
def model_and_lora(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    small_toy(num_inference_steps=2).save_pretrained(root / "base")
    with_lora = ToyBackbone.from_pretrained(root / "base")
    with_lora.add_lora(2, 2)
    fill_zero_init(with_lora.denoiser, std=0.3, seed=0, only="lora_B")  # a fresh LoRA would change nothing
    with_lora.save_lora(root / "lora.safetensors")
    return root / "base", root / "lora.safetensors"


def rollout(backbone: ToyBackbone) -> torch.Tensor:
    frames, height, width = backbone.video_shape
    first = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        return backbone.sample(backbone.encode_condition(first), 1, torch.Generator().manual_seed(2), stochastic=False)


def test_exported_model_samples_like_base_plus_lora(model_and_lora, tmp_path, capsys):
    model, lora = model_and_lora
    out = tmp_path / "fused"
    assert main(["--model", str(model), "--lora", str(lora), "--out", str(out)]) == 0
    assert f"wrote {out} (toy backbone, float32)" in capsys.readouterr().out
    fused = ToyBackbone.from_pretrained(out)
    assert not fused.has_lora and not any("lora" in n for n, _ in fused.denoiser.named_parameters())
    reference = ToyBackbone.from_pretrained(model)
    reference.load_lora(lora)
    base = ToyBackbone.from_pretrained(model)
    expected, got = rollout(reference), rollout(fused)
    assert (got - expected).abs().max() <= 1e-5
    assert (rollout(base) - expected).abs().max() > 1e-3  # the LoRA matters, so the check above is not trivial
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fused"]  # no staging or backup folder left


def test_dtype_sets_the_written_weights(model_and_lora, tmp_path):
    model, lora = model_and_lora
    assert main(["--model", str(model), "--lora", str(lora), "--out", str(tmp_path / "bf16"), "--dtype", "bfloat16"]) == 0
    dtypes = {p.dtype for p in ToyBackbone.from_pretrained(tmp_path / "bf16").denoiser.parameters()}
    assert torch.bfloat16 in dtypes


def test_existing_output_is_kept_unless_overwrite(model_and_lora, tmp_path):
    model, lora = model_and_lora
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["--model", str(model), "--lora", str(lora), "--out", str(out)]
    with pytest.raises(ConfigError, match="folder exists and is not empty"):
        main(args)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    # --overwrite replaces only a folder an export made (its stamp): a user's folder is refused, untouched
    with pytest.raises(OutputError, match=r"has no stamp and holds keep.txt.*rm -r -- "):
        main([*args, "--overwrite"])
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--model", str(model), "--lora", str(lora), "--out", str(empty)]) == 0  # an empty folder is fine
    (empty / "notes.txt").write_text("mine")  # a user's file in an export's folder survives its --overwrite
    assert main(["--model", str(model), "--lora", str(lora), "--out", str(empty), "--overwrite"]) == 0
    assert (empty / "notes.txt").read_text() == "mine" and ToyBackbone.from_pretrained(empty).video_shape == (4, 16, 16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "out"]  # no staging folder left


def test_bad_paths_are_refused_before_loading(model_and_lora, tmp_path):
    model, lora = model_and_lora
    with pytest.raises(DataError, match=r"nope\.safetensors: missing"):
        main(["--model", str(model), "--lora", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "o")])
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        main(["--model", str(model), "--lora", str(lora), "--out", str(tmp_path / "file")])
    assert not (tmp_path / "o").exists()
