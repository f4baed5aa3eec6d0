"""SFT over budgets from one base: does fine-tuning keep the base's motion (issue 14's SFT-budget curve)?

Uses the demo's own stages: the scenario's data and base model (pre-trained here, or taken from a finished
`shiftvdm demo` run with --base-run), then one SFT run evaluated at each budget on held-out frames (sprite
speed W1 to held-out real clips, static / lost fraction, mass ratio, image-statistics distance).

    python benchmarks/sft_budget.py --scenario collapse --out sft-curve [--base-run shiftvdm-demo-collapse]
    python benchmarks/sft_budget.py --scenario collapse --out sft-curve-64 --target-clips 64 --base-run sft-curve
"""

from __future__ import annotations

import argparse
import os
import resource
from pathlib import Path

import numpy as np
import torch

from shiftvdm.backbone import load_backbone_from_path
from shiftvdm.eval import evaluate_videos, prepare_reference
from shiftvdm.recipes.demo.config import SCENARIO_PRESETS, load_demo_config, train_config
from shiftvdm.recipes.demo.datasets import load_sets, make_data
from shiftvdm.recipes.demo.evaluation import sample_clips
from shiftvdm.recipes.demo.training import pretrain_stage, train_stage
from shiftvdm.utils.checkpoint import save_json

COLUMNS = ("sprite_speed_w1", "sprite_static_fraction", "sprite_lost_fraction", "sprite_mass_ratio",
           "image_stats_frechet")


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=sorted(SCENARIO_PRESETS), default="collapse")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--base-run", type=Path, default=None, help="take data/ and runs/pretrain/ from this run")
    parser.add_argument("--target-clips", type=int, default=0, help="SFT set size (default: the preset's)")
    parser.add_argument("--budgets", default="50,200,800,3000")
    parser.add_argument("--heldout", type=int, default=128, help="held-out frames evaluated per budget")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="demo config overrides, e.g. sft.optim.lr=3e-4")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = list(args.overrides) + ([f"data.target_clips={args.target_clips}"] if args.target_clips else [])
    cfg = load_demo_config(SCENARIO_PRESETS[args.scenario], False, overrides)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.base_run is not None:  # one base for every curve: link its pre-training
        (out / "runs").mkdir(exist_ok=True)
        if not (out / "runs" / "pretrain").exists():
            os.symlink((args.base_run / "runs" / "pretrain").resolve(), out / "runs" / "pretrain")
    if not (out / "data" / "sets.npz").is_file():
        make_data(cfg, out)
    sets = load_sets(out)
    if not (out / "runs" / "pretrain" / "model" / "config.json").is_file():
        pretrain_stage(cfg, out)
    held = sets["heldout"][: args.heldout]
    reference = prepare_reference(held, sprites=True)

    def measure(backbone) -> dict[str, float]:
        clips = sample_clips(backbone, held[:, 0], cfg.eval.seed)
        agg = evaluate_videos(clips, reference=reference, sprites=True).aggregate
        return {c: round(float(agg.get(c, float("nan"))), 4) for c in COLUMNS}

    rows = {0: measure(load_backbone_from_path(out / "runs" / "pretrain" / "model"))}
    budgets = sorted(int(b) for b in args.budgets.split(","))
    cpu0 = cpu_seconds()
    cpu_at: dict[int, float] = {0: 0.0}

    def hook(backbone, step: int) -> dict[str, float]:
        if step in budgets:
            cpu_at[step] = round(cpu_seconds() - cpu0, 1)
            rows[step] = measure(backbone)
            print(f"SFT {step} steps: {rows[step]}", flush=True)
        return {}

    every = int(np.gcd.reduce(budgets))
    tc = train_config(cfg, out / "runs" / "sft-curve", {"backbone": {"pretrained": str(out / "runs/pretrain/model")}},
                        cfg.sft, {"run": {"max_steps": budgets[-1], "eval_every": every, "checkpoint_every": 0}},
                        mode="sft")
    train_stage(tc, sets["target"], evaluate=hook)
    print(f"\n{args.scenario}: {len(sets['target'])} target clips, {len(held)} held-out frames, "
          f"{torch.get_num_threads()} threads")
    print(f"{'SFT steps':>10}" + "".join(f"{c.removeprefix('sprite_'):>22}" for c in COLUMNS) + f"{'CPU s':>10}")
    for step in sorted(rows):
        print(f"{step:>10}" + "".join(f"{rows[step][c]:>22.4f}" for c in COLUMNS) + f"{cpu_at.get(step, 0):>10.0f}")
    save_json({"scenario": args.scenario, "target_clips": len(sets["target"]), "heldout": len(held),
               "rows": {str(k): v for k, v in rows.items()}, "cpu_seconds": cpu_at}, out / "sft_budget.json")


if __name__ == "__main__":
    main()
