"""What a run does around Algorithm 1, at fixed points of the loop: logs, the progress bar, sample clips, the
recipe's evaluation, periodic checkpoints, the training clocks and the time budget, and the end of the run.

train/shift.py calls ``begin`` once, ``after_buffer`` for each new rollout buffer, ``after_step`` after each
generator step, ``stop_reason`` at each safe point (the agreed stop: time limit or preemption), and ``finish`` at
the end; nothing here changes what the run computes (evaluation and sample writing are taken off the training
clocks).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from shiftvdm.backbone.base import Backbone, Condition
from shiftvdm.config import dump_config
from shiftvdm.data.video_io import to_uint8, write_video
from shiftvdm.train.buffer import RolloutBuffer
from shiftvdm.train.checkpointing import (
    Checkpointer,
    export_final,
    gathered_weights,
    weights_digest,
)
from shiftvdm.train.config import TrainConfig
from shiftvdm.train.distributed import Distributed, full_state_dicts
from shiftvdm.train.engine import GradientEngine
from shiftvdm.train.numerics import check_params_finite
from shiftvdm.train.state import TrainState
from shiftvdm.utils import preemption
from shiftvdm.utils.atomic import append_text
from shiftvdm.utils.checkpoint import save_json
from shiftvdm.utils.metrics_log import MetricsLogger
from shiftvdm.utils.seeding import generator_for

logger = logging.getLogger(__name__)

Evaluate = Callable[[Backbone, int], dict[str, float]]


# The measured split of a run's time (seconds so far, checkpointed timers of train/state.py), logged with every
# step so that train/cost.py's prediction can be checked: phase -> the timers it sums.
TIME_SPLIT = {"time/rollouts": ("rollout", "decode"), "time/rewards": ("reward",), "time/training": ("generator",),
              "time/refresh": ("discriminator",), "time/data": ("data", "encode")}


def time_split(timers: dict[str, float]) -> dict[str, float]:
    """Seconds so far per phase of the cost model (rollouts, rewards, training, refresh, data)."""
    return {name: sum(timers.get(t, 0.0) for t in parts) for name, parts in TIME_SPLIT.items()}


def now(clock: str) -> float:
    """``clock`` "cpu": this process's CPU time over all its threads, which other processes' load does not
    inflate; "wall": seconds."""
    return time.process_time() if clock == "cpu" else time.perf_counter()


class RunHooks:
    """The run's side effects, for one process (process 0 writes the shared files)."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, dist: Distributed, backbone: Backbone, state: TrainState,
                 engine: GradientEngine, checkpointer: Checkpointer, *, evaluate: Evaluate | None = None,
                 sample_frames: Tensor | None = None, sample_prompts: list[str] | None = None,
                 sample_cond: Condition | None = None) -> None:
        self.cfg, self.run_dir, self.dist = cfg, Path(run_dir), dist
        self.backbone, self.state, self.engine, self.checkpointer = backbone, state, engine, checkpointer
        self.evaluate = evaluate
        self.sample_frames, self.sample_prompts = sample_frames, sample_prompts
        self.sample_cond = sample_cond  # the samples' Condition from data.cache (no encoder needed), or None
        self.metrics = MetricsLogger(self.run_dir / "logs", enabled=dist.is_main)
        self.last_metrics: dict[str, float] = {}
        self._t_start = {"wall": 0.0, "cpu": 0.0}  # per clock
        self._t_offset = {"wall": 0.0, "cpu": 0.0}
        self._bar_seconds = 0.0  # seconds shown by a time-budget progress bar
        # slowest step, rollout batch and checkpoint write seen (the preemption bound the banner reports)
        self.slowest = {"step": 0.0, "rollout batch": 0.0, "checkpoint write": 0.0}
        self._t_step = self._t_buffer = 0.0  # the generator / buffer timers at the last reading
        self._bound_told: set[str] = set()

    # ----- clocks ---------------------------------------------------------------------------------------
    def elapsed(self, clock: str = "wall") -> float:
        """Training seconds so far on ``clock`` ("wall" or "cpu"), evaluation and sample writing excluded."""
        return self._t_offset[clock] + (now(clock) - self._t_start[clock])

    def _clocks(self) -> dict[str, float]:
        return {clock: now(clock) for clock in self._t_start}

    def _pause(self, since: dict[str, float]) -> None:
        """Take the time since ``since`` (a _clocks() reading) off the training clocks."""
        for clock, t0 in since.items():
            self._t_offset[clock] -= now(clock) - t0

    def stop_reason(self, *, buffer_abandoned: bool = False) -> str | None:
        """The run's one agreed stop decision at a safe point, the same on every rank (one all-reduce):
        "preempted" when a preemption signal reached any rank (or this rank abandoned its rollout buffer for
        one), else "time_limit" when any rank is over ``run.time_limit_s``, else None. Call it on every rank."""
        run = self.cfg.run
        over = run.time_limit_s > 0 and self.elapsed(run.time_limit_clock) >= run.time_limit_s
        preempted, over = self.dist.any_each([preemption.requested() or buffer_abandoned, over])
        return "preempted" if preempted else "time_limit" if over else None

    # ----- the preemption bound: one step or rollout batch plus one checkpoint write -----------------------
    def note_time(self, what: str, seconds: float) -> None:
        """Record a step / rollout batch / checkpoint write time; the first time each is known (and when the
        bound has all its parts), log the signal-to-exit bound once."""
        if seconds <= self.slowest[what]:
            return
        self.slowest[what] = seconds
        if what not in self._bound_told and self.dist.is_main:
            self._bound_told.add(what)
            logger.info("preemption: %s", self.bound_text())

    def bound_text(self) -> str:
        s = self.slowest
        if not s["step"] and not s["rollout batch"]:
            return (f"SIGTERM/SIGUSR1 stop at the next step or rollout batch with a checkpoint (exit "
                    f"{preemption.EXIT_CODE}); the signal-to-exit time is measured after the first step")
        work = max(s["step"], s["rollout batch"])
        write = (f"checkpoint write {s['checkpoint write']:.1f} s" if s["checkpoint write"] else
                 "checkpoint write not measured yet")
        return (f"signal-to-exit ≤ ~{work + s['checkpoint write']:.1f} s (slowest step {s['step']:.1f} s, rollout "
                f"batch {s['rollout batch']:.1f} s, {write}); give the scheduler a grace time above it "
                "(Slurm --signal=USR1@T, Kubernetes terminationGracePeriodSeconds, torchrun --shutdown-timeout)")

    # ----- the run's fixed points -----------------------------------------------------------------------
    def begin(self) -> None:
        timers = self.state.counters.timers
        self._t_offset = {clock: timers.get(clock, 0.0) for clock in self._t_offset}
        self._t_step, self._t_buffer = timers.get("generator", 0.0), timers.get("buffer", 0.0)
        self._open_logs()
        self._t_start = self._clocks()  # after the logs: TensorBoard's start-up is not training time

    def _open_logs(self) -> None:
        c, run, counters = self.cfg, self.cfg.run, self.state.counters
        if not self.dist.is_main:
            return
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        dump_config(c, self.run_dir / "config.yaml")
        if run.time_limit_s > 0:  # a time budget ends the run: the bar counts seconds, not steps
            self._bar_seconds = min(self._t_offset[run.time_limit_clock], run.time_limit_s)
            cpu = ", CPU s" if run.time_limit_clock == "cpu" else ""
            self.metrics.open(total=run.time_limit_s, initial=self._bar_seconds, desc=f"{c.mode} (time budget{cpu})",
                              progress=run.progress, unit="s")
        else:
            self.metrics.open(total=run.max_steps, initial=counters.step, desc=c.mode, progress=run.progress)
        logger.info("***** Running %s ***** processes=%d P=%d buffer=%d passes/buffer=%d batch/process=%d "
                    "lambda_aw=%g max_steps=%d run_dir=%s", c.mode, self.dist.world, c.rollout.group_size,
                    c.rollout.buffer_size, c.rollout.passes_per_buffer, c.rollout.batch_size, c.loss.lambda_aw,
                    run.max_steps, self.run_dir)
        logger.info("preemption: %s", self.bound_text())

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.metrics.log(metrics, step, time=self.elapsed())

    def after_buffer(self, buffer: RolloutBuffer, metrics: dict[str, float]) -> None:
        """A new buffer (not a re-roll after a resume): which clips this process rolled out (every process writes
        its own file), the reward statistics and histograms."""
        counters, rollout = self.state.counters, self.cfg.rollout
        batches = math.ceil(len(buffer) / rollout.rollout_batch_size) if buffer.group_size else 1
        self.note_time("rollout batch", (counters.timers.get("buffer", 0.0) - self._t_buffer) / max(1, batches))
        self._t_buffer = counters.timers.get("buffer", 0.0)
        path = self.run_dir / "logs" / f"buffers-rank{self.dist.rank}.jsonl"
        append_text(path, json.dumps({"buffer": counters.chunks_done, "epoch": counters.epoch, "step": counters.step,
                                      "clip_ids": buffer.clip_ids.tolist()}) + "\n")
        if self.dist.is_main and buffer.adv_fake is not None:
            self.metrics.histograms({"hist/adv_fake": buffer.adv_fake, "hist/reward_fake": buffer.rewards["r_fake"],
                                     "hist/reward_real": buffer.rewards["r_real"]}, counters.step)
        self.log(metrics, step=counters.step)

    def after_step(self, metrics: dict[str, float]) -> None:
        """Logs, progress, samples, the evaluation hook and the periodic checkpoint of step ``counters.step``."""
        counters, run = self.state.counters, self.cfg.run
        s = counters.step
        step_seconds = counters.timers.get("generator", 0.0) - self._t_step
        self._t_step = counters.timers.get("generator", 0.0)
        self.note_time("step", step_seconds)
        counters.timers["wall"] = self.elapsed("wall")
        counters.timers["cpu"] = self.elapsed("cpu")
        self.last_metrics = metrics
        if s % max(1, run.log_every) == 0:
            self.log({**metrics, "nonfinite_steps": counters.nonfinite_steps, **time_split(counters.timers)}, step=s)
        postfix = {"loss": f"{metrics['loss/real']:.4f}"} if "loss/real" in metrics else {}
        if run.time_limit_s > 0:
            shown = min(counters.timers[run.time_limit_clock], run.time_limit_s)
            self.metrics.advance(shown - self._bar_seconds, step=str(s), **postfix)
            self._bar_seconds = shown
        else:
            self.metrics.advance(1, **postfix)
        if run.sample_every and s % run.sample_every == 0:
            self.write_samples(s)
        if self.evaluate is not None and run.eval_every and s % run.eval_every == 0:
            self.run_evaluation(s)
        if run.checkpoint_every and s % run.checkpoint_every == 0 and s < run.max_steps:
            self.save_checkpoint()

    def run_evaluation(self, step: int) -> None:
        t0 = self._clocks()
        with self.state.ema_applied():
            result = self.evaluate(self.backbone, step) if self.evaluate else {}
        self.log({f"eval/{k}": v for k, v in result.items()}, step=step)
        self._pause(t0)  # evaluation time is not training time

    def write_samples(self, step: int) -> None:
        # under FSDP2 every forward is a collective: every rank samples, process 0 writes
        if self.sample_frames is None or (not self.dist.is_main and self.engine.kind != "fsdp2"):
            return
        t0 = self._clocks()
        with self.state.ema_applied(), torch.no_grad():
            if self.sample_cond is not None:
                cond = self.sample_cond.to(self.dist.device)
            else:
                cond = self.backbone.encode_condition(self.sample_frames.to(self.dist.device), self.sample_prompts)
            lat = self.backbone.sample(cond, 1, generator_for(self.cfg.run.seed, "samples"), stochastic=False)
            video = self.backbone.decode(lat[:, 0]).cpu()  # (n, F, 3, H, W)
        grid = torch.cat(list(video), dim=-1)  # clips side by side: (F, 3, H, n*W)
        if self.dist.is_main:
            write_video(self.run_dir / "samples" / f"step-{step:07d}.gif", to_uint8(grid), fps=8)
        self._pause(t0)

    def save_checkpoint(self) -> Path:
        check_params_finite(self.state, self.dist, "before a checkpoint")  # never write a non-finite checkpoint
        t0 = time.perf_counter()
        path = self.checkpointer.save(self.state, self.metrics.path, self.backbone)
        self.note_time("checkpoint write", time.perf_counter() - t0)
        return path

    def last_checkpoint_note(self) -> str:
        return self.checkpointer.last_checkpoint_note()

    def finish(self, metrics: dict[str, float], stopped_by: str = "max_steps") -> Path:
        """The last checkpoint, the weights for use, summary.json and this process's weight digest; returns the
        checkpoint. A preempted run writes its checkpoint only, unless the one this process last wrote or resumed
        from is of this step (then it is a valid resume point already: no second write of the same step)."""
        counters = self.state.counters
        counters.timers["wall"] = self.elapsed("wall")
        counters.timers["cpu"] = self.elapsed("cpu")
        if stopped_by == "preempted":
            last = self.checkpointer.last_path
            same = last is not None and last.name == f"step-{counters.step:07d}" and last.is_dir()
            same = not self.dist.any(not same)  # agreed: the save below is a collective
            path = last if same else self.save_checkpoint()
            if self.dist.is_main:
                self.metrics.close()
            return path
        save_json({"rank": self.dist.rank, "steps": counters.step, "weights_sha256": weights_digest(self.state.params)},
                  self.run_dir / "logs" / f"final-rank{self.dist.rank}.json")
        path = self.save_checkpoint()
        with full_state_dicts(self.backbone.denoiser, gathered_weights(self.backbone.denoiser, self.state)):
            if self.dist.is_main:  # FSDP2: written whole
                export_final(self.cfg, self.run_dir, self.backbone, self.state, self.last_metrics)
                self.metrics.close()
        return path


__all__ = ["Evaluate", "RunHooks", "TIME_SPLIT", "now", "time_split"]
