"""1 process vs 2 processes (gloo, CPU) on the toy SHIFT setup: generator seconds per step, side by side,
for each gradient engine of the trainer (run.distributed: ddp, fsdp2, deepspeed).

All runs have the same global batch (2 conditionings per step: 1 process × 2, or 2 processes × 1) and
the same per-rank work otherwise; the ratio shows what the engine's sync and the agreement collectives
cost against the halved per-rank work. On a loaded machine the figures are noisy: read them with the load.
DeepSpeed is measured only where it is installed (optional extra; CPU: DS_BUILD_OPS=0).

    .venv/bin/python benchmarks/bench_distributed.py [--steps 8] [--engines ddp,fsdp2,deepspeed]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from shiftvdm.data.synthetic import write_synthetic_dataset
from shiftvdm.rewards.critic import CriticConfig, MotionCritic
from shiftvdm.rewards.ic import ICConfig
from shiftvdm.rewards.lc import LCConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import save_pretrained_toy  # noqa: E402  (tests/support.py: the shared test models)


def port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(root: Path, nproc: int, steps: int, engine: str = "ddp") -> dict:
    out = root / f"run{nproc}-{engine}"
    cfg = {"backbone": {"name": "toy", "pretrained": str(root / "base")},
           "data": {"train": str(root / "sprites"), "num_frames": 4, "height": 16, "width": 16},
           "lora": {"rank": 2, "alpha": 2}, "optim": {"lr": 1e-3, "warmup_steps": 0}, "loss": {"lambda_aw": 0.5},
           "rollout": {"group_size": 4, "buffer_size": 8, "passes_per_buffer": 2, "batch_size": 2 // nproc,
                       "rollout_batch_size": 2, "num_inference_steps": 2},
           "critic": {"path": str(root / "critic"), "d_to_g": 0.5, "train": {"lr": 1e-3}},
           "run": {"out_dir": str(out), "max_steps": steps, "checkpoint_every": 0, "progress": False,
                   "distributed": engine}}
    path = root / f"run{nproc}-{engine}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "shiftvdm", "shift", "--config", str(path)]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
               str(nproc), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(port()), "-m", "shiftvdm", "shift", "--config", str(path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads((out / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--engines", default="ddp,fsdp2,deepspeed", help="comma-separated run.distributed values")
    args = parser.parse_args()
    import importlib.util

    engines = [e for e in args.engines.split(",") if e != "deepspeed" or importlib.util.find_spec("deepspeed")]
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_synthetic_dataset(root / "sprites", 8, 4, 16, seed=1, format="npy", num_sprites=1,
                                sprite_size=(3.0, 4.0), speed=(1.5, 2.5), background="flat", overwrite=True)
        save_pretrained_toy(root / "base")
        MotionCritic(CriticConfig(num_queries=8, ic=ICConfig(encoder="cnn", image_size=(16, 16), cnn_channels=(8, 8)),
                                  lc=LCConfig(dim=16, depth=1, heads=2))).save(root / "critic")
        rows = {"1 process": run(root, 1, args.steps)}
        rows.update({f"2p {e}": run(root, 2, args.steps, e) for e in engines})
    print(f"toy SHIFT, {args.steps} steps, global batch 2, P=4, load avg {os.getloadavg()[0]:.2f}, "
          f"{os.cpu_count()} cores")
    print(f"{'':20s}" + "".join(f"{name:>14s}" for name in rows))
    for key in ("generator", "buffer", "wall"):
        values = [r["timers"].get(key, float("nan")) / args.steps for r in rows.values()]
        print(f"{key + ' s/step':20s}" + "".join(f"{v:14.3f}" for v in values))


if __name__ == "__main__":
    main()
