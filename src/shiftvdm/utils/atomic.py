"""The one write path: every file shiftvdm writes goes through ``atomic_write`` (or, for append-only logs,
``append_text``; for whole folders, ``staged_dir``).

- ``atomic_write(path, write)``: ``write(tmp)`` fills a temporary file in the same folder, which is fsynced and
  renamed over ``path``; the temporary file is removed on any failure, so ``path`` is either the previous good
  file or the new one. ``atomic=False`` (bulk files inside a folder whose completion another atomic file marks,
  or that is itself staged) writes in place but keeps the same error handling.
- ``staged_dir(path)``: a folder (a dataset, an export, a cache) is built under a staging name beside ``path``
  and swapped in only when complete; the previous folder stays until then.
- ``append_text(path, text)``: one record appended to a log (``metrics.jsonl``). Rule for append-only logs: a
  record is appended whole or not at all — a failed append is cut back to the log's previous size — and a
  resume cuts the logs back to their size at the checkpoint it starts from (``checkpoint.truncate_logs``).
- A full disk (ENOSPC), an exceeded quota (EDQUOT), a refused permission (EACCES/EPERM) or a read-only file
  system (EROFS) becomes one ``DiskWriteError`` line naming the path, the bytes needed where known and the free
  space; the CLI prints it without a traceback.
- ``sweep_stale(folder)`` removes what killed writers left (temporary files, checkpoint and staging folders);
  callers hold the folder's run lock (``utils/run_lock.py``) while sweeping.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from shiftvdm.errors import OutputError

logger = logging.getLogger(__name__)

# what the file system says when the user's environment, not shiftvdm, stops a write
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG}
# the same conditions as libraries report them without an errno: torch.save's zip writer, safetensors (Rust),
# numpy, PyAV/ffmpeg
_DISK_TEXT = re.compile(r"No space left|StorageFull|os error (28|122|13|30)\b|Disk quota|Read-only file system|"
                        r"Permission denied|file write failed|failed writing file|requested and \d+ written",
                        re.IGNORECASE)  # the last: numpy's short write (np.save on a full disk, no errno)
STAGING_MARK, BACKUP_MARK = ".staging-", ".old-"


class DiskWriteError(OutputError):
    """A write refused by the file system (full, over quota, read-only, no permission); the previous output
    is kept. One line: the path, the reason, the bytes needed where known and the free space."""

    exit_code = 1


def _human(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _existing(path: Path) -> Path:
    current = Path(os.path.abspath(path))
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def free_space(path: str | Path) -> int | None:
    """Free bytes (for this user) on the file system that holds ``path`` or its nearest existing ancestor."""
    try:
        return shutil.disk_usage(_existing(Path(path))).free
    except OSError:
        return None


def disk_error(path: str | Path, exc: BaseException, size: int | None = None) -> DiskWriteError | None:
    """``exc`` as a one-line DiskWriteError when it is the file system refusing the write; else None."""
    reason = None
    chained: BaseException | None = exc  # torch.save through a file handle: a RuntimeError whose context is ENOSPC
    while chained is not None and reason is None:
        if isinstance(chained, OSError) and chained.errno in DISK_ERRNOS and not _reading_elsewhere(chained, path):
            reason = chained.strerror or os.strerror(chained.errno)
        chained = chained.__cause__ or chained.__context__
    if reason is not None:
        pass
    elif (isinstance(exc, OSError) and exc.errno is None) or isinstance(exc, RuntimeError) \
            or type(exc).__name__ == "SafetensorError":  # an OSError with an errno was judged above
        found = _DISK_TEXT.search(str(exc))
        if found:
            text = found.group(0).lower()
            reason = ("No space left on device" if "space" in text or "storagefull" in text or "28" in text else
                      "No space left on device (a short write)" if "requested and" in text else
                      "Disk quota exceeded" if "quota" in text or "122" in text else
                      "Read-only file system" if "read-only" in text or "30" in text else
                      "Permission denied" if "permission" in text or "13" in text else
                      "write failed (is the disk full?)")
    if reason is None:
        return None
    path = Path(path)
    free = free_space(path)
    parts = [f"cannot write {path}: {reason}"]
    if size is not None:
        parts.append(f"needs {_human(size)}")
    if free is not None:
        parts.append(f"{_human(free)} free on {_mount_of(path)}")
    kept = f"; the previous {path.name} is unchanged" if path.exists() else "; nothing was replaced"
    return DiskWriteError(", ".join(parts) + kept + " (free space, a quota or permissions: then rerun)")


def _reading_elsewhere(exc: OSError, path: str | Path) -> bool:
    """A permission error on a file outside the folder being written: a write callable reading its input, not
    the write itself (that keeps its own message)."""
    if exc.errno not in (errno.EACCES, errno.EPERM) or exc.filename is None:
        return False
    folder = os.path.abspath(Path(path).parent)
    return not os.path.abspath(os.fsdecode(exc.filename)).startswith(folder)


def _mount_of(path: Path) -> str:
    current = _existing(path)
    while not os.path.ismount(current) and current != current.parent:
        current = current.parent
    return str(current)


def _write_into(target: Path, write: Callable[[Path], object]) -> None:
    """Where bytes reach the disk: every writer ends here (tests inject disk errors at this point)."""
    write(target)


def _raise_disk(path: Path, exc: BaseException, size: int | None) -> None:
    error = disk_error(path, exc, size)
    if error is not None:
        raise error from None


def _fsync_dir(folder: Path) -> None:
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename itself is what is atomic
    finally:
        os.close(dir_fd)


def atomic_write(path: str | Path, write: Callable[[Path], object], *, size: int | None = None,
                 atomic: bool = True) -> Path:
    """Call ``write(tmp_path)`` then atomically move ``tmp_path`` to ``path`` (fsynced; tmp removed on failure).

    ``size``: the bytes about to be written, when known (named in a disk-full message). ``atomic=False``
    writes ``path`` in place (for bulk files inside a staged folder or one completed by a manifest)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _raise_disk(path, exc, size)
        raise
    if not atomic:
        try:
            _write_into(path, write)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
            _raise_disk(path, exc, size)
            raise
        return path
    tmp_path = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        _write_into(tmp_path, write)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        if tmp_path is not None:
            with contextlib.suppress(OSError):
                tmp_path.unlink(missing_ok=True)
        _raise_disk(path, exc, size)
        raise
    return path


def write_text(path: str | Path, text: str, *, encoding: str = "utf-8", atomic: bool = True) -> Path:
    """Atomically write ``text`` (its byte size is named if the disk is full)."""
    data = text.encode(encoding)
    return atomic_write(path, lambda p: p.write_bytes(data), size=len(data), atomic=atomic)


def append_text(path: str | Path, text: str) -> Path:
    """Append one whole record to an append-only log; on failure the log is cut back to its previous size
    (never half a record) and a disk error becomes a one-line DiskWriteError."""
    path = Path(path)
    data = text.encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _raise_disk(path, exc, len(data))
        raise
    fd = None
    before = 0
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        before = os.fstat(fd).st_size

        def write(_: Path) -> None:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]

        _write_into(path, write)
    except BaseException as exc:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, before)
        _raise_disk(path, exc, len(data))
        raise
    finally:
        if fd is not None:
            os.close(fd)
    return path


def _pid_alive(name: str) -> bool:
    """Whether the writer named in a staging/backup name (``...-HOST-PID``) still runs on this host."""
    tail = name.rsplit("-", 2)
    if len(tail) < 3 or not tail[2].isdigit():
        return False
    if tail[1] != _host():
        return True  # another host's writer: not ours to judge
    try:
        os.kill(int(tail[2]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:40] or "host"


def staging_path(path: str | Path, mark: str = STAGING_MARK) -> Path:
    """``.NAME.staging-HOST-PID`` beside ``path``: where its successor is built."""
    path = Path(path)
    return path.parent / f".{path.name}{mark}{_host()}-{os.getpid()}"


@contextlib.contextmanager
def staged_dir(path: str | Path, *, keep_on_error: bool = False, carry: Iterable[str] = ()) -> Iterator[Path]:
    """Build a folder under a staging name beside ``path``; when the body completes, swap it in (the previous
    folder is moved aside first and removed only after the swap). On failure the staging folder goes (unless
    ``keep_on_error``), ``path`` is untouched, and a disk error becomes one DiskWriteError line. ``carry``: names
    in the previous folder that are not the command's (a user's notes) — moved into the new one just before the
    swap (renames on one file system), and back if the swap fails.

    A kill between the two renames leaves ``.NAME.old-HOST-PID`` and no ``NAME``: ``sweep_stale`` puts it back."""
    path = Path(path)
    staging, backup = staging_path(path), staging_path(path, BACKUP_MARK)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    except OSError as exc:
        _raise_disk(staging, exc, None)
        raise
    moved: list[str] = []
    try:
        yield staging
        for name in carry:
            if os.path.lexists(path / name) and not os.path.lexists(staging / name):
                os.replace(path / name, staging / name)
                moved.append(name)
        _fsync_dir(staging)
        had = os.path.lexists(path)
        if had:
            os.replace(path, backup)
        os.replace(staging, path)
        _fsync_dir(path.parent)
        if had:
            shutil.rmtree(backup, ignore_errors=True)
    except BaseException as exc:
        if not os.path.lexists(path) and os.path.lexists(backup):
            os.replace(backup, path)
        for name in moved:
            with contextlib.suppress(OSError):
                os.replace(staging / name, path / name)
        if not keep_on_error:
            shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, DiskWriteError):  # name the folder being replaced, not its staging name
            kept = f"; the previous {path.name} is unchanged" if os.path.lexists(path) else "; nothing was replaced"
            text = str(exc).replace(str(staging), str(path)).replace("; nothing was replaced", kept)
            raise DiskWriteError(text) from None
        _raise_disk(path, exc, None)
        raise


def sweep_staging(path: str | Path) -> list[Path]:
    """Remove the staging folders (and put back the backups) that killed writers of ``path`` left beside it —
    only those of ``path``, so a shared parent folder is not swept for others."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    for p in path.parent.iterdir():
        name = p.name
        if not name.startswith(f".{path.name}."):
            continue
        rest = name[len(path.name) + 2:]
        if rest.startswith(("staging-", "old-", "export-")) and not _pid_alive(name):
            if rest.startswith("old-") and not os.path.lexists(path):
                os.replace(p, path)
                logger.warning("put back %s: a replacement of it was killed mid-swap", path)
                continue
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def sweep_stale(folder: str | Path) -> list[Path]:
    """Remove what killed writers left in ``folder`` (not recursive): ``.NAME.XXXX.tmp`` files of
    ``atomic_write``, ``.step-N.XXXX`` / ``step-N.tmp`` checkpoint folders, and staging folders of writers that
    no longer run; a backup whose folder is missing (a kill mid-swap) is put back. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in folder.iterdir():
        name = p.name
        try:
            if p.is_file() and name.startswith(".") and name.endswith(".tmp"):
                p.unlink(missing_ok=True)
            elif p.is_dir() and (name.startswith(".step-") or (name.startswith("step-") and name.endswith(".tmp"))):
                shutil.rmtree(p, ignore_errors=True)
            elif name.startswith(".") and STAGING_MARK in name and not _pid_alive(name):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            elif name.startswith(".") and BACKUP_MARK in name and not _pid_alive(name):
                original = folder / name[1:name.rindex(BACKUP_MARK)]
                if not os.path.lexists(original):
                    os.replace(p, original)
                    logger.warning("put back %s: a replacement of it was killed mid-swap", original)
                    continue
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            else:
                continue
        except OSError:
            continue
        removed.append(p)
    if removed:
        logger.info("removed %d leftover temporary files from %s", len(removed), folder)
    return removed


__all__ = ["DISK_ERRNOS", "DiskWriteError", "append_text", "atomic_write", "disk_error", "free_space",
           "staged_dir", "staging_path", "sweep_stale", "sweep_staging", "write_text"]
