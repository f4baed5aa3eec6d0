"""utils/step_checkpoints.py: atomic ``step-NNNNNNN/`` folders that a resume can trust.

What a user relies on: the newest complete folder is found, a half-written one (killed mid-write) is never taken
for a checkpoint, only the newest ``keep`` survive, and the state reads back with ``weights_only=True``.
"""

from __future__ import annotations

import pytest
import torch

from shiftvdm.utils.step_checkpoints import STATE_FILE, checkpoint_dirs, latest_checkpoint, write_checkpoint


def test_write_then_read_back_state_and_extra_files(tmp_path):
    state = {"step": 5, "weights": torch.arange(4.0), "nested": {"rng": torch.tensor([1, 2], dtype=torch.uint8)}}
    folder = write_checkpoint(tmp_path / "ckpt", 5, state,
                              extra_files={"lora.txt": lambda p: p.write_text("adapter"),
                                           "critic": lambda p: (p.mkdir(), (p / "w.txt").write_text("d"))})
    assert folder == tmp_path / "ckpt" / "step-0000005"
    back = torch.load(folder / STATE_FILE, weights_only=True)  # plain tensors and containers only
    assert back["step"] == 5 and torch.equal(back["weights"], state["weights"])
    assert torch.equal(back["nested"]["rng"], state["nested"]["rng"])
    assert (folder / "lora.txt").read_text() == "adapter" and (folder / "critic" / "w.txt").read_text() == "d"
    assert latest_checkpoint(tmp_path / "ckpt") == folder
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step-0000005"]  # no temporary left


def test_only_the_newest_keep_folders_survive(tmp_path):
    for step in (1, 2, 3, 4):
        write_checkpoint(tmp_path, step, {"step": step}, keep=2)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-0000003", "step-0000004"]
    for step in (5, 6):
        write_checkpoint(tmp_path, step, {"step": step}, keep=0)  # keep <= 0 keeps all
    assert [int(p.name[5:]) for p in checkpoint_dirs(tmp_path)] == [3, 4, 5, 6]


def test_incomplete_and_foreign_folders_are_not_checkpoints(tmp_path):
    write_checkpoint(tmp_path, 9, {"step": 9})
    (tmp_path / "step-0000012").mkdir()  # killed before its state file: not complete
    (tmp_path / ".step-0000013.abcd").mkdir()  # a temporary a kill left
    (tmp_path / "step-latest").mkdir()
    (tmp_path / "step-latest" / STATE_FILE).write_text("x")
    (tmp_path / "step-0000011").write_text("a file, not a folder")
    (tmp_path / "step-100").mkdir()  # unpadded names sort by number, not text
    torch.save({"step": 100}, tmp_path / "step-100" / STATE_FILE)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-0000009", "step-100"]
    assert latest_checkpoint(tmp_path).name == "step-100"
    assert checkpoint_dirs(tmp_path / "missing") == [] and latest_checkpoint(tmp_path / "missing") is None


def test_a_failing_writer_leaves_the_previous_checkpoints_intact(tmp_path):
    write_checkpoint(tmp_path, 1, {"step": 1})

    def broken(path):
        path.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(tmp_path, 2, {"step": 2}, extra_files={"lora.safetensors": broken}, keep=1)
    assert [p.name for p in tmp_path.iterdir()] == ["step-0000001"]  # no step-2, no temporary, step-1 kept
    assert torch.load(latest_checkpoint(tmp_path) / STATE_FILE, weights_only=True) == {"step": 1}


def test_rewriting_a_step_replaces_it(tmp_path):
    write_checkpoint(tmp_path, 3, {"v": 1}, extra_files={"old.txt": lambda p: p.write_text("old")})
    write_checkpoint(tmp_path, 3, {"v": 2})
    folder = latest_checkpoint(tmp_path)
    assert torch.load(folder / STATE_FILE, weights_only=True) == {"v": 2}
    assert not (folder / "old.txt").exists()
