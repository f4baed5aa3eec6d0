"""Output paths checked before any work starts: one set of rules for every command that writes.

A command calls these before it loads a model or decodes a clip, so a mistake in ``--out`` costs nothing
and leaves nothing behind: the path must be creatable (its nearest existing ancestor a writable folder),
of the right kind (a file where a file is due, a folder where a folder is due), and must not be one of
the command's own inputs (or, for a folder, hold one). ``new_output_dir`` removes a folder the command
created when it then fails on a user error before writing anything worth keeping.

Ownership (the run stamp): every folder a command makes carries ``.shiftvdm-stamp.json`` — the command, the
shiftvdm version, when and on which host it was made, the inputs that made it (``inputs``: digests, seeds, sizes)
and the files and folders it wrote (``outputs``, names relative to the folder, updated atomically as outputs are
added). ``--overwrite`` replaces only a stamped folder made by the same kind of command, and removes only the
entries its stamp lists (each one logged): a user's own files in the folder survive, and an unstamped folder is
never cleared (the message gives the command that removes it by hand). Folders made before the stamp existed
still ``--resume``.

Inputs are checked in one place (``check_inputs_outside``): no path-valued setting of the command
(``path_inputs`` walks a config for them) may be the output or lie inside it, so no input is deleted first and
then reported missing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shlex
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from shiftvdm.errors import OutputError, ShiftvdmError
from shiftvdm.utils.atomic import write_text

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
    check_inputs_outside(path, inputs, what)
    return check_creatable(path, what, folder=True)


def check_inputs_outside(path: str | Path, inputs: Iterable[tuple[str, str | Path | None]],
                         what: str = "--out") -> None:
    """The one check that no input of a command (``(setting, path)`` pairs; see ``path_inputs``) is the output
    folder ``path`` or lies inside it. Runs before anything is written or removed."""
    target = _resolved(Path(path))
    for name, inp in _inputs_of(inputs):
        if inp == target or inp.is_relative_to(target):
            raise OutputError(f"{what} {path}: holds the input {name} ({inp}); choose a folder of its own "
                              "so that no input is overwritten or removed")


# settings that name an output, not an input (a cache is rebuilt, never read as the user's data)
_OUTPUT_SETTINGS = ("out_dir", "cache_dir", "log_dir", "report_json")


def path_inputs(config: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Every path-valued setting of a config (dataclasses, dicts, lists; nested): each text value that names an
    existing file or folder, with its dotted key. Settings that name outputs (``*out_dir``, ``*cache_dir``)
    are left out. Used with ``check_inputs_outside`` so that no input the config names can be overwritten."""
    found: list[tuple[str, str]] = []
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        items: Iterable[tuple[str, Any]] = ((f.name, getattr(config, f.name)) for f in dataclasses.fields(config))
    elif isinstance(config, dict):
        items = ((str(k), v) for k, v in config.items())
    elif isinstance(config, (list, tuple)):
        items = ((str(i), v) for i, v in enumerate(config))
    else:
        return found
    for key, value in items:
        name = f"{prefix}{key}"
        if key.endswith(_OUTPUT_SETTINGS):
            continue
        if isinstance(value, (str, os.PathLike)) and str(value) and len(str(value)) < 4096:
            try:
                if os.path.lexists(os.path.expanduser(str(value))):
                    found.append((name, os.path.expanduser(str(value))))
            except (OSError, ValueError):
                pass
        else:
            found.extend(path_inputs(value, f"{name}."))
    return found


# ---- the run stamp ---------------------------------------------------------------------------------------------

STAMP_FILE = ".shiftvdm-stamp.json"
STAMP_FORMAT = 1
# what kind of folder each command makes: --overwrite replaces a folder of the same kind only
KINDS = {"pretrain": "run", "sft": "run", "shift": "run", "train-critic": "critic", "generate": "generated clips",
         "data synth": "dataset", "data prepare": "dataset", "data encode": "cache", "export": "model",
         "demo": "demo"}
# never removed by --overwrite: the lock the command holds, and the stamp itself (rewritten)
_NEVER_REMOVED = (".lock", STAMP_FILE)


def _version() -> str:
    # the package root is imported before any of its modules; read it without an import (utils is the bottom layer)
    return str(getattr(sys.modules.get("shiftvdm"), "__version__", "unknown"))


def read_stamp(folder: str | Path) -> dict | None:
    """The stamp of ``folder`` (a dict), or None when it has none (not made by shiftvdm, or made before the
    stamp existed). A stamp that cannot be read is an OutputError naming it (never taken as absent)."""
    path = Path(folder) / STAMP_FILE
    if not path.is_file():
        return None
    try:
        stamp = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OutputError(f"{path}: unreadable shiftvdm stamp ({exc}); it says which files the folder's command "
                          "wrote — restore it, or remove the folder by hand") from exc
    if not isinstance(stamp, dict) or not isinstance(stamp.get("outputs", []), list):
        raise OutputError(f"{path}: not a shiftvdm stamp (expected a JSON object with an outputs list)")
    return stamp


def _save_stamp(folder: Path, stamp: dict) -> None:
    write_text(folder / STAMP_FILE, json.dumps(stamp, indent=1, ensure_ascii=False, default=str) + "\n")


def write_stamp(folder: str | Path, command: str, *, inputs: dict | None = None,
                outputs: Iterable[str] = ()) -> dict:
    """Stamp ``folder`` (created) as made now by ``command`` (e.g. "sft", "generate", "data synth") with these
    ``inputs`` (provenance: plain JSON values, ``model_identity`` dicts) and ``outputs`` (names relative to the
    folder). Replaces an earlier stamp. Returns the stamp."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = {"format": STAMP_FORMAT, "command": command, "kind": KINDS.get(command, command),
             "version": _version(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             "host": socket.gethostname(), "inputs": dict(inputs or {}),
             "outputs": sorted({_relname(folder, o) for o in outputs})}
    _save_stamp(folder, stamp)
    return stamp


def _relname(folder: Path, name: str | Path) -> str:
    p = Path(name)
    if p.is_absolute():
        p = Path(os.path.abspath(p)).relative_to(Path(os.path.abspath(folder)))
    rel = p.as_posix()
    if rel in ("", ".") or rel.startswith("../") or rel == "..":
        raise ValueError(f"{name}: not inside {folder}")
    return rel


def record_outputs(folder: str | Path, names: Iterable[str | Path]) -> None:
    """Add ``names`` (relative to ``folder``, or absolute paths inside it) to the stamp's outputs; rewritten
    atomically, and only when something is new. A folder without a stamp is left alone (a run made before the
    stamp existed, resumed: its files stay unclaimed)."""
    folder = Path(folder)
    stamp = read_stamp(folder)
    if stamp is None:
        return
    listed = set(stamp.get("outputs", []))
    new = {_relname(folder, n) for n in names} - listed - set(_NEVER_REMOVED)
    if new:
        stamp["outputs"] = sorted(listed | new)
        _save_stamp(folder, stamp)


def record_inputs(folder: str | Path, inputs: dict) -> None:
    """Merge ``inputs`` into the stamp's provenance (a folder without a stamp is left alone)."""
    stamp = read_stamp(folder)
    if stamp is not None:
        stamp["inputs"] = {**stamp.get("inputs", {}), **inputs}
        _save_stamp(Path(folder), stamp)


def stamped_outputs(folder: str | Path) -> list[str]:
    """The entries the stamp lists that exist now (empty without a stamp)."""
    folder = Path(folder)
    stamp = read_stamp(folder)
    if stamp is None:
        return []
    return [n for n in stamp.get("outputs", []) if os.path.lexists(folder / n)]


def entries(folder: str | Path) -> set[str]:
    """The top-level names in ``folder`` (for ``record_outputs(folder, entries(folder) - before)``)."""
    folder = Path(folder)
    return {p.name for p in folder.iterdir()} - set(_NEVER_REMOVED) if folder.is_dir() else set()


def removal_command(folder: str | Path, names: Iterable[str] = ()) -> str:
    """The shell command that removes ``names`` in ``folder`` by hand (the whole folder when none are given)."""
    folder = Path(os.path.abspath(folder))
    targets = [folder / n for n in names] or [folder]
    return "rm -r -- " + " ".join(shlex.quote(str(t)) for t in targets)


def _user_entries(folder: Path) -> list[str]:
    return sorted(entries(folder))


def check_replaceable(folder: str | Path, command: str, what: str = "--out") -> list[str]:
    """What ``--overwrite`` of ``folder`` by ``command`` would remove (the stamp's existing outputs), or an
    OutputError when it may not: a folder without a stamp (not made by shiftvdm, or made before the stamp:
    the message gives the command that removes it by hand), or one made by another kind of command.
    Reads only."""
    folder = Path(folder)
    if not folder.is_dir() or not _user_entries(folder):
        return []
    stamp = read_stamp(folder)
    if stamp is None:
        found = _user_entries(folder)
        shown = ", ".join(found[:8]) + (f" and {len(found) - 8} more" if len(found) > 8 else "")
        raise OutputError(f"{what} {folder}: --overwrite replaces only folders shiftvdm made and stamped "
                          f"({STAMP_FILE}); this one has no stamp and holds {shown}. If none of it is yours to "
                          f"keep, remove it by hand: `{removal_command(folder)}`; else choose a new folder")
    kind = KINDS.get(command, command)
    if stamp.get("kind", stamp.get("command")) != kind:
        raise OutputError(f"{what} {folder}: holds outputs of `shiftvdm {stamp.get('command')}` "
                          f"({stamp.get('kind')}), not of `shiftvdm {command}` ({kind}); it is not replaced — choose "
                          "another folder")
    return stamped_outputs(folder)


def replace_outputs(folder: str | Path, command: str, what: str = "--out") -> list[str]:
    """``--overwrite``: remove the entries ``folder``'s stamp lists (each logged; other files stay) after
    ``check_replaceable``. Call it holding the folder's run lock. Returns the names removed."""
    folder = Path(folder)
    names = check_replaceable(folder, command, what)
    for name in names:
        target = folder / name
        logger.info("--overwrite: removing %s (written by an earlier `shiftvdm %s`)", target, command)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    if names:
        print(f"--overwrite: removed {len(names)} earlier outputs from {folder}: {', '.join(names)}")
    return names


# ---- run folders -------------------------------------------------------------------------------------------------

def holds_run(path: str | Path) -> list[str]:
    """The run outputs present in ``path`` (empty when it holds no run): what its stamp lists, or — for a
    folder made before the stamp existed — the names a run writes (``RUN_MARKERS``)."""
    path = Path(path)
    if not path.is_dir():
        return []
    if read_stamp(path) is not None:
        return stamped_outputs(path)
    return [m for m in RUN_MARKERS if (path / m).exists()]


def check_run_dir(path: str | Path, *, resume: bool, overwrite: bool = False, what: str = "run.out_dir",
                  inputs: Iterable[tuple[str, str | Path | None]] = (), command: str = "sft") -> Path:
    """A run folder: new or holding no run, or an earlier run continued with ``resume`` / replaced with
    ``overwrite`` (a stamped run only). Reads only; ``inputs`` lying inside the folder are refused first."""
    path = check_output_dir(path, what, inputs)
    if overwrite:
        check_replaceable(path, command, what)
        return path
    found = holds_run(path)
    if found and not resume:
        raise OutputError(f"{what} {path}: already holds a run ({', '.join(found)}); pass --resume to continue it, "
                          "--overwrite to replace it, or choose a new folder")
    return path


def clear_run(path: str | Path, command: str = "sft") -> list[str]:
    """``--overwrite`` of a run folder: remove what its stamp lists (``replace_outputs``); nothing else."""
    return replace_outputs(path, command, "run.out_dir")


def begin_outputs(folder: str | Path, command: str, *, declared: Iterable[str] = (), inputs: dict | None = None,
                  resume: bool = False) -> set[str]:
    """Stamp ``folder`` at the start of a command that writes into it (hold its lock): a new stamp (listing
    the ``declared`` names that do not exist yet — a name already there belongs to someone else), or on a resume
    the existing stamp kept (a folder made before the stamp stays unstamped). Returns the entries present now,
    for ``record_outputs(folder, entries(folder) - before)`` at the end."""
    folder = Path(folder)
    before = entries(folder)
    if resume:
        return before
    if read_stamp(folder) is None or not stamped_outputs(folder):
        write_stamp(folder, command, inputs=inputs, outputs=[d for d in declared if d not in before])
    return before


# ---- identity and provenance ------------------------------------------------------------------------------------

IDENTITY_METHOD = "sampled-sha256-v1"
_WHOLE_LIMIT = 4 << 20  # files up to 4 MiB are hashed whole (configs, small weights)
_SAMPLE_BYTES = 256 << 10  # larger ones: their safetensors header and 8 ranges of 256 KiB at fixed offsets
_SAMPLES = 8
_SKIP = (STAMP_FILE, ".lock")


def _file_identity(path: Path) -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as fh:
        if size <= _WHOLE_LIMIT:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
            return h.hexdigest()
        if path.suffix == ".safetensors":  # the header: every tensor's name, dtype, shape and offsets
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else 0
            h.update(head + fh.read(min(n, 100 << 20)))
        for k in range(_SAMPLES):
            offset = (size - _SAMPLE_BYTES) * k // (_SAMPLES - 1)
            fh.seek(offset)
            h.update(fh.read(_SAMPLE_BYTES))
    return h.hexdigest()


def model_identity(path: str | Path) -> dict:
    """A cheap identity of a model folder or weights file: per file its size and a SHA-256 of (files up to
    4 MiB) all its bytes, or (larger) its safetensors header plus 8 fixed ranges of 256 KiB. About 2 MiB read
    per large file whatever its size (see docs/outputs.md for the time at A14B's 57 GB). Changed weights
    almost always change a sampled range or the header; a same-size edit between ranges is not caught —
    checkpoints use full digests (``step_checkpoints.DIGESTS_FILE``) instead.

    Returns ``{"method", "digest", "bytes", "files": {relative path: digest}}``; hidden files, the stamp and
    the lock are left out."""
    path = Path(path)
    if path.is_file():
        files = {path.name: path}
    elif path.is_dir():
        files = {p.relative_to(path).as_posix(): p for p in sorted(path.rglob("*"))
                 if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)}
    else:
        raise OutputError(f"{path}: no such model file or folder")
    per_file = {name: _file_identity(p) for name, p in files.items()}
    total = hashlib.sha256(json.dumps(per_file, sort_keys=True).encode()).hexdigest()
    return {"method": IDENTITY_METHOD, "digest": total, "bytes": sum(p.stat().st_size for p in files.values()),
            "files": per_file}


def provenance_differences(stored: dict, current: dict) -> list[str]:
    """The fields whose values differ between two provenance dicts, one line each (``seed: 0 -> 1``; for
    ``model_identity`` values the files that changed, appeared or went). Keys only one side has count too."""
    diffs = []
    for key in sorted(set(stored) | set(current)):
        a, b = stored.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and "digest" in a and "digest" in b:
            if a["digest"] == b["digest"]:
                continue
            fa, fb = a.get("files", {}), b.get("files", {})
            changed = [f for f in sorted(set(fa) | set(fb)) if fa.get(f) != fb.get(f)]
            what = ", ".join(f"{f} ({'new' if f not in fa else 'gone' if f not in fb else 'changed'})"
                             for f in changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
            diffs.append(f"{key}: other weights ({what or 'contents changed'})")
        elif a != b:
            diffs.append(f"{key}: {_short(a)} -> {_short(b)}")
    return diffs


def stored_differences(folder: str | Path, current: dict) -> list[str] | None:
    """``provenance_differences`` between the inputs ``folder``'s stamp recorded and ``current``, over the keys
    the stamp recorded (None when the folder has no stamp: made before the stamp, its inputs unknown)."""
    stamp = read_stamp(folder)
    if stamp is None:
        return None
    stored = stamp.get("inputs", {})
    return provenance_differences({k: stored[k] for k in current if k in stored},
                                  {k: current[k] for k in current if k in stored})


def check_continuable(folder: str | Path, provenance: dict, *, overwrite: bool, what: str = "--out",
                      holds: str = "outputs made") -> list[str]:
    """The fields in which ``folder``'s stamped outputs were made from other inputs than ``provenance`` ([] when it
    holds none, or the same); an OutputError naming them unless ``overwrite``. Reads only."""
    folder = Path(folder)
    stamp = read_stamp(folder)
    if stamp is None or not stamped_outputs(folder):
        return []
    diffs = provenance_differences(stamp.get("inputs", {}), provenance)
    if diffs and not overwrite:
        raise OutputError(f"{what} {folder}: holds {holds} from other inputs:\n  " + "\n  ".join(diffs)
                          + "\npass --overwrite to replace them, or choose a new folder")
    return diffs


def continue_or_replace(folder: str | Path, command: str, provenance: dict, *, overwrite: bool,
                        outputs: Iterable[str], what: str = "--out") -> str:
    """For a derived output (generated clips, a prepared dataset, a cache) that a rerun continues: call it
    holding the folder's lock, after checking its inputs. An earlier output of ``command`` made from the same
    ``provenance`` is continued ("continue"); one made from other inputs is refused naming each differing field,
    or with ``overwrite`` its stamped entries are removed ("replaced"); a new folder is stamped ("new"). A folder
    with other files and no stamp, or another command's, is refused (``check_replaceable``)."""
    folder = Path(folder)
    if read_stamp(folder) is not None and stamped_outputs(folder):
        check_replaceable(folder, command, what)
        if not check_continuable(folder, provenance, overwrite=overwrite, what=what):
            return "continue"
        replace_outputs(folder, command, what)
        write_stamp(folder, command, inputs=provenance, outputs=outputs)
        return "replaced"
    write_stamp(folder, command, inputs=provenance, outputs=outputs)
    return "new"


def _short(value: Any) -> str:
    if isinstance(value, dict) and "digest" in value:
        return f"digest {value['digest'][:12]}"
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


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


__all__ = ["IDENTITY_METHOD", "KINDS", "RUN_MARKERS", "STAMP_FILE", "begin_outputs", "check_creatable",
           "check_inputs_outside", "check_output_dir", "continue_or_replace", "check_output_file", "check_replaceable", "check_run_dir",
           "clear_run", "entries", "holds_run", "model_identity", "new_output_dir", "path_inputs",
           "provenance_differences", "read_stamp", "record_inputs", "record_outputs", "removal_command",
           "replace_outputs", "stamped_outputs", "stored_differences", "write_stamp"]
