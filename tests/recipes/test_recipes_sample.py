"""recipes/sample.py: `shiftvdm sample` — one clip from one image with any model folder, flags mapped per family.

What a user relies on: each flag sets the matching option of the model's family or is refused naming the flag
(never silently dropped), --guidance parses MIN,MAX strictly, the written .npy is the clip (T, H, W, 3) in [0, 1]
starting from the given image, the seed reproduces it, and bad paths are refused before a model is loaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shiftvdm.errors import ConfigError, DataError
from shiftvdm.recipes.sample import backbone_options, build_parser, main, parse_guidance
from support import small_toy


def options(name: str, *flags: str) -> dict:
    return backbone_options(name, build_parser("test").parse_args(["--model", "m", "--image", "i", "--out", "o.npy",
                                                                   *flags]))


def test_flags_map_to_each_familys_options():
    assert options("toy") == {}  # flags left out set nothing: the backbone's defaults stay
    assert options("toy", "--steps", "3", "--eta", "0.2", "--dtype", "bfloat16") == {
        "num_inference_steps": 3, "eta": 0.2, "dtype": "bfloat16"}
    assert options("svd", "--frames", "14", "--fps", "7", "--motion-bucket", "100", "--noise-aug", "0.05",
                   "--guidance", "1,2.5", "--decode-chunk-size", "4") == {
        "num_frames": 14, "fps": 7, "motion_bucket_id": 100, "noise_aug_strength": 0.05, "decode_chunk_size": 4,
        "min_guidance_scale": 1.0, "max_guidance_scale": 2.5}
    assert options("wan", "--guidance", "5", "--prompt", "a cat", "--height", "480") == {
        "guidance_scale": 5.0, "height": 480}


@pytest.mark.parametrize(("name", "flags", "message"), [
    ("toy", ["--frames", "8"], "--frames: not a setting of the toy backbone (only of svd, wan)"),
    ("wan", ["--motion-bucket", "3"], "--motion-bucket: not a setting of the wan backbone (only of svd)"),
    ("wan", ["--guidance", "1,3"], "one scale (Wan has no per-frame ramp)"),
    ("toy", ["--guidance", "2"], "not a setting of the toy backbone"),
    ("svd", ["--prompt", "x"], "--prompt: the svd backbone is image-to-video only"),
])
def test_flags_a_family_lacks_are_refused_by_name(name, flags, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        options(name, *flags)


def test_guidance_parsing():
    assert parse_guidance("2") == (2.0, 2.0) and parse_guidance("1.0,3.0") == (1.0, 3.0)
    for bad in ("a", "1,2,3", "-1,2", "nan", "1,inf", ""):
        with pytest.raises(ConfigError, match="expected MIN,MAX"):
            parse_guidance(bad)


@pytest.fixture(scope="module")
def toy_and_image(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sample")
    small_toy(num_inference_steps=2).save_pretrained(root / "toy")
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "first.png")
    return root / "toy", root / "first.png"


def test_writes_the_clip_from_the_image_and_the_seed_reproduces_it(toy_and_image, tmp_path, capsys):
    model, image = toy_and_image
    common = ["--model", str(model), "--image", str(image), "--device", "cpu"]
    assert main([*common, "--out", str(tmp_path / "a.npy"), "--seed", "3", "--sampler", "euler-ancestral"]) == 0
    assert "toy backbone, 4 frames of 16x16, euler-ancestral, 2 steps, seed 3" in capsys.readouterr().out
    clip = np.load(tmp_path / "a.npy")
    assert clip.shape == (4, 16, 16, 3) and clip.dtype == np.float32 and 0 <= clip.min() <= clip.max() <= 1
    first = np.asarray(Image.open(image), dtype=np.float32) / 255.0
    np.testing.assert_allclose(clip[0], first, atol=1e-6)  # the toy keeps the conditioning frame as frame 0
    main([*common, "--out", str(tmp_path / "b.npy"), "--seed", "3", "--sampler", "euler-ancestral"])
    main([*common, "--out", str(tmp_path / "c.npy"), "--seed", "4", "--sampler", "euler-ancestral"])
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    assert not np.array_equal(np.load(tmp_path / "c.npy"), clip)  # another seed, another stochastic rollout
    main([*common, "--out", str(tmp_path / "d.npy"), "--steps", "3"])
    assert "euler, 3 steps, seed 0" in capsys.readouterr().out  # --steps overrides the folder's 2


def test_bad_arguments_are_refused_before_loading(toy_and_image, tmp_path):
    model, image = toy_and_image
    with pytest.raises(ConfigError, match=r"unsupported extension '\.avi'"):
        main(["--model", str(model), "--image", str(image), "--out", str(tmp_path / "x.avi")])
    with pytest.raises(DataError, match=r"none\.png: missing"):
        main(["--model", str(model), "--image", str(tmp_path / "none.png"), "--out", str(tmp_path / "x.npy")])
    with pytest.raises(DataError, match="is a folder"):
        main(["--model", str(model), "--image", str(tmp_path), "--out", str(tmp_path / "x.npy")])
    with pytest.raises(DataError, match=r"l\.safetensors: missing"):
        main(["--model", str(model), "--image", str(image), "--out", str(tmp_path / "x.npy"),
              "--lora", str(tmp_path / "l.safetensors")])
    with pytest.raises(ConfigError, match="--guidance"):
        main(["--model", str(model), "--image", str(image), "--out", str(tmp_path / "x.npy"), "--guidance", "x"])
    assert not (tmp_path / "x.npy").exists()


def test_images_folder_writes_a_vbench_i2v_set_with_recorded_seeds(toy_and_image, tmp_path, capsys):
    import json

    from shiftvdm.data.video_io import read_video
    from shiftvdm.errors import OutputError

    model, image = toy_and_image
    images = tmp_path / "images"
    images.mkdir()
    Image.open(image).save(images / "a cat on a mat.png")
    Image.fromarray(255 - np.asarray(Image.open(image))).save(images / "a dog.jpg")
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "vbench"
    argv = ["--model", str(model), "--images", str(images), "--out", str(out), "--per-image", "2",
            "--sampler", "euler-ancestral", "--device", "cpu"]
    assert main(argv) == 0
    assert "wrote 4 clips (2 per image, seeds 0..1)" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["a cat on a mat-0.mp4", "a cat on a mat-1.mp4", "a dog-0.mp4",
                                                     "a dog-1.mp4", "vbench_samples.json"]
    record = json.loads((out / "vbench_samples.json").read_text())["videos"]
    assert [(r["video"], r["image"], r["seed"]) for r in record][:2] == [
        ("a cat on a mat-0.mp4", "a cat on a mat.png", 0), ("a cat on a mat-1.mp4", "a cat on a mat.png", 1)]
    clips = {p.name: read_video(p).frames for p in out.glob("*.mp4")}
    assert all(c.shape == (4, 16, 16, 3) for c in clips.values())
    assert not np.array_equal(clips["a dog-0.mp4"], clips["a dog-1.mp4"])  # another seed per index
    before = (out / "a dog-0.mp4").read_bytes()
    with pytest.raises(OutputError, match="a cat on a mat-0.mp4 exists"):
        main(argv)  # nothing is overwritten
    assert (out / "a dog-0.mp4").read_bytes() == before
    with pytest.raises(DataError, match="no images"):
        main([*argv[:3], str(tmp_path / "vbench"), "--out", str(tmp_path / "other")])
    with pytest.raises(ConfigError, match="give --image"):
        main(["--model", str(model), "--out", str(tmp_path / "x.npy")])
