"""Saving and resuming a run, and its final weights.

Layout: ``run_dir/checkpoints/step-N/`` on one process, ``run_dir/checkpoints/rankR/step-N/`` on several
(every process keeps its own buffer share and random streams; process 0 also writes the LoRA for use).
A checkpoint is written atomically (utils/step_checkpoints.py, the writer discriminator pre-training uses too) and
only with finite weights. Resume picks one step for all ranks (the newest every rank reads intact), refuses a
changed world size naming both sizes, refuses a config change that would change the run, and cuts the append-only
logs back to the checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch

from shiftvdm.config import absolute_path_values, config_differences, config_from_dict, config_to_dict
from shiftvdm.errors import CheckpointError, DamagedCheckpointError
from shiftvdm.train.config import TrainConfig
from shiftvdm.train.distributed import Distributed, full_state_dicts, full_tensor, gather_full
from shiftvdm.train.state import TrainState, read_checkpoint
from shiftvdm.utils.atomic import staged_dir
from shiftvdm.utils.checkpoint import clean_stale_temps, file_sizes, read_newest_intact, save_json, truncate_logs
from shiftvdm.utils.step_checkpoints import checkpoint_dirs, latest_checkpoint, write_checkpoint

logger = logging.getLogger(__name__)

# Fields that may differ when resuming (they do not change what the run computes).
RESUMABLE_CHANGES = ("run.max_steps", "run.time_limit_s", "run.progress", "run.checkpoint_every",
                     "run.keep_checkpoints", "run.log_every", "run.sample_every", "run.eval_every", "run.out_dir")


class Checkpointer:
    """Writes and reads one process's checkpoints of a run folder; every method is called on every rank."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, dist: Distributed) -> None:
        self.cfg, self.run_dir, self.dist = cfg, Path(run_dir), dist
        self.root = self.run_dir / "checkpoints" / (f"rank{dist.rank}" if dist.world > 1 else "")
        self.last_path: Path | None = None  # the checkpoint this process last wrote or resumed from

    def last_checkpoint_note(self) -> str:
        """Which checkpoint a stopped run can resume from (every one written is finite: checked before each save)."""
        last = latest_checkpoint(self.root)
        return (f"the last checkpoint, {last}, holds finite weights (resume from it with --resume)" if last else
                f"no checkpoint was written yet in {self.root}")

    def log_sizes(self, metrics_file: Path) -> dict[str, int]:
        """This process's append-only logs at checkpoint time (resume cuts them back to these sizes)."""
        logs = [self.run_dir / "logs" / f"buffers-rank{self.dist.rank}.jsonl"]
        return file_sizes(logs + ([metrics_file] if self.dist.is_main else []))

    def save(self, training: TrainState, metrics_file: Path, backbone: Any = None) -> Path:
        """Write ``training`` at its current step; with LoRA, process 0 adds the weights for use (the EMA ones
        when kept, gathered whole under FSDP2 while the state keeps this rank's shards). Called on every rank."""
        write_lora = None
        if backbone is not None and self.cfg.lora.enabled:
            def write_lora(path: Path) -> None:
                with training.ema_applied():
                    backbone.save_lora(path)
        full = gathered_weights(backbone.denoiser, training) if write_lora is not None else {}
        with full_state_dicts(backbone.denoiser if full else None, full):
            self.dist.barrier()
            state = training.state_dict(with_buffer=self.cfg.run.checkpoint_buffer)
            state.update({"config": config_to_dict(self.cfg), "world_size": self.dist.world,
                          "log_sizes": self.log_sizes(metrics_file)})
            extra = {"lora.safetensors": write_lora} if self.dist.is_main and write_lora is not None else {}
            path = write_checkpoint(self.root, training.counters.step, state, extra, keep=self.cfg.run.keep_checkpoints)
            self.dist.barrier()
        self.last_path = path
        return path

    def check_world_size(self) -> None:
        """A run folder written on another number of processes is refused, naming both sizes."""
        ckpt = self.run_dir / "checkpoints"
        ranks = sorted(p.name for p in ckpt.glob("rank*") if p.is_dir()) if ckpt.is_dir() else []
        saved = len(ranks) if ranks else (1 if checkpoint_dirs(ckpt) else None)
        if saved is not None and saved != self.dist.world:
            raise CheckpointError(f"{ckpt}: the checkpoints were written by {saved} processes, this run has "
                                  f"{self.dist.world}; resume on {saved} processes")

    def agreed_checkpoint(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest step every rank has and reads intact, the same on all ranks."""
        if self.dist.world == 1:
            return read_newest_intact(checkpoint_dirs(self.root), read_checkpoint)
        mine = {int(p.name.split("-")[1]): p for p in checkpoint_dirs(self.root)}
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

    def load(self, path: Path | None = None) -> tuple[Path, dict[str, Any]] | None:
        """The checkpoint to resume from (the agreed latest, or ``path``), checked against this run; the
        folders are cleaned of interrupted writes and the logs cut back to it. None when there is none."""
        world = self.dist.world
        self.check_world_size()
        if path is None:
            found = self.agreed_checkpoint()
            if found is None:
                return None
            path, state = found
        else:
            state = read_checkpoint(path)
        saved_world = int(state.get("world_size", world))
        if saved_world != world:
            raise CheckpointError(f"{path}: written by a run on {saved_world} processes, this run has {world}; "
                                  f"resume on {saved_world} processes (the buffer and random streams are per process)")
        saved_max = int(state["config"].get("run", {}).get("max_steps", self.cfg.run.max_steps))
        if saved_max != self.cfg.run.max_steps and self.cfg.optim.schedule == "cosine":
            raise CheckpointError(f"{path}: run.max_steps was {saved_max}, now {self.cfg.run.max_steps}; the cosine "
                                  "learning-rate schedule is laid out over run.max_steps, so changing it on resume "
                                  f"would reshape the schedule mid-run. Resume with run.max_steps={saved_max}, or "
                                  "start a new run (a constant schedule may be extended)")
        saved_cfg = config_from_dict(TrainConfig, state["config"], str(path))
        # paths compared by the files they name: a run started elsewhere (or before paths were recorded absolute)
        # resumes from another working directory
        diffs = [d for d in config_differences(absolute_path_values(TrainConfig, config_to_dict(saved_cfg), real=True),
                                               absolute_path_values(TrainConfig, config_to_dict(self.cfg), real=True))
                 if not d.startswith(RESUMABLE_CHANGES)]
        if diffs:
            raise CheckpointError(f"{path}: cannot resume, the config differs from the checkpoint's in fields that "
                                  "change the run:\n  " + "\n  ".join(diffs))
        # only a resume that goes ahead touches the folder: a refused one leaves its logs as they were
        clean_stale_temps(self.root)  # what a kill mid-write left behind (each process its own folder)
        if self.dist.is_main:
            clean_stale_temps(self.run_dir)
            clean_stale_temps(self.run_dir / "logs")
        truncate_logs(self.run_dir / "logs", state.get("log_sizes"))  # no duplicate records of recomputed steps
        self.last_path = path
        return path, state


def resume(checkpointer: Checkpointer, training: TrainState, path: Path | None = None) -> bool:
    """Restore the latest (or given) checkpoint of the run into ``training``. False when there is none.

    On several processes every rank resumes the same step: the newest step present on all ranks whose files
    every rank reads intact (an empty or cut trainer_state.pt falls back to an older step on all).
    """
    found = checkpointer.load(path)
    if found is None:
        return False
    path, state = found
    training.load_state_dict(state, path)
    logger.info("resumed from %s at step %d", path, training.counters.step)
    return True


def gathered_weights(denoiser: Any, training: TrainState) -> dict[str, torch.Tensor]:
    """FSDP2: the whole weights for use (the EMA ones when kept), gathered on every rank; else empty.
    A collective under FSDP2: call it on every rank."""
    if not training.sharded:
        return {}
    with training.ema_applied():
        return gather_full(denoiser, training.params)


def weights_digest(params: list[torch.nn.Parameter]) -> str:
    """SHA-256 of the trainable weights: equal on every process when gradients are averaged."""
    h = hashlib.sha256()
    for p in params:  # FSDP2 shards are gathered first (a collective: every rank computes the digest)
        h.update(full_tensor(p.detach()).cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # raw bytes: bf16 too
    return h.hexdigest()


def export_final(cfg: TrainConfig, run_dir: Path, backbone: Any, training: TrainState,
                 last_metrics: dict[str, float]) -> None:
    """Weights for use (process 0): the LoRA (safetensors) or the full model folder, with the EMA weights when
    kept; the refreshed critic; summary.json."""
    with training.ema_applied():
        if cfg.lora.enabled:
            backbone.save_lora(run_dir / "lora.safetensors")
        else:
            with staged_dir(run_dir / "model") as staging:  # the previous model/ stays until this one is whole
                backbone.save_pretrained(staging)
    if training.critic_trainer is not None:  # refreshed: the critic the run ends with
        training.critic.save(run_dir / "critic")
    c = training.counters
    save_json({"steps": c.step, "d_steps": c.d_steps, "timers": c.timers, "nonfinite_steps": c.nonfinite_steps,
               "last_metrics": last_metrics}, run_dir / "summary.json")


__all__ = ["Checkpointer", "RESUMABLE_CHANGES", "export_final", "gathered_weights", "resume", "weights_digest"]
