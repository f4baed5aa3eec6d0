"""One job per run folder: an advisory lock on ``RUN_DIR/.lock``, taken before anything is written there.

``fcntl.flock(LOCK_EX | LOCK_NB)`` on an open ``.lock`` file: the kernel releases it when the holding process
ends in any way (exit, crash, SIGKILL, OOM kill), so a killed job never blocks its successor and there is no
stale-lock cleanup. The holder writes its host, PID, command and start time into the file, so a second job is
refused with one line naming them. The file itself stays (removing it would race with a job that just opened
it); its content is only a note, the kernel lock is the truth. Multi-process jobs take it on global rank 0
(``RANK`` of torchrun / accelerate launch): the other ranks wait for rank 0 in the process-group rendezvous,
so a refused job's other ranks write nothing either.

Caveats (the lock is advisory and only as good as the file system's locking):

- Local disks, Lustre mounted with ``-o flock``, GPFS/Spectrum Scale, CephFS and NFSv4 (locks built into the
  protocol) lock across nodes. On NFS, Linux maps ``flock`` to POSIX byte-range locks, so NFSv3 needs the
  lock daemon (``lockd``/``rpc.statd``, NLM).
- NFS mounted with ``nolock`` (or ``local_lock=all/flock``) and Lustre with ``localflock`` lock only within one
  node: two jobs on two nodes both get the lock and nothing is refused. Lustre without a flock option, and some
  FUSE file systems, refuse ``flock`` (ENOSYS/EOPNOTSUPP/ENOLCK): the command then stops, naming
  ``SHIFTVDM_RUN_LOCK=off``, which skips the lock (with a warning); there, make sure yourself that one job at a
  time uses a folder (e.g. a Slurm ``--dependency=singleton`` job name per folder).
- A lock held by a process that hangs on an unreachable NFS server is held until the server's lease ends
  (NFSv4: ~90 s) or the process is killed.
- ``flock`` locks belong to the open file: a child made by ``fork()`` (e.g. a fork-started data-loader worker)
  keeps the lock alive after its parent died until the child ends too.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from shiftvdm.errors import OutputError

logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"
ENV_SWITCH = "SHIFTVDM_RUN_LOCK"  # "off": do not lock (file systems without working locks)
_UNSUPPORTED = {errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK, errno.EINVAL}


class RunLock:
    """A held lock; ``release()`` (or the end of the process) lets the next job in."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path, self.fd = path, fd

    def release(self) -> None:
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None


def holder(run_dir: str | Path) -> str:
    """What the lock file says about its (last) holder, one line; empty when unknown."""
    try:
        return (Path(run_dir) / LOCK_FILE).read_text().strip().splitlines()[0]
    except (OSError, IndexError):
        return ""


def acquire(run_dir: str | Path, what: str = "run.out_dir") -> RunLock:
    """Take ``run_dir/.lock`` (creating the folder), or raise OutputError naming the job that holds it."""
    run_dir = Path(run_dir)
    path = run_dir / LOCK_FILE
    if os.environ.get(ENV_SWITCH, "").lower() in {"off", "0", "false", "no"}:
        logger.warning("%s=off: %s is not locked; make sure no other job writes into it", ENV_SWITCH, run_dir)
        return RunLock(path, None)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            who = holder(run_dir) or "a process that has not written its name yet"
            raise OutputError(f"{what} {run_dir}: in use by another job ({who}); wait for it to end, stop it, or "
                              "choose another folder") from None
        if exc.errno in _UNSUPPORTED:
            raise OutputError(f"{what} {run_dir}: this file system does not support file locks ({exc.strerror}); "
                              f"set {ENV_SWITCH}=off to run without the one-job-per-folder lock (see "
                              "docs/cluster.md)") from None
        raise
    command = " ".join(["shiftvdm", *sys.argv[1:]])[:300].replace("\n", " ")
    note = (f"host {socket.gethostname()}, PID {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}, "
            f"`{command}`\n")
    os.ftruncate(fd, 0)
    os.pwrite(fd, note.encode(), 0)
    return RunLock(path, fd)


@contextlib.contextmanager
def run_lock(run_dir: str | Path, *, enabled: bool = True, what: str = "run.out_dir") -> Iterator[RunLock | None]:
    """``acquire`` for the duration (``enabled`` False, e.g. on ranks other than 0: nothing)."""
    if not enabled:
        yield None
        return
    lock = acquire(run_dir, what)
    try:
        yield lock
    finally:
        lock.release()


__all__ = ["ENV_SWITCH", "LOCK_FILE", "RunLock", "acquire", "holder", "run_lock"]
