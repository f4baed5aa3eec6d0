"""`shiftvdm train-critic`: leak-free split, discriminators that separate real from degraded motion, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from shiftvdm.data.manifest import ClipEntry, write_manifest
from shiftvdm.data.synthetic import make_sprite_clips, write_synthetic_dataset
from shiftvdm.data.video_io import write_video
from shiftvdm.errors import ConfigError, DataError
from shiftvdm.recipes.train_reward import main, pair_fakes, split_by_source

SIZE, FRAMES, NUM_REAL, SEED = 24, 6, 40, 11
SPRITES = {"num_sprites": (1, 2), "sprite_size": (6.0, 10.0), "speed": (1.5, 3.0)}
# Small, fast settings; regularisers stay off (the paper's Eq. 7 as is).
OVERRIDES = [
    "critic.num_queries=32", "critic.ic.dim=32", "critic.ic.depth=1", "critic.ic.heads=2", "critic.ic.patch_size=4",
    "critic.ic.image_size=[24,24]", "critic.lc.dim=32", "critic.lc.depth=1", "critic.lc.heads=2",
    "optim.lr=1e-3", "optim.ema_decay=0.9", "batch_size=12", "data.val_fraction=0.3", "progress=false",
]



@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, Path]:
    """Real sprite clips and two degraded fakes per real clip: frozen half way, and damped to 30 % speed."""
    root = tmp_path_factory.mktemp("reward-data")
    real_manifest = write_synthetic_dataset(root / "real", NUM_REAL, FRAMES, SIZE, SEED, format="npy", **SPRITES)
    real = make_sprite_clips(NUM_REAL, FRAMES, SIZE, SEED, **SPRITES)
    damped_options = dict(SPRITES, speed=(0.3 * 1.5, 0.3 * 3.0))  # same draws, so same sprites, slower
    damped = make_sprite_clips(NUM_REAL, FRAMES, SIZE, SEED, **damped_options)
    records = []
    (root / "fake").mkdir()
    for i in range(NUM_REAL):
        frozen = real.videos[i].copy()
        frozen[FRAMES // 2:] = frozen[FRAMES // 2 - 1]
        for kind, video in (("frozen", frozen), ("damped", damped.videos[i])):
            path = root / "fake" / f"{kind}_{i:03d}.npy"
            write_video(path, video, 8.0)
            records.append({"path": path.name, "source": f"clips/clip_{i:05d}.npy", "kind": kind})
    write_manifest(root / "fake" / "manifest.jsonl", records)
    return real_manifest, root / "fake" / "manifest.jsonl"


def test_pairing_and_split_keep_each_real_clip_with_its_fakes(tmp_path):
    reals = [ClipEntry(path=tmp_path / f"clips/clip_{i}.mp4", relpath=f"clips/clip_{i}.mp4") for i in range(3)]
    fakes = [ClipEntry(path=tmp_path / "f/a.mp4", relpath="f/a.mp4", source="clips/clip_2.mp4"),
             ClipEntry(path=tmp_path / "f/clip_1_3.mp4", relpath="f/clip_1_3.mp4"),
             ClipEntry(path=tmp_path / "f/b.mp4", relpath="f/b.mp4", source="clip_0")]
    assert pair_fakes(reals, fakes) == [2, 1, 0]
    with pytest.raises(DataError, match="no matching real clip"):
        pair_fakes(reals, [ClipEntry(path=tmp_path / "x.mp4", relpath="x.mp4", source="clips/other.mp4")])
    train, val = split_by_source(50, 0.2, seed=3)
    assert len(val) == 10 and len(train) == 40 and not set(train) & set(val)
    assert sorted(set(train) | set(val)) == list(range(50))
    np.testing.assert_array_equal(split_by_source(50, 0.2, seed=3)[1], val)
    with pytest.raises(DataError, match="at least 2"):
        split_by_source(1, 0.2, seed=0)


def test_train_reward_separates_real_from_degraded_motion(dataset, tmp_path, capsys):
    real_manifest, fake_manifest = dataset
    out = tmp_path / "run"
    code = main(["--real", str(real_manifest), "--fake", str(fake_manifest), "--out", str(out), *OVERRIDES,
                 "max_steps=60", "val_every=30", "checkpoint_every=30"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    final = metrics["final"]
    assert final["step"] == 60
    assert final["val/auc_ic"] > 0.9, final
    assert final["val/auc_lc"] > 0.9, final
    assert final["val/auc_reward"] > 0.9, final
    # the split is by source clip: 12 held-out real clips and exactly their 24 fakes
    assert metrics["split"] == {**metrics["split"], "val_real": 12, "train_real": 28, "val_fake": 24, "train_fake": 56}
    assert (out / "critic" / "critic.safetensors").is_file() and (out / "critic" / "critic_config.json").is_file()
    assert (out / "logs").is_dir() and any((out / "logs").iterdir())
    assert "ROC-AUC" in capsys.readouterr().out

    # Resume: a run stopped at step 30 and continued to 60 ends with the same weights.
    out_b = tmp_path / "run_b"
    args = ["--real", str(real_manifest), "--fake", str(fake_manifest), "--out", str(out_b), *OVERRIDES,
            "val_every=30", "checkpoint_every=30"]
    assert main([*args, "max_steps=30"]) == 0
    with pytest.raises(ConfigError, match="--resume"):
        main([*args, "max_steps=60"])
    with pytest.raises(ConfigError, match="differs"):
        main([*args, "max_steps=60", "critic.lc.dim=16", "--resume"])
    assert main([*args, "max_steps=60", "--resume"]) == 0
    full = load_file(str(out / "critic" / "critic.safetensors"))
    resumed = load_file(str(out_b / "critic" / "critic.safetensors"))
    assert full.keys() == resumed.keys()
    for key in full:
        torch.testing.assert_close(full[key], resumed[key], msg=key)


def test_generate_writes_fakes_with_their_source(tmp_path):
    from shiftvdm.backbone.toy import ToyBackbone, ToyConfig
    from shiftvdm.data.manifest import load_manifest
    from shiftvdm.recipes.generate import main as generate_main

    model = tmp_path / "toy"
    ToyBackbone(ToyConfig(num_frames=4, size=16, block_out_channels=(8, 16), norm_num_groups=4,
                          layers_per_block=1, num_mid_blocks=1, mid_attention=False)).save_pretrained(model)
    real_manifest = write_synthetic_dataset(tmp_path / "real", 3, 4, 16, seed=1, format="npy")
    out = tmp_path / "fakes"
    args = ["--model", str(model), "--data", str(real_manifest), "--out", str(out), "--per-clip", "2",
            "--steps", "2", "--seed", "5", "--format", "npy", "--no-progress"]
    assert generate_main(args) == 0
    fakes = load_manifest(out / "manifest.jsonl").entries
    assert [f.relpath for f in fakes[:2]] == ["clips/clips__clip_00000_0.npy", "clips/clips__clip_00000_1.npy"]
    assert [f.source for f in fakes] == [f"clips/clip_{i:05d}.npy" for i in range(3) for _ in range(2)]
    reals = load_manifest(real_manifest).entries
    assert pair_fakes(reals, fakes) == [0, 0, 1, 1, 2, 2]
    first = np.load(fakes[0].path)
    assert first.shape == (4, 16, 16, 3)
    real0 = np.load(reals[0].path)
    np.testing.assert_allclose(first[0], real0[0], atol=2 / 255)  # frame 0 is the conditioning frame
    assert not np.array_equal(np.load(fakes[0].path), np.load(fakes[1].path))  # K distinct samples
    # a rerun regenerates a missing clip identically and keeps the others
    kept = fakes[2].path.stat().st_mtime_ns
    fakes[0].path.unlink()
    assert generate_main(args) == 0
    np.testing.assert_array_equal(np.load(fakes[0].path), first)
    assert fakes[2].path.stat().st_mtime_ns == kept



def test_generate_in_groups_of_clips_writes_the_same_files_and_resumes_by_group(tmp_path):
    from shiftvdm.backbone.toy import ToyBackbone, ToyConfig
    from shiftvdm.data.manifest import load_manifest
    from shiftvdm.errors import ConfigError
    from shiftvdm.recipes.generate import main as generate_main

    model = tmp_path / "toy"
    ToyBackbone(ToyConfig(num_frames=4, size=16, block_out_channels=(8, 16), norm_num_groups=4,
                          layers_per_block=1, num_mid_blocks=1, mid_attention=False)).save_pretrained(model)
    real_manifest = write_synthetic_dataset(tmp_path / "real", 5, 4, 16, seed=1, format="npy")

    def run(out: str, *extra: str) -> list:
        args = ["--model", str(model), "--data", str(real_manifest), "--out", str(tmp_path / out), "--per-clip", "2",
                "--steps", "2", "--seed", "5", "--format", "npy", "--no-progress", *extra]
        assert generate_main(args) == 0
        return load_manifest(tmp_path / out / "manifest.jsonl").entries

    single = run("one")
    again = run("one-again", "--clips-per-call", "1")
    assert [f.relpath for f in again] == [f.relpath for f in single]
    for a, b in zip(single, again):
        np.testing.assert_array_equal(np.load(a.path), np.load(b.path))  # N = 1 is the per-clip stream
    grouped = run("groups", "--clips-per-call", "2")  # groups {0, 1}, {2, 3}, {4}
    assert [(f.relpath, f.source) for f in grouped] == [(f.relpath, f.source) for f in single]
    arrays = [np.load(f.path) for f in grouped]
    reals = load_manifest(real_manifest).entries
    for f, fake in zip(grouped, arrays):
        assert fake.shape == (4, 16, 16, 3)
        real = next(r for r in reals if r.relpath == f.source)
        np.testing.assert_allclose(fake[0], np.load(real.path)[0], atol=2 / 255)  # its own conditioning frame
    assert not np.array_equal(arrays[0], np.load(single[0].path))  # another noise stream than per clip
    # a rerun with the same N regenerates only the group with a missing file, identically
    kept = grouped[0].path.stat().st_mtime_ns
    grouped[5].path.unlink()  # clip 2's second fake: group {2, 3}
    run("groups", "--clips-per-call", "2")
    np.testing.assert_array_equal(np.load(grouped[5].path), arrays[5])
    assert grouped[0].path.stat().st_mtime_ns == kept
    with pytest.raises(ConfigError, match="--clips-per-call must be >= 1"):
        run("bad", "--clips-per-call", "0")

def test_noise_negatives_teach_the_critic_that_pixel_noise_is_not_real(dataset, tmp_path):
    from shiftvdm.data.video_io import to_tensor
    from shiftvdm.recipes.train_reward import noisy_copy
    from shiftvdm.rewards.critic import MotionCritic

    real_manifest, fake_manifest = dataset
    def args(out: str, *extra: str) -> list[str]:
        return ["--real", str(real_manifest), "--fake", str(fake_manifest), "--out", str(tmp_path / out), *OVERRIDES,
                "max_steps=60", "val_every=60", "checkpoint_every=60", *extra]

    assert main(args("plain")) == 0
    assert main(args("nda", "data.noise_negatives=[8,16]")) == 0
    split = json.loads((tmp_path / "nda" / "metrics.json").read_text())["split"]
    # one noisy copy per TRAIN real clip joins the fakes; validation keeps only the genuine fakes
    assert (split["train_fake"], split["val_fake"], split["noise_negatives"]) == (56 + 28, 24, 28)
    val_names = set(split["val_real_clips"])
    clips = make_sprite_clips(NUM_REAL, FRAMES, SIZE, SEED, **SPRITES).videos
    held_out = np.stack([clips[i] for i in range(NUM_REAL) if f"clips/clip_{i:05d}.npy" in val_names])
    rng = np.random.default_rng(0)
    noisy = np.stack([noisy_copy(c, 12.0, rng) for c in held_out])
    assert (noisy[:, 0] == held_out[:, 0]).all() and (noisy[:, 1:] != held_out[:, 1:]).any()

    def margin(run: str) -> float:  # mean reward of clean held-out real clips minus that of their noisy copies
        critic = MotionCritic.load(tmp_path / run / "critic")
        return float(critic.reward(to_tensor(held_out)).r.mean() - critic.reward(to_tensor(noisy)).r.mean())

    with_negatives, without = margin("nda"), margin("plain")  # measured: 0.95 and 0.41
    assert with_negatives > 0.6 and with_negatives > 2 * without, (with_negatives, without)
    with pytest.raises(ConfigError, match="noise_negatives"):
        main(args("bad", "data.noise_negatives=[-1]"))
