"""The demo's training stages: pre-training, SFT, discriminator pre-training and the compared arms."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shiftvdm.backbone.toy import residual_std
from shiftvdm.config import config_from_dict, deep_merge
from shiftvdm.eval import sprite_motion_metrics
from shiftvdm.recipes.demo.config import DemoConfig, train_config
from shiftvdm.recipes.demo.datasets import load_sets, write_clip_folder
from shiftvdm.recipes.demo.evaluation import sample_clips
from shiftvdm.recipes.generate import generate
from shiftvdm.recipes.train import run_training
from shiftvdm.recipes.train_reward import TrainRewardConfig, train_reward
from shiftvdm.train.clips import TensorClips


def train_stage(cfg, clips_uint8: np.ndarray, evaluate=None):
    run_dir = Path(cfg.run.out_dir)
    resume = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)  # a half-made folder without checkpoints: start clean
    return run_training(cfg, resume=resume, clips=TensorClips(torch.from_numpy(clips_uint8)), evaluate=evaluate)


def curve_hook(cfg: DemoConfig, heldout: np.ndarray, snapshot: tuple[int, Path] | None = None):
    """Training-curve evaluation: sprite metrics of held-out samples, incl. the hacking monitor (speed W1
    to held-out real clips, which the reward never sees); optionally saves the model at one step."""
    frames = heldout[: cfg.eval.curve_clips, 0]
    reference = heldout[: cfg.eval.curve_clips]

    def hook(backbone, step: int) -> dict[str, float]:
        if snapshot is not None and step == snapshot[0]:
            backbone.save_pretrained(snapshot[1])
        m = sprite_motion_metrics(sample_clips(backbone, frames, cfg.eval.seed), reference=reference).aggregate
        return {"static_fraction": m["static_fraction"], "speed_w1": m["speed_w1"],
                "lost_fraction": m["lost_fraction"], "area": m["area"], "speed": m["speed"]}
    return hook


def pretrain_stage(cfg: DemoConfig, out: Path) -> dict[str, Any]:
    sets = load_sets(out)
    sections = [cfg.pretrain]
    if cfg.backbone.get("name") == "toy" and "sigma_data" not in cfg.backbone.get("options", {}):
        # EDM's σ_data is the std of what is diffused: the residuals x_t − x_0 of this data, in [-1, 1] units
        videos = torch.from_numpy(sets["generic"][:2000]).permute(0, 1, 4, 2, 3).float() / 127.5 - 1
        sections.append({"backbone": {"options": {"sigma_data": round(residual_std(videos), 4)}}})
    tc = train_config(cfg, out / "runs" / "pretrain", *sections, mode="pretrain")
    result = train_stage(tc, sets["generic"])
    return {"steps": result.steps, "seconds": round(result.timers.get("wall", 0.0), 1),
            "loss_end": result.last_metrics.get("loss/real")}


def sft_stage(cfg: DemoConfig, out: Path) -> dict[str, Any]:
    sets = load_sets(out)
    tc = train_config(cfg, out / "runs" / "sft", {"backbone": {"pretrained": str(out / "runs" / "pretrain" / "model")}},
                      cfg.sft, mode="sft")
    result = train_stage(tc, sets["target"], evaluate=curve_hook(cfg, sets["heldout"]))
    return {"steps": result.steps, "seconds": round(result.timers.get("wall", 0.0), 1)}


def critic_stage(cfg: DemoConfig, out: Path) -> dict[str, Any]:
    """Fakes from the SFT model on target first frames (`shiftvdm generate`), then Eq. 7 pre-training of IC and LC."""
    sets = load_sets(out)
    real_dir, fake_dir = out / "critic_data" / "real", out / "critic_data" / "fake"
    write_clip_folder(real_dir, sets["target"][: cfg.data.critic_clips])
    # a rerun resumes generate's own output; the whole set in few sampler calls (the toy model is small)
    generate(out / "runs" / "sft" / "model", real_dir, fake_dir, cfg.data.fakes_per_clip,
             seed=cfg.seed + 1000, fmt="npy", fps=8, device="cpu", clips_per_call=64)
    rc = config_from_dict(TrainRewardConfig, deep_merge({"seed": cfg.seed}, cfg.critic_training), "demo critic stage")
    if (out / "critic").exists():
        shutil.rmtree(out / "critic")
    metrics = train_reward(rc, real_dir, fake_dir, out / "critic")
    final = metrics.get("final", {})  # validation AUC / accuracy of IC and LC at the end of pre-training
    return {"final": {k: round(float(v), 4) for k, v in final.items() if isinstance(v, (int, float))},
            "seconds": {k: round(float(v), 1) for k, v in metrics.get("seconds", {}).items()}}


def arm_stage(cfg: DemoConfig, out: Path, name: str, equal_steps: int, time_limit: float = 0.0,
              clock: str = "cpu") -> dict[str, Any]:
    sets = load_sets(out)
    run_dir = out / "runs" / name
    snapshot = None
    extra: dict[str, Any] = {}
    if time_limit > 0:  # continued SFT for SHIFT's training time on `clock`; keep its equal-steps model too
        snapshot = (equal_steps, run_dir / f"model-step-{equal_steps}")
        # its held-out curve every `equal_steps` steps (the snapshot's step): evaluation is off its clock, not the demo's
        every = int(deep_merge(cfg.arms_common, cfg.arms[name]).get("run", {}).get("eval_every", 0))
        extra = {"run": {"max_steps": 100 * equal_steps, "time_limit_s": time_limit, "time_limit_clock": clock,
                         "eval_every": equal_steps if every > 0 else 0}}
    tc = train_config(cfg, run_dir, {"backbone": {"pretrained": str(out / "runs" / "sft" / "model")},
                                     "critic": {"path": str(out / "critic" / "critic")}},
                      cfg.arms_common, cfg.arms[name], extra, mode=cfg.arms[name].get("mode", "shift"))
    result = train_stage(tc, sets["target"], evaluate=curve_hook(cfg, sets["heldout"], snapshot))
    return {"steps": result.steps, "seconds": round(result.timers.get("wall", 0.0), 2), "stopped_by": result.stopped_by,
            "timers": {k: round(v, 2) for k, v in result.timers.items()}}


def time_budget(shift_info: dict[str, Any]) -> tuple[float, str]:
    """The time-matched arm's budget: SHIFT's training CPU seconds (load on other processes does not change it;
    both arms run at one thread count), or its wall seconds for a SHIFT arm recorded without a CPU clock."""
    cpu = shift_info.get("timers", {}).get("cpu")
    return (float(cpu), "cpu") if cpu else (float(shift_info.get("seconds", 0.0)), "wall")


def prune_checkpoints(run_dir: Path) -> None:
    """Drop a finished stage's training checkpoints: the stage is reused from its model folder, and the
    checkpoints (optimizer state, buffers) are most of the demo's disk use."""
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
