"""The time budget of a run (run.time_limit_s) on its two clocks: wall seconds, or the process's CPU seconds,
which the demo uses to give continued SFT the same compute as SHIFT whatever else the machine runs."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
import torch

from shiftvdm.data.synthetic import make_sprite_clips
from shiftvdm.recipes.demo.config import load_demo_config, train_config
from shiftvdm.recipes.demo.training import train_stage

PRESET = str(Path(__file__).parents[1] / "fixtures" / "demo_test.yaml")


def run(tmp_path: Path, clock: str, limit: float):
    cfg = load_demo_config(PRESET, False, [])
    clips = make_sprite_clips(32, 8, 16, seed=0, num_sprites=1, sprite_size=3.0, speed=(1.5, 2.5),
                              background="flat", shapes=("square",), antialias=False).videos
    tc = train_config(cfg, tmp_path / clock, cfg.pretrain, {"run": {"max_steps": 12, "time_limit_s": limit,
                                                                     "time_limit_clock": clock, "eval_every": 0}},
                      mode="pretrain")
    return train_stage(tc, clips)


def test_cpu_clock_budget_counts_process_cpu_seconds(tmp_path, monkeypatch):
    # a process clock that runs 5 s per reading: the CPU budget ends the run early, the wall budget does not
    ticks = itertools.count()
    monkeypatch.setattr(time, "process_time", lambda: 5.0 * next(ticks))
    cpu = run(tmp_path, "cpu", limit=100.0)
    assert cpu.stopped_by == "time_limit" and 1 <= cpu.steps < 12
    assert cpu.timers["cpu"] >= 100.0 > cpu.timers["wall"]
    wall = run(tmp_path, "wall", limit=3600.0)
    assert wall.stopped_by == "max_steps" and wall.steps == 12
    assert wall.timers["cpu"] > wall.timers["wall"]  # both clocks are recorded whichever one budgets


def test_both_clocks_are_recorded_and_cpu_is_real(tmp_path):
    torch.set_num_threads(1)
    result = run(tmp_path, "wall", limit=0.0)
    assert result.stopped_by == "max_steps"
    # one thread: CPU seconds cannot exceed wall seconds by more than timer resolution
    assert 0.0 < result.timers["cpu"] <= result.timers["wall"] * 1.05 + 0.05


def test_unknown_clock_is_refused(tmp_path):
    from shiftvdm.errors import ConfigError

    cfg = load_demo_config(PRESET, False, [])
    with pytest.raises(ConfigError, match="time_limit_clock"):
        train_config(cfg, tmp_path, cfg.pretrain, {"run": {"time_limit_clock": "gpu"}}, mode="pretrain")
