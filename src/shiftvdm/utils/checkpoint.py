"""Atomic checkpoint I/O. Weights are never unpickled: safetensors, or torch.load(weights_only=True).

A write goes to a temporary file in the same folder, is fsynced, then renamed over the target, so a
crash mid-write leaves the previous file intact. The writer itself is ``utils/atomic.py`` (the one write path,
with its disk-full handling); ``atomic_write`` stays importable from here.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file

from shiftvdm.errors import CheckpointError, DamagedCheckpointError
from shiftvdm.utils.atomic import atomic_write, sweep_stale, write_text

logger = logging.getLogger(__name__)
T = TypeVar("T")


def save_safetensors(tensors: Mapping[str, torch.Tensor], path: str | Path,
                     metadata: Mapping[str, str] | None = None) -> Path:
    """Atomically write tensors (made contiguous, on CPU) to a .safetensors file."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    size = sum(v.numel() * v.element_size() for v in flat.values())
    return atomic_write(path, lambda p: save_file(flat, str(p), metadata=dict(metadata or {})), size=size)


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a .safetensors file, with an error naming the file when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises several types for corrupt headers
        raise CheckpointError(f"{path}: not a valid safetensors file ({exc})") from exc


def save_torch(obj: Any, path: str | Path) -> Path:
    """Atomically torch.save a state made of tensors, numbers, strings, lists and dicts only."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a Python handle: a full disk then surfaces as ENOSPC, not only torch's text
            torch.save(obj, fh)

    return atomic_write(path, write, size=_tensor_bytes(obj))


def _tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a nested state (what torch.save writes, give or take its headers)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, Mapping):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def load_torch(path: str | Path) -> Any:
    """torch.load with weights_only=True (no arbitrary unpickling).

    Raises:
        DamagedCheckpointError: the file is empty or truncated (not a complete archive).
        CheckpointError: missing, or holding something other than plain tensors and containers.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.stat().st_size == 0:
        raise DamagedCheckpointError(f"{path}: empty checkpoint file (0 bytes; an interrupted write?)")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a cut one has no central directory
        raise DamagedCheckpointError(f"{path}: truncated or damaged checkpoint file (not a complete torch archive)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused a global: the file is unsafe, not damaged
        raise CheckpointError(f"{path}: cannot load checkpoint safely ({exc})") from exc
    except Exception as exc:
        raise DamagedCheckpointError(f"{path}: damaged checkpoint file ({exc})") from exc


def read_newest_intact(folders: list[Path], read: Callable[[Path], T]) -> tuple[Path, T] | None:
    """``read`` the newest of ``folders`` (oldest first) that is intact; warn about each damaged one skipped.

    Only damage falls back (an empty or truncated file from a crash); an unsafe or incompatible checkpoint
    stops with its error, so a tampered file is never silently stepped over.
    """
    damaged: list[str] = []
    for folder in reversed(folders):
        try:
            return folder, read(folder)
        except DamagedCheckpointError as exc:
            damaged.append(str(exc))
            logger.warning("%s; falling back to the previous checkpoint", exc)
    if damaged:
        raise CheckpointError("no intact checkpoint to resume from:\n  " + "\n  ".join(damaged))
    return None


def clean_stale_temps(folder: str | Path) -> list[Path]:
    """Remove what interrupted writes left in ``folder`` (not recursive): see ``utils.atomic.sweep_stale``."""
    return sweep_stale(folder)


def fix_dir_permissions(path: str | Path) -> None:
    """Give a folder made by ``tempfile.mkdtemp`` (0700) the usual 0777 & ~umask, as its files have."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)


def save_json(obj: Any, path: str | Path) -> Path:
    """Atomically write JSON (indented, keys in insertion order)."""
    return write_text(path, json.dumps(obj, indent=2) + "\n")



def file_sizes(paths: list[Path]) -> dict[str, int]:
    """Byte sizes of append-only logs at checkpoint time (absent files: 0)."""
    return {p.name: (p.stat().st_size if p.is_file() else 0) for p in paths}


def truncate_logs(folder: Path, sizes: dict[str, int] | None) -> None:
    """Cut append-only logs back to their size at the checkpoint a resume starts from: records of the steps
    it recomputes are then written once, not twice (and a line cut by a kill goes too)."""
    for name, size in (sizes or {}).items():
        path = folder / name
        if path.is_file() and path.stat().st_size > size:
            with open(path, "r+b") as fh:
                fh.truncate(size)
