"""Synthetic sprite clips: determinism, ground truth against the pixels, bounces, static clips, files, CLI."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shiftvdm.cli import main as cli_main
from shiftvdm.data.manifest import load_manifest
from shiftvdm.data.synthetic import SHAPES, load_ground_truth, make_sprite_clips, write_synthetic_dataset
from shiftvdm.data.video_io import read_video
from shiftvdm.errors import DataError
from shiftvdm.utils.outputs import STAMP_FILE


def file_digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def centroids(videos: np.ndarray, backgrounds: np.ndarray, noise_floor: float = 0.0) -> np.ndarray:
    """(N, T, 2) centroid (x, y) of |frame - background| (summed over channels, minus ``noise_floor``) per frame."""
    weight = np.abs(videos.astype(np.float64) - backgrounds[:, None].astype(np.float64)).sum(-1)  # (N, T, S, S)
    weight = np.maximum(weight - noise_floor, 0.0)
    ys, xs = np.mgrid[0:videos.shape[2], 0:videos.shape[3]]
    total = weight.sum((-1, -2))
    return np.stack([(weight * xs).sum((-1, -2)) / total, (weight * ys).sum((-1, -2)) / total], axis=-1)


def test_same_seed_same_arrays_different_seed_different():
    a = make_sprite_clips(6, 5, 24, seed=11)
    b = make_sprite_clips(6, 5, 24, seed=11)
    for name, array in a.arrays().items():
        np.testing.assert_array_equal(array, b.arrays()[name], err_msg=name)
    c = make_sprite_clips(6, 5, 24, seed=12)
    assert not np.array_equal(a.videos, c.videos) and not np.array_equal(a.trajectories, c.trajectories)


def test_shapes_and_ground_truth_fields():
    clips = make_sprite_clips(10, 7, 20, seed=0, num_sprites=(1, 3))
    assert clips.videos.shape == (10, 7, 20, 20, 3) and clips.videos.dtype == np.uint8
    assert clips.trajectories.shape == (10, 3, 7, 2) and clips.colors.shape == (10, 3, 3)
    np.testing.assert_array_equal(clips.sprite_mask.sum(1), clips.num_sprites)
    assert set(np.unique(clips.num_sprites)) <= {1, 2, 3}
    assert (clips.trajectories[~clips.sprite_mask] == 0).all() and (clips.shapes[~clips.sprite_mask] == -1).all()
    gt = clips.clip_ground_truth(0)
    assert len(gt["sprites"]) == clips.num_sprites[0] and len(gt["sprites"][0]["trajectory"]) == 7
    assert gt["sprites"][0]["shape"] in SHAPES


@pytest.mark.parametrize("shape", SHAPES)
def test_trajectory_matches_rendered_centroid_subpixel(shape):
    clips = make_sprite_clips(40, 6, 32, seed=3, num_sprites=1, shapes=(shape,), sprite_size=(4, 9),
                              background="flat", speed=(0.3, 2.7))
    error = np.hypot(*(centroids(clips.videos, clips.backgrounds) - clips.trajectories[:, 0]).transpose(2, 0, 1))
    assert error.max() < 0.5 and error.mean() < 0.15
    frac = np.abs(clips.trajectories - np.round(clips.trajectories))
    assert frac[clips.sprite_mask].mean() > 0.1  # positions really are sub-pixel


def test_bounces_stay_in_frame_and_reflect_elastically():
    clips = make_sprite_clips(300, 24, 16, seed=4, num_sprites=(1, 2), sprite_size=(3, 6), speed=(1.0, 3.0))
    lo = (clips.radii - 0.5)[..., None, None]  # (N, K, 1, 1): walls for the sprite centre
    hi = (16 - 0.5 - clips.radii)[..., None, None]
    pos = clips.trajectories  # (N, K, T, 2)
    used = np.broadcast_to(clips.sprite_mask[..., None, None], pos.shape)
    assert ((pos >= lo - 1e-4) & (pos <= hi + 1e-4))[used].all()
    step = np.diff(pos, axis=2)  # (N, K, T-1, 2)
    velocity = np.broadcast_to(clips.velocities[:, :, None, :], step.shape)
    used = used[:, :, 1:]
    # each step, per axis, either moves by +-v or reflects once off a wall: the path to the wall and back is |v|
    free = np.isclose(np.abs(step), np.abs(velocity), atol=1e-4)
    off_lo = np.isclose((pos[:, :, :-1] - lo) + (pos[:, :, 1:] - lo), np.abs(velocity), atol=1e-4)
    off_hi = np.isclose((hi - pos[:, :, :-1]) + (hi - pos[:, :, 1:]), np.abs(velocity), atol=1e-4)
    assert (free | off_lo | off_hi)[used].all()
    bounced = ~free & used
    assert bounced.sum() > 100  # plenty of bounces were tested
    # after a bounce the axis velocity has flipped: the next free step goes the other way
    flips = np.sign(step[:, :, 1:]) * np.sign(step[:, :, :-1]) < 0
    assert flips[used[:, :, 1:]].sum() >= 0.8 * bounced[:, :, :-1].sum()


def test_directions_are_uniform():
    clips = make_sprite_clips(2000, 2, 16, seed=5, num_sprites=1, sprite_size=3)
    angle = np.arctan2(clips.velocities[:, 0, 1], clips.velocities[:, 0, 0])
    counts = np.histogram(angle, bins=8, range=(-np.pi, np.pi))[0]
    assert counts.min() > 180 and counts.max() < 320  # 250 expected per bin


def test_static_clips_are_static():
    clips = make_sprite_clips(1000, 5, 16, seed=6, static_prob=0.6, num_sprites=1, sprite_size=3)
    assert abs(clips.is_static.mean() - 0.6) < 0.05
    frame_change = np.abs(np.diff(clips.videos.astype(int), axis=1)).reshape(1000, -1).max(1)
    assert (frame_change[clips.is_static] == 0).all() and (frame_change[~clips.is_static] > 0).all()
    assert (clips.velocities[clips.is_static] == 0).all()
    everything_static = make_sprite_clips(4, 5, 16, seed=6, static_prob=1.0)
    assert (everything_static.videos == everything_static.videos[:, :1]).all()


def test_demo_settings_crisp_flat_square():
    clips = make_sprite_clips(500, 8, 16, seed=0, num_sprites=1, sprite_size=3, speed=(1.5, 2.5), static_prob=0.6,
                              background="flat", shapes=("square",), color_range=(0.65, 1.0),
                              background_range=(0.05, 0.2), antialias=False)
    differs = (clips.videos != clips.backgrounds[:, None]).any(-1)  # (N, T, S, S)
    assert (differs.sum((-1, -2)) == 9).all()  # exactly a 3×3 sprite in every frame
    assert (clips.trajectories == np.round(clips.trajectories)).all()
    np.testing.assert_array_equal(centroids(clips.videos, clips.backgrounds), clips.trajectories[:, 0])
    colours = clips.videos[differs.nonzero()]
    assert colours.min() >= round(0.65 * 255) and clips.backgrounds.max() <= round(0.2 * 255)


def test_textured_background_has_texture_and_darker_than_sprites():
    clips = make_sprite_clips(20, 3, 32, seed=8)
    gray = clips.backgrounds.astype(float).mean(-1)
    assert gray.std(axis=(1, 2)).min() > 5  # texture, not a flat colour
    assert np.abs(np.diff(gray, axis=2)).mean() > 0.5  # local gradients for optical flow
    sprite_gray = clips.colors[clips.sprite_mask].mean(-1) * 255
    assert sprite_gray.min() > gray.max(axis=(1, 2)).max() - 60


def test_bad_settings_are_rejected():
    with pytest.raises(DataError, match="shapes must be a non-empty subset"):
        make_sprite_clips(2, 2, 16, 0, shapes=("star",))
    with pytest.raises(DataError, match="static_prob must be in"):
        make_sprite_clips(2, 2, 16, 0, static_prob=1.5)
    with pytest.raises(DataError, match="num_sprites"):
        make_sprite_clips(2, 2, 16, 0, num_sprites=(3, 1))


@pytest.mark.parametrize("fmt", ["mp4", "npy"])
def test_dataset_files_same_seed_same_bytes(tmp_path, fmt):
    options = dict(num_sprites=(1, 2), static_prob=0.3)
    write_synthetic_dataset(tmp_path / "a", 6, 6, 32, seed=1, format=fmt, **options)
    write_synthetic_dataset(tmp_path / "b", 6, 6, 32, seed=1, format=fmt, **options)
    write_synthetic_dataset(tmp_path / "c", 6, 6, 32, seed=2, format=fmt, **options)
    # the stamp (.shiftvdm-stamp.json: when and on which host) is the folder's record, not the dataset's bytes
    a, b, c = ({k: v for k, v in file_digests(tmp_path / n).items() if k != STAMP_FILE} for n in "abc")
    assert len(a) == 6 + 3 and a == b
    clip_names = [n for n in a if n.startswith("clips/")]
    assert all(a[n] != c[n] for n in clip_names)


def test_dataset_ground_truth_matches_decoded_files(tmp_path):
    manifest_path = write_synthetic_dataset(tmp_path / "ds", 5, 6, 32, seed=7, num_sprites=1, background="flat")
    truth = load_ground_truth(tmp_path / "ds")
    assert truth.settings["seed"] == 7 and truth.settings["fps"] == 8.0
    manifest = load_manifest(manifest_path)
    assert [e.relpath for e in manifest.entries] == [f"clips/clip_{i:05d}.mp4" for i in range(5)]
    decoded = np.stack([read_video(e.path).frames for e in manifest.entries])
    assert np.abs(decoded.astype(int) - truth.videos).mean() < 1.5  # visually lossless mp4
    # codec noise on the whole background would pull a plain centroid towards the frame centre
    offset = centroids(decoded, truth.backgrounds, noise_floor=24) - truth.trajectories[:, 0]  # (N, T, 2)
    error = np.hypot(offset[..., 0], offset[..., 1])
    assert error.max() < 0.5
    meta = manifest.entries[2].meta["ground_truth"]
    np.testing.assert_allclose(meta["sprites"][0]["trajectory"], truth.trajectories[2, 0], atol=1e-4)
    assert meta["static"] == bool(truth.is_static[2])


def test_npy_dataset_is_exact(tmp_path):
    write_synthetic_dataset(tmp_path / "ds", 3, 4, 16, seed=0, format="npy")
    truth = load_ground_truth(tmp_path / "ds")
    for i, entry in enumerate(load_manifest(tmp_path / "ds").entries):
        np.testing.assert_array_equal(read_video(entry.path).frames, truth.videos[i])


def test_existing_dataset_needs_overwrite(tmp_path):
    write_synthetic_dataset(tmp_path / "ds", 4, 3, 16, seed=0)
    with pytest.raises(DataError, match="already holds a dataset; pass --overwrite"):
        write_synthetic_dataset(tmp_path / "ds", 2, 3, 16, seed=0)
    (tmp_path / "ds" / "manifest.jsonl").unlink()  # as after an interrupted run
    with pytest.raises(DataError, match=r"holds an unfinished dataset \(no manifest.jsonl\) written with other "
                                        r"settings \(num_clips 4 -> 2\); rerun with its settings"):
        write_synthetic_dataset(tmp_path / "ds", 2, 3, 16, seed=0)
    write_synthetic_dataset(tmp_path / "ds", 2, 3, 16, seed=0, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "ds" / "clips").iterdir()) == ["clip_00000.mp4", "clip_00001.mp4"]
    assert len(load_manifest(tmp_path / "ds").entries) == 2
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="exists and is not empty"):
        write_synthetic_dataset(tmp_path / "other", 2, 3, 16, seed=0, overwrite=True)


def test_cli_synth(tmp_path, capsys):
    out = tmp_path / "synth"
    code = cli_main(["data", "synth", "--out", str(out), "--clips", "3", "--frames", "5", "--size", "16", "--seed", "4",
                     "--static-prob", "1", "--sprites", "2,2", "--background", "flat", "--format", "npy"])
    assert code == 0 and "wrote 3 clips" in capsys.readouterr().out
    settings = json.loads((out / "dataset.json").read_text())["settings"]
    assert settings["num_sprites"] == [2, 2] and settings["background"] == "flat" and settings["static_prob"] == 1.0
    truth = load_ground_truth(out)
    assert truth.videos.shape == (3, 5, 16, 16, 3) and truth.is_static.all() and (truth.num_sprites == 2).all()
    assert cli_main(["data", "synth", "--out", str(out), "--clips", "3"]) == 1  # exists: needs --overwrite


# A child that renders 8 clips and SIGKILLs itself inside the write of clip 5 (its temporary file complete, not
# yet renamed): the state a scheduler's SIGKILL or an out-of-memory kill leaves.
_KILLED_MID_WRITE = """
import os, signal, sys
from shiftvdm.data import video_io
from shiftvdm.data.synthetic import write_synthetic_dataset
real = video_io.atomic_write
def atomic_write(path, write, **options):
    def write_then_die(tmp):
        write(tmp)
        if path.name.startswith("clip_00005"):
            os.kill(os.getpid(), signal.SIGKILL)
    return real(path, write_then_die, **options)
video_io.atomic_write = atomic_write
write_synthetic_dataset(sys.argv[1], 8, 4, 24, seed=3, format=sys.argv[2], num_sprites=(1, 2))
"""


def test_synth_killed_mid_write_continues_to_the_same_bytes(tmp_path, fmt="mp4"):
    out = tmp_path / "killed"
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _KILLED_MID_WRITE, str(out), fmt], env=env, timeout=120,
                          capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (out / "manifest.jsonl").exists()  # unfinished
    temp, *clips = sorted(p.name for p in (out / "clips").iterdir())
    assert clips == [f"clip_{i:05d}.{fmt}" for i in range(5)]  # 5 done
    assert temp.startswith(f".clip_00005.{fmt}.") and temp.endswith(".tmp")  # the 6th cut before its rename

    with pytest.raises(DataError, match=r"other settings \(seed 3 -> 4\)"):  # not mixed with other settings
        write_synthetic_dataset(out, 8, 4, 24, seed=4, format=fmt, num_sprites=(1, 2))
    assert cli_main(["data", "synth", "--out", str(out), "--clips", "8", "--frames", "4", "--size", "24",
                     "--seed", "3", "--format", fmt, "--sprites", "1,2"]) == 0
    write_synthetic_dataset(tmp_path / "straight", 8, 4, 24, seed=3, format=fmt, num_sprites=(1, 2))
    assert file_digests(out) == file_digests(tmp_path / "straight")  # temp swept, no duplicate, same bytes
    assert len(load_manifest(out).entries) == 8


def test_synth_into_a_folder_in_use_is_refused(tmp_path):
    from shiftvdm.utils.run_lock import run_lock

    with run_lock(tmp_path / "ds", what="--out"):
        with pytest.raises(Exception, match=r"--out .*ds: in use by another job \(host .*PID "
                                            f"{os.getpid()}"):
            write_synthetic_dataset(tmp_path / "ds", 2, 3, 16, seed=0)
    assert [p.name for p in (tmp_path / "ds").iterdir()] == [".lock"]  # the refused job wrote nothing


def test_an_overwrite_cut_midway_keeps_the_old_dataset_and_a_rerun_replaces_it(tmp_path, monkeypatch):
    import shiftvdm.data.synthetic as synth

    write_synthetic_dataset(tmp_path / "ds", 3, 3, 16, seed=0, format="npy")
    before = file_digests(tmp_path / "ds")

    def killed(*args, **kwargs):  # the process dies after the new dataset.json, before its ground truth
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "save_npz", killed)
    with pytest.raises(KeyboardInterrupt):
        write_synthetic_dataset(tmp_path / "ds", 3, 3, 16, seed=1, format="npy", overwrite=True)
    monkeypatch.undo()
    assert file_digests(tmp_path / "ds") == before  # the successor was built beside it: the old one is intact
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ds.")] == []  # no staging left behind
    write_synthetic_dataset(tmp_path / "ds", 3, 3, 16, seed=1, format="npy", overwrite=True)
    write_synthetic_dataset(tmp_path / "fresh", 3, 3, 16, seed=1, format="npy")
    ds, fresh = ({k: v for k, v in file_digests(tmp_path / n).items() if k != STAMP_FILE} for n in ("ds", "fresh"))
    assert ds == fresh
