"""Full-size dry-run figures: the real SVD-XT and Wan2.2 architectures (random weights) on this CPU.

For each model, one `shiftvdm shift --config <preset> --dry-run` process (one at a time: the 5 B model alone takes
≈ 14 GiB) builds the architecture from the shipped diffusers configs and runs one SHIFT step per group size P;
this script collects parameter counts, LoRA size and dtype, the static memory plan, the peak resident memory of
each step and its wall time, and prints them as one table. Wan2.2-I2V-A14B is built on the meta device only
when its frozen weights do not fit in memory (2 × 14.3 B parameters in bf16 ≈ 53 GiB).

    python benchmarks/bench_full_size.py                      # SVD-XT and TI2V-5B at P = 2 and 8, A14B plan
    python benchmarks/bench_full_size.py --models svd --group-sizes 2,8 --inference-steps 2

Seconds per step are CPU figures at a small clip size with few sampler steps: they show that the step runs,
not GPU throughput. Peak RSS is measured per step (the kernel's VmHWM is reset before each step).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

MODELS = {  # short name -> (preset, extra overrides)
    "svd": ("svd_shift_davis", []),
    "ti2v": ("wan22_ti2v5b_shift_wisa", []),
    "a14b": ("wan22_ti2v5b_shift_wisa", ["backbone.options.layout=i2v_a14b"]),
}
GIB = 1024**3


def run_model(name: str, group_sizes: list[int], inference_steps: int, meta_only: bool) -> dict:
    preset, extra = MODELS[name]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "shiftvdm", "shift", "--config", preset, "--dry-run", *extra,
               f"dry_run.group_sizes=[{','.join(map(str, group_sizes))}]", f"dry_run.inference_steps={inference_steps}",
               f"dry_run.report_json={report}"] + (["dry_run.meta_only=true"] if meta_only else [])
        print("$", " ".join(cmd[1:]), flush=True)
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "HF_HUB_OFFLINE": "1"}
        subprocess.run(cmd, check=True, env=env)
        return json.loads(report.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="svd,ti2v,a14b", help="comma-separated: svd, ti2v, a14b")
    parser.add_argument("--group-sizes", default="2,8")
    parser.add_argument("--inference-steps", type=int, default=1, help="rollout sampler steps of the dry-run step")
    parser.add_argument("--meta-only", action="store_true", help="counts and plans only, no step")
    parser.add_argument("--json", help="write all reports to this file")
    args = parser.parse_args()
    sizes = [int(p) for p in args.group_sizes.split(",")]
    reports = {m: run_model(m, sizes, args.inference_steps, args.meta_only) for m in args.models.split(",")}

    print("\n| model | parameters (per component) | LoRA params (dtype) | static plan | "
          + " | ".join(f"P={p}: peak RSS, s/step" for p in sizes) + " |")
    print("|---|---|---|---|" + "---|" * len(sizes))
    for name, r in reports.items():
        params = ", ".join(f"{k} {v / 1e9:.3f} B" for k, v in r["parameters"].items())
        dtype = "/".join(r.get("lora_dtype", ["not built"]))
        cells = []
        steps = {s["group_size"]: s for s in r.get("steps", [])}
        for p in sizes:
            s = steps.get(p)
            cells.append(f"{s['peak_rss'] / GIB:.2f} GiB, {s['seconds']:.0f} s" if s else "not run")
        print(f"| {r['architecture']} | {params} | {r['lora_parameters']:,} ({dtype}) | "
              f"{r['static_total'] / GIB:.2f} GiB | " + " | ".join(cells) + " |")
        if r.get("not_run"):
            print(f"|   ↳ {r['architecture']}: {r['not_run']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
