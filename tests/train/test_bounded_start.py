"""Training start-up is bounded without ``data.cache``: nothing is decoded at start beyond the clips the first
step and the sample grid read, and a bad clip found later stops the run naming the file (train/clips.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import shiftvdm.train.clips as clips_module
from shiftvdm.cli import main as cli
from shiftvdm.config import config_from_dict
from shiftvdm.data.synthetic import write_synthetic_dataset
from shiftvdm.errors import DataError
from shiftvdm.train.clips import open_training_clips
from shiftvdm.train.config import TrainConfig
from shiftvdm.train.shift import chunk_indices

N = 1000
TOY = {"num_frames": 4, "size": 16, "block_out_channels": [16, 16], "layers_per_block": 1, "num_mid_blocks": 1,
       "num_inference_steps": 2, "mid_attention": False}
RUN = ["rollout.buffer_size=2", "rollout.batch_size=2", "rollout.passes_per_buffer=1", "run.num_samples=2",
       "run.seed=3"]


def big_manifest(root: Path, bad: int) -> Path:
    """N entries, hard links to two tiny clips (no decode cost to make), entry ``bad`` a corrupt file."""
    write_synthetic_dataset(root / "src", 2, 4, 16, seed=1, format="npy", num_sprites=1, sprite_size=(3.0, 4.0),
                            speed=(1.5, 2.5), background="flat", overwrite=True)
    sources = sorted((root / "src" / "clips").glob("*.npy"))
    (root / "c").mkdir()
    for i in range(N):
        target = root / "c" / f"c{i:05d}.npy"
        if i == bad:
            target.write_bytes(b"\x93NUMPY not really")
        else:
            os.link(sources[i % 2], target)
    manifest = root / "train.jsonl"
    manifest.write_text("".join(json.dumps({"path": f"c/c{i:05d}.npy", "fps": 8}) + "\n" for i in range(N)))
    return manifest


def count_checks(monkeypatch) -> list[str]:
    seen: list[str] = []
    real = clips_module.check_entry

    def counted(entry, *args):
        seen.append(entry.path.name)
        return real(entry, *args)

    monkeypatch.setattr(clips_module, "check_entry", counted)
    return seen


def test_open_decodes_nothing_and_a_bad_clip_is_named_when_read(tmp_path, monkeypatch):
    manifest = big_manifest(tmp_path, bad=900)
    seen = count_checks(monkeypatch)
    data = {"train": str(manifest), "num_frames": 4, "height": 16, "width": 16}
    clips = open_training_clips(config_from_dict(TrainConfig, {"data": data}).data)
    assert len(clips) == N and seen == []  # no clip checked or decoded at start
    video, _ = clips.load([0, 899])
    assert video.shape == (2, 4, 3, 16, 16) and seen == ["c00000.npy", "c00899.npy"]
    with pytest.raises(DataError) as err:
        clips.load([1, 900])
    message = str(err.value)
    assert "1 bad entries" in message and "c/c00900.npy" in message and "--skip-bad" in message
    clips.load([0, 899])
    assert len(seen) == 4  # each clip checked once per process

    skipping = open_training_clips(config_from_dict(TrainConfig, {"data": {**data, "skip_bad": True}}).data)
    got, _ = skipping.load([900, 3])  # replaced by the next good clip of the manifest
    want, _ = skipping.load([901, 3])
    assert np.array_equal(got.numpy(), want.numpy())


def test_sft_starts_without_the_bad_clip_and_stops_naming_it_when_read(tmp_path, monkeypatch, capsys):
    cfg = config_from_dict(TrainConfig, {"rollout": {"buffer_size": 2, "batch_size": 2}, "run": {"seed": 3}})
    first, second = chunk_indices(N, cfg, 0, 0, 0, 1), chunk_indices(N, cfg, 0, 1, 0, 1)
    bad = second[0]  # read by the second step, not by the start nor the first step
    assert bad not in first and bad not in (0, 1)
    manifest = big_manifest(tmp_path, bad=bad)
    seen = count_checks(monkeypatch)
    args = ["sft", "backbone.name=toy", *[f"backbone.options.{k}={v}" for k, v in TOY.items()],
            f"data.train={manifest}", "data.num_frames=4", "data.height=16", "data.width=16", "lora.rank=2",
            "run.progress=false", *RUN]
    assert cli([*args, f"run.out_dir={tmp_path / 'one'}", "run.max_steps=1", "run.checkpoint_every=0"]) == 0
    assert len(seen) <= 2 + 2  # the sample grid's 2 clips and the first buffer's 2, of 1000
    assert f"c{bad:05d}.npy" not in seen
    capsys.readouterr()
    # a checkpoint after step 1 keeps the folder of the stopped run (one stopped before any is removed)
    assert cli([*args, f"run.out_dir={tmp_path / 'two'}", "run.max_steps=2", "run.checkpoint_every=1"]) == 1
    err = capsys.readouterr().err
    assert f"c/c{bad:05d}.npy" in err and "1 bad entries" in err and "--skip-bad" in err
    rows = (tmp_path / "two" / "logs" / "metrics.jsonl").read_text().splitlines()
    assert sum("loss/real" in r for r in rows) == 1  # the first step ran before the bad clip was read
