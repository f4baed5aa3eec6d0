"""A run folder written by an older shiftvdm (commit e17d547, before the trainer's wiring and the config keys
changed) resumes with the current code and ends where a straight run of the current code ends, bit for bit.

The fixture (tests/fixtures/run_e17d547/, see its README) holds a toy SHIFT run stopped at step 3 inside its first
rollout buffer, with its base model, critic and data under relative paths, so the folder can be copied anywhere.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from shiftvdm.cli import main as cli

FIXTURE = Path(__file__).parents[1] / "fixtures" / "run_e17d547"


@pytest.fixture
def legacy(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "legacy"
    shutil.copytree(FIXTURE, root)
    monkeypatch.chdir(root)  # the old config's paths are relative to this folder
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root


@pytest.mark.slow
def test_a_run_written_at_e17d547_resumes_bit_for_bit(legacy):
    assert cli(["shift", "--config", "shift.yaml", "--resume", "run.max_steps=6"]) == 0
    assert cli(["shift", "--config", "shift.yaml", "--out", "straight", "run.max_steps=6"]) == 0
    resumed, straight = load_file(legacy / "run" / "lora.safetensors"), load_file(legacy / "straight" / "lora.safetensors")
    assert resumed.keys() == straight.keys() and resumed
    assert all((resumed[k] == straight[k]).all() for k in straight), "the resumed run left the straight run's path"
    old = load_file(FIXTURE / "run" / "lora.safetensors")
    assert any(not (old[k] == resumed[k]).all() for k in old)  # it did train on after step 3
