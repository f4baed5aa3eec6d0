"""data/prepare.py and `shiftvdm data prepare`: raw datasets (DAVIS frame folders, videos + WISA captions) -> clips.

What a user relies on: the windows (count, starts, frames, size, fps) a sequence gives, the split keeping every
source on one side, a bad JPEG named and its windows left out (or the run stopped with --strict), captions joined
by file name with the misses reported, a rerun after a kill finishing the job without rewriting or duplicating a
clip, and a rerun with other settings refused by name. The sources are frames of the real sample videos.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import real_videos_dir

from shiftvdm.data.prepare import (
    PrepareSettings,
    discover_sources,
    natural_key,
    prepare_dataset,
    split_sources,
    window_starts,
)
from shiftvdm.data.video_io import read_video, write_video
from shiftvdm.errors import DataError
from shiftvdm.recipes.data import main

REAL = real_videos_dir()
# (video, frames kept as JPEGs): sequence lengths 30, 12 and 5 (the last shorter than a clip)
SEQUENCES = {"Megamind.avi": 30, "tree.avi": 12, "vtest.avi": 5}
needs_videos = pytest.mark.skipif(not all((REAL / v).is_file() for v in SEQUENCES),
                                  reason=f"sample videos not found in {REAL}")


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def davis(tmp_path_factory) -> Path:
    """A DAVIS-2017-shaped root: JPEGImages/480p/<sequence>/00000.jpg ... (and an ignored Annotations tree)."""
    import av

    root = tmp_path_factory.mktemp("davis")
    for video, count in SEQUENCES.items():
        folder = root / "JPEGImages" / "480p" / Path(video).stem.lower()
        folder.mkdir(parents=True)
        with av.open(str(REAL / video)) as container:
            for i, frame in enumerate(container.decode(container.streams.video[0])):
                if i == count:
                    break
                image = frame.to_image().resize((40, 30))
                image.save(folder / f"{i:05d}.jpg", quality=90)
    (root / "Annotations" / "480p" / "tree").mkdir(parents=True)
    image.save(root / "Annotations" / "480p" / "tree" / "00000.png")
    return root


def test_window_starts_and_natural_order():
    assert window_starts(30, 8, 4) == [0, 4, 8, 12, 16, 20] and window_starts(8, 8, 8) == [0]
    assert window_starts(7, 8, 1) == []
    assert sorted(["f10.jpg", "f2.jpg", "f1.jpg"], key=natural_key) == ["f1.jpg", "f2.jpg", "f10.jpg"]


@needs_videos
def test_davis_tree_gives_the_expected_windows_split_by_sequence(davis, tmp_path, capsys):
    out = tmp_path / "prepared"
    assert main(["prepare", str(davis), "--out", str(out), "--frames", "8", "--stride", "4", "--size", "16x24",
                 "--val-fraction", "0.5", "--seed", "3", "--workers", "2", "--format", "npy"]) == 0
    printed = capsys.readouterr().out
    assert "sequences: 3 (2 cut into clips, 1 skipped" in printed
    assert "clips: 8 (train " in printed and "frames: 64" in printed
    assert "skipped vtest: short: 5 frames at 24 fps < --frames 8" in printed  # never padded
    rows = _rows(out / "train.jsonl") + _rows(out / "val.jsonl")
    starts = {(r["source"], r["start"]) for r in rows}
    assert starts == {("megamind", s) for s in (0, 4, 8, 12, 16, 20)} | {("tree", s) for s in (0, 4)}
    train_sources = {r["source"] for r in _rows(out / "train.jsonl")}
    val_sources = {r["source"] for r in _rows(out / "val.jsonl")}
    assert train_sources and val_sources and not train_sources & val_sources  # no sequence on both sides
    assert all(r["fps"] == 24.0 and "prompt" not in r for r in rows)
    clip = read_video(out / "clips" / "megamind_s00004.npy", fps_hint=24.0).frames
    assert clip.shape == (8, 16, 24, 3)
    # the window is frames 4..11 of the sequence, resized to cover 16x24 (30x40 -> 18x24) and centre-cropped
    source = np.stack([np.array(__import__("PIL.Image").Image.open(davis / "JPEGImages/480p/megamind" /
                                                                     f"{i:05d}.jpg").convert("RGB"))
                       for i in range(4, 12)])
    from shiftvdm.data.video_io import resize_center_crop
    assert np.abs(clip.astype(int) - resize_center_crop(source, 16, 24).astype(int)).max() <= 1


def test_split_is_by_source_and_seeded():
    names = [f"seq{i}" for i in range(10)]
    assert split_sources(names, 0.3, 0) == split_sources(list(reversed(names)), 0.3, 0)  # order-free
    assert len(split_sources(names, 0.3, 0)) == 3 and split_sources(names, 0.0, 0) == set()
    assert len({frozenset(split_sources(names, 0.3, seed)) for seed in range(5)}) > 1


@needs_videos
def test_corrupt_jpeg_is_named_and_skipped_or_stops_with_strict(davis, tmp_path, capsys):
    src = tmp_path / "frames"
    (src / "tree").mkdir(parents=True)
    for jpg in sorted((davis / "JPEGImages/480p/tree").glob("*.jpg")):
        (src / "tree" / jpg.name).write_bytes(jpg.read_bytes())
    bad = src / "tree" / "00005.jpg"
    bad.write_bytes(bad.read_bytes()[:40])  # cut: the JPEG's header survives, its picture does not
    assert main(["prepare", str(src), "--out", str(tmp_path / "out"), "--frames", "4", "--format", "npy"]) == 0
    printed = capsys.readouterr().out
    assert f"unreadable {bad}: unreadable frame" in printed and "1 windows holding one" in printed
    assert [r["start"] for r in _rows(tmp_path / "out" / "train.jsonl")] == [0, 8]  # window 4..7 left out
    with pytest.raises(DataError, match=f"{bad}: unreadable frame"):
        main(["prepare", str(src), "--out", str(tmp_path / "strict"), "--frames", "4", "--strict"])


@needs_videos
def test_videos_with_wisa_captions_resampled(tmp_path, capsys):
    videos = tmp_path / "videos" / "part1"
    videos.mkdir(parents=True)
    os.symlink(REAL / "tree.avi", videos / "tree.avi")  # 15 fps, 444 frames
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps([{"video_name": "tree.avi", "captions": "a tree sways in the wind"},
                                    {"video_name": "gone.mp4", "captions": "nothing"}]))
    out = tmp_path / "out"
    assert main(["prepare", str(tmp_path / "videos"), "--out", str(out), "--frames", "6", "--fps", "5",
                 "--stride", "60", "--size", "16x16", "--captions", str(captions), "--format", "npy"]) == 0
    printed = capsys.readouterr().out
    assert "captions: 1 captions match no source: gone.mp4" in printed
    rows = _rows(out / "train.jsonl")
    # 444 frames at 15 fps -> 148 at 5 fps; starts every 60 while start + 6 <= 148
    assert [r["start"] for r in rows] == [0, 60, 120]
    assert {r["source"] for r in rows} == {"part1/tree"} and {r["fps"] for r in rows} == {5.0}
    assert {r["prompt"] for r in rows} == {"a tree sways in the wind"}
    clip = read_video(out / rows[1]["path"], fps_hint=5.0).frames
    whole = read_video(REAL / "tree.avi", max_frames=200)  # 14.9999 fps: source frames 179, 182, ... 194
    index = np.floor((60 + np.arange(6)) * whole.fps / 5 + 1e-6).astype(int)
    assert index.tolist() == [179, 182, 185, 188, 191, 194]
    from shiftvdm.data.video_io import resize_center_crop
    expected = resize_center_crop(whole.frames[index], 16, 16)
    assert clip.shape == (6, 16, 16, 3) and np.abs(clip.astype(int) - expected.astype(int)).max() <= 1


@needs_videos
def test_rerun_after_a_kill_continues_without_duplicates(davis, tmp_path, monkeypatch):
    import shiftvdm.data.prepare as prepare

    settings = PrepareSettings(src=str(davis), frames=4, stride=2, format="npy", val_fraction=0.5)
    out = tmp_path / "out"
    written = []

    def killed_after_five(path, *args, **kwargs):
        if len(written) == 5:
            raise KeyboardInterrupt  # the process dies here: no write after the fifth
        written.append(Path(path).name)
        return write_video(path, *args, **kwargs)

    monkeypatch.setattr(prepare, "write_video", killed_after_five)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(settings, out, progress=False)
    monkeypatch.setattr(prepare, "write_video", write_video)
    assert not (out / "train.jsonl").exists()  # manifests only when every source is done
    first = {p.name: p.stat().st_mtime_ns for p in (out / "clips").glob("*.npy")}
    assert sorted(first) == sorted(written) and len(first) == 5
    (out / "clips" / ".megamind_s00020.npy.abc.tmp").write_bytes(b"half a clip")  # a kill mid-write
    summary = prepare_dataset(settings, out, progress=False)
    assert summary.reused == 0 and summary.clips_train + summary.clips_val == 14 + 5 + 1
    rows = _rows(out / "train.jsonl") + _rows(out / "val.jsonl")
    paths = [r["path"] for r in rows]
    # megamind (30 frames): 14 windows of 4 every 2; tree (12): 5; vtest (5): 1
    assert len(paths) == len(set(paths)) == 14 + 5 + 1
    assert sorted(p.name for p in (out / "clips").iterdir()) == sorted(Path(p).name for p in paths)
    assert all((out / "clips" / n).stat().st_mtime_ns == t for n, t in first.items())  # not written again
    again = prepare_dataset(settings, out, progress=False)
    assert again.reused == 3 and _rows(out / "train.jsonl") + _rows(out / "val.jsonl") == rows
    with pytest.raises(DataError, match=r"other settings \(stride: 2 then, 3 now\)"):
        prepare_dataset(PrepareSettings(src=str(davis), frames=4, stride=3, format="npy"), out, progress=False)


def test_sources_and_bad_input(tmp_path):
    with pytest.raises(DataError, match="not found"):
        discover_sources(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image-sequence folders"):
        discover_sources(tmp_path / "empty")
    with pytest.raises(SystemExit):
        main(["prepare", str(tmp_path), "--out", str(tmp_path / "o"), "--frames", "4", "--size", "big"])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    (tmp_path / "empty" / "a.npy").write_bytes(b"")
    with pytest.raises(DataError, match="not a `shiftvdm data prepare` output"):
        prepare_dataset(PrepareSettings(src=str(tmp_path / "empty"), frames=2), tmp_path / "mine", progress=False)


def test_manifest_source_keeps_prompts_and_csv_captions_report_misses(tmp_path, capsys):
    clips = tmp_path / "raw"
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        write_video(clips / f"{name}.npy", rng.integers(0, 255, (9, 8, 8, 3), dtype=np.uint8), 8.0)
    (clips / "list.jsonl").write_text('{"path": "a.npy", "prompt": "from the manifest", "fps": 8}\n'
                                      '{"path": "b.npy", "fps": 8}\n')
    captions = tmp_path / "captions.csv"
    captions.write_text("path,prompt\nb.npy,a caption for b\nc.npy,no such clip\n")
    out = tmp_path / "out"
    assert main(["prepare", str(clips / "list.jsonl"), "--out", str(out), "--frames", "4", "--format", "npy",
                 "--captions", str(captions)]) == 0
    printed = capsys.readouterr().out
    assert "captions: no caption for 1 sources: a" in printed and "1 captions match no source: c.npy" in printed
    rows = _rows(out / "train.jsonl")
    assert [(r["source"], r["start"], r.get("prompt")) for r in rows] == [
        ("a", 0, "from the manifest"), ("a", 4, "from the manifest"), ("b", 0, "a caption for b"),
        ("b", 4, "a caption for b")]
    np.testing.assert_array_equal(read_video(out / rows[1]["path"]).frames, read_video(clips / "a.npy").frames[4:8])
