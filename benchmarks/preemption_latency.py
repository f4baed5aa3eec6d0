"""Signal-to-exit time of `shiftvdm sft | shift | pretrain` on the toy setup (CPU, one process), and the
start-up banner's bound beside it.

Each stage runs in a fresh process with a large ``run.max_steps``; once a step is logged the process gets
SIGTERM (as from a scheduler). Printed per stage: the banner's "signal-to-exit ≤ ~X s" (its last value:
slowest step or rollout batch plus the last checkpoint write), the time from the signal to the "preempted
at step N" line (the checkpoint is then on disk), and to the process's end (plus the interpreter's teardown,
which every run has at its end). On a loaded machine the figures are noisy: read them with the load.

    .venv/bin/python benchmarks/preemption_latency.py [--repeats 2] [--stages sft,shift,pretrain]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "train"))
from support import save_pretrained_toy  # noqa: E402  (tests/support.py: the shared test models)
from tiny_run import write_run_inputs  # noqa: E402  (sprites and a small critic, as the preemption tests)

SRC = Path(__file__).resolve().parents[1] / "src"


def write_config(inputs: dict[str, Path], stage: str, run: Path) -> Path:
    """The preemption tests' tiny run (tests/train/test_preemption.py), with many steps."""
    cfg: dict = {
        "backbone": {"name": "toy", "pretrained": str(inputs["base"])},
        "data": {"train": str(inputs["sprites"]), "num_frames": 4, "height": 16, "width": 16},
        "optim": {"lr": 1e-3, "warmup_steps": 0},
        "rollout": {"buffer_size": 4, "passes_per_buffer": 1, "batch_size": 1},
        "run": {"out_dir": str(run), "max_steps": 100000, "checkpoint_every": 0, "progress": False},
    }
    if stage != "pretrain":
        cfg["lora"] = {"rank": 2, "alpha": 2}
    if stage == "shift":
        cfg["loss"] = {"lambda_aw": 0.5}
        cfg["rollout"].update(group_size=2, rollout_batch_size=2, num_inference_steps=2)
        cfg["critic"] = {"path": str(inputs["critic"]), "d_to_g": 1.0, "train": {"lr": 1e-3}}
    path = run.parent / f"{run.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def measure(stage: str, config: Path, log: Path, after_steps: int) -> dict[str, float | str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "shiftvdm", stage, "--config", str(config)], env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
    metrics = Path(yaml.safe_load(config.read_text())["run"]["out_dir"]) / "logs" / "metrics.jsonl"
    while not (metrics.is_file() and metrics.read_text().count('"loss/real"') >= after_steps):
        if proc.poll() is not None:
            raise SystemExit(f"{stage}: exited early with {proc.returncode}; see {log}")
        time.sleep(0.02)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    stopped = None
    while proc.poll() is None:
        if stopped is None and "preempted at step" in log.read_text():
            stopped = time.monotonic() - t0
        time.sleep(0.01)
    ended = time.monotonic() - t0
    text = log.read_text()
    if proc.returncode != 75:
        raise SystemExit(f"{stage}: exit {proc.returncode}, expected 75; see {log}")
    bounds = re.findall(r"signal-to-exit ≤ ~([\d.]+) s \(([^)]*)\)", text)
    own = re.search(r"exit 75, ([\d.]+) s after the signal", text)
    return {"bound": float(bounds[-1][0]) if bounds else float("nan"), "parts": bounds[-1][1] if bounds else "",
            "own": float(own.group(1)) if own else float("nan"),
            "stopped": stopped if stopped is not None else ended, "ended": ended}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", default="sft,shift,pretrain")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--after-steps", type=int, default=3, help="steps logged before the signal (default 3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="preemption-latency-") as tmp:
        root = Path(tmp)
        inputs = write_run_inputs(root, save_pretrained_toy(root / "base"))
        print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs")
        print(f"{'stage':9} {'banner bound s':>14} {'run says s':>10} {'to line s':>9} {'to exit s':>9}  banner parts")
        for stage in args.stages.split(","):
            for i in range(args.repeats):
                run = root / f"{stage}-{i}"
                r = measure(stage, write_config(inputs, stage, run), root / f"{stage}-{i}.log", args.after_steps)
                print(f"{stage:9} {r['bound']:14.2f} {r['own']:10.2f} {r['stopped']:9.2f} {r['ended']:9.2f}  "
                      f"{r['parts']}", flush=True)


if __name__ == "__main__":
    main()
