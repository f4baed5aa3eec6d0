"""`shiftvdm eval`: exit codes, the printed table, bad files, empty folders, --strict and the JSON file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shiftvdm.cli import main as cli_main
from shiftvdm.data.video_io import write_video


def moving_square(frames: int = 10, size: int = 32, speed: int = 2, seed: int = 0) -> np.ndarray:
    """A textured background with a bright square moving right by ``speed`` px/frame."""
    rng = np.random.default_rng(seed)
    background = rng.integers(40, 90, size=(size, size, 3), dtype=np.uint8)
    clip = np.repeat(background[None], frames, axis=0)
    for t in range(frames):
        x = 2 + speed * t
        clip[t, 10:18, x:x + 8] = (230, 210, 190)
    return clip


@pytest.fixture()
def clip_folder(tmp_path):
    """Two good clips (mp4 and npy), an empty file, a garbage file and a 2-frame clip."""
    folder = tmp_path / "videos"
    folder.mkdir()
    write_video(folder / "good_a.mp4", moving_square(seed=1), fps=8)
    write_video(folder / "good_b.npy", moving_square(seed=2, speed=1), fps=8)
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(2048))
    write_video(folder / "short.npy", moving_square(frames=2), fps=8)
    return folder


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli_main(["eval", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_bad_files_are_listed_and_the_rest_scored(clip_folder, tmp_path, capsys):
    out_json = tmp_path / "metrics.json"
    code, out, _ = run(capsys, str(clip_folder), "--json", str(out_json), "--metrics",
                       "dynamic_degree,motion_score,flicker,smoothness")
    assert code == 0
    assert "2 clips scored, 3 skipped" in out
    assert "dynamic degree" in out and "this run used DIS" in out and "temporal flicker" in out
    assert "empty.mp4: empty (0 bytes)" in out
    assert "garbage.mp4: unreadable or truncated" in out
    assert "short.npy: too short: 2 frames, at least 3 needed" in out
    data = json.loads(out_json.read_text())
    assert sorted(r["name"] for r in data["per_video"]) == ["good_a.mp4", "good_b.npy"]
    assert {s["name"] for s in data["skipped"]} == {"empty.mp4", "garbage.mp4", "short.npy"}
    speeds = {r["name"]: r["motion_score"] for r in data["per_video"]}
    assert speeds["good_a.mp4"] > speeds["good_b.npy"] > 0  # the square moves 2 vs 1 px/frame
    assert 0.0 <= data["aggregate"]["dynamic_degree"] <= 1.0


def test_strict_fails_and_names_every_bad_file(clip_folder, capsys):
    code, out, err = run(capsys, str(clip_folder), "--strict", "--metrics", "flicker")
    assert code == 1
    assert "cannot be used (--strict)" in err
    for name in ("empty.mp4", "garbage.mp4", "short.npy"):
        assert name in err
    assert "temporal flicker" not in out  # nothing scored


def test_empty_folder_is_an_error(tmp_path, capsys):
    empty = tmp_path / "nothing"
    empty.mkdir()
    code, _, err = run(capsys, str(empty))
    assert code == 1
    assert "no videos found" in err


def test_folder_without_usable_video_is_an_error(tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "empty.mp4").write_bytes(b"")
    write_video(folder / "one_frame.npy", moving_square(frames=1), fps=8)
    code, _, err = run(capsys, str(folder))
    assert code == 1
    assert "no usable video among the 2 given" in err
    assert "empty.mp4: empty (0 bytes)" in err and "one_frame.npy: too short" in err


def test_mismatched_reference_is_reported(tmp_path, capsys):
    videos, reference = tmp_path / "videos", tmp_path / "real"
    videos.mkdir()
    reference.mkdir()
    for i in range(2):
        write_video(videos / f"clip_{i}.npy", moving_square(frames=6, seed=i), fps=8)
        write_video(reference / f"real_{i}.npy", moving_square(frames=20, size=48, seed=10 + i), fps=8)
    code, out, _ = run(capsys, str(videos), "--reference", str(reference), "--metrics", "frechet_motion,appearance")
    assert code == 0
    assert "reference mismatch: no frame size in common (videos 32x32; reference 48x48)" in out
    assert "reference mismatch: clip lengths do not overlap (videos 6 frames; reference 20 frames)" in out
    assert "Fréchet motion: combined" in out
    assert "motion windows of 6 frames" in out


def test_ground_truth_matched_by_file_name(tmp_path, capsys):
    videos, truth = tmp_path / "videos", tmp_path / "gt"
    videos.mkdir()
    truth.mkdir()
    clip = moving_square(seed=3)
    write_video(videos / "scene.npy", clip, fps=8)
    write_video(truth / "scene.npy", clip, fps=8)
    out_json = tmp_path / "m.json"
    code, out, _ = run(capsys, str(videos), "--ground-truth", str(truth), "--conditioning", str(truth),
                       "--metrics", "appearance", "--json", str(out_json))
    assert code == 0
    row = json.loads(out_json.read_text())["per_video"][0]
    assert row["gt_name"] == "scene.npy" and row["gt_psnr"] == 100.0 and row["gt_ssim"] == pytest.approx(1.0)
    assert row["first_frame_psnr"] == 100.0
    assert "PSNR vs ground truth" in out


def test_bad_options_exit_with_usage_errors(clip_folder, capsys):
    code, _, err = run(capsys, str(clip_folder), "--metrics", "dynamic_degree,vibes")
    assert code == 2 and "unknown group(s) vibes" in err
    with pytest.raises(SystemExit) as excinfo:
        cli_main(["eval", str(clip_folder), "--flow", "magic"])
    assert excinfo.value.code == 2


def test_manifest_conditioning_field_and_source_matching(tmp_path, capsys):
    from PIL import Image

    real, generated = tmp_path / "real", tmp_path / "generated"
    real.mkdir()
    (generated / "cond").mkdir(parents=True)
    clip = moving_square(seed=4)
    write_video(real / "scene.npy", clip, fps=8)
    Image.fromarray(clip[0]).save(generated / "cond" / "scene.png")
    darker = (clip // 2).astype(np.uint8)
    write_video(generated / "gen_0.npy", darker, fps=8)
    (generated / "manifest.jsonl").write_text(
        json.dumps({"path": "gen_0.npy", "source": "scene.npy", "conditioning": "cond/scene.png"}) + "\n")
    out_json = tmp_path / "m.json"
    code, _, _ = run(capsys, str(generated), "--ground-truth", str(real), "--metrics", "appearance",
                     "--json", str(out_json))
    assert code == 0
    row = json.loads(out_json.read_text())["per_video"][0]
    assert row["name"] == "gen_0.npy" and row["gt_name"] == "scene.npy"
    assert row["first_frame_psnr"] < 20 and row["gt_psnr"] == pytest.approx(row["first_frame_psnr"], abs=3)


def test_progress_bar_only_on_a_terminal_and_never_on_stdout(clip_folder, capsys, monkeypatch):
    argv = (str(clip_folder), "--metrics", "flicker")
    code, out_plain, err_plain = run(capsys, *argv)
    assert code == 0 and "clip/s" not in err_plain  # captured stderr is not a terminal: no bar
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    code, out_tty, err_tty = run(capsys, *argv)
    assert code == 0 and "videos:" in err_tty and "/5 [" in err_tty  # the bar counts all 5 files
    assert out_tty == out_plain  # the table is the same with or without the bar
