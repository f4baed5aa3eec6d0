"""train/checkpointing.py: saving a run, resuming it, and refusing what would not be the same run.

What a user relies on: a checkpoint written by ``Checkpointer.save`` resumes into a fresh process as the same
state; a config change that changes the run is refused naming the field, while the fields of
``RESUMABLE_CHANGES`` may change; a damaged newest checkpoint (an interrupted write) falls back to the older one;
a run folder written on another number of processes is refused naming both sizes; the logs are cut back to the
checkpoint; ``weights_digest`` identifies the weights.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from shiftvdm.errors import CheckpointError
from shiftvdm.train.checkpointing import RESUMABLE_CHANGES, Checkpointer, resume, weights_digest
from shiftvdm.train.distributed import Distributed
from shiftvdm.utils.step_checkpoints import DIGESTS_FILE, STATE_FILE, file_digests
from tiny_run import fill_buffer, make_cfg, make_parts, train_one_step


def run_with_checkpoints(tmp_path, steps=(1,), **sections):
    """A run that took ``max(steps)`` generator steps, checkpointed after each step in ``steps``."""
    cfg = make_cfg(tmp_path, **sections)
    backbone, critic, parts = make_parts(cfg)
    fill_buffer(backbone, critic, cfg, parts)
    parts.hooks.begin()
    saved = {}
    for s in range(1, max(steps) + 1):
        parts.hooks.log({"loss/real": train_one_step(backbone, parts, cfg)["loss/real"]}, s)
        if s in steps:
            saved[s] = [p.detach().clone() for p in parts.state.params]
            parts.checkpointer.save(parts.state, parts.hooks.metrics.path, backbone)
    return cfg, backbone, parts, saved


def test_save_then_resume_restores_the_state_and_cuts_the_logs_back(tmp_path):
    cfg, backbone, parts, saved = run_with_checkpoints(tmp_path, steps=(1,))
    folder = tmp_path / "checkpoints" / "step-0000001"
    assert sorted(p.name for p in folder.iterdir()) == ["digests.json", "lora.safetensors", STATE_FILE]
    state = torch.load(folder / STATE_FILE, weights_only=True)
    assert state["world_size"] == 1 and state["config"]["run"]["seed"] == 7 and state["counters"]["step"] == 1
    metrics = tmp_path / "logs" / "metrics.jsonl"
    parts.hooks.log({"loss/real": 9.0}, 2)  # a step after the checkpoint, then the process dies
    assert len(metrics.read_text().splitlines()) == 2

    _, _, fresh = make_parts(cfg, seed=5)
    assert resume(fresh.checkpointer, fresh.state) is True
    assert fresh.state.counters.step == 1 and fresh.state.buffer is not None
    assert all(torch.equal(a, b) for a, b in zip(saved[1], fresh.state.params))
    rows = [json.loads(r) for r in metrics.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1]  # no duplicate record of the step about to be recomputed


def test_no_checkpoint_resumes_nothing(tmp_path):
    _, _, parts = make_parts(make_cfg(tmp_path))
    assert resume(parts.checkpointer, parts.state) is False and parts.state.counters.step == 0


def test_a_changed_config_field_is_refused_naming_the_field(tmp_path):
    cfg, _, _, _ = run_with_checkpoints(tmp_path)
    _, _, parts = make_parts(make_cfg(tmp_path, optim={"lr": 2e-3}, rollout={"group_size": 2}))
    metrics = tmp_path / "logs" / "metrics.jsonl"
    parts.hooks.log({"loss/real": 9.0}, 2)  # a record after the checkpoint
    before = metrics.read_text()
    with pytest.raises(CheckpointError, match=r"cannot resume, the config differs[\s\S]*optim\.lr: 0\.001 -> 0\.002"):
        parts.checkpointer.load()
    assert metrics.read_text() == before  # a refused resume leaves the run's logs as they were


def test_the_resumable_fields_may_change(tmp_path):
    run_with_checkpoints(tmp_path)
    changed = make_cfg(tmp_path, run={"max_steps": 20, "time_limit_s": 30.0, "progress": True, "checkpoint_every": 5,
                                      "keep_checkpoints": 1, "log_every": 3, "sample_every": 4, "eval_every": 2})
    _, _, parts = make_parts(changed)
    path, state = parts.checkpointer.load()
    assert path.name == "step-0000001" and state["counters"]["step"] == 1
    assert {f"run.{f}" for f in ("max_steps", "time_limit_s", "log_every", "eval_every", "out_dir")} <= \
        set(RESUMABLE_CHANGES)


def test_max_steps_may_not_change_under_a_cosine_schedule(tmp_path):
    run_with_checkpoints(tmp_path, optim={"schedule": "cosine"})
    _, _, parts = make_parts(make_cfg(tmp_path, optim={"schedule": "cosine"}, run={"max_steps": 12}))
    with pytest.raises(CheckpointError, match=r"run.max_steps was 6, now 12; the cosine"):
        parts.checkpointer.load()


def test_a_damaged_newest_checkpoint_falls_back_to_the_older_one(tmp_path, caplog):
    cfg, backbone, parts, saved = run_with_checkpoints(tmp_path, steps=(1, 2))
    newest = tmp_path / "checkpoints" / "step-0000002" / STATE_FILE
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # a write cut short

    _, _, fresh = make_parts(cfg, seed=5)
    assert resume(fresh.checkpointer, fresh.state)
    assert fresh.state.counters.step == 1
    assert all(torch.equal(a, b) for a, b in zip(saved[1], fresh.state.params))
    assert "step-0000002" in caplog.text and "falling back" in caplog.text

    (tmp_path / "checkpoints" / "step-0000001" / STATE_FILE).write_bytes(b"")  # both damaged: refused
    with pytest.raises(CheckpointError, match="no intact checkpoint to resume from"):
        fresh.checkpointer.load()


def test_a_run_folder_of_another_world_size_is_refused_naming_both_sizes(tmp_path):
    cfg, _, parts, _ = run_with_checkpoints(tmp_path)
    two = Checkpointer(cfg, tmp_path, Distributed())
    two.dist = type("Two", (), {"world": 2, "rank": 0, "is_main": True})()  # checks only: no collective reached
    with pytest.raises(CheckpointError, match=r"written by 1 processes, this run has 2; resume on 1 processes"):
        two.check_world_size()

    for rank in (0, 1):  # what two processes leave
        (tmp_path / "checkpoints" / f"rank{rank}").mkdir()
    with pytest.raises(CheckpointError, match=r"written by 2 processes, this run has 1; resume on 2 processes"):
        parts.checkpointer.load()


def test_a_checkpoint_that_says_another_world_size_is_refused(tmp_path):
    cfg, _, parts, _ = run_with_checkpoints(tmp_path)
    folder = tmp_path / "checkpoints" / "step-0000001"
    state = torch.load(folder / STATE_FILE, weights_only=True)
    state["world_size"] = 4
    torch.save(state, folder / STATE_FILE)
    (folder / DIGESTS_FILE).write_text(json.dumps(file_digests(folder)))  # as a 4-process run would have written it
    with pytest.raises(CheckpointError, match=r"written by a run on 4 processes, this run has 1; resume on 4"):
        parts.checkpointer.load(folder)


def test_weights_digest_is_stable_and_changes_with_the_weights():
    params = [torch.nn.Parameter(torch.linspace(-1, 1, 12).reshape(3, 4)), torch.nn.Parameter(torch.ones(2))]
    digest = weights_digest(params)
    assert len(digest) == 64 and digest == weights_digest([p.detach().clone() for p in params])
    # SHA-256 of the raw bytes, tensor after tensor: the same on every machine and release
    assert digest == hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in params)).hexdigest()
    assert digest == "feedd4ff8a35ab2acd00a5e5e09217ef1b2e5228ff5a47bdc8b5dee1f8efe29a"
    with torch.no_grad():
        params[1][0] = torch.nextafter(torch.tensor(1.0), torch.tensor(2.0))  # one ulp
    assert weights_digest(params) != digest
    assert weights_digest([params[1], params[0]]) != weights_digest(params)  # order counts
    bf16 = [p.detach().to(torch.bfloat16) for p in params]
    assert weights_digest(bf16) != weights_digest(params)  # raw bytes: the dtype counts too


def test_a_checkpoint_whose_bytes_changed_falls_back_and_the_run_ends_as_a_clean_resume(tmp_path, caplog):
    """A few hundred bytes flipped in the newest trainer_state.pt (same size: it still unpickles, into NaN or
    wrong weights) are caught by the checkpoint's digests: the resume warns naming the file and takes the older
    checkpoint, and from there continues exactly as a resume from that older checkpoint does."""
    cfg, backbone, parts, saved = run_with_checkpoints(tmp_path, steps=(1, 2))
    newest = tmp_path / "checkpoints" / "step-0000002" / STATE_FILE
    data = bytearray(newest.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 300] = bytes(b ^ 0xFF for b in data[middle:middle + 300])
    newest.write_bytes(bytes(data))

    _, _, damaged = make_parts(cfg, seed=5)
    with caplog.at_level("WARNING"):
        assert resume(damaged.checkpointer, damaged.state) is True
    assert damaged.state.counters.step == 1 and str(newest) in caplog.text and "SHA-256" in caplog.text
    assert all(torch.equal(a, b) for a, b in zip(saved[1], damaged.state.params))
    (tmp_path / "checkpoints" / "step-0000002").rename(tmp_path / "aside")  # a clean resume from step 1
    _, _, clean = make_parts(cfg, seed=5)
    assert resume(clean.checkpointer, clean.state) is True
    after_damaged = train_one_step(backbone, damaged, cfg)
    after_clean = train_one_step(backbone, clean, cfg)
    assert after_damaged == after_clean


def test_a_checkpoint_without_digests_holding_nan_weights_falls_back(tmp_path, caplog):
    """A checkpoint written before digests existed (no digests.json) whose trained weights are NaN is damage too:
    never resumed from, and never named as "holding finite weights"."""
    cfg, backbone, parts, saved = run_with_checkpoints(tmp_path, steps=(1, 2))
    newest = tmp_path / "checkpoints" / "step-0000002"
    (newest / DIGESTS_FILE).unlink()
    state = torch.load(newest / STATE_FILE, weights_only=True)
    first = next(iter(state["params"]))
    state["params"][first].view(-1)[0] = float("nan")
    torch.save(state, newest / STATE_FILE)
    _, _, again = make_parts(cfg, seed=5)
    with caplog.at_level("WARNING"):
        assert resume(again.checkpointer, again.state) is True
    assert again.state.counters.step == 1 and str(newest / STATE_FILE) in caplog.text and "NaN" in caplog.text
    assert all(torch.equal(a, b) for a, b in zip(saved[1], again.state.params))
