"""Output paths checked before any work starts: one set of rules for every command that writes.

A command calls these before it loads a model or decodes a clip, so a mistake in ``--out`` costs nothing
and leaves nothing behind: the path must be creatable (its nearest existing ancestor a writable folder),
of the right kind (a file where a file is due, a folder where a folder is due), and must not be one of
the command's own inputs (or, for a folder, hold one). ``new_output_dir`` removes a folder the command
created when it then fails on a user error before writing anything worth keeping.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from shiftvdm.errors import OutputError, ShiftvdmError

logger = logging.getLogger(__name__)

# What marks a folder as holding a training run (written by train/hooks.py or `train-critic`).
RUN_MARKERS = ("config.yaml", "checkpoints", "summary.json", "lora.safetensors", "model", "critic", "metrics.json",
               "logs")


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(path))


def _existing_ancestor(path: Path) -> Path:
    current = Path(os.path.abspath(path))
    while not os.path.lexists(current) and current != current.parent:
        current = current.parent
    return current


def check_creatable(path: str | Path, what: str = "--out", *, folder: bool = False) -> Path:
    """``path`` can be created: its nearest existing ancestor is a folder we can write in (probed).

    An existing file is replaced inside its parent; an existing ``folder`` is written into."""
    path = Path(path)
    if folder and path.is_dir():
        ancestor = Path(os.path.abspath(path))
    elif os.path.lexists(path):
        ancestor = Path(os.path.abspath(path.parent))
    else:
        ancestor = _existing_ancestor(path)
    if not ancestor.is_dir():
        raise OutputError(f"{what} {path}: {ancestor} is a file, not a folder")
    try:  # os.access says yes to root on read-only mounts; a real probe file does not lie
        fd, probe = tempfile.mkstemp(prefix=".shiftvdm-write-probe.", dir=ancestor)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{what} {path}: cannot write in {ancestor} ({exc.strerror or exc})") from exc
    return path


def _inputs_of(inputs: Iterable[tuple[str, str | Path | None]]) -> list[tuple[str, Path]]:
    # only paths that exist: a preset name given as --config is not a file next to the output
    return [(name, _resolved(Path(p))) for name, p in inputs
            if p is not None and str(p) != "" and os.path.lexists(p)]


def check_output_file(path: str | Path, what: str = "--out",
                      inputs: Iterable[tuple[str, str | Path | None]] = (), *,
                      dataset_file: Callable[[Path], bool] | None = None) -> Path:
    """An output file: creatable, not a folder, and not one of ``inputs`` ((flag, path) pairs).

    ``dataset_file(path)`` says whether a file of that name inside an input folder would be read as part of
    a dataset (``data.manifest.is_dataset_file``: a manifest or a clip); such a file is refused too. It is
    passed in because utils/ sits below data/ and must not import it."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path}: is a folder; give a file name")
    target = _resolved(path)
    for name, inp in _inputs_of(inputs):
        if target == inp or (path.exists() and inp.exists() and os.path.samefile(path, inp)):
            raise OutputError(f"{what} {path}: is also the input {name}; writing it would destroy that input")
        if dataset_file is not None and inp.is_dir() and target.parent == inp and dataset_file(target):
            raise OutputError(f"{what} {path}: would change the dataset read from the input {name} ({inp}); "
                              "write it elsewhere")
    return check_creatable(path, what)


def check_output_dir(path: str | Path, what: str = "--out",
                     inputs: Iterable[tuple[str, str | Path | None]] = ()) -> Path:
    """An output folder: creatable, not a file, neither one of ``inputs`` nor holding one."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise OutputError(f"{what} {path}: exists and is not a folder")
    target = _resolved(path)
    for name, inp in _inputs_of(inputs):
        if inp == target or inp.is_relative_to(target):
            raise OutputError(f"{what} {path}: holds the input {name} ({inp}); choose a folder of its own "
                              "so that no input is overwritten")
    return check_creatable(path, what, folder=True)


def holds_run(path: str | Path) -> list[str]:
    """The run outputs present in ``path`` (empty when it holds no run)."""
    path = Path(path)
    return [m for m in RUN_MARKERS if (path / m).exists()] if path.is_dir() else []


def check_run_dir(path: str | Path, *, resume: bool, overwrite: bool = False, what: str = "run.out_dir",
                  inputs: Iterable[tuple[str, str | Path | None]] = ()) -> Path:
    """A run folder: new or empty, or an earlier run continued with ``resume`` / replaced with ``overwrite``."""
    path = check_output_dir(path, what, inputs)
    found = holds_run(path)
    if found and not resume and not overwrite:
        raise OutputError(f"{what} {path}: already holds a run ({', '.join(found)}); pass --resume to continue it, "
                          "--overwrite to replace it, or choose a new folder")
    return path


def clear_run(path: str | Path) -> None:
    """Remove an earlier run's outputs (``--overwrite``); other files in the folder are left alone."""
    path = Path(path)
    for name in holds_run(path):
        target = path / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    for leftover in ("samples",):
        if (path / leftover).is_dir():
            shutil.rmtree(path / leftover)


@contextlib.contextmanager
def new_output_dir(path: str | Path, keep: Iterable[str] = ("checkpoints",)) -> Iterator[Path]:
    """Remove ``path`` again if it did not exist and the body fails on a user error before writing any of
    ``keep`` (e.g. a checkpoint worth resuming from): a refused command leaves nothing behind."""
    path = Path(path)
    existed = os.path.lexists(path)
    try:
        yield path
    except ShiftvdmError:
        if not existed and path.is_dir() and not any(any((path / k).iterdir()) if (path / k).is_dir() else
                                                     (path / k).exists() for k in keep):
            shutil.rmtree(path, ignore_errors=True)
            logger.info("removed %s: the command stopped before writing anything to keep", path)
        raise


__all__ = ["RUN_MARKERS", "check_creatable", "check_output_dir", "check_output_file", "check_run_dir", "clear_run",
           "holds_run", "new_output_dir"]
