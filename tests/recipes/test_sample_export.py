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
from support import fill_zero_init, small_toy

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
    fill_zero_init(backbone.unet, std=0.3, seed=0, only="lora_B")
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


# ---------------------------------------------------------------------- every backbone (Wan, toy)
def _toy_folder(path: Path) -> Path:
    small_toy(num_inference_steps=3).save_pretrained(path)  # a non-zero output conv, as a trained model has
    return path


@pytest.fixture(scope="module")
def other_models(tmp_path_factory) -> dict[str, Path]:
    from shiftvdm.backbone.tiny import save_tiny_wan

    root = tmp_path_factory.mktemp("others")
    return {"wan": save_tiny_wan(root / "wan", "ti2v", seed=0), "toy": _toy_folder(root / "toy")}


@pytest.mark.parametrize("name", ["wan", "toy"])
def test_sample_and_export_work_for_every_backbone(name, other_models, image_path, tmp_path, capsys):
    from shiftvdm.backbone import load_backbone_from_path

    model = other_models[name]
    backbone = load_backbone_from_path(model, dtype="float32")
    frames, height, width = backbone.video_shape
    extra = ["--dtype", "float32", "--prompt", "a red ball rolls left"] if name == "wan" else []
    out = tmp_path / "clip.npy"
    assert cli(["sample", "--model", str(model), "--image", str(image_path), "--out", str(out), "--steps", "2",
                "--seed", "1"] + extra) == 0
    clip = np.load(out)
    assert clip.dtype == np.float32 and clip.shape == (frames, height, width, 3)
    assert 0 <= clip.min() and clip.max() <= 1 and clip.std() > 0
    assert f"{name} backbone" in capsys.readouterr().out

    # a flag this backbone does not have is refused with its name, and nothing is written
    bad = "--motion-bucket" if name == "wan" else "--guidance"
    assert cli(["sample", "--model", str(model), "--image", str(image_path), "--out", str(tmp_path / "b.npy"),
                bad, "3"] + extra) != 0
    assert f"{bad}" in capsys.readouterr().err and not (tmp_path / "b.npy").exists()

    # export: LoRA fused into a folder that diffusers loads back, reproducing the fused model
    backbone.add_lora(4, 4.0)
    fill_zero_init(backbone.trainable_parameters(), std=0.3, seed=0)
    backbone.save_lora(tmp_path / "lora.safetensors")
    exported = tmp_path / "exported"
    assert cli(["export", "--model", str(model), "--lora", str(tmp_path / "lora.safetensors"),
                "--out", str(exported)]) == 0
    video = torch.rand(1, frames, 3, height, width, generator=torch.Generator().manual_seed(2)) * 2 - 1
    latents = backbone.encode_video(video)
    cond = backbone.encode_condition(video[:, 0])
    draw = backbone.draw_noise(latents, torch.Generator().manual_seed(3))
    with torch.no_grad():
        with_lora = backbone.denoising_loss(latents, cond, draw)
        backbone.fuse_lora()
        fused = {k: v.clone() for k, v in backbone.denoiser.state_dict().items()}
        reloaded = load_backbone_from_path(exported, dtype="float32")
        torch.testing.assert_close(reloaded.denoising_loss(latents, cond, draw), with_lora, rtol=1e-4, atol=1e-6)
    if name == "wan":
        from diffusers import WanImageToVideoPipeline

        module = WanImageToVideoPipeline.from_pretrained(exported).transformer
        fused = {k.removeprefix("transformer."): v for k, v in fused.items() if k.startswith("transformer.")}
    else:
        from shiftvdm.backbone.toy import ToyVideoUNet

        module = ToyVideoUNet.from_pretrained(exported)
    state = module.state_dict()
    assert state.keys() == fused.keys() and not any("lora" in k for k in state)
    assert max(float((state[k].float() - fused[k].float()).abs().max()) for k in state) < 1e-6
