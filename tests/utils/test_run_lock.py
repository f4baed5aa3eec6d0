"""One job per run folder (utils/run_lock.py): a second job is refused naming the holder; a killed holder's
folder is usable at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shiftvdm.cli import main as cli
from shiftvdm.errors import OutputError
from shiftvdm.utils import run_lock

SRC = Path(__file__).resolve().parents[2] / "src"
HOLD = ("import sys, time; from shiftvdm.utils.run_lock import acquire; acquire(sys.argv[1]); "
        "print('held', flush=True); time.sleep(120)")


def hold(folder: Path) -> subprocess.Popen:
    """Another process (a job) that takes the folder's lock and keeps it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_job_is_refused_naming_the_first_and_a_killed_holder_frees_the_folder(tmp_path, capsys):
    run = tmp_path / "run"
    holder = hold(run)
    try:
        args = ["sft", "backbone.name=toy", "data.train=nowhere", f"run.out_dir={run}", "run.progress=false"]
        assert cli(args) == 2
        err = capsys.readouterr().err
        assert f"PID {holder.pid}" in err and "in use by another job" in err and "host " in err
        assert len(err.strip().splitlines()) == 1  # one line, no traceback
        assert cli(["train-critic", "--real", "r", "--fake", "f", "--out", str(run)]) == 2
        assert f"PID {holder.pid}" in capsys.readouterr().err
    finally:
        holder.send_signal(signal.SIGKILL)  # no cleanup of any kind: the kernel drops the lock
        holder.wait()
    t0 = time.monotonic()
    lock = run_lock.acquire(run)
    assert time.monotonic() - t0 < 1.0
    assert f"PID {os.getpid()}" in run_lock.holder(run)
    lock.release()


def test_the_lock_is_exclusive_even_within_one_process(tmp_path):
    first = run_lock.acquire(tmp_path / "run")
    with pytest.raises(OutputError, match=f"PID {os.getpid()}"):
        run_lock.acquire(tmp_path / "run")
    first.release()
    with run_lock.run_lock(tmp_path / "run"):
        pass
    with run_lock.run_lock(tmp_path / "run", enabled=False) as none:  # ranks other than 0
        assert none is None


def test_locks_can_be_switched_off_for_file_systems_without_them(tmp_path, monkeypatch):
    first = run_lock.acquire(tmp_path / "run")
    monkeypatch.setenv(run_lock.ENV_SWITCH, "off")
    run_lock.acquire(tmp_path / "run").release()  # not locked: no refusal
    first.release()


def test_unsupported_locks_name_the_switch(tmp_path, monkeypatch):
    import errno
    import fcntl

    def refuse(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refuse)
    with pytest.raises(OutputError, match="SHIFTVDM_RUN_LOCK=off"):
        run_lock.acquire(tmp_path / "run")
