"""`shiftvdm data encode` and ``data.cache`` (train/latent_cache.py) on the tiny SVD and tiny Wan2.2-TI2V presets.

What a user relies on: SFT with the cache gives the losses SFT without it gives (same seed; float tolerance: the
cache encodes one clip per VAE call, the trainer a batch), never encodes a real clip while training, trains Wan
without its text encoder in memory, a rerun of ``data encode`` encodes only what is missing, and a cache made with
other settings is refused naming the setting. Also: SVD encodes the noise-augmented first frame once per draw.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from shiftvdm.backbone.svd import SVDBackbone
from shiftvdm.backbone.tiny import save_tiny_svd, save_tiny_wan, tiny_video_shape
from shiftvdm.backbone.wan import WanBackbone
from shiftvdm.data.synthetic import write_synthetic_dataset
from shiftvdm.errors import DataError
from shiftvdm.recipes.data import main as data_main
from shiftvdm.recipes.train import merge_train_config, run_training
from shiftvdm.train.clips import open_training_clips

RUN = ["lora.rank=2", "lora.alpha=2", "optim.lr=1e-3", "optim.warmup_steps=0", "rollout.batch_size=1",
       "rollout.buffer_size=2", "rollout.passes_per_buffer=1", "run.max_steps=2", "run.checkpoint_every=0",
       "run.progress=false", "run.mixed_precision='no'", "run.num_samples=1", "run.seed=3"]


def _setup(tmp_path: Path, family: str) -> tuple[list[str], list[str]]:
    """(settings shared by `data encode` and the runs, the runs' own), with a model folder and 2 sprite clips."""
    if family == "svd":
        model = save_tiny_svd(tmp_path / "model", num_frames=2)
        f, h, w = 2, 16, 16
        extra = ["backbone.name=svd"]
    else:
        model = save_tiny_wan(tmp_path / "model", "ti2v")
        f, h, w = tiny_video_shape("ti2v")
        extra = ["backbone.name=wan", "data.prompt=a sprite"]
    data = tmp_path / "data"
    write_synthetic_dataset(data, 2, f, h, seed=2, format="npy", num_sprites=1, overwrite=True)
    shared = [*extra, "backbone.options.dtype=float32", f"backbone.options.num_frames={f}",
              f"backbone.options.height={h}", f"backbone.options.width={w}", f"data.num_frames={f}",
              f"data.height={h}", f"data.width={w}", "data.fps=null"]
    return shared, [f"backbone.pretrained={model}", f"data.train={data}"]


def _losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    return [r["loss/real"] for r in rows if "loss/real" in r]


@pytest.mark.parametrize("family", ["svd", "wan"])
def test_sft_with_the_cache_gives_the_same_losses_without_encoding(tmp_path, monkeypatch, capsys, family):
    shared, where = _setup(tmp_path, family)
    model, data = where[0].split("=", 1)[1], where[1].split("=", 1)[1]
    cache = tmp_path / "cache"
    assert data_main(["encode", "--model", model, "--data", data, "--out", str(cache), *shared]) == 0
    assert "2 clips encoded, 0 already cached" in capsys.readouterr().out

    cfg, _ = merge_train_config("sft", None, [*shared, *where, *RUN, f"run.out_dir={tmp_path / 'plain'}"])
    run_training(cfg)

    built = []
    kind = SVDBackbone if family == "svd" else WanBackbone
    init = kind.__init__

    def record(self, *args, **kwargs):
        init(self, *args, **kwargs)
        built.append(self)

    def no_encoding(*args, **kwargs):
        raise AssertionError("a real clip was encoded although it is cached")

    monkeypatch.setattr(kind, "__init__", record)
    monkeypatch.setattr(kind, "encode_video", no_encoding)
    monkeypatch.setattr(kind, "encode_condition", no_encoding)
    cfg, _ = merge_train_config("sft", None, [*shared, *where, *RUN, f"data.cache={cache}",
                                              f"run.out_dir={tmp_path / 'cached'}"])
    run_training(cfg)
    plain, cached = _losses(tmp_path / "plain"), _losses(tmp_path / "cached")
    assert len(plain) == len(cached) == 2
    torch.testing.assert_close(torch.tensor(cached), torch.tensor(plain), rtol=1e-5, atol=1e-6)
    if family == "wan":
        assert built[0].text_encoder is None and built[0].tokenizer is None  # never loaded


def test_cache_hits_misses_and_refusals(tmp_path, capsys):
    shared, where = _setup(tmp_path, "svd")
    model, data = where[0].split("=", 1)[1], Path(where[1].split("=", 1)[1])
    cache = tmp_path / "cache"
    manifest = data / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    manifest.write_text(lines[0] + "\n")  # one clip first
    assert data_main(["encode", "--model", model, "--data", str(data), "--out", str(cache), *shared]) == 0
    assert "1 clips encoded, 0 already cached" in capsys.readouterr().out
    cfg, _ = merge_train_config("sft", None, [*shared, *where, f"data.cache={cache}"])
    manifest.write_text("\n".join(lines) + "\n")  # the second clip is not cached yet: refused, not encoded
    with pytest.raises(DataError, match=r"1 of 2 clips .* are not cached .*clip_00001"):
        open_training_clips(cfg.data, cfg.backbone)
    assert data_main(["encode", "--model", model, "--data", str(data), "--out", str(cache), *shared]) == 0
    assert "1 clips encoded, 1 already cached" in capsys.readouterr().out  # a rerun continues
    clips = open_training_clips(cfg.data, cfg.backbone)
    latents, cond = clips.load_encoded([1, 0])
    assert len(clips) == 2 and latents.shape[0] == 2 and cond.tensors["image_embeds"].shape[0] == 2
    torch.testing.assert_close(cond.first_frame, clips.load([1, 0])[0][:, 0], rtol=0, atol=0)  # the exact pixels
    os.utime(data / "clips" / "clip_00000.npy", ns=(0, 0))  # the clip changed after it was encoded
    with pytest.raises(DataError, match=r"clip_00000.npy: the clip changed \(or is gone\) since it was encoded"):
        clips.load_encoded([0])
    for change, named in ((["data.fps=4"], "fps: None in the cache, 4.0 now"),
                          (["backbone.options.motion_bucket_id=100"], "model.options.motion_bucket_id: None in the "
                                                                      "cache, 100 now")):
        other, _ = merge_train_config("sft", None, [*shared, *where, f"data.cache={cache}", *change])
        with pytest.raises(DataError, match=f"other settings .*{named}"):
            open_training_clips(other.data, other.backbone)
    with pytest.raises(DataError, match=f"other settings .*{named}"):
        data_main(["encode", "--model", model, "--data", str(data), "--out", str(cache), *shared,
                   "backbone.options.motion_bucket_id=100"])


def test_svd_encodes_the_augmented_first_frame_once_per_draw():
    from shiftvdm.backbone.svd import SVDConfig
    from shiftvdm.backbone.tiny import tiny_svd_backbone

    backbone = tiny_svd_backbone(SVDConfig(num_frames=2, height=16, width=16))
    video = torch.rand(2, 2, 3, 16, 16) * 2 - 1
    x = backbone.encode_video(video)
    cond = backbone.encode_condition(video[:, 0])
    draw = backbone.draw_noise(x, torch.Generator().manual_seed(0))
    before = getattr(backbone, "conditioning_encodes", 0)
    first = backbone.denoising_loss(x, cond, draw)
    again = backbone.denoising_loss(x + 0.1, cond, draw)  # a rollout pass sharing the draw (match_noise)
    assert backbone.conditioning_encodes - before == 1
    other = backbone.draw_noise(x, torch.Generator().manual_seed(1))
    backbone.denoising_loss(x, cond, other)
    assert backbone.conditioning_encodes - before == 2
    fresh = tiny_svd_backbone(SVDConfig(num_frames=2, height=16, width=16))  # no memo: the same values
    torch.testing.assert_close(fresh.denoising_loss(x, cond, draw), first, rtol=0, atol=0)
    assert not torch.equal(first, again)
