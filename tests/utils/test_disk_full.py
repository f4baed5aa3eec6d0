"""A full disk on every write path (issue 27 item 2): ENOSPC injected into the one writer (``utils/atomic.py``'s
``_write_into``) ends each command with one line naming the path and the free space — no traceback — and the
previous good output stays in place; ``data synth --overwrite`` keeps the old dataset when the new one cannot be
written. Where the tests run as root, the same on a real 1 MB tmpfs.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_bad_inputs import run_cli, sft_args, toy_world, tree_digest

from shiftvdm.utils import atomic
from shiftvdm.utils.atomic import DiskWriteError, staged_dir, staging_path, sweep_stale
from shiftvdm.utils.metrics_log import MetricsLogger
from shiftvdm.utils.step_checkpoints import read_step_state


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    return toy_world(tmp_path_factory.mktemp("full"), lora=True)


def full_disk(monkeypatch, when: str) -> list[str]:
    """Make every write whose path contains ``when`` fail as on a full disk (after writing half of it)."""
    hits: list[str] = []
    real = atomic._write_into

    def write_into(target, write):
        if when in str(target):
            hits.append(str(target))
            real(target, write)  # the bytes go out, then the disk is full: a half-written file to clean up
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        real(target, write)

    monkeypatch.setattr(atomic, "_write_into", write_into)
    return hits


def _no_leftovers(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob(".*") if p.name not in (".lock", ".shiftvdm-stamp.json")
            and p.suffix in (".tmp", "") and (".staging-" in p.name or p.name.endswith(".tmp") or
                                             p.name.startswith(".step-"))]


def _one_line_error(text: str, path_part: str) -> None:
    errors = [line for line in text.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "Traceback" not in text, text
    line = errors[0]
    assert "No space left on device" in line and path_part in line and "free on" in line, line


def _cases(w: dict[str, Path], tmp: Path) -> dict[str, tuple[list[str], list[str], str, Path]]:
    """case -> (first command, second command that hits the full disk, path part, output that must stay)."""
    gen = ["generate", "--model", str(w["toy"]), "--data", str(w["ds"]), "--out", str(tmp / "fakes"),
           "--per-clip", "1", "--no-progress", "--format", "npy"]
    synth = ["data", "synth", "--out", str(tmp / "sprites"), "--clips", "2", "--frames", "3", "--size", "16",
             "--format", "npy"]
    export = ["export", "--model", str(w["toy"]), "--lora", str(w["lora"]), "--out", str(tmp / "exported")]
    run = tmp / "run"
    sft = sft_args(w["ds"], run, "run.checkpoint_every=1", "run.max_steps=2", "run.keep_checkpoints=3")
    evaluate = ["eval", str(w["ds"]), "--metrics", "flicker", "--json", str(tmp / "m.json")]
    return {
        # the step-2 checkpoint cannot be written: step 1 stays, resumable
        "checkpoint": (["true"], sft, "step-0000002", run / "checkpoints" / "step-0000001"),
        "export": (export, [*export, "--overwrite"], "toy_backbone.json", tmp / "exported"),
        "data synth --overwrite": (synth, [*synth, "--seed", "3", "--overwrite"], "manifest.jsonl",
                                   tmp / "sprites"),
        "generate clips": (gen, gen, ".npy", tmp / "fakes" / "manifest.jsonl"),
        "generate manifest": (gen, gen, "manifest.jsonl", tmp / "fakes" / "manifest.jsonl"),
        "eval --json": (evaluate, evaluate, "m.json", tmp / "m.json"),
    }


@pytest.mark.parametrize("case", ["checkpoint", "export", "data synth --overwrite", "generate clips",
                                  "generate manifest", "eval --json"])
def test_a_full_disk_ends_with_one_line_and_keeps_the_previous_output(case, world, tmp_path, capsys, monkeypatch):
    first, second, when, kept = _cases(world, tmp_path)[case]
    if first != ["true"]:
        assert run_cli(first, capsys)[0] == 0
    if case == "generate clips":  # a clip to make again on the rerun
        next((tmp_path / "fakes" / "clips").iterdir()).unlink()
    before = tree_digest(kept)
    hits = full_disk(monkeypatch, when)
    rc, text = run_cli(second, capsys)
    assert hits, f"the write of {when} did not go through the one writer"
    assert rc == 1
    if case == "checkpoint":  # step 1 was written before the disk filled: intact, and what a resume reads
        _one_line_error(text, str(kept.parent / "step-0000002"))
        read_step_state(kept)  # digests checked
        assert [p.name for p in kept.parent.iterdir()] == ["step-0000001"]
    else:
        _one_line_error(text, when)
        assert tree_digest(kept) == before and before, "the previous output changed"
    assert _no_leftovers(tmp_path) == []
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name or ".old-" in p.name]


def test_a_metrics_record_is_appended_whole_or_not_at_all(tmp_path, monkeypatch):
    log = MetricsLogger(tmp_path / "logs")
    log.log({"loss": 1.0}, step=1)
    size = log.path.stat().st_size
    full_disk(monkeypatch, "metrics.jsonl")
    with pytest.raises(DiskWriteError, match=r"cannot write .*metrics.jsonl: No space left on device.*free on"):
        log.log({"loss": 2.0}, step=2)
    assert log.path.stat().st_size == size  # the half-written record was cut off


def test_a_killed_swap_is_put_back_and_stale_staging_is_swept(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "a").write_text("old\n")
    dead = 2 ** 22 + 12345  # above the default pid_max: never a live process
    backup = tmp_path / f".ds.old-{atomic._host()}-{dead}"
    os.replace(folder, backup)  # killed between moving the old folder aside and moving the new one in
    staging = tmp_path / f".ds.staging-{atomic._host()}-{dead}"
    staging.mkdir()
    (tmp_path / ".x.abc.tmp").write_text("half")
    sweep_stale(tmp_path)
    assert (folder / "a").read_text() == "old\n" and not staging.exists() and not (tmp_path / ".x.abc.tmp").exists()
    # a failing build keeps the old folder and leaves no staging folder
    with pytest.raises(RuntimeError), staged_dir(folder) as new:
        (new / "a").write_text("new\n")
        raise RuntimeError("killed")
    assert (folder / "a").read_text() == "old\n" and not staging_path(folder).exists()


def _mount_tmpfs(where: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    where.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


def test_a_real_full_tmpfs(tmp_path, capsys):
    disk = tmp_path / "small"
    if not _mount_tmpfs(disk, "600k"):
        pytest.skip("cannot mount a tmpfs here (not root, or no mount permission)")
    try:
        small = ["data", "synth", "--out", str(disk / "ds"), "--clips", "2", "--frames", "3", "--size", "16",
                 "--format", "npy"]
        assert run_cli(small, capsys)[0] == 0
        before = tree_digest(disk / "ds")
        big = ["data", "synth", "--out", str(disk / "ds"), "--clips", "8", "--frames", "16", "--size", "64",
               "--format", "npy", "--overwrite"]
        rc, text = run_cli(big, capsys)
        assert rc == 1
        errors = [line for line in text.splitlines() if ": error: " in line]
        assert len(errors) == 1 and "Traceback" not in text and "No space left on device" in errors[0], text
        assert str(disk) in errors[0] and "free on" in errors[0]
        assert tree_digest(disk / "ds") == before  # the old dataset, whole
        assert sorted(p.name for p in disk.iterdir()) == ["ds"]  # no staging folder left
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS])
def test_each_refusal_of_the_file_system_is_one_line_naming_the_path(code, tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old\n")

    def write(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(code, os.strerror(code), str(tmp))

    with pytest.raises(DiskWriteError) as caught:
        atomic.atomic_write(target, write, size=1234)
    text = str(caught.value)
    assert "\n" not in text and str(target) in text and os.strerror(code) in text, text
    assert "needs 1.2 KB" in text and "free on" in text and "previous out.json is unchanged" in text
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_a_permission_error_reading_an_input_is_not_a_disk_error(tmp_path):
    def write(tmp: Path) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", "/somewhere/else/input.bin")

    with pytest.raises(PermissionError):
        atomic.atomic_write(tmp_path / "out.bin", write)
    assert list(tmp_path.iterdir()) == []
