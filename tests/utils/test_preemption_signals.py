"""utils/preemption.py's signal handlers in a bare interpreter (no torch): a duplicate delivery of the first
signal, as Slurm + torchrun make it, is not a second signal; a later one, or the other kind, exits at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

_CHILD = """
import os, signal, sys, time
from shiftvdm.utils import preemption
preemption.DUPLICATE_WINDOW_S = 0.5
with preemption.handling():
    os.kill(os.getpid(), signal.SIGUSR1)  # the scheduler's signal
    time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGUSR1)  # the launcher forwarding the same one, 50 ms later
    time.sleep(0.05)
    print("still running; requested:", preemption.requested(), flush=True)
    time.sleep(0.6)
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))  # a real second signal
    time.sleep(5)
    print("not reached", flush=True)
"""


def run_child(second: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", _CHILD, second], env=env, capture_output=True, text=True,
                          timeout=60)


def test_duplicate_delivery_is_one_signal_and_a_later_one_exits_at_once():
    for second, code in (("SIGUSR1", 128 + signal.SIGUSR1), ("SIGTERM", 128 + signal.SIGTERM)):
        proc = run_child(second)
        assert proc.returncode == code, proc.stderr
        assert proc.stdout == "still running; requested: True\n"
        assert proc.stderr.count("SIGUSR1 received: stopping at the next step") == 1
        assert "SIGUSR1 again (the launcher forwarding it): still stopping" in proc.stderr
        assert f"second signal ({second}): exiting at once" in proc.stderr
