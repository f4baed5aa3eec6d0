"""utils/metrics_log.py: the JSON-lines metrics every training loop writes (``logs/metrics.jsonl``).

Users and tests read this file: one record per call with the step, optional time and float values; other
processes than the main one write nothing.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from shiftvdm.utils.metrics_log import MetricsLogger


def records(logger: MetricsLogger) -> list[dict]:
    return [json.loads(line) for line in logger.path.read_text().splitlines()]


def test_records_are_appended_as_json_lines_with_float_values(tmp_path):
    logger = MetricsLogger(tmp_path / "logs")
    assert logger.path == tmp_path / "logs" / "metrics.jsonl"
    logger.log({"loss": torch.tensor(0.25), "lr": 1e-3, "count": 3}, step=1, time=1.234567)
    logger.log({"loss": 0.5}, step=2)
    logger.log({}, step=3)  # nothing to write: no record
    got = records(logger)
    assert got == [{"step": 1, "time": 1.2346, "loss": 0.25, "lr": 0.001, "count": 3.0}, {"step": 2, "loss": 0.5}]
    assert isinstance(got[0]["count"], float)
    MetricsLogger(tmp_path / "logs").log({"loss": 0.75}, step=3)  # a resumed run appends to the same file
    assert [r["step"] for r in records(logger)] == [1, 2, 3]


def test_non_finite_values_are_kept_in_the_file(tmp_path):
    logger = MetricsLogger(tmp_path)
    logger.log({"grad_norm": float("nan"), "loss": float("inf")}, step=4)
    line = logger.path.read_text()
    assert "NaN" in line and "Infinity" in line  # Python's json reads these back
    record = json.loads(line)
    assert math.isnan(record["grad_norm"]) and record["loss"] == math.inf


def test_a_disabled_logger_writes_nothing(tmp_path):
    logger = MetricsLogger(tmp_path / "logs", enabled=False)
    logger.open(total=10, progress=True)
    logger.log({"loss": 1.0}, step=1)
    logger.advance(1, loss="1.0")
    logger.close()
    assert not (tmp_path / "logs").exists()


def test_tensorboard_mirrors_the_finite_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = MetricsLogger(tmp_path)
    logger.open(progress=False)
    logger.log({"loss": 0.5, "grad_norm": float("nan")}, step=1)
    logger.log({"loss": 0.25}, step=2)
    logger.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert events.Tags()["scalars"] == ["loss"]  # the NaN stays in metrics.jsonl only
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(1, 0.5), (2, 0.25)]
