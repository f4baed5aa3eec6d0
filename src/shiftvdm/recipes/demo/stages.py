"""Resumable stages of a multi-stage command: which finished (``stages.json``), how long each took, the time left."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from shiftvdm.utils.checkpoint import save_json


class Stages:
    """Which stages finished (``stages.json``), how long they took; a finished stage is reused."""

    def __init__(self, out: Path, label: str = "stages") -> None:
        self.out = out
        self.label = label  # the prefix of every printed line, e.g. "[demo]"
        self.path = out / "stages.json"
        self.state: dict[str, dict[str, Any]] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.estimates: dict[str, float] = {}  # stage -> estimated seconds (empty: no remaining-time line)
        self.actual: dict[str, float] = {}  # stage -> seconds, of the stages run (not reused) by this call
        self.t0 = time.perf_counter()

    def run(self, name: str, fn: Callable[[], dict[str, Any] | None],
            threads: int | Callable[[], int] | None = None) -> dict[str, Any]:
        """Run (or reuse) a stage; ``threads`` (a count, or a function deciding it when the stage starts) sets
        torch's thread count for it, recorded in stages.json."""
        done = self.state.get(name, {})
        if done.get("status") == "done":
            print(f"[{self.label}] stage {name}: reused (finished earlier in {done.get('seconds', 0.0):.1f} s)", flush=True)
            self.estimates.pop(name, None)  # not part of what is left
            return done.get("result", {})
        if threads is not None:
            torch.set_num_threads(threads() if callable(threads) else threads)
        print(f"[{self.label}] stage {name} ... ({torch.get_num_threads()} threads)", flush=True)
        t0 = time.perf_counter()
        result = fn() or {}
        seconds = time.perf_counter() - t0
        self.state[name] = {"status": "done", "seconds": round(seconds, 2), "threads": torch.get_num_threads(),
                            "result": result}
        save_json(self.state, self.path)
        self.actual[name] = seconds
        line = f"[{self.label}] stage {name} done in {seconds:.1f} s"
        if self.estimates:
            elapsed = time.perf_counter() - self.t0
            line += f"; elapsed {elapsed:.0f} s, about {remaining_seconds(self.estimates, self.actual):.0f} s left"
        print(line, flush=True)
        return result


def remaining_seconds(estimates: dict[str, float], actual: dict[str, float]) -> float:
    """Estimated seconds of the stages not yet run, scaled by actual/estimated over the stages run so far."""
    done = [k for k in actual if k in estimates]
    spent, expected = sum(actual[k] for k in done), sum(estimates[k] for k in done)
    scale = spent / expected if expected > 0 and spent > 0 else 1.0
    return scale * sum(v for k, v in estimates.items() if k not in actual)
