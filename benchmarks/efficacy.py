"""The demo's comparison repeated over seeds: mean ± spread of the held-out metrics per model.

By default every seed starts from the same base model, SFT model and pre-trained discriminators (taken
from a finished demo run) and re-runs the arms and the evaluation with its own seed, which drives data
order, rollouts, noise and discriminator sampling. ``--share base`` shares only the data and the base
(SFT and discriminator pre-training re-run per seed); ``--full`` re-runs every stage per seed. At the end it
prints, per success criterion fixed in advance (``recipes/demo/report.SUCCESS_CRITERIA``), how many seeds meet it.

    shiftvdm demo --out shiftvdm-demo                      # once
    python benchmarks/efficacy.py --base-run shiftvdm-demo --seeds 1 2 3
    python benchmarks/efficacy.py --scenario collapse --base-run shiftvdm-demo-collapse --share base --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np

import torch

from shiftvdm.recipes.demo.report import success_criteria
from shiftvdm.recipes.demo import run_demo
from shiftvdm.recipes.demo.config import DEFAULT_SCENARIO, SCENARIO_PRESETS, load_demo_config
from shiftvdm.recipes.demo.threads import choose_threads
from shiftvdm.utils.checkpoint import save_json

SHARED_STAGES = ("data", "pretrain", "sft", "critic")
KEYS = [("sprite_static_fraction", "static"), ("sprite_speed_w1", "speed W1"), ("sprite_lost_fraction", "lost"),
        ("sprite_area", "area"), ("image_stats_frechet", "img FD")]


SHARED = {"sft": ("data", "pretrain", "sft", "critic"), "base": ("data", "pretrain")}  # --share -> stages reused
LINKS = {"data": "data", "pretrain": "runs/pretrain", "sft": "runs/sft", "critic": "critic"}


def prepare_seed_run(base: Path, out: Path, shared: tuple[str, ...] = SHARED_STAGES) -> None:
    """Link the ``shared`` stages of ``base`` into ``out`` and mark them done there."""
    out.mkdir(parents=True, exist_ok=True)
    for stage in shared:
        src, dst = base / LINKS[stage], out / LINKS[stage]
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            os.symlink(src.resolve(), dst)
    base_stages = json.loads((base / "stages.json").read_text())
    stages = json.loads((out / "stages.json").read_text()) if (out / "stages.json").is_file() else {}
    for name in shared:
        stages[name] = base_stages[name]
    save_json(stages, out / "stages.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-run", type=Path, default=Path("shiftvdm-demo"), help="a finished `shiftvdm demo` folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", type=Path, default=None, help="folder for the per-seed runs (default: BASE-seeds)")
    parser.add_argument("--quick", action="store_true", help="use the --quick demo settings")
    parser.add_argument("--scenario", choices=sorted(SCENARIO_PRESETS), default=DEFAULT_SCENARIO,
                        help="which shipped demo scenario (must match the --base-run's)")
    parser.add_argument("--full", action="store_true", help="re-run every stage (data, pre-training, ...) per seed")
    parser.add_argument("--share", choices=sorted(SHARED), default="sft",
                        help="stages taken from --base-run: 'sft' (data, base, SFT model, discriminators) or 'base' "
                             "(data and base only: SFT and discriminator pre-training re-run per seed)")
    parser.add_argument("--arms", default="", help="comma-separated arms to run (default: all of the config's)")
    parser.add_argument("overrides", nargs="*", help="demo config overrides, as for `shiftvdm demo`")
    args = parser.parse_args()
    out_root = args.out or args.base_run.with_name(args.base_run.name + "-seeds")
    results: dict[int, dict[str, dict[str, float]]] = {}
    for seed in args.seeds:
        out = out_root / f"seed{seed}"
        if not args.full:
            if not (args.base_run / "stages.json").is_file():
                raise SystemExit(f"{args.base_run}: not a finished demo run (no stages.json); run `shiftvdm demo` first")
            prepare_seed_run(args.base_run, out, SHARED[args.share])
        cfg = load_demo_config(SCENARIO_PRESETS[args.scenario], args.quick, [*args.overrides, f"seed={seed}"])
        torch.set_num_threads(choose_threads(cfg.threads))  # as `shiftvdm demo` does
        if args.arms:
            cfg.arms = {name: cfg.arms[name] for name in args.arms.split(",")}
        run_demo(cfg, out)
        results[seed] = json.loads((out / "metrics.json").read_text())["models"]
    models = list(next(iter(results.values())))
    print(f"\n{len(results)} seeds ({', '.join(map(str, results))}); "
          f"{'every stage per seed' if args.full else 'shared ' + '/'.join(SHARED[args.share]) + ', the rest per seed'}")
    print(f"{'model':28}" + "".join(f"{label:>22}" for _, label in KEYS))
    summary: dict[str, dict[str, list[float]]] = {}
    for model in models:
        cells = []
        for key, _ in KEYS:
            vals = np.array([results[s][model].get(key) for s in results if model in results[s]], dtype=float)
            summary.setdefault(model, {})[key] = vals.tolist()
            cells.append(f"{np.nanmean(vals):9.3f} ± {np.nanstd(vals):.3f} ({np.nanmin(vals):.2f}-{np.nanmax(vals):.2f})"
                         if len(vals) else "–")
        print(f"{model:28}" + "".join(f"{c:>22}" for c in cells))
    # the success criteria fixed in advance (recipes/demo/report.SUCCESS_CRITERIA), per seed, and how many seeds meet each
    criteria = {seed: success_criteria(models_of) for seed, models_of in results.items()}
    tally: dict[str, list[bool | None]] = {}
    for rows in criteria.values():
        for c in rows:
            tally.setdefault(c["name"], []).append(c["passed"])
    print("\nsuccess criteria (fixed in advance), seeds meeting each:")
    for c in next(iter(criteria.values())):
        passed = tally[c["name"]]
        print(f"  {sum(p is True for p in passed)}/{len(passed)}  {c['rule']}")
    save_json({"seeds": list(results), "scenario": args.scenario, "per_seed": results, "summary": summary,
               "criteria": {str(k): v for k, v in criteria.items()}}, out_root / "efficacy.json")
    shutil.copy(out_root / "efficacy.json", out_root / "efficacy-latest.json")
    print(f"per-seed numbers: {out_root / 'efficacy.json'}")


if __name__ == "__main__":
    main()
