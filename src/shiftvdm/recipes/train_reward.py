"""`shiftvdm train-critic`: pre-train the critic's IC and LC motion discriminators with the paper's Eq. 7.

(`train-reward` is the command's old name, accepted until 0.3.)

    shiftvdm train-critic --real REAL --fake FAKE --out DIR [--config YAML] [key=value ...] [--resume]

REAL and FAKE are manifests or folders of clips (`shiftvdm generate` writes FAKE with each fake's
``source``). The recipe checks the run folder, loads the manifests and hands over to
rewards/pretraining.py (pairing, split by source clip, cached features, the Eq. 7 loop, checkpoints);
DIR gets critic/, checkpoints/, features/, logs/ and metrics.json.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from shiftvdm.config import config_differences, dump_config, load_config
from shiftvdm.data.manifest import load_manifest
from shiftvdm.errors import ConfigError
from shiftvdm.rewards.critic import MotionCritic
from shiftvdm.rewards.pretraining import (RESUMABLE_CHANGES, RewardDataConfig, TrainRewardConfig, noisy_copy,
                                          pair_fakes, prepare_data, pretrain_discriminators, run_checkpoints,
                                          split_by_source)
from shiftvdm.utils.checkpoint import clean_stale_temps
from shiftvdm.utils import preemption
from shiftvdm.utils.atomic import sweep_stale
from shiftvdm.utils.outputs import begin_outputs, check_output_dir, holds_run, new_output_dir, path_inputs, \
    record_outputs
from shiftvdm.utils.outputs import entries as folder_entries
from shiftvdm.recipes.args import parse_command_line
from shiftvdm.utils.run_lock import run_lock

_checkpoints = run_checkpoints  # the name tests/test_bad_inputs.py reads
# what `train-critic` writes in --out (its stamp claims these when absent at the start; --overwrite-free command:
# the stamp tells later commands what is the critic run's)
CRITIC_OUTPUTS = ("config.yaml", "checkpoints", "logs", "critic", "metrics.json", preemption.MARKER)


def train_reward(cfg: TrainRewardConfig, real: str | Path, fake: str | Path, out: str | Path,
                 resume: bool = False) -> dict:
    """Run critic pre-training; returns the final metrics (also written to ``out/metrics.json``)."""
    out = Path(out)
    check_out(cfg, real, fake, out, resume)
    data = prepare_data(cfg, load_manifest(real).entries, load_manifest(fake).entries)  # checks before any write
    critic = MotionCritic(cfg.critic)
    out.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(out / "checkpoints")
    dump_config(cfg, out / "config.yaml")
    return pretrain_discriminators(cfg, critic, data, out, resume=resume)


def check_out(cfg: TrainRewardConfig, real: str | Path, fake: str | Path, out: Path, resume: bool) -> None:
    """The output folder's rules (reads only): writable, not an input, a used folder only with ``--resume`` and
    the same config."""
    check_output_dir(out, "--out", inputs=[("--real", real), ("--fake", fake), *path_inputs(cfg)])
    if run_checkpoints(out) and not resume:
        raise ConfigError(f"{out} already holds checkpoints; pass --resume to continue or choose a new --out")
    if not resume and holds_run(out):
        raise ConfigError(f"--out {out}: already holds outputs ({', '.join(holds_run(out))}); pass --resume to "
                          "continue or choose a new --out")
    if resume and (out / "config.yaml").is_file():
        saved = load_config(TrainRewardConfig, out / "config.yaml")
        changed = [d for d in config_differences(saved, cfg) if d.split(":")[0] not in RESUMABLE_CHANGES]
        if changed:
            raise ConfigError(f"--resume with a config that differs from {out / 'config.yaml'}: " + "; ".join(changed))


def main(argv: list[str], prog: str = "shiftvdm train-critic") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Pre-train the critic's IC and LC motion discriminators "
                                                            "(Eq. 7).")
    parser.add_argument("--real", required=True, help="manifest or folder of real clips")
    parser.add_argument("--fake", required=True, help="manifest or folder of generated clips (with their source)")
    parser.add_argument("--out", required=True, help="output folder (critic/, checkpoints/, logs/, metrics.json)")
    parser.add_argument("--config", default=None, help="YAML config or shipped preset name")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. max_steps=200 critic.ic.dim=128")
    args = parse_command_line(parser, argv)
    cfg = load_config(TrainRewardConfig, args.config, args.overrides)
    check_out(cfg, args.real, args.fake, Path(args.out), args.resume)  # before the lock: a refusal writes nothing
    # refused before its first checkpoint: nothing left behind; one job per folder; SIGTERM/SIGUSR1 -> checkpoint
    with new_output_dir(args.out), run_lock(args.out, what="--out"), preemption.handling():
        sweep_stale(args.out)  # what killed writers left, under the lock
        before = begin_outputs(args.out, "train-critic", declared=CRITIC_OUTPUTS, resume=args.resume)
        preemption.clear_marker(args.out)
        try:
            result = train_reward(cfg, args.real, args.fake, args.out, resume=args.resume)
        finally:
            record_outputs(args.out, folder_entries(args.out) - before)
        if result.get("preempted"):
            kept = [a for a in argv if a != "--resume"]
            resume_cmd = " ".join([prog, *(shlex.quote(a) for a in kept), "--resume"])
            preemption.write_marker(args.out, result["step"], result["checkpoint"], resume_cmd, prog)
            since = preemption.seconds_since_signal()
            after = f", {since:.1f} s after the signal" if since is not None else ""
            print(f"{prog}: preempted at step {result['step']}; checkpoint {result['checkpoint']}; resume with "
                  f"`{resume_cmd}` (exit {preemption.EXIT_CODE}{after})", file=sys.stderr, flush=True)
            return preemption.EXIT_CODE
    final = result["final"]
    print(f"validation after {final.get('step', 0)} steps "
          f"({result['split']['val_real']} real / {result['split']['val_fake']} fake clips):")
    for branch in ("ic", "lc"):
        if f"val/auc_{branch}" in final:
            print(f"  {branch.upper()}: accuracy {final[f'val/acc_{branch}']:.3f}  ROC-AUC {final[f'val/auc_{branch}']:.3f}")
    print(f"  reward ROC-AUC {final['val/auc_reward']:.3f}")
    print(f"critic written to {Path(args.out) / 'critic'}; metrics in {Path(args.out) / 'metrics.json'}")
    return 0


__all__ = ["RewardDataConfig", "TrainRewardConfig", "main", "noisy_copy", "pair_fakes", "split_by_source",
           "train_reward"]
