"""`shiftvdm sample` and `shiftvdm export` on a tiny SVD folder: parity with diffusers, LoRA, files, errors."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shiftvdm.backbone.svd import SVDBackbone, SVDConfig
from shiftvdm.backbone.tiny import save_tiny_svd
from shiftvdm.cli import main as cli

FRAMES, SIZE, STEPS = 4, 32, 2


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_svd(tmp_path_factory.mktemp("svd") / "model", seed=1, num_frames=FRAMES, sample_size=SIZE // 2)


@pytest.fixture(scope="module")
def image_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "first.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def lora_path(model_dir, tmp_path_factory) -> Path:
    """A LoRA with non-zero lora_B (a fresh one would be a no-op), saved by the backbone."""
    backbone = SVDBackbone.from_pretrained(model_dir)
    backbone.add_lora(4, 4)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in backbone.unet.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    path = tmp_path_factory.mktemp("lora") / "lora.safetensors"
    backbone.save_lora(path)
    return path


def run_pipeline(folder: Path, image_path: Path, seed: int) -> np.ndarray:
    from diffusers import StableVideoDiffusionPipeline

    pipe = StableVideoDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe(Image.open(image_path), height=SIZE, width=SIZE, num_frames=FRAMES, num_inference_steps=STEPS,
                min_guidance_scale=1.0, max_guidance_scale=2.0, fps=6, motion_bucket_id=90, noise_aug_strength=0.03,
                decode_chunk_size=8, generator=torch.Generator("cpu").manual_seed(seed), output_type="np").frames[0]


def sample_args(model: Path, image: Path, out: Path, seed: int = 5, sampler: str = "euler") -> list[str]:
    return ["sample", "--model", str(model), "--image", str(image), "--out", str(out), "--steps", str(STEPS),
            "--seed", str(seed), "--sampler", sampler, "--guidance", "1.0,2.0", "--frames", str(FRAMES),
            "--fps", "6", "--motion-bucket", "90", "--noise-aug", "0.03"]


def test_sample_euler_reproduces_the_pipeline(model_dir, image_path, tmp_path):
    out = tmp_path / "clip.npy"
    assert cli(sample_args(model_dir, image_path, out)) == 0
    frames = np.load(out)
    assert frames.dtype == np.float32 and frames.shape == (FRAMES, SIZE, SIZE, 3)
    np.testing.assert_allclose(frames, run_pipeline(model_dir, image_path, seed=5), rtol=0, atol=1e-5)


def test_sample_ancestral_is_seeded_and_writes_videos(model_dir, image_path, tmp_path):
    paths = [tmp_path / "a.npy", tmp_path / "b.npy", tmp_path / "c.npy"]
    for path, seed in zip(paths, (1, 1, 2)):
        assert cli(sample_args(model_dir, image_path, path, seed=seed, sampler="euler-ancestral")) == 0
    a, b, c = (np.load(p) for p in paths)
    assert np.array_equal(a, b) and np.abs(a - c).max() > 1e-3
    for suffix in (".gif", ".mp4"):
        out = tmp_path / f"clip{suffix}"
        assert cli(sample_args(model_dir, image_path, out)) == 0

        from shiftvdm.data.video_io import read_video

        clip = read_video(out)
        assert clip.frames.shape == (FRAMES, SIZE, SIZE, 3)


def test_export_fuses_lora_into_a_plain_diffusers_folder(model_dir, image_path, lora_path, tmp_path):
    out = tmp_path / "exported"
    assert cli(["export", "--model", str(model_dir), "--lora", str(lora_path), "--out", str(out)]) == 0
    assert (out / "model_index.json").is_file() and not list(tmp_path.glob(".exported*"))
    exported = run_pipeline(out, image_path, seed=5)
    # the model with its LoRA attached (not fused), sampled by `shiftvdm sample --lora`
    with_lora = tmp_path / "with_lora.npy"
    assert cli(sample_args(model_dir, image_path, with_lora) + ["--lora", str(lora_path)]) == 0
    np.testing.assert_allclose(exported, np.load(with_lora), rtol=0, atol=1e-4)
    base = run_pipeline(model_dir, image_path, seed=5)
    assert np.abs(exported - base).max() > 1e-3  # the fused LoRA changed the model
    # an existing, non-empty OUT is kept unless --overwrite
    assert cli(["export", "--model", str(model_dir), "--lora", str(lora_path), "--out", str(out)]) == 2
    assert cli(["export", "--model", str(model_dir), "--lora", str(lora_path), "--out", str(out), "--overwrite"]) == 0
    assert SVDBackbone.from_pretrained(out, SVDConfig()).has_lora is False


@pytest.mark.parametrize("case", ["model", "image", "extension", "lora", "guidance"])
def test_bad_inputs_give_clear_errors(case, model_dir, image_path, tmp_path, capsys):
    args = sample_args(model_dir, image_path, tmp_path / "clip.npy")
    if case == "model":
        args[args.index("--model") + 1] = str(tmp_path / "no_model")
        expected = "no_model: model folder not found"
    elif case == "image":
        args[args.index("--image") + 1] = str(tmp_path / "no_image.png")
        expected = "no_image.png: missing"
    elif case == "extension":
        args[args.index("--out") + 1] = str(tmp_path / "clip.avi")
        expected = "clip.avi: unsupported extension '.avi'"
    elif case == "lora":
        args += ["--lora", str(tmp_path / "no_lora.safetensors")]
        expected = "no_lora.safetensors: missing"
    else:
        args[args.index("--guidance") + 1] = "a,b"
        expected = "--guidance: expected MIN,MAX"
    assert cli(args) != 0
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "clip.npy").exists()
