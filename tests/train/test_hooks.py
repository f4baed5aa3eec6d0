"""train/hooks.py: what a run does around Algorithm 1 (logs, evaluation, checkpoints, clocks, the end of the run).

What a user relies on: metrics.jsonl gets a row every ``run.log_every`` steps; a resumable checkpoint every
``run.checkpoint_every`` steps (the end of the run writes its own); the recipe's evaluation every
``run.eval_every`` steps sees the EMA weights and its time is not training time; a time budget is agreed and
continues from a resumed run's clock; the end of the run leaves summary.json, the weights digest and the LoRA
(with the EMA weights) in the run folder.
"""

from __future__ import annotations

import json
import time

import pytest
import torch
from safetensors.torch import load_file

from shiftvdm.train.checkpointing import weights_digest
from support import lora_weights
from tiny_run import make_cfg, make_parts


def read_rows(run_dir):
    path = run_dir / "logs" / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def steps_done(parts, metrics_for_step, n: int) -> None:
    """What train() does after each generator step, ``n`` times."""
    for _ in range(n):
        parts.state.counters.step += 1
        parts.hooks.after_step(metrics_for_step(parts.state.counters.step))


def test_after_step_logs_every_log_every_and_checkpoints_every_checkpoint_every_but_not_at_the_end(tmp_path):
    cfg = make_cfg(tmp_path, run={"max_steps": 6, "log_every": 2, "checkpoint_every": 3})
    backbone, critic, parts = make_parts(cfg)
    parts.hooks.begin()
    assert (tmp_path / "config.yaml").is_file()
    steps_done(parts, lambda s: {"loss/real": 0.1 * s}, 6)

    rows = read_rows(tmp_path)
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert [r["loss/real"] for r in rows] == pytest.approx([0.2, 0.4, 0.6])
    assert all(r["nonfinite_steps"] == 0 and r["time"] >= 0 for r in rows)
    # step 3 only: at max_steps the end of the run writes the last checkpoint (finish)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-0000003"]
    assert parts.hooks.last_metrics == {"loss/real": pytest.approx(0.6)}


def test_evaluation_runs_every_eval_every_with_the_ema_weights_off_the_training_clock(tmp_path):
    cfg = make_cfg(tmp_path, run={"max_steps": 4, "eval_every": 2}, optim={"ema_decay": 0.9})
    seen = []

    def evaluate(backbone, step):
        seen.append((step, [p.detach().clone() for p in parts.state.params]))
        time.sleep(0.3)
        return {"score": float(step)}

    backbone, critic, parts = make_parts(cfg, evaluate=evaluate)
    state = parts.state
    with torch.no_grad():
        state.ema.shadow = [p.detach() + 1.0 for p in state.params]  # the EMA apart from the trained weights
    trained = [p.detach().clone() for p in state.params]
    parts.hooks.begin()
    at_begin = parts.hooks.elapsed("wall")  # (begin itself counts: it starts TensorBoard)
    steps_done(parts, lambda s: {"loss/real": 1.0}, 4)

    assert [s for s, _ in seen] == [2, 4]
    for _, weights in seen:
        assert all(torch.equal(w, e) for w, e in zip(weights, state.ema.shadow))  # evaluated the EMA weights
    assert all(torch.equal(p, t) for p, t in zip(state.params, trained))  # and trains on with its own
    evals = [r for r in read_rows(tmp_path) if "eval/score" in r]
    assert [(r["step"], r["eval/score"]) for r in evals] == [(2, 2.0), (4, 4.0)]
    assert parts.hooks.elapsed("wall") - at_begin < 0.3  # 0.6 s of evaluation is not training time
    assert state.counters.timers["wall"] - at_begin < 0.3


def test_the_time_limit_stop_follows_the_budget_and_continues_a_resumed_clock(tmp_path):
    backbone, critic, parts = make_parts(make_cfg(tmp_path))
    parts.hooks.begin()
    assert parts.hooks.stop_reason() is None  # no budget: never

    cfg = make_cfg(tmp_path / "b", run={"time_limit_s": 0.5})
    _, _, parts = make_parts(cfg)
    parts.hooks.begin()
    assert parts.hooks.stop_reason() is None
    time.sleep(0.55)
    assert parts.hooks.stop_reason() == "time_limit"

    # a resumed run brings its training seconds: its budget is already spent
    _, _, parts = make_parts(make_cfg(tmp_path / "c", run={"time_limit_s": 50}))
    parts.state.counters.timers["wall"] = 60.0
    parts.hooks.begin()
    assert parts.hooks.elapsed("wall") >= 60.0 and parts.hooks.stop_reason() == "time_limit"


def test_finish_writes_the_summary_the_digest_the_last_checkpoint_and_the_ema_lora(tmp_path):
    cfg = make_cfg(tmp_path, run={"max_steps": 2}, optim={"ema_decay": 0.9})
    backbone, critic, parts = make_parts(cfg)
    state = parts.state
    with torch.no_grad():
        state.ema.shadow = [p.detach() + 0.5 for p in state.params]
    parts.hooks.begin()
    steps_done(parts, lambda s: {"loss/real": 0.25}, 2)
    with state.ema_applied():
        ema_lora = lora_weights(backbone)
    trained_lora = lora_weights(backbone)
    parts.hooks.finish({"loss/real": 0.25})

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["nonfinite_steps"] == 0 and summary["d_steps"] == 0
    assert summary["last_metrics"] == {"loss/real": 0.25} and summary["timers"]["wall"] >= 0
    final = json.loads((tmp_path / "logs" / "final-rank0.json").read_text())
    assert final == {"rank": 0, "steps": 2, "weights_sha256": weights_digest(state.params)}
    assert (tmp_path / "checkpoints" / "step-0000002" / "trainer_state.pt").is_file()

    saved = load_file(tmp_path / "lora.safetensors")
    assert len(saved) == len(ema_lora) > 0
    by_name = {k.replace(".default", ""): v for k, v in ema_lora.items()}
    assert all(torch.equal(saved[k], by_name[k]) for k in saved)  # the EMA weights are the ones for use
    assert all(torch.equal(p, trained_lora[k]) for k, p in lora_weights(backbone).items())  # trained ones back
    assert (tmp_path / "critic").is_dir()  # the refreshed critic the run ends with
