"""Everything around Algorithm 1 that is not the algorithm: processes, optimizers, schedules, weight EMA,
named random streams, logging, sample clips, checkpoints and exact resume.

Kept out of train/shift.py so that file reads like the paper.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from shiftvdm.backbone.base import Backbone
from shiftvdm.config import config_differences, config_from_dict, config_to_dict, dump_config
from shiftvdm.errors import CheckpointError, TrainingError
from shiftvdm.train.buffer import RolloutBuffer
from shiftvdm.train.config import TrainConfig
from shiftvdm.train.distributed import Distributed, GradientEngine, full_tensor
from shiftvdm.train.metrics_log import MetricsLogger
from shiftvdm.train.state import Counters, checkpoint_dirs, latest_checkpoint, read_checkpoint, write_checkpoint
from shiftvdm.utils.checkpoint import clean_stale_temps, file_sizes, read_newest_intact, truncate_logs
from shiftvdm.utils.seeding import generator_for

logger = logging.getLogger(__name__)

# Fields that may differ when resuming (they do not change what the run computes).
RESUMABLE_CHANGES = ("run.max_steps", "run.time_limit_s", "run.progress", "run.checkpoint_every",
                     "run.keep_checkpoints", "run.log_every", "run.sample_every", "run.eval_every", "run.out_dir")


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    """Linear warm-up then constant or cosine. Warm-up starts at 1/warmup (the reference starts at 0,
    which wastes its first update)."""
    o, total = cfg.optim, max(1, cfg.run.max_steps)

    def factor(step: int) -> float:
        if o.warmup_steps > 0 and step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        if o.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - o.warmup_steps) / max(1, total - o.warmup_steps))
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


class Runtime:
    """Process-level services for one training run."""

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
        if cfg.run.distributed == "fsdp2" and self.world > 1:
            # the engine shards and syncs correctly (tests/test_distributed.py), but checkpoints, the weight
            # digest and the final LoRA file do not gather shards yet: a run would save partial weights
            raise TrainingError("run.distributed=fsdp2: sharded training is not wired into checkpoints and final "
                                "weights yet (they would hold one shard per process); use run.distributed=ddp")
        self.engine = GradientEngine(backbone.denoiser, self.dist, cfg.run.distributed, accelerator=accelerator,
                                     find_unused_parameters=cfg.run.find_unused_parameters)
        self.state = Counters()
        self.buffer: RolloutBuffer | None = None
        self.features_from_state = features_from_state
        self.sample_frames, self.sample_prompts = sample_frames, sample_prompts
        self.params: list[nn.Parameter] = [p for p in backbone.trainable_parameters() if p.requires_grad]
        if not self.params:
            raise TrainingError("the backbone has no trainable parameters (LoRA not added and full training off?)")
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(self.params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay, eps=o.eps)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg))
        self.d_optimizer = None
        if critic is not None and cfg.discriminator.refresh:
            d = cfg.discriminator.train
            self.d_optimizer = torch.optim.AdamW(critic.discriminator_parameters(), lr=d.lr, betas=d.betas,
                                                 weight_decay=d.weight_decay)
        self.ema: list[Tensor] | None = [p.detach().clone() for p in self.params] if o.ema_decay > 0 else None
        self.last_metrics: dict[str, float] = {}
        self._evaluate: Callable[[Backbone, int], dict[str, float]] | None = None
        self.metrics = MetricsLogger(self.run_dir / "logs", enabled=self.is_main)
        self._t_start = 0.0
        self._t_offset = 0.0
        self._bar_seconds = 0.0  # seconds shown by a time-budget progress bar
        self._metrics_file = self.metrics.path

    # ----- random streams ---------------------------------------------------------------------------------
    def generator(self, stream: str, *counters: int) -> torch.Generator:
        """The generator for one named stream at given counters, distinct per process."""
        return generator_for(self.cfg.run.seed, stream, self.rank, *counters)

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
        from shiftvdm.train.distributed import injected_nan

        return loss * float("nan") if injected_nan(self.rank, self.state.step + 1) else loss

    def skip_step(self, reason: str, values: dict[str, float] | None = None) -> dict[str, float]:
        """Drop this step's gradients, count it, stop after too many (the last checkpoint stays intact).

        Returns this step's own metrics (``values`` so far, marked ``skipped``), never the previous step's;
        the step number in the warning is the one metrics.jsonl records (counted after the step).
        """
        self.optimizer.zero_grad(set_to_none=True)
        self.state.nonfinite_steps += 1
        logger.warning("step %d skipped: %s (%d so far)", self.state.step + 1, reason, self.state.nonfinite_steps)
        if self.state.nonfinite_steps > self.cfg.run.max_nonfinite_steps:
            raise TrainingError(
                f"{self.state.nonfinite_steps} steps had a non-finite loss or gradient (limit "
                f"run.max_nonfinite_steps={self.cfg.run.max_nonfinite_steps}); last cause: {reason}. "
                f"{self.last_checkpoint_note()}; lower optim.lr or loss.lambda_aw.")
        return {**(values or {}), "skipped": 1.0}

    def last_checkpoint_note(self) -> str:
        """Which checkpoint a stopped run can resume from (every written one is finite: save_checkpoint checks)."""
        root = self.run_dir / "checkpoints" / (f"rank{self.rank}" if self.world > 1 else "")
        last = latest_checkpoint(root)
        return (f"the last checkpoint, {last}, holds finite weights (resume from it with --resume)" if last else
                f"no checkpoint was written yet in {root}")

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
        if self.ema is None:
            return
        decay = self.cfg.optim.ema_decay
        step = self.state.step + 1
        decay = min(decay, (1 + step) / (10 + step))  # warm-up: early weights are not worth keeping
        with torch.no_grad():
            for e, p in zip(self.ema, self.params):
                e.lerp_(p.detach(), 1 - decay)

    @contextlib.contextmanager
    def ema_weights(self) -> Iterator[None]:
        """Temporarily swap the EMA weights in (for sampling, evaluation and saving)."""
        if self.ema is None:
            yield
            return
        backup = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, e in zip(self.params, self.ema):
                p.copy_(e)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, b in zip(self.params, backup):
                    p.copy_(b)

    # ----- gradient diagnostics -------------------------------------------------------------------------
    def log_grad_norms_now(self) -> bool:
        every = self.cfg.run.log_grad_norm_every
        return every > 0 and self.state.step % every == 0

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

    def elapsed(self) -> float:
        return self._t_offset + (time.perf_counter() - self._t_start)

    def out_of_time(self) -> bool:
        """Agreed on every rank: any rank over the limit stops all (the slowest clock decides)."""
        limit = self.cfg.run.time_limit_s
        if limit <= 0:
            return False
        from shiftvdm.train.distributed import test_clock_ahead

        return self.dist.any(self.elapsed() + test_clock_ahead(self.rank) >= limit)

    # ----- run lifecycle --------------------------------------------------------------------------------
    def begin(self, evaluate: Callable[[Backbone, int], dict[str, float]] | None) -> None:
        self._evaluate = evaluate
        self._t_offset = self.state.timers.get("wall", 0.0)
        self._t_start = time.perf_counter()
        if self.is_main:
            (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
            dump_config(self.cfg, self.run_dir / "config.yaml")
            if self.cfg.run.time_limit_s > 0:  # a time budget ends the run: the bar counts seconds, not steps
                self._bar_seconds = min(self._t_offset, self.cfg.run.time_limit_s)
                self.metrics.open(total=self.cfg.run.time_limit_s, initial=self._bar_seconds,
                                  desc=f"{self.cfg.mode} (time budget)", progress=self.cfg.run.progress, unit="s")
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
        self.state.timers["wall"] = self.elapsed()
        self.last_metrics = metrics
        if s % max(1, run.log_every) == 0:
            self.log({**metrics, "nonfinite_steps": self.state.nonfinite_steps}, step=s)
        postfix = {"loss": f"{metrics['loss/real']:.4f}"} if "loss/real" in metrics else {}
        if run.time_limit_s > 0:
            now = min(self.state.timers["wall"], run.time_limit_s)
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
        t0 = time.perf_counter()
        with self.ema_weights():
            result = self._evaluate(self.backbone, step) if self._evaluate else {}
        self.log({f"eval/{k}": v for k, v in result.items()}, step=step)
        self._t_offset -= time.perf_counter() - t0  # evaluation time is not training time

    def write_samples(self, step: int) -> None:
        if not self.is_main or self.sample_frames is None:
            return
        t0 = time.perf_counter()
        from shiftvdm.data.video_io import to_uint8, write_video

        with self.ema_weights(), torch.no_grad():
            cond = self.backbone.encode_condition(self.sample_frames.to(self.device), self.sample_prompts)
            lat = self.backbone.sample(cond, 1, generator_for(self.cfg.run.seed, "samples"), stochastic=False)
            video = self.backbone.decode(lat[:, 0]).cpu()  # (n, F, 3, H, W)
        grid = torch.cat(list(video), dim=-1)  # clips side by side: (F, 3, H, n*W)
        write_video(self.run_dir / "samples" / f"step-{step:07d}.gif", to_uint8(grid), fps=8)
        self._t_offset -= time.perf_counter() - t0

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
        """SHA-256 of the trainable weights: equal on every process when gradients are averaged."""
        import hashlib

        h = hashlib.sha256()
        for p in self.params:
            h.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # raw bytes: bf16 too
        return h.hexdigest()

    def finish(self, metrics: dict[str, float]) -> None:
        self.state.timers["wall"] = self.elapsed()
        from shiftvdm.utils.checkpoint import save_json

        save_json({"rank": self.rank, "steps": self.state.step, "weights_sha256": self.weights_digest()},
                  self.run_dir / "logs" / f"final-rank{self.rank}.json")
        self.save_checkpoint()
        if self.is_main:
            self.save_final()
            self.metrics.close()

    # ----- saving and resuming --------------------------------------------------------------------------
    def trainable_state(self) -> dict[str, Tensor]:
        return {str(i): p.detach().cpu().clone() for i, p in enumerate(self.params)}

    def save_checkpoint(self) -> Path | None:
        self.check_params_finite("before a checkpoint")  # never write a non-finite checkpoint
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()
        state = {
            "counters": self._counters_dict(),
            "config": config_to_dict(self.cfg),
            "params": self.trainable_state(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "ema": self.ema,
            "d_optimizer": self.d_optimizer.state_dict() if self.d_optimizer is not None else None,
            "critic": self.critic.state_dict() if self.critic is not None else None,
            "buffer": self.buffer.state_dict() if self.buffer is not None and self.cfg.run.checkpoint_buffer else None,
            "critic_replay": self._replay_state(),
            "torch_rng": torch.get_rng_state(),
            "world_size": self.world,
            "log_sizes": self._log_sizes(),
        }
        # every process keeps its own buffer share; process 0 also writes the weights for use
        root = self.run_dir / "checkpoints" / (f"rank{self.rank}" if self.world > 1 else "")
        extra = {}
        if self.is_main and self.cfg.lora.enabled:
            extra["lora.safetensors"] = lambda p: self._save_lora(p)
        path = write_checkpoint(root, self.state.step, state, extra, keep=self.cfg.run.keep_checkpoints)
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()
        return path

    def _check_world_size(self) -> None:
        """A run folder written on another number of processes is refused, naming both sizes."""
        ckpt = self.run_dir / "checkpoints"
        ranks = sorted(p.name for p in ckpt.glob("rank*") if p.is_dir()) if ckpt.is_dir() else []
        saved = len(ranks) if ranks else (1 if checkpoint_dirs(ckpt) else None)
        if saved is not None and saved != self.world:
            raise CheckpointError(f"{ckpt}: the checkpoints were written by {saved} processes, this run has "
                                  f"{self.world}; resume on {saved} processes")

    def _agreed_checkpoint(self, root: Path) -> tuple[Path, dict[str, Any]] | None:
        """The newest step every rank has and reads intact, the same on all ranks."""
        if self.world == 1:
            return read_newest_intact(checkpoint_dirs(root), read_checkpoint)
        from shiftvdm.errors import DamagedCheckpointError

        mine = {int(p.name.split("-")[1]): p for p in checkpoint_dirs(root)}
        common = set.intersection(*[set(s) for s in self.dist.gather(sorted(mine))])
        damaged: list[str] = []
        for step in sorted(common, reverse=True):  # rank 0's view decides the order: identical on every rank
            try:
                state, message = read_checkpoint(mine[step]), None
            except DamagedCheckpointError as exc:
                state, message = None, str(exc)
            if not self.dist.any(message is not None):
                return mine[step], state  # type: ignore[return-value]
            damaged.append(message or f"step {step} damaged on another process")
            logger.warning("checkpoint step %d is damaged on some process; every process falls back", step)
        if damaged:
            raise CheckpointError("no checkpoint step intact on every process:\n  " + "\n  ".join(damaged))
        return None

    def _replay_state(self) -> dict[str, Any] | None:
        """The reward model's store of older fakes (regulariser ``replay_size``), so resume stays exact."""
        return None if self.critic is None else self.critic.replay_state()

    def _restore_replay(self, state: dict[str, Any] | None) -> None:
        if self.critic is not None:
            self.critic.load_replay_state(state)

    def _log_sizes(self) -> dict[str, int]:
        """This process's append-only logs at checkpoint time (resume cuts them back to these sizes)."""
        logs = [self.run_dir / "logs" / f"buffers-rank{self.rank}.jsonl"]
        return file_sizes(logs + ([self._metrics_file] if self.is_main else []))

    def _save_lora(self, path: Path) -> None:
        with self.ema_weights():
            self.backbone.save_lora(path)

    def _counters_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self.state)

    def save_final(self) -> None:
        """Weights for use: the LoRA (safetensors) or the full model folder, plus the refreshed critic."""
        with self.ema_weights():
            if self.cfg.lora.enabled:
                self.backbone.save_lora(self.run_dir / "lora.safetensors")
            else:
                self.backbone.save_pretrained(self.run_dir / "model")
        if self.critic is not None and self.cfg.discriminator.refresh and needs_critic(self.cfg):
            self.critic.save(self.run_dir / "critic")
        summary = {"steps": self.state.step, "d_steps": self.state.d_steps, "timers": self.state.timers,
                   "nonfinite_steps": self.state.nonfinite_steps, "last_metrics": self.last_metrics}
        from shiftvdm.utils.checkpoint import save_json

        save_json(summary, self.run_dir / "summary.json")

    def resume(self, path: Path | None = None) -> bool:
        """Restore the latest (or given) checkpoint of this run. Returns False when there is none.

        On several processes every rank resumes the same step: the newest step present on all ranks whose
        files every rank reads intact (an empty or cut trainer_state.pt falls back to an older step on all).
        """
        root = self.run_dir / "checkpoints" / (f"rank{self.rank}" if self.world > 1 else "")
        self._check_world_size()
        if path is None:
            found = self._agreed_checkpoint(root)
            if found is None:
                return False
            path, state = found
        else:
            state = read_checkpoint(path)
        saved_world = int(state.get("world_size", self.world))
        if saved_world != self.world:
            raise CheckpointError(f"{path}: written by a run on {saved_world} processes, this run has {self.world}; "
                                  f"resume on {saved_world} processes (the buffer and random streams are per process)")
        saved_max = int(state["config"].get("run", {}).get("max_steps", self.cfg.run.max_steps))
        if saved_max != self.cfg.run.max_steps and self.cfg.optim.schedule == "cosine":
            raise CheckpointError(f"{path}: run.max_steps was {saved_max}, now {self.cfg.run.max_steps}; the cosine "
                                  "learning-rate schedule is laid out over run.max_steps, so changing it on resume "
                                  f"would reshape the schedule mid-run. Resume with run.max_steps={saved_max}, or "
                                  "start a new run (a constant schedule may be extended)")
        clean_stale_temps(root)  # what a kill mid-write left behind (each process its own folder)
        if self.is_main:
            clean_stale_temps(self.run_dir)
            clean_stale_temps(self.run_dir / "logs")
        truncate_logs(self.run_dir / "logs", state.get("log_sizes"))  # no duplicate records of recomputed steps
        saved_cfg = config_from_dict(TrainConfig, state["config"], str(path))
        diffs = [d for d in config_differences(saved_cfg, self.cfg) if not d.startswith(RESUMABLE_CHANGES)]
        if diffs:
            raise CheckpointError(f"{path}: cannot resume, the config differs from the checkpoint's in fields that "
                                  "change the run:\n  " + "\n  ".join(diffs))
        if len(state["params"]) != len(self.params):
            raise CheckpointError(f"{path}: checkpoint has {len(state['params'])} trainable tensors, this run "
                                  f"{len(self.params)} (different LoRA settings or backbone?)")
        with torch.no_grad():
            for i, p in enumerate(self.params):
                p.copy_(state["params"][str(i)])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if state["ema"] is not None and self.ema is not None:
            self.ema = [t.clone() for t in state["ema"]]
        if self.d_optimizer is not None and state["d_optimizer"] is not None:
            self.d_optimizer.load_state_dict(state["d_optimizer"])
        if self.critic is not None and state["critic"] is not None:
            self.critic.load_state_dict(state["critic"])
        self._restore_replay(state.get("critic_replay"))
        self.state = Counters(**state["counters"])
        self.buffer = (RolloutBuffer.from_state_dict(state["buffer"], self.features_from_state)
                       if state["buffer"] is not None else None)
        torch.set_rng_state(state["torch_rng"])
        logger.info("resumed from %s at step %d", path, self.state.step)
        return True


def needs_critic(cfg: TrainConfig) -> bool:
    from shiftvdm.train.losses import needs_rollouts

    return needs_rollouts(cfg.loss)
