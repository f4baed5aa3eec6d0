"""`shiftvdm data check`: every kind of bad entry is listed with its reason; exit codes 1 (bad) and 0 (all good)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shiftvdm.cli import main as cli_main
from shiftvdm.data.check import check_dataset, format_report
from shiftvdm.data.synthetic import make_sprite_clips
from shiftvdm.data.video_io import write_video
from conftest import real_videos_dir

EXPECTED_REASONS = {
    "clips/good.mp4": None,
    "clips/good.npy": None,
    "clips/missing.mp4": "missing (no such file)",
    "clips/empty.mp4": "empty (0 bytes)",
    "clips/half.mp4": "unreadable or truncated: ",
    "clips/text.webm": "unreadable or truncated: ",
    "clips/short.mp4": "too few frames: 3 < 4",
    "../outside.mp4": "path outside the dataset root",
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A manifest with two good clips and one entry of each kind of bad."""
    root = tmp_path_factory.mktemp("check") / "data"
    (root / "clips").mkdir(parents=True)
    videos = make_sprite_clips(2, 6, 16, seed=0).videos
    write_video(root / "clips" / "good.mp4", videos[0], fps=8)
    write_video(root / "clips" / "good.npy", videos[1], fps=8)
    (root / "clips" / "empty.mp4").write_bytes(b"")
    whole = write_video(root / "clips" / "whole.mp4", videos[0], fps=8).read_bytes()
    (root / "clips" / "half.mp4").write_bytes(whole[: len(whole) // 2])  # a real mp4 cut in half
    (root / "clips" / "text.webm").write_text("this is not a video\n")
    write_video(root / "clips" / "short.mp4", videos[0][:3], fps=8)
    write_video(root.parent / "outside.mp4", videos[0], fps=8)  # exists, but outside the root
    lines = [json.dumps({"path": relpath}) for relpath in EXPECTED_REASONS]
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_every_bad_entry_has_its_reason(dataset):
    report = check_dataset(dataset / "manifest.jsonl", num_frames=4)
    assert [e.relpath for e in report.good] == ["clips/good.mp4", "clips/good.npy"]
    reasons = {entry.relpath: reason for entry, reason in report.bad}
    assert list(reasons) == [k for k, v in EXPECTED_REASONS.items() if v is not None]  # manifest order
    for relpath, reason in reasons.items():
        assert reason.startswith(EXPECTED_REASONS[relpath]), (relpath, reason)
    assert not report.ok
    text = format_report(report)
    for relpath, reason in reasons.items():
        assert f"{relpath}: {reason}" in text
    assert "6 of 8 clips are bad, 2 good" in text


def test_frame_requirement_counts_at_the_target_fps(dataset):
    # the 6-frame good clips at 8 fps give 3 frames at 4 fps
    report = check_dataset(dataset / "manifest.jsonl", num_frames=4, fps=4)
    reasons = {e.relpath: r for e, r in report.bad}
    assert reasons["clips/good.mp4"] == "too few frames: 3 < 4 at 4 fps"
    assert check_dataset(dataset / "manifest.jsonl", num_frames=3, fps=4).good[0].relpath == "clips/good.mp4"


def test_cli_exit_1_lists_every_bad_entry(dataset, capsys):
    assert cli_main(["data", "check", str(dataset / "manifest.jsonl"), "--frames", "4"]) == 1
    out = capsys.readouterr().out
    for relpath, reason in EXPECTED_REASONS.items():
        if reason is None:
            assert relpath not in out
        else:
            assert f"{relpath}: {reason}" in out


def test_cli_exit_0_one_line_summary_when_all_good(dataset, capsys):
    good = dataset / "good.jsonl"
    good.write_text('{"path": "clips/good.mp4"}\n{"path": "clips/good.npy"}\n')
    assert cli_main(["data", "check", str(good), "--frames", "6"]) == 0
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and "all 2 clips are good" in out


def test_cli_unreadable_manifest_is_an_error(tmp_path, capsys):
    (tmp_path / "m.jsonl").write_text("{oops\n")
    assert cli_main(["data", "check", str(tmp_path / "m.jsonl")]) == 1
    assert "m.jsonl line 1: invalid JSON" in capsys.readouterr().err


REAL_VIDEOS = real_videos_dir()


@pytest.mark.skipif(not (REAL_VIDEOS / "vtest.avi").is_file(), reason=f"real clips not found in {REAL_VIDEOS}")
def test_truncated_avi_is_caught_by_its_frame_count(tmp_path):
    # an AVI cut in half still opens and decodes; only the header's frame count shows what is missing
    data = (REAL_VIDEOS / "vtest.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    report = check_dataset(tmp_path)
    assert len(report.bad) == 1
    assert report.bad[0][1].startswith("unreadable or truncated: decoded ") and "of the 795 frames" in report.bad[0][1]
