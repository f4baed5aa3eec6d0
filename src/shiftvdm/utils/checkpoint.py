"""Atomic checkpoint I/O. Weights are never unpickled: safetensors, or torch.load(weights_only=True).

A write goes to a temporary file in the same folder, is fsynced, then renamed over the target, so a
crash mid-write leaves the previous file intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from shiftvdm.errors import CheckpointError


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then atomically move ``tmp_path`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def save_safetensors(tensors: Mapping[str, torch.Tensor], path: str | Path,
                     metadata: Mapping[str, str] | None = None) -> Path:
    """Atomically write tensors (made contiguous, on CPU) to a .safetensors file."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda p: save_file(flat, str(p), metadata=dict(metadata or {})))


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
    return atomic_write(path, lambda p: torch.save(obj, p))


def load_torch(path: str | Path) -> Any:
    """torch.load with weights_only=True (no arbitrary unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot load checkpoint safely ({exc})") from exc


def save_json(obj: Any, path: str | Path) -> Path:
    """Atomically write JSON (indented, keys in insertion order)."""
    text = json.dumps(obj, indent=2)
    return atomic_write(path, lambda p: p.write_text(text + "\n"))
