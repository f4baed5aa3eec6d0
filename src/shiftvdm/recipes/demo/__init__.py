"""`shiftvdm demo [--quick] [--out DIR]`: the whole method end to end on CPU, on data it makes itself.

Stages (each reused when the demo runs again in the same folder):
  data       synthetic sprite clips of the scenario (``--scenario``, see shiftvdm.recipes.demo.scenarios): generic
             pre-training set, the user's target set, held-out set (conditioning frames for evaluation)
  pretrain   a tiny base image-to-video model from scratch on the generic set
  sft        supervised fine-tuning on the target set, as a user would
  critic     fakes from the SFT model, then IC and LC discriminator pre-training (Eq. 7)
  arms       SHIFT and the baselines from the SFT model, equal generator steps; continued SFT also runs
             for SHIFT's training time in process CPU seconds
  eval       every model on the same held-out conditioning frames, `shiftvdm eval` metrics + sprite tracks
  report     report.html + metrics.json (`shiftvdm report DIR` rebuilds it)

Every number in the report is measured by this run; the summary lines and the success criteria are computed
from them by the fixed rules in :mod:`shiftvdm.recipes.demo.report`.

This module runs the stages in order; the stages themselves are in ``config`` (the demo config and the stage
configs), ``datasets``, ``training`` (fakes via `shiftvdm generate`), ``evaluation`` and ``budget`` (the
up-front time estimate).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from shiftvdm.config import deep_merge
from shiftvdm.errors import DataError, OutputError
from shiftvdm.recipes.demo.budget import calibrate, estimate_line, estimate_stage_seconds
from shiftvdm.recipes.demo.config import (
    DEFAULT_SCENARIO,
    SCENARIO_PRESETS,
    SHIFT_ARM,
    TIME_MATCHED_ARM,
    DemoConfig,
    load_demo_config,
)
from shiftvdm.recipes.demo.datasets import make_data
from shiftvdm.recipes.demo.evaluation import eval_stage, write_metrics
from shiftvdm.recipes.demo.report import build_report
from shiftvdm.recipes.demo.training import (
    arm_stage,
    critic_stage,
    pretrain_stage,
    prune_checkpoints,
    sft_stage,
    time_budget,
)
from shiftvdm.recipes.demo.stages import Stages
from shiftvdm.recipes.demo.threads import choose_threads
from shiftvdm.recipes.args import parse_command_line
from shiftvdm.utils.outputs import begin_outputs, check_output_dir, read_stamp, record_outputs
from shiftvdm.utils.outputs import entries as folder_entries

logger = logging.getLogger(__name__)
# what the demo writes in --out (its stamp claims these when absent at the start, and what else appears at the end)
DEMO_OUTPUTS = ("stages.json", "data", "runs", "critic", "critic_data", "eval", "metrics.json", "report.html")


def check_demo_out(out: Path) -> None:
    """The demo writes (and, rerun, replaces) runs/, critic/, data/ ... inside --out: only a new or empty folder or
    an earlier demo's (its stamp, or its stages.json from before the stamp) is used."""
    check_output_dir(out, "--out")
    if out.is_dir() and folder_entries(out) and read_stamp(out) is None and not (out / "stages.json").is_file():
        found = sorted(folder_entries(out))
        raise OutputError(f"--out {out}: holds files that are not an earlier `shiftvdm demo` output "
                          f"({', '.join(found[:5])}); choose a new or empty folder")
    stamp = read_stamp(out)
    if stamp is not None and stamp.get("command") != "demo":
        raise OutputError(f"--out {out}: holds outputs of `shiftvdm {stamp.get('command')}`, not of "
                          "`shiftvdm demo`; choose a new or empty folder")


def run_demo(cfg: DemoConfig, out: Path) -> Path:
    check_demo_out(out)
    out.mkdir(parents=True, exist_ok=True)
    before = begin_outputs(out, "demo", declared=DEMO_OUTPUTS, resume=read_stamp(out) is not None)
    stages = Stages(out, label="demo")
    t0 = stages.t0
    threads = lambda: choose_threads(cfg.threads)  # noqa: E731  re-decided per stage: the load changes
    stages.run("data", lambda: make_data(cfg, out))
    if cfg.calibrate and not all(stages.state.get(s, {}).get("status") == "done" for s in ("pretrain", "eval")):
        torch.set_num_threads(threads())
        estimates = estimate_stage_seconds(cfg, calibrate(cfg))  # of the stages this call still runs
        stages.estimates = {k: v for k, v in estimates.items() if stages.state.get(k, {}).get("status") != "done"}
        print(estimate_line(stages.estimates, torch.get_num_threads()), flush=True)
    stages.run("pretrain", lambda: pretrain_stage(cfg, out), threads)
    prune = (lambda name: None) if cfg.keep_checkpoints else (lambda name: prune_checkpoints(out / "runs" / name))
    prune("pretrain")
    stages.run("sft", lambda: sft_stage(cfg, out), threads)
    prune("sft")
    stages.run("critic", lambda: critic_stage(cfg, out), threads)
    steps = int(deep_merge(cfg.arms_common, cfg.arms.get(SHIFT_ARM, {})).get("run", {}).get("max_steps", 100))
    # the compared arms run at one thread count (the time-matched arm's budget is SHIFT's wall time): decided
    # once here, or taken from an arm that already ran, so a resumed demo keeps it
    arm_threads = next((v["threads"] for k, v in stages.state.items() if k.startswith("arm:") and "threads" in v), None)
    if arm_threads is None and any(stages.state.get(f"arm:{a}", {}).get("status") != "done" for a in cfg.arms):
        arm_threads = threads()
    shift_info = stages.run(f"arm:{SHIFT_ARM}", lambda: arm_stage(cfg, out, SHIFT_ARM, steps), arm_threads)
    prune(SHIFT_ARM)
    for name in cfg.arms:
        if name == SHIFT_ARM:
            continue
        limit, clock = time_budget(shift_info) if name == TIME_MATCHED_ARM else (0.0, "wall")
        stages.run(f"arm:{name}", lambda name=name, limit=limit, clock=clock: arm_stage(cfg, out, name, steps, limit,
                                                                                          clock), arm_threads)
        prune(name)
    models = stages.run("eval", lambda: eval_stage(cfg, out, steps), threads)
    write_metrics(cfg, out, models, steps, stages)
    report = build_report(out, grid_clips=cfg.eval.grid_clips)
    print(f"[demo] finished in {time.perf_counter() - t0:.0f} s; report: {report}")
    for line in json.loads((out / "metrics.json").read_text())["summary"]:
        print("  " + line)
    record_outputs(out, folder_entries(out) - before)
    return report


def main(argv: list[str], prog: str = "shiftvdm demo") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run of every stage (~3 min; shows no effect)")
    parser.add_argument("--out", default=None, help="run folder (default: shiftvdm-demo, or shiftvdm-demo-quick)")
    parser.add_argument("--scenario", choices=sorted(SCENARIO_PRESETS), default=None,
                        help=f"which shipped scenario to run (default: {DEFAULT_SCENARIO}); see `shiftvdm.recipes.demo.scenarios`")
    parser.add_argument("--config", default=None, help="demo config (default: the shipped preset of --scenario)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides of the demo config, e.g. data.heldout_clips=512")
    args = parse_command_line(parser, argv)
    if args.scenario and args.config:
        parser.error("give --scenario or --config, not both (a config names its own scenario)")
    cfg = load_demo_config(args.config or SCENARIO_PRESETS[args.scenario or DEFAULT_SCENARIO], args.quick, args.overrides)
    torch.set_num_threads(choose_threads(cfg.threads))
    print(f"[demo] torch threads: {torch.get_num_threads()}", flush=True)
    default_out = "shiftvdm-demo" + (f"-{args.scenario}" if args.scenario not in (None, DEFAULT_SCENARIO) else "")
    out = Path(args.out or (default_out + "-quick" if args.quick else default_out))
    run_demo(cfg, out)
    return 0


def main_report(argv: list[str], prog: str = "shiftvdm report") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="rebuild report.html of a demo run folder")
    parser.add_argument("run_dir")
    args = parse_command_line(parser, argv)

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: run folder not found")
    cfg_path = run_dir / "metrics.json"
    try:  # a demo run folder: stages.json from its start, metrics.json with its "models" table at the end
        demo_metrics = cfg_path.is_file() and "models" in json.loads(cfg_path.read_text())
    except (ValueError, OSError):
        demo_metrics = False
    if not (run_dir / "stages.json").is_file() and not demo_metrics:
        raise DataError(f"{run_dir}: not a demo run folder (no stages.json, no metrics.json of a demo); "
                        "`shiftvdm report` rebuilds the report of a `shiftvdm demo --out` folder")
    if not cfg_path.is_file() and (run_dir / "stages.json").is_file():
        logger.info("no metrics.json yet (the run stopped before evaluation): the report shows what exists")
    print(build_report(run_dir))
    return 0
