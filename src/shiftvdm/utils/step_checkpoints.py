"""Resumable ``step-NNNNNNN/`` checkpoint folders, written atomically, shared by every training loop.

A folder is filled under a temporary name in the same parent and renamed when complete, so a kill leaves
either the previous checkpoints or the new one, never half of it (``clean_stale_temps`` removes what a
kill left). ``trainer_state.pt`` marks a complete folder; it holds plain tensors and containers only
(read back with ``weights_only=True``). This sits in utils/ so that rewards/ (discriminator
pre-training) and train/ (SHIFT) use the same writer without rewards/ importing train/.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shiftvdm.errors import DamagedCheckpointError
from shiftvdm.utils.atomic import DiskWriteError
from shiftvdm.utils.checkpoint import atomic_write, fix_dir_permissions, load_torch, save_torch
from shiftvdm.utils.finite import nonfinite_names

STATE_FILE = "trainer_state.pt"
# SHA-256 of every file of a checkpoint, written last: a file whose bytes changed after the write (a flipped bit on
# disk, a partial copy between machines) is caught at load, and the run falls back to the newest intact checkpoint
# instead of resuming from NaN weights. Hashing reads each file once (about 1 GB/s per core).
DIGESTS_FILE = "digests.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def file_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (relative POSIX paths), the digest list itself excluded."""
    return {p.relative_to(folder).as_posix(): _sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != DIGESTS_FILE}


def verify_digests(folder: str | Path) -> None:
    """Check every file a checkpoint lists in its ``digests.json``; DamagedCheckpointError naming the first file
    that is missing or whose bytes changed. A checkpoint written before digests existed has none to check."""
    folder = Path(folder)
    listed = folder / DIGESTS_FILE
    if not listed.is_file():
        return
    try:
        wanted = json.loads(listed.read_text())
    except (OSError, ValueError) as exc:
        raise DamagedCheckpointError(f"{listed}: unreadable digest list ({exc})") from exc
    for name, digest in wanted.items():
        path = folder / name
        if not path.is_file():
            raise DamagedCheckpointError(f"{path}: missing, though {listed} lists it")
        if _sha256(path) != digest:
            raise DamagedCheckpointError(f"{path}: its bytes changed after it was written (SHA-256 differs from "
                                         f"{listed}: a damaged disk or a partial copy?)")


def read_step_state(folder: str | Path) -> Any:
    """``trainer_state.pt`` of a checkpoint folder, after checking the folder's digests (weights_only load); trained
    weights that are not finite make it damaged too (the resume then falls back to an older checkpoint)."""
    verify_digests(folder)
    state = load_torch(Path(folder) / STATE_FILE)
    params = state.get("params") if isinstance(state, dict) else None
    bad = nonfinite_names(params.items()) if isinstance(params, dict) else []
    if bad:  # written before digests existed, or damaged in memory before the write: never resumed from
        raise DamagedCheckpointError(f"{Path(folder) / STATE_FILE}: the trained weights hold NaN or infinite values "
                                     f"(tensor {bad[0]!r})")
    return state


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
        save_torch(state, tmp / STATE_FILE)
        for name, write in (extra_files or {}).items():
            write(tmp / name)
        digests = file_digests(tmp)
        atomic_write(tmp / DIGESTS_FILE, lambda p: p.write_text(json.dumps(digests, indent=1)))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except DiskWriteError as exc:  # name the checkpoint, not its temporary folder (removed here)
        shutil.rmtree(tmp, ignore_errors=True)
        raise DiskWriteError(str(exc).replace(str(tmp), str(final))) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in checkpoint_dirs(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


__all__ = ["DIGESTS_FILE", "STATE_FILE", "checkpoint_dirs", "file_digests", "latest_checkpoint", "read_step_state",
           "verify_digests", "write_checkpoint"]
