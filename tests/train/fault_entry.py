"""`shiftvdm` with a fault injected into one process, for tests/train/test_distributed.py (not a test module).

Launched in place of ``-m shiftvdm`` by ``accelerate launch`` / torchrun, so the fault reaches every rank's
process without any hook in the production code:

    accelerate launch ... tests/train/fault_entry.py nan=1:2 clock=1:1000 shift --config run.yaml

- ``nan=RANK:STEP``: on that rank, the first backward of generator step STEP (counted from 1) gets a NaN loss,
  injected through the gradient engine (so the step's gradient is non-finite on that rank only);
- ``clock=RANK:SECONDS``: that rank's training clock reads SECONDS late (it alone is over a time limit);
- ``sigterm=RANK:STEP`` / ``sigusr1=RANK:STEP``: that rank sends itself the signal right after generator step STEP
  (the scheduler's preemption, seen by one rank only; tests/train/test_preemption.py);
- ``rollterm=RANK:BATCH``: that rank sends itself SIGTERM just before its rollout batch BATCH (counted from 1) of
  a buffer, where collect_buffer asks whether to stop (a signal during the rollout phase, seen by one rank only);
- ``slowsave=RANK:SECONDS``: once a preemption signal arrived, that rank's checkpoint writes sleep SECONDS inside
  the write (a window for a second signal).
"""

from __future__ import annotations

import os
import signal
import sys
import time

from shiftvdm.cli import main
from shiftvdm.train import hooks, shift


def inject_nan(rank: int, at_step: int) -> None:
    real_step = shift.shift_step

    def faulty_step(backbone, batch, cfg, state, engine, dist):
        if dist.rank != rank or state.counters.step + 1 != at_step:
            return real_step(backbone, batch, cfg, state, engine, dist)
        real_backward = engine.backward

        def nan_backward(loss):
            del engine.backward  # only the first backward of the step: the class's method again
            real_backward(loss * float("nan"))

        engine.backward = nan_backward
        try:
            return real_step(backbone, batch, cfg, state, engine, dist)
        finally:
            vars(engine).pop("backward", None)

    shift.shift_step = faulty_step  # train() looks the step up in its module at every call


def clock_ahead(rank: int, seconds: float) -> None:
    real_elapsed = hooks.RunHooks.elapsed

    def elapsed(self, clock="wall"):
        return real_elapsed(self, clock) + (seconds if self.dist.rank == rank else 0.0)

    hooks.RunHooks.elapsed = elapsed


def signal_after_step(rank: int, at_step: int, sig: signal.Signals) -> None:
    real_after_step = hooks.RunHooks.after_step

    def after_step(self, metrics):
        real_after_step(self, metrics)
        if self.dist.rank == rank and self.state.counters.step == at_step:
            os.kill(os.getpid(), sig)

    hooks.RunHooks.after_step = after_step


def signal_in_rollouts(rank: int, at_batch: int, sig: signal.Signals) -> None:
    real_collect = shift.collect_buffer

    def collect(*args, **kwargs):
        real_stop = args[7] if len(args) > 7 else kwargs.pop("stop_requested", shift.preemption.requested)
        asked = 0

        def stop() -> bool:
            nonlocal asked
            asked += 1
            if asked == at_batch and int(os.environ.get("RANK", "0")) == rank:
                os.kill(os.getpid(), sig)
            return real_stop()

        return real_collect(*args[:7], stop, **kwargs)

    shift.collect_buffer = collect


def slow_saves(rank: int, seconds: float) -> None:
    from shiftvdm.utils import preemption, step_checkpoints

    real_write = step_checkpoints.atomic_write

    def slow_write(path, write):
        if int(os.environ.get("RANK", "0")) == rank and preemption.requested():
            print(f"fault_entry: writing {path} slowly", file=sys.stderr, flush=True)
            time.sleep(seconds)
        return real_write(path, write)

    step_checkpoints.atomic_write = slow_write


if __name__ == "__main__":
    args = sys.argv[1:]
    while args and "=" in args[0] and not args[0].startswith("-"):
        name, value = args.pop(0).split("=", 1)
        r, v = value.split(":")
        {"nan": lambda: inject_nan(int(r), int(v)), "clock": lambda: clock_ahead(int(r), float(v)),
         "sigterm": lambda: signal_after_step(int(r), int(v), signal.SIGTERM),
         "sigusr1": lambda: signal_after_step(int(r), int(v), signal.SIGUSR1),
         "rollterm": lambda: signal_in_rollouts(int(r), int(v), signal.SIGTERM),
         "slowsave": lambda: slow_saves(int(r), float(v))}[name]()
    sys.exit(main(args))
