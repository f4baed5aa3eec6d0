"""Resumable ``step-NNNNNNN/`` checkpoint folders, written atomically, shared by every training loop.

A folder is filled under a temporary name in the same parent and renamed when complete, so a kill leaves
either the previous checkpoints or the new one, never half of it (``clean_stale_temps`` removes what a
kill left). ``trainer_state.pt`` marks a complete folder; it holds plain tensors and containers only
(read back with ``weights_only=True``). This sits in utils/ so that rewards/ (discriminator
pre-training) and train/ (SHIFT) use the same writer without rewards/ importing train/.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from shiftvdm.utils.checkpoint import atomic_write, fix_dir_permissions

STATE_FILE = "trainer_state.pt"


def checkpoint_dirs(root: str | Path) -> list[Path]:
    """Complete checkpoint folders under ``root`` (``step-N`` holding ``trainer_state.pt``), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()
             and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint folder under ``root``, or None."""
    dirs = checkpoint_dirs(root)
    return dirs[-1] if dirs else None


def write_checkpoint(root: str | Path, step: int, state: dict[str, Any],
                     extra_files: dict[str, Callable[[Path], Any]] | None = None, keep: int = 2) -> Path:
    """Write ``root/step-NNNNNNN/`` atomically: into a temporary folder first, renamed when complete.

    ``state`` goes to ``trainer_state.pt``; ``extra_files`` maps a file or folder name to a callable
    ``write(path)`` (e.g. LoRA safetensors, a critic folder). Checkpoints older than the newest ``keep``
    are removed only after the new one is in place (``keep`` <= 0 keeps all).
    """
    root = Path(root)
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


__all__ = ["STATE_FILE", "checkpoint_dirs", "latest_checkpoint", "write_checkpoint"]
