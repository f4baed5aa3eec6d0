"""Preemption: SIGTERM or SIGUSR1 asks a training command to stop at its next safe point with a checkpoint.

Schedulers stop jobs with a signal and a grace time before SIGKILL: Slurm sends SIGTERM at the time limit
(``KillWait`` later SIGKILL) and, with ``--signal=USR1@T``, SIGUSR1 T seconds before it; Kubernetes sends
SIGTERM and SIGKILLs after ``terminationGracePeriodSeconds``; torchrun forwards the signals it handles to its
workers and SIGKILLs them after ``--shutdown-timeout`` (default 30 s; see docs/cluster.md for the details of
the installed torch and accelerate).

``handling()`` (entered by the CLI of ``pretrain``, ``sft``, ``shift`` and ``train-critic``) installs the
handlers. The first signal only sets a flag (``requested()``); the training loop reads it at its safe points —
after each generator step and between rollout batches — where every rank agrees on it in the same all-reduce
as the time limit (train/hooks.py ``stop_reason``), so all ranks stop at the same step and checkpoint
together. The command then writes ``PREEMPTED`` (``write_marker``) into the run folder, prints one line
"preempted at step N; checkpoint ...; resume with `... --resume`" and exits with ``EXIT_CODE`` (75,
EX_TEMPFAIL in sysexits.h: "try again later"; not 1/2, which are errors, nor 128+n, which is a signal death).

A second signal exits at once with 128 + its number, writing nothing; an atomic write it cuts short leaves a
temp file that the next ``--resume`` sweeps. The same signal again within ``DUPLICATE_WINDOW_S`` of the first
is not a second one but the first delivered twice: Slurm signals every process of a job step (the workers
as well as the torchrun that starts them) and torchrun then forwards the same signal to its workers, a few
milliseconds apart. SIGINT keeps its own meaning (KeyboardInterrupt, exit 130, no checkpoint).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

EXIT_CODE = 75  # EX_TEMPFAIL: the run stopped at a checkpoint on request; requeue it with --resume
MARKER = "PREEMPTED"  # JSON in the run folder, written by rank 0 after every rank's checkpoint
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
# The same signal within this many seconds of the first is a duplicate delivery (scheduler + launcher), ignored.
DUPLICATE_WINDOW_S = 3.0

_received: list[tuple[str, float]] = []  # (signal name, time.monotonic()) of the first signal; empty = none
_starting: list[bool] = []  # non-empty inside ``early()``: a signal received there is kept for ``handling()``


def requested() -> bool:
    """True once a preemption signal reached this process (the local flag; ranks agree on it in train/hooks.py)."""
    return bool(_received)


def signal_name() -> str | None:
    return _received[0][0] if _received else None


def seconds_since_signal() -> float | None:
    return time.monotonic() - _received[0][1] if _received else None


def request(name: str = "SIGTERM") -> None:
    """Set the flag as a signal would (tests, and code that learns of a preemption another way)."""
    if not _received:
        _received.append((name, time.monotonic()))


def reset() -> None:
    _received.clear()


def _second(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    if _received and name == _received[0][0] and time.monotonic() - _received[0][1] < DUPLICATE_WINDOW_S:
        os.write(2, f"shiftvdm: {name} again (the launcher forwarding it): still stopping at the next safe point\n"
                 .encode())
        return
    os.write(2, f"shiftvdm: second signal ({name}): exiting at once without writing a checkpoint\n".encode())
    os._exit(128 + signum)


def _first(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    request(name)
    for sig in SIGNALS:  # from now on any of them exits at once
        signal.signal(sig, _second)
    os.write(2, (f"shiftvdm: {name} received: stopping at the next step or rollout batch to write a checkpoint "
                 f"(exit {EXIT_CODE}); send it again (after {DUPLICATE_WINDOW_S:g} s) to exit at once without one\n")
             .encode())


@contextlib.contextmanager
def early() -> Iterator[None]:
    """The start-up of a training command (imports, config, model load), before ``handling()``: a signal there
    sets the flag as ``handling()`` does and is acted on at the run's first safe point (a checkpoint of the
    step it starts from, the marker, exit 75), instead of killing the process with Python's default action
    before it can write the marker (a requeue script would then see a failure, not a preemption)."""
    reset()
    if sys.platform == "win32" or not _in_main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _first) for sig in SIGNALS}
    _starting.append(True)
    try:
        yield
    finally:
        _starting.clear()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        reset()


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """SIGTERM / SIGUSR1 handled as above while inside (main thread only; elsewhere a no-op); the previous
    handlers and a clear flag afterwards. Inside ``early()`` a signal it received is kept."""
    if not _starting:
        reset()
    if sys.platform == "win32" or not _in_main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _second if requested() else _first) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if not _starting:
            reset()


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def launch_rank() -> int:
    """This process's global rank as the launcher (torchrun / accelerate launch) set it; 0 without one."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def write_marker(run_dir: str | Path, step: int, checkpoint: str | Path | None, resume_command: str,
                 command: str) -> Path:
    """``run_dir/PREEMPTED``: what a requeue script reads when the launcher hides the exit code (torchrun exits 1
    when a worker exits non-zero, 128+n when it was signalled itself). Removed by the next start in the folder."""
    from shiftvdm.utils.checkpoint import save_json

    info: dict[str, Any] = {"step": step, "checkpoint": str(checkpoint) if checkpoint else None,
                            "signal": signal_name(), "exit_code": EXIT_CODE, "command": command,
                            "resume": resume_command, "host": socket.gethostname(), "pid": os.getpid(),
                            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return save_json(info, Path(run_dir) / MARKER)


def read_marker(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / MARKER
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def clear_marker(run_dir: str | Path) -> None:
    """A new start in the folder (``--resume`` or ``--overwrite``): the old preemption is handled."""
    (Path(run_dir) / MARKER).unlink(missing_ok=True)


__all__ = ["DUPLICATE_WINDOW_S", "EXIT_CODE", "MARKER", "SIGNALS", "clear_marker", "early", "handling", "launch_rank",
           "read_marker", "request", "requested", "reset", "seconds_since_signal", "signal_name", "write_marker"]
