"""The run around Algorithm 1, assembled from parts with one job each:

- :class:`~shiftvdm.train.state.TrainingState`: counters, named random streams, weights, optimizer states,
  the rollout buffer and the critic's replay store (what a checkpoint holds);
- :class:`~shiftvdm.train.checkpointing.Checkpointer`: atomic save, agreed resume, final weights;
- :class:`~shiftvdm.train.metrics_log.MetricsLogger`: JSON lines, TensorBoard, progress bar;
- :class:`~shiftvdm.train.distributed.Distributed` / ``GradientEngine``: agreement between processes, gradient sync;
- train/optim.py: optimizers, learning-rate schedule, weight EMA.

What stays here is the step-level policy that uses them: autocast, the agreed skip of non-finite steps,
gradient diagnostics, timers, and the run's lifecycle (logging, samples, evaluation, checkpoints, finish).
Kept out of train/shift.py so that file reads like the paper.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from shiftvdm.backbone.base import Backbone
from shiftvdm.config import dump_config
from shiftvdm.errors import TrainingError
from shiftvdm.train.buffer import RolloutBuffer
from shiftvdm.train.checkpointing import Checkpointer, export_final, weights_digest
from shiftvdm.train.config import TrainConfig
from shiftvdm.train.distributed import (Distributed, GradientEngine, full_state_dicts, full_tensor, gather_full,
                                        injected_nan,
                                        test_clock_ahead)
from shiftvdm.train.metrics_log import MetricsLogger
from shiftvdm.train.optim import WeightEMA, build_optimizers
from shiftvdm.train.state import Counters, TrainingState
from shiftvdm.utils.checkpoint import save_json
from shiftvdm.utils.seeding import generator_for

logger = logging.getLogger(__name__)


def _delegated(name: str, doc: str) -> property:
    """An attribute of the run's TrainingState, read and set through the runtime (train/shift.py and tests
    use ``rt.state``, ``rt.buffer``, ``rt.optimizer``...)."""
    return property(lambda self: getattr(self.training, name),
                    lambda self, value: setattr(self.training, name, value), doc=doc)


class Runtime:
    """Process-level services for one training run."""

    state: Counters = _delegated("counters", "step, epoch, buffer and pass counters, timers")  # type: ignore[assignment]
    buffer: RolloutBuffer | None = _delegated("buffer", "the current rollout buffer")  # type: ignore[assignment]
    params: list[nn.Parameter] = _delegated("params", "the trainable weights")  # type: ignore[assignment]
    optimizer: torch.optim.Optimizer = _delegated("optimizer", "the generator's optimizer")  # type: ignore[assignment]
    lr_scheduler: Any = _delegated("lr_scheduler", "the generator's learning-rate schedule")
    d_optimizer: torch.optim.Optimizer | None = _delegated("d_optimizer", "the discriminators' optimizer")  # type: ignore[assignment]
    ema: WeightEMA | None = _delegated("ema", "the EMA of the trainable weights (optim.ema_decay > 0)")  # type: ignore[assignment]

    def __init__(self, cfg: TrainConfig, backbone: Backbone, critic: Any, run_dir: Path, *,
                 accelerator: Any = None, features_from_state: Callable[[dict], Any] | None = None,
                 sample_frames: Tensor | None = None, sample_prompts: list[str] | None = None,
                 dist: Distributed | None = None) -> None:
        self.cfg, self.backbone, self.critic, self.run_dir = cfg, backbone, critic, Path(run_dir)
        self.accelerator = accelerator
        self.dist = dist or Distributed.from_accelerator(accelerator)
        self.rank, self.world, self.device = self.dist.rank, self.dist.world, self.dist.device
        self.is_main = self.rank == 0
        # the generator's gradients are synced by the engine (DDP / FSDP2); built before the optimizer
        # because FSDP2 replaces the parameters with sharded ones
        self.engine = GradientEngine(backbone.denoiser, self.dist, cfg.run.distributed, accelerator=accelerator,
                                     find_unused_parameters=cfg.run.find_unused_parameters)
        self.sample_frames, self.sample_prompts = sample_frames, sample_prompts
        params = [p for p in backbone.trainable_parameters() if p.requires_grad]
        if not params:
            raise TrainingError("the backbone has no trainable parameters (LoRA not added and full training off?)")
        optimizer, scheduler, d_optimizer = build_optimizers(cfg, params, critic)
        self.engine.attach_optimizer(optimizer, cfg.rollout.batch_size, cfg.optim.max_grad_norm)  # DeepSpeed
        ema = WeightEMA(params, cfg.optim.ema_decay) if cfg.optim.ema_decay > 0 else None
        self.training = TrainingState(cfg.run.seed, self.rank, params, optimizer, scheduler, d_optimizer, ema,
                                      critic, features_from_state, engine=self.engine)
        self.checkpoints = Checkpointer(cfg, self.run_dir, self.dist)
        self.last_metrics: dict[str, float] = {}
        self._evaluate: Callable[[Backbone, int], dict[str, float]] | None = None
        self.metrics = MetricsLogger(self.run_dir / "logs", enabled=self.is_main)
        self._t_start = {"wall": 0.0, "cpu": 0.0}  # per clock (see _now)
        self._t_offset = {"wall": 0.0, "cpu": 0.0}
        self._bar_seconds = 0.0  # seconds shown by a time-budget progress bar

    def generator(self, stream: str, *counters: int) -> torch.Generator:
        """The generator for one named stream at given counters, distinct per process."""
        return self.training.generator(stream, *counters)

    # ----- numerics -------------------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        if self.cfg.run.mixed_precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def average_gradients(self, params: list[nn.Parameter]) -> None:
        """Average the discriminators' gradients over processes (the generator's go through ``engine``)."""
        self.dist.mean_gradients(params)

    def test_hooks(self, loss: Tensor) -> Tensor:
        """Test hook only (env SHIFTVDM_TEST_NAN_AT=rank:step): a NaN loss on one rank at one step."""
        return loss * float("nan") if injected_nan(self.rank, self.state.step + 1) else loss

    def skip_step(self, reason: str, values: dict[str, float] | None = None) -> dict[str, float]:
        """Drop this step's gradients, count it, stop after too many (the last checkpoint stays intact).

        Returns this step's own metrics (``values`` so far, marked ``skipped``), never the previous step's;
        the step number in the warning is the one metrics.jsonl records (counted after the step).
        """
        self.engine.discard_gradients(self.optimizer)
        self.state.nonfinite_steps += 1
        logger.warning("step %d skipped: %s (%d so far)", self.state.step + 1, reason, self.state.nonfinite_steps)
        if self.state.nonfinite_steps > self.cfg.run.max_nonfinite_steps:
            raise TrainingError(
                f"{self.state.nonfinite_steps} steps had a non-finite loss or gradient (limit "
                f"run.max_nonfinite_steps={self.cfg.run.max_nonfinite_steps}); last cause: {reason}. "
                f"{self.last_checkpoint_note()}; lower optim.lr or loss.lambda_aw.")
        return {**(values or {}), "skipped": 1.0}

    def last_checkpoint_note(self) -> str:
        return self.checkpoints.last_checkpoint_note()

    def params_finite(self) -> bool:
        """One fused reduction over the trainable set: the norm of a tensor holding NaN/inf is NaN/inf."""
        norms = torch._foreach_norm([p.detach() for p in self.params])
        return bool(torch.isfinite(torch.stack(norms).sum()))

    def check_params_finite(self, when: str) -> None:
        """Stop before a non-finite weight is used or saved (an update can write NaN with a finite gradient,
        e.g. a huge learning rate)."""
        if self.dist.any(not self.params_finite()):  # agreed: under FSDP2 each rank checks only its shard
            raise TrainingError(f"step {self.state.step + 1}: the trainable weights became NaN/inf {when}; "
                                f"{self.last_checkpoint_note()}; lower optim.lr or raise optim.eps.")

    def update_weight_ema(self) -> None:
        if self.ema is not None:
            self.ema.update(self.params, self.state.step + 1)

    @contextlib.contextmanager
    def ema_weights(self) -> Iterator[None]:
        """Temporarily swap the EMA weights in (for sampling, evaluation and saving)."""
        with self.training.ema_applied():
            yield

    # ----- gradient diagnostics -------------------------------------------------------------------------
    def log_grad_norms_now(self) -> bool:
        every = self.cfg.run.log_grad_norm_every  # (not under ZeRO-2: no per-parameter gradients to split)
        return every > 0 and self.state.step % every == 0 and self.engine.per_parameter_gradients

    def grad_snapshot(self) -> list[Tensor]:
        return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in self.params]

    def grad_split_norms(self, g_sft: list[Tensor]) -> dict[str, float]:
        """Norms of the SFT and advantage-weighted parts of the (process-averaged) gradient."""
        total = [full_tensor(p.grad) if p.grad is not None else torch.zeros_like(full_tensor(p)) for p in self.params]
        g_sft = [full_tensor(g) for g in g_sft]
        if self.world > 1 and self.engine.kind == "ddp":  # the snapshot is this rank's; the total is averaged
            flat = torch.cat([g.reshape(-1) for g in g_sft])
            self.dist.mean_(flat)
            g_sft = list(torch.split(flat, [g.numel() for g in g_sft]))
            g_sft = [g.view_as(t) for g, t in zip(g_sft, total)]
        sft = torch.sqrt(sum((g.float() ** 2).sum() for g in g_sft)).item()
        aw = torch.sqrt(sum(((t - g).float() ** 2).sum() for t, g in zip(total, g_sft))).item()
        return {"grad_norm/sft": sft, "grad_norm/aw": aw, "grad_norm/aw_over_sft": aw / max(sft, 1e-12)}

    # ----- timing ---------------------------------------------------------------------------------------
    def timed(self, phase: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        self.state.add_time(phase, time.perf_counter() - t0)
        return out

    @staticmethod
    def _now(clock: str) -> float:
        # "cpu": this process's CPU time over all its threads, which other processes' load does not inflate
        return time.process_time() if clock == "cpu" else time.perf_counter()

    def elapsed(self, clock: str = "wall") -> float:
        """Training seconds so far on ``clock`` ("wall" or "cpu"), evaluation and sample writing excluded."""
        return self._t_offset[clock] + (self._now(clock) - self._t_start[clock])

    def _pause(self, since: dict[str, float]) -> None:
        """Take the time since ``since`` (a _clocks() reading) off the training clocks."""
        for clock, t0 in since.items():
            self._t_offset[clock] -= self._now(clock) - t0

    def _clocks(self) -> dict[str, float]:
        return {clock: self._now(clock) for clock in self._t_start}

    def out_of_time(self) -> bool:
        """Agreed on every rank: any rank over the limit stops all (the slowest clock decides)."""
        limit = self.cfg.run.time_limit_s
        if limit <= 0:
            return False
        return self.dist.any(self.elapsed(self.cfg.run.time_limit_clock) + test_clock_ahead(self.rank) >= limit)

    # ----- run lifecycle --------------------------------------------------------------------------------
    def begin(self, evaluate: Callable[[Backbone, int], dict[str, float]] | None) -> None:
        self._evaluate = evaluate
        self._t_offset = {clock: self.state.timers.get(clock, 0.0) for clock in self._t_offset}
        self._t_start = self._clocks()
        if self.is_main:
            (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
            dump_config(self.cfg, self.run_dir / "config.yaml")
            if self.cfg.run.time_limit_s > 0:  # a time budget ends the run: the bar counts seconds, not steps
                self._bar_seconds = min(self._t_offset[self.cfg.run.time_limit_clock], self.cfg.run.time_limit_s)
                self.metrics.open(total=self.cfg.run.time_limit_s, initial=self._bar_seconds,
                                  desc=f"{self.cfg.mode} (time budget{', CPU s' if self.cfg.run.time_limit_clock == 'cpu' else ''})",
                                  progress=self.cfg.run.progress, unit="s")
            else:
                self.metrics.open(total=self.cfg.run.max_steps, initial=self.state.step, desc=self.cfg.mode,
                                  progress=self.cfg.run.progress)
            c = self.cfg
            logger.info("***** Running %s ***** processes=%d P=%d buffer=%d passes/buffer=%d batch/process=%d "
                        "lambda_aw=%g max_steps=%d run_dir=%s", c.mode, self.world, c.rollout.group_size,
                        c.rollout.buffer_size, c.rollout.passes_per_buffer, c.rollout.batch_size, c.loss.lambda_aw,
                        c.run.max_steps, self.run_dir)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.metrics.log(metrics, step, time=self.elapsed())

    def log_histograms(self, buffer: RolloutBuffer, step: int) -> None:
        if buffer.adv_fake is None:
            return
        self.metrics.histograms({"hist/adv_fake": buffer.adv_fake, "hist/reward_fake": buffer.rewards["r_fake"],
                                 "hist/reward_real": buffer.rewards["r_real"]}, step)

    def after_step(self, metrics: dict[str, float]) -> None:
        s, run = self.state.step, self.cfg.run
        self.state.timers["wall"] = self.elapsed("wall")
        self.state.timers["cpu"] = self.elapsed("cpu")
        self.last_metrics = metrics
        if s % max(1, run.log_every) == 0:
            self.log({**metrics, "nonfinite_steps": self.state.nonfinite_steps}, step=s)
        postfix = {"loss": f"{metrics['loss/real']:.4f}"} if "loss/real" in metrics else {}
        if run.time_limit_s > 0:
            now = min(self.state.timers[run.time_limit_clock], run.time_limit_s)
            self.metrics.advance(now - self._bar_seconds, step=str(s), **postfix)
            self._bar_seconds = now
        else:
            self.metrics.advance(1, **postfix)
        if run.sample_every and s % run.sample_every == 0:
            self.write_samples(s)
        if self._evaluate is not None and run.eval_every and s % run.eval_every == 0:
            self.run_evaluation(s)
        if run.checkpoint_every and s % run.checkpoint_every == 0 and s < run.max_steps:
            self.save_checkpoint()

    def run_evaluation(self, step: int) -> None:
        t0 = self._clocks()
        with self.ema_weights():
            result = self._evaluate(self.backbone, step) if self._evaluate else {}
        self.log({f"eval/{k}": v for k, v in result.items()}, step=step)
        self._pause(t0)  # evaluation time is not training time

    def write_samples(self, step: int) -> None:
        # under FSDP2 every forward is a collective: every rank samples, process 0 writes
        if self.sample_frames is None or (not self.is_main and self.engine.kind != "fsdp2"):
            return
        t0 = self._clocks()
        from shiftvdm.data.video_io import to_uint8, write_video

        with self.ema_weights(), torch.no_grad():
            cond = self.backbone.encode_condition(self.sample_frames.to(self.device), self.sample_prompts)
            lat = self.backbone.sample(cond, 1, generator_for(self.cfg.run.seed, "samples"), stochastic=False)
            video = self.backbone.decode(lat[:, 0]).cpu()  # (n, F, 3, H, W)
        grid = torch.cat(list(video), dim=-1)  # clips side by side: (F, 3, H, n*W)
        if self.is_main:
            write_video(self.run_dir / "samples" / f"step-{step:07d}.gif", to_uint8(grid), fps=8)
        self._pause(t0)

    def rollout_origin(self) -> contextlib.AbstractContextManager[bool]:
        """Around the collection of a buffer; True when it is a re-roll after a resume without the buffer
        (:meth:`TrainingState.rollout_origin`): its records were logged the first time."""
        from shiftvdm.train.losses import needs_rollouts

        return self.training.rollout_origin(keep=not self.cfg.run.checkpoint_buffer,
                                            with_weights=needs_rollouts(self.cfg.loss))

    def record_buffer(self, buffer: RolloutBuffer) -> None:
        """Which clips this process rolled out in this buffer (every process writes its own file)."""
        path = self.run_dir / "logs" / f"buffers-rank{self.rank}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fh.write(json.dumps({"buffer": self.state.chunks_done, "epoch": self.state.epoch, "step": self.state.step,
                                 "clip_ids": buffer.clip_ids.tolist()}) + "\n")
        if self.is_main:
            self.log_histograms(buffer, self.state.step)

    def weights_digest(self) -> str:
        return weights_digest(self.params)

    def finish(self, metrics: dict[str, float]) -> None:
        self.state.timers["wall"] = self.elapsed("wall")
        self.state.timers["cpu"] = self.elapsed("cpu")
        save_json({"rank": self.rank, "steps": self.state.step, "weights_sha256": self.weights_digest()},
                  self.run_dir / "logs" / f"final-rank{self.rank}.json")
        self.save_checkpoint()
        with full_state_dicts(self.backbone.denoiser, self.gathered_weights()):  # FSDP2: written whole
            if self.is_main:
                self.save_final()
                self.metrics.close()

    # ----- saving and resuming (train/checkpointing.py) ---------------------------------------------------
    def save_checkpoint(self) -> Path | None:
        self.check_params_finite("before a checkpoint")  # never write a non-finite checkpoint
        write_lora = self._save_lora if self.cfg.lora.enabled else None
        full = self.gathered_weights() if write_lora is not None else {}
        with full_state_dicts(self.backbone.denoiser, full):  # the LoRA file is whole; the state keeps shards
            return self.checkpoints.save(self.training, self.metrics.path, write_lora)

    def gathered_weights(self) -> dict[str, Tensor]:
        """FSDP2: the whole weights for use (the EMA ones when kept), gathered on every rank; else empty."""
        if not self.training.sharded:
            return {}
        with self.ema_weights():
            return gather_full(self.backbone.denoiser, self.params)

    def _save_lora(self, path: Path) -> None:
        with self.ema_weights():
            self.backbone.save_lora(path)

    def save_final(self) -> None:
        export_final(self.cfg, self.run_dir, self.backbone, self.training, self.last_metrics)

    def resume(self, path: Path | None = None) -> bool:
        """Restore the latest (or given) checkpoint of this run. Returns False when there is none.

        On several processes every rank resumes the same step: the newest step present on all ranks whose
        files every rank reads intact (an empty or cut trainer_state.pt falls back to an older step on all).
        """
        found = self.checkpoints.load(path)
        if found is None:
            return False
        path, state = found
        self.training.load_state_dict(state, path)
        logger.info("resumed from %s at step %d", path, self.state.step)
        return True
