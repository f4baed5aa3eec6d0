"""Training state: counters, timers and the atomic checkpoint folder layout used for exact resume.

Every random draw of training is derived from (seed, stream, counters) (utils/seeding.py), so the
counters stored here together with the buffer, the weights and the optimizer states regenerate the
rest of the run exactly. The global torch RNG state is saved as well, for modules with internal
randomness (dropout) that the trainer reseeds per step anyway.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from shiftvdm.errors import CheckpointError
from shiftvdm.utils.checkpoint import atomic_write, fix_dir_permissions, load_torch

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"


@dataclass
class Counters:
    step: int = 0  # generator optimizer steps taken
    epoch: int = 0  # passes over the real data (chunk order is reshuffled per epoch)
    chunk: int = 0  # chunk index within the epoch
    chunks_done: int = 0  # buffers finished over the whole run (seeds rollouts: never repeats)
    pass_index: int = 0  # pass over the current buffer
    batch_index: int = 0  # minibatch within the current pass
    d_steps: int = 0  # discriminator optimizer steps taken
    nonfinite_steps: int = 0  # generator steps skipped because of a NaN/inf loss or gradient
    timers: dict[str, float] = field(default_factory=dict)  # seconds per phase, summed over the run

    def add_time(self, phase: str, seconds: float) -> None:
        self.timers[phase] = self.timers.get(phase, 0.0) + seconds


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete checkpoint folders under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()
             and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(root: Path) -> Path | None:
    dirs = checkpoint_dirs(root)
    return dirs[-1] if dirs else None


def write_checkpoint(root: Path, step: int, state: dict[str, Any], extra_files: dict[str, Any] | None = None,
                     keep: int = 2) -> Path:
    """Write ``root/step-NNNNNNN/`` atomically: into a temporary folder first, renamed when complete.

    ``extra_files`` maps a file name to a callable ``write(path)`` (e.g. LoRA safetensors for use).
    Older checkpoints beyond the newest ``keep`` are removed only after the new one is in place.
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".step-{step:07d}.", dir=root))
    fix_dir_permissions(tmp)  # mkdtemp makes 0700 folders; the files inside get the usual permissions
    try:
        atomic_write(tmp / STATE_FILE, lambda p: torch.save(state, p))
        for name, write in (extra_files or {}).items():
            write(tmp / name)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in checkpoint_dirs(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load ``trainer_state.pt`` from a checkpoint folder (weights_only: never unpickles code)."""
    file = path / STATE_FILE if path.is_dir() else path
    if not file.is_file():
        raise CheckpointError(f"{path}: no {STATE_FILE} in this folder; pass a run folder or a step-N checkpoint")
    return load_torch(file)


def counters_from_dict(d: dict[str, Any]) -> Counters:
    return Counters(**d)


def counters_to_dict(c: Counters) -> dict[str, Any]:
    return asdict(c)
