"""Video I/O, resampling, resizing, manifests and the clip dataset (shiftvdm.data.video_io/manifest/dataset)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from shiftvdm.data.dataset import VideoClipDataset, collate_clips, load_clips_tensor
from shiftvdm.data.manifest import load_manifest, write_manifest
from shiftvdm.data.synthetic import make_sprite_clips
from shiftvdm.data.video_io import (
    DEFAULT_FPS,
    probe_video,
    read_video,
    resample_frames,
    resize_center_crop,
    to_tensor,
    to_uint8,
    write_video,
)
from shiftvdm.errors import DataError
from conftest import real_videos_dir

REAL_VIDEOS = real_videos_dir()
needs_real_videos = pytest.mark.skipif(not (REAL_VIDEOS / "tree.avi").is_file(),
                                       reason=f"real clips not found in {REAL_VIDEOS} (set SHIFTVDM_REAL_VIDEOS)")


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    """A textured 8×32×32 sprite clip (uint8)."""
    return make_sprite_clips(1, 8, 32, seed=5, num_sprites=2).videos[0]


def counting_clip(num_frames: int, size: int = 16) -> np.ndarray:
    """Frame i is filled with the value 10 * i: which source frame was picked is readable from any pixel."""
    return np.broadcast_to((10 * np.arange(num_frames, dtype=np.uint8))[:, None, None, None],
                           (num_frames, size, size, 3)).copy()


# ---------------------------------------------------------------- read / write


@pytest.mark.parametrize("shape", [(8, 32, 32), (5, 15, 17), (4, 130, 132)])
def test_mp4_round_trip_is_close_and_keeps_size_and_fps(tmp_path, shape):
    frames = make_sprite_clips(1, shape[0], max(shape[1:]), seed=2).videos[0][:, :shape[1], :shape[2]]
    path = write_video(tmp_path / "clip.mp4", frames, fps=12.5)
    video = read_video(path)
    assert video.frames.shape == frames.shape and video.frames.dtype == np.uint8
    assert video.fps == pytest.approx(12.5)
    error = np.abs(video.frames.astype(int) - frames.astype(int))
    assert error.mean() < 3.0 and error.max() < 48


def test_gif_round_trip_loops_and_keeps_colours(tmp_path, clip):
    path = write_video(tmp_path / "clip.gif", clip, fps=10)
    assert path.read_bytes()[:6] == b"GIF89a" and b"NETSCAPE2.0" in path.read_bytes()  # looping extension
    video = read_video(path)
    assert video.frames.shape == clip.shape
    assert np.abs(video.frames.astype(int) - clip.astype(int)).mean() < 2.0
    assert video.fps == pytest.approx(10.0)


def test_npy_round_trip_is_exact_and_float(tmp_path, clip):
    path = write_video(tmp_path / "clip.npy", clip, fps=8)
    raw = np.load(path)
    assert raw.dtype == np.float32 and raw.shape == clip.shape and 0.0 <= raw.min() and raw.max() <= 1.0
    np.testing.assert_array_equal(read_video(path).frames, clip)
    assert read_video(path).fps == DEFAULT_FPS
    assert read_video(path, fps_hint=24.0).fps == 24.0


@pytest.mark.parametrize("suffix, codec", [(".avi", "mpeg4"), (".mov", "libx264"), (".webm", "libvpx")])
def test_other_containers_decode(tmp_path, clip, suffix, codec):
    import av

    path = tmp_path / f"clip{suffix}"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for index, picture in enumerate(clip):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    video = read_video(path)
    assert video.frames.shape == clip.shape and video.fps == pytest.approx(10.0)
    assert np.abs(video.frames.astype(int) - clip.astype(int)).mean() < 12  # lossy 4:2:0 at default quality
    assert [e.relpath for e in load_manifest(tmp_path).entries] == [path.name]


def test_write_accepts_floats_and_rejects_bad_input(tmp_path, clip):
    floats = clip.astype(np.float32) / 255.0
    np.testing.assert_array_equal(read_video(write_video(tmp_path / "f.npy", floats, 8)).frames, clip)
    with pytest.raises(DataError, match=r"clip\.webm.*expected one of \.mp4, \.gif, \.npy"):
        write_video(tmp_path / "clip.webm", clip, 8)
    model_output = np.linspace(-1.0, 1.0, 2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    with pytest.raises(DataError, match=r"bad\.mp4: .*values in \[-1, 1\]: expected \[0, 1\]"):
        write_video(tmp_path / "bad.mp4", model_output, 8)
    with pytest.raises(DataError, match=r"expected \(T, H, W, 3\)"):
        write_video(tmp_path / "bad.mp4", clip[..., 0], 8)


def test_write_is_atomic_replacement(tmp_path, clip):
    target = tmp_path / "clip.mp4"
    write_video(target, clip, 8)
    write_video(target, clip[:3], 8)
    assert read_video(target).frames.shape[0] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]  # no temporary files left


def test_read_errors_name_file_and_reason(tmp_path, clip):
    with pytest.raises(DataError, match=r"nope\.mp4: missing"):
        read_video(tmp_path / "nope.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.mp4: empty"):
        read_video(tmp_path / "empty.mp4")
    data = write_video(tmp_path / "whole.mp4", clip, 8).read_bytes()
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"half\.mp4: unreadable or truncated"):
        read_video(tmp_path / "half.mp4")
    (tmp_path / "text.avi").write_text("not a video")
    with pytest.raises(DataError, match=r"text\.avi: unreadable or truncated"):
        probe_video(tmp_path / "text.avi")


def test_max_frames_and_until_time_limit_decoding(tmp_path):
    path = write_video(tmp_path / "count.mp4", counting_clip(20), fps=10)
    assert read_video(path, max_frames=4).frames.shape[0] == 4
    assert read_video(path, until_time=0.5).frames.shape[0] == 6  # frames shown at t = 0, 0.1, ..., 0.5
    assert probe_video(path).num_frames == 20


# ---------------------------------------------------------------- resampling, resizing, tensors


def test_resample_frames_picks_frames_by_time():
    frames = counting_clip(24)
    picked = resample_frames(frames, src_fps=24, target_fps=8, num_frames=8)[:, 0, 0, 0] // 10
    np.testing.assert_array_equal(picked, [0, 3, 6, 9, 12, 15, 18, 21])
    ntsc = resample_frames(counting_clip(25), src_fps=23.976, target_fps=8, num_frames=8)[:, 0, 0, 0] // 10
    np.testing.assert_array_equal(ntsc, [0, 2, 5, 8, 11, 14, 17, 20])  # floor(i * 2.997)
    up = resample_frames(counting_clip(3), src_fps=4, target_fps=8, num_frames=None)[:, 0, 0, 0] // 10
    np.testing.assert_array_equal(up, [0, 0, 1, 1, 2, 2])
    same = resample_frames(counting_clip(10), src_fps=8, target_fps=None, num_frames=4)[:, 0, 0, 0] // 10
    np.testing.assert_array_equal(same, [0, 1, 2, 3])


def test_resample_frames_too_few_frames():
    with pytest.raises(DataError, match=r"too few frames: 4 < 5"):
        resample_frames(counting_clip(8), src_fps=16, target_fps=8, num_frames=5)
    assert len(resample_frames(counting_clip(8), src_fps=16, target_fps=8, num_frames=4)) == 4


def test_resize_center_crop_shapes_and_centring():
    frames = np.zeros((2, 240, 320, 3), np.uint8)
    frames[:, :, 150:170] = 255  # a vertical white bar at the horizontal centre
    out = resize_center_crop(frames, 24, 24)  # 240x320 -> 24x32 -> crop 4 columns each side
    assert out.shape == (2, 24, 24, 3) and out.dtype == np.uint8
    row = out[0, 12, :, 0].astype(int)
    assert row[11] == row[12] > 200 and row[:8].max() == 0 and row[-8:].max() == 0
    np.testing.assert_allclose(row, row[::-1], atol=1)  # centred: the profile is symmetric
    assert resize_center_crop(frames, 48, 96).shape == (2, 48, 96, 3)
    assert resize_center_crop(frames[:, :20, :30], 64, 40).shape == (2, 64, 40, 3)  # upscale to cover
    flat = np.full((1, 100, 50, 3), 77, np.uint8)
    assert (resize_center_crop(flat, 16, 16) == 77).all()  # area averaging keeps a flat level exactly


def test_to_tensor_and_back():
    frames = np.random.default_rng(0).integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
    video = to_tensor(frames)
    assert video.shape == (3, 3, 5, 7) and video.dtype == torch.float32
    assert video.min() >= -1.0 and video.max() <= 1.0
    assert video[0, 1, 2, 3] == pytest.approx(frames[0, 2, 3, 1] / 127.5 - 1.0)
    np.testing.assert_array_equal(to_uint8(video), frames)
    assert to_uint8(torch.full((1, 3, 2, 2), 5.0)).max() == 255  # clipped, not wrapped


# ---------------------------------------------------------------- manifests


@pytest.fixture
def dataset_dir(tmp_path) -> Path:
    root = tmp_path / "data"
    (root / "videos" / "nested").mkdir(parents=True)
    clips = make_sprite_clips(3, 6, 16, seed=9, num_sprites=1, background="flat")
    for i, name in enumerate(["b.mp4", "a.npy", "c.gif"]):
        write_video(root / "videos" / name, clips.videos[i], fps=8)
    write_video(root / "videos" / "nested" / "deep.mp4", clips.videos[0], fps=8)
    (root / "videos" / "notes.txt").write_text("not a clip")
    return root


def test_manifest_jsonl_json_csv_agree(dataset_dir):
    records = [{"path": "videos/b.mp4", "prompt": "a ball", "source": "real/1.mp4", "score": 0.5},
               {"path": "videos/a.npy"}]
    (dataset_dir / "m.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    (dataset_dir / "m.json").write_text(json.dumps({"clips": records}))
    (dataset_dir / "m.csv").write_text("path,prompt,source,score\n"
                                       "videos/b.mp4,a ball,real/1.mp4,0.5\n"
                                       "videos/a.npy,,,\n")
    for name in ["m.jsonl", "m.json", "m.csv"]:
        manifest = load_manifest(dataset_dir / name)
        assert manifest.root == dataset_dir.resolve()
        expected = [(dataset_dir / "videos" / n).resolve() for n in ["b.mp4", "a.npy"]]
        assert [e.path for e in manifest.entries] == expected
        first, second = manifest.entries
        assert (first.relpath, first.prompt, first.source) == ("videos/b.mp4", "a ball", "real/1.mp4")
        assert float(first.meta["score"]) == 0.5 and second.prompt is None and second.source is None
        assert not first.outside_root
    json_list = dataset_dir / "list.json"
    json_list.write_text(json.dumps(records))
    assert len(load_manifest(json_list).entries) == 2


def test_manifest_folder_is_sorted_and_not_recursive(dataset_dir):
    manifest = load_manifest(dataset_dir / "videos")
    assert [e.relpath for e in manifest.entries] == ["a.npy", "b.mp4", "c.gif"]
    write_manifest(dataset_dir / "videos" / "manifest.jsonl", [{"path": "c.gif", "prompt": "p"}])
    assert [e.relpath for e in load_manifest(dataset_dir / "videos").entries] == ["c.gif"]  # its manifest wins


def test_manifest_flags_paths_outside_root(dataset_dir):
    (dataset_dir / "videos" / "m.jsonl").write_text('{"path": "../outside.mp4"}\n{"path": "b.mp4"}\n')
    entries = load_manifest(dataset_dir / "videos" / "m.jsonl").entries
    assert [e.outside_root for e in entries] == [True, False]


@pytest.mark.parametrize("name, text, message", [
    ("bad.jsonl", '{"path": "a.mp4"}\n{"path": \n', r"bad\.jsonl line 2: invalid JSON"),
    ("bad.jsonl", '{"path": "a.mp4"}\n{"video": "b.mp4"}\n', r"bad\.jsonl line 2: missing required key \"path\""),
    ("bad.jsonl", '{"path": 3}\n', r"line 1: \"path\" must be a non-empty string"),
    ("bad.json", '{"videos": []}', r"bad\.json: expected a list of clip objects or an object with a \"clips\""),
    ("bad.json", '[{"path": "a.mp4"}, "b.mp4"]', r"bad\.json entry 1: expected an object"),
    ("bad.csv", "file,prompt\na.mp4,x\n", r"bad\.csv line 1: the header row must have a \"path\" column"),
    ("bad.csv", "path,prompt\na.mp4,x,extra\n", r"bad\.csv line 2: more values than header columns"),
    ("bad.jsonl", "\n", r"bad\.jsonl: the manifest has no entries"),
    ("bad.yaml", "path: a.mp4", r"unknown manifest type '\.yaml'"),
])
def test_malformed_manifests_name_file_and_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=message):
        load_manifest(tmp_path / name)


def test_write_manifest_relativises_paths(tmp_path):
    path = write_manifest(tmp_path / "m.jsonl", [{"path": tmp_path / "clips" / "x.mp4", "prompt": "é"}])
    assert json.loads(path.read_text()) == {"path": "clips/x.mp4", "prompt": "é"}
    with pytest.raises(DataError, match="entry 0 has no \"path\""):
        write_manifest(tmp_path / "n.jsonl", [{"prompt": "x"}])


# ---------------------------------------------------------------- dataset


def test_dataset_items_resample_resize_and_cache(tmp_path):
    write_video(tmp_path / "count.npy", counting_clip(16, size=20), fps=16)
    write_manifest(tmp_path / "m.jsonl", [{"path": "count.npy", "fps": 16, "prompt": "counting"}])
    cache = tmp_path / "cache"
    dataset = VideoClipDataset(tmp_path / "m.jsonl", num_frames=4, height=8, width=12, fps=8, cache_dir=cache)
    item = dataset[0]
    assert item["video"].shape == (4, 3, 8, 12) and item["video"].dtype == torch.float32
    assert item["first_frame"].shape == (3, 8, 12) and torch.equal(item["first_frame"], item["video"][0])
    assert item["index"] == 0 and item["prompt"] == "counting" and item["path"].endswith("count.npy")
    picked = to_uint8(item["video"])[:, 0, 0, 0] // 10
    np.testing.assert_array_equal(picked, [0, 2, 4, 6])  # 16 fps -> 8 fps
    assert len(list(cache.glob("*.npy"))) == 1
    # a rewritten source is decoded afresh (the cache key holds size and mtime)
    write_video(tmp_path / "count.npy", 255 - counting_clip(16, size=20), fps=16)
    os.utime(tmp_path / "count.npy", ns=(1, 1))
    assert to_uint8(dataset[0]["video"])[0, 0, 0, 0] == 255
    assert len(list(cache.glob("*.npy"))) == 2


def test_dataloader_batches_items_without_prompts(tmp_path):
    for i in range(3):
        write_video(tmp_path / f"{i}.npy", counting_clip(4, size=8), fps=8)
    dataset = VideoClipDataset(tmp_path, num_frames=2, height=8, width=8)
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=3, collate_fn=collate_clips)))
    assert batch["video"].shape == (3, 2, 3, 8, 8) and batch["first_frame"].shape == (3, 3, 8, 8)
    assert batch["index"].tolist() == [0, 1, 2] and batch["prompt"] == [None, None, None]
    assert [Path(p).name for p in batch["path"]] == ["0.npy", "1.npy", "2.npy"]


def test_dataset_errors_name_the_file(tmp_path):
    write_video(tmp_path / "short.mp4", counting_clip(3), fps=8)
    dataset = VideoClipDataset(tmp_path, num_frames=5, height=8, width=8)
    with pytest.raises(DataError, match=r"short\.mp4: too few frames: 3 < 5"):
        dataset[0]


def test_load_clips_tensor_stacks_uint8(tmp_path):
    clips = make_sprite_clips(3, 6, 16, seed=1)
    for i in range(3):
        write_video(tmp_path / f"{i}.npy", clips.videos[i], fps=8)
    stacked = load_clips_tensor(tmp_path, num_frames=6, height=16, width=16)
    assert stacked.shape == (3, 6, 16, 16, 3) and stacked.dtype == torch.uint8
    assert torch.equal(stacked, torch.from_numpy(clips.videos))


# ---------------------------------------------------------------- real clips


@needs_real_videos
@pytest.mark.parametrize("name, fps, num_frames, size", [
    ("Megamind.avi", 23.976, 270, (528, 720)),
    ("tree.avi", 15.0, 444, (240, 320)),
    ("vtest.avi", 10.0, 795, (576, 768)),
])
def test_real_clips_decode(name, fps, num_frames, size):
    info = probe_video(REAL_VIDEOS / name)
    assert info.fps == pytest.approx(fps, rel=1e-3) and info.num_frames == num_frames
    assert (info.height, info.width) == size
    video = read_video(REAL_VIDEOS / name, until_time=1.0)
    assert video.frames.shape[1:] == (*size, 3) and video.frames.std() > 10  # real picture content


@needs_real_videos
def test_real_clip_repeated_frames_follow_timestamps():
    # tree.avi stores 68 pictures for 444 frame slots; its 2nd picture is shown from slot 11 on
    frames = read_video(REAL_VIDEOS / "tree.avi", max_frames=12).frames
    changed = [bool((frames[k] != frames[k - 1]).any()) for k in range(1, 12)]
    assert changed == [False] * 10 + [True]


@needs_real_videos
def test_real_clips_through_the_dataset():
    dataset = VideoClipDataset(REAL_VIDEOS, num_frames=4, height=32, width=48, fps=8)
    assert [Path(dataset[i]["path"]).name for i in range(len(dataset))] == ["Megamind.avi", "tree.avi", "vtest.avi"]
    for i in range(len(dataset)):
        video = dataset[i]["video"]
        assert video.shape == (4, 3, 32, 48) and -1.0 <= video.min() < video.max() <= 1.0
