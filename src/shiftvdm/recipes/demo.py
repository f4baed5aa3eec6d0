"""`shiftvdm demo [--quick] [--out DIR]`: the whole method end to end on CPU, on data it makes itself.

Stages (each reused when the demo runs again in the same folder):
  data       synthetic sprite clips of the scenario (``--scenario``, see shiftvdm.data.scenarios): generic
             pre-training set, the user's target set, held-out set (conditioning frames for evaluation)
  pretrain   a tiny base image-to-video model from scratch on the generic set
  sft        supervised fine-tuning on the target set, as a user would
  critic     fakes from the SFT model, then IC and LC discriminator pre-training (Eq. 7)
  arms       SHIFT and the baselines from the SFT model, equal generator steps; continued SFT also runs
             for SHIFT's training time in process CPU seconds
  eval       every model on the same held-out conditioning frames, `shiftvdm eval` metrics + sprite tracks
  report     report.html + metrics.json (`shiftvdm report DIR` rebuilds it)

Every number in the report is measured by this run; the summary lines and the success criteria are computed
from them by the fixed rules in :mod:`shiftvdm.eval.report`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shiftvdm.config import config_from_dict, config_to_dict, deep_merge, load_config
from shiftvdm.data.scenarios import Scenario
from shiftvdm.data.synthetic import SpriteClips
from shiftvdm.eval.report import (
    DEMO_COLUMNS,
    REFERENCE,
    comparison_verdicts,
    demo_column_info,
    demo_model_help,
    success_criteria,
)
from shiftvdm.utils.checkpoint import save_json
from shiftvdm.utils.seeding import generator_for

logger = logging.getLogger(__name__)


@dataclass
class DemoData:
    size: int = 16  # clip side in pixels
    num_frames: int = 8  # frames per clip
    scenario: Scenario = field(default_factory=Scenario)  # looks of the generic and target sets, shared motion law
    generic_clips: int = 8000  # pre-training clips
    target_clips: int = 4000  # the user's fine-tuning clips (all moving)
    heldout_clips: int = 256  # held-out moving clips: evaluation conditioning frames and real reference
    critic_clips: int = 512  # target clips used (with their fakes) to pre-train the discriminators
    fakes_per_clip: int = 2  # generated clips per real clip for discriminator pre-training
    seeds: tuple[int, int, int] = (0, 1, 123)  # generic, target, held-out


@dataclass
class DemoEval:
    curve_clips: int = 64  # held-out frames used for the training curves (every eval_every steps)
    eval_every: int = 25  # generator steps between curve points
    grid_clips: int = 8  # rows of the side-by-side clip grid in the report
    appearance_margin: float = 0.25  # SHIFT's image-statistics distance may exceed SFT's by this fraction
    seed: int = 7  # sampler seed of every evaluation (same noise for every model)


@dataclass
class DemoConfig:
    seed: int = 0  # run seed of every training stage
    threads: int = 0  # torch threads (0 = 2 on an idle machine, 1 when other work keeps the cores busy)
    keep_checkpoints: bool = False  # keep every stage's training checkpoints (hundreds of MB) after it finished
    data: DemoData = field(default_factory=DemoData)
    backbone: dict[str, Any] = field(default_factory=dict)  # backbone section shared by all stages (TrainConfig.backbone)
    pretrain: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields of the pre-training stage
    sft: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields of the SFT stage
    arms_common: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields shared by every arm
    arms: dict[str, dict[str, Any]] = field(default_factory=dict)  # arm name -> its own TrainConfig fields
    critic: dict[str, Any] = field(default_factory=dict)  # TrainRewardConfig fields of discriminator pre-training
    eval: DemoEval = field(default_factory=DemoEval)
    quick: dict[str, Any] = field(default_factory=dict)  # overrides of this config applied by --quick
    calibrate: bool = True  # time a few toy steps first and print the estimated time of every stage


SCENARIO_PRESETS = {"static-base": "demo_cpu", "collapse": "demo_collapse"}  # --scenario -> shipped config
DEFAULT_SCENARIO = "static-base"  # the collapse scenario did not reproduce a collapse (README, "What the demo shows")
SHIFT_ARM = "shift"  # the arm whose training time (CPU seconds) sets continued SFT's time budget
TIME_MATCHED_ARM = "continued_sft"  # the arm that also runs for SHIFT's training time


# ----------------------------------------------------------------------------------------- stage bookkeeping
class Stages:
    """Which stages finished (``stages.json``), how long they took; a finished stage is reused."""

    def __init__(self, out: Path) -> None:
        self.out = out
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
            print(f"[demo] stage {name}: reused (finished earlier in {done.get('seconds', 0.0):.1f} s)", flush=True)
            self.estimates.pop(name, None)  # not part of what is left
            return done.get("result", {})
        if threads is not None:
            torch.set_num_threads(threads() if callable(threads) else threads)
        print(f"[demo] stage {name} ... ({torch.get_num_threads()} threads)", flush=True)
        t0 = time.perf_counter()
        result = fn() or {}
        seconds = time.perf_counter() - t0
        self.state[name] = {"status": "done", "seconds": round(seconds, 2), "threads": torch.get_num_threads(),
                            "result": result}
        save_json(self.state, self.path)
        self.actual[name] = seconds
        line = f"[demo] stage {name} done in {seconds:.1f} s"
        if self.estimates:
            elapsed = time.perf_counter() - self.t0
            line += f"; elapsed {elapsed:.0f} s, about {remaining_seconds(self.estimates, self.actual):.0f} s left"
        print(line, flush=True)
        return result


# ----------------------------------------------------------------------------------------- data
def scenario_sets(cfg: DemoConfig) -> dict[str, SpriteClips]:
    """The generic (pre-training), target (fine-tuning) and held-out clips of the configured scenario."""
    d, sc = cfg.data, cfg.data.scenario
    return {"generic": sc.clips("generic", d.generic_clips, d.num_frames, d.size, d.seeds[0]),
            "target": sc.clips("target", d.target_clips, d.num_frames, d.size, d.seeds[1], static_prob=0.0),
            "heldout": sc.clips("target", d.heldout_clips, d.num_frames, d.size, d.seeds[2], static_prob=0.0)}


def make_data(cfg: DemoConfig, out: Path) -> dict[str, Any]:
    from shiftvdm.data.scenarios import queries_on_objects
    from shiftvdm.rewards.critic import CriticConfig, MotionCritic

    data_dir = out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    sets = scenario_sets(cfg)
    np.savez_compressed(data_dir / "sets.npz", **{k: v.videos for k, v in sets.items()})
    write_clip_folder(data_dir / "heldout", sets["heldout"].videos)  # the real reference `shiftvdm eval` reads
    # how many of the LC discriminator's query points land on the sprite (the reward sees the object through them)
    with torch.random.fork_rng(devices=[]):  # building the critic draws from torch's global RNG: leave it as it was
        critic = MotionCritic(config_from_dict(CriticConfig, cfg.critic.get("critic", {}), "demo critic.critic"))
    gen = generator_for(cfg.seed, "demo-query-count")
    target = sets["target"]
    n = min(len(target), 512)
    queries = np.stack([critic.sample_queries(cfg.data.size, cfg.data.size, gen) for _ in range(n)])
    counts = queries_on_objects(queries, scenario_subset(target, n))
    return {"generic": len(sets["generic"]), "target": len(target), "heldout": len(sets["heldout"]),
            "queries": {"per_clip": int(critic.config.num_queries), "sampling": critic.config.query_sampling,
                        "on_object_mean": round(float(counts.mean()), 2), "on_object_min": int(counts.min()),
                        "clips_with_none": round(float((counts == 0).mean()), 4), "clips_counted": n}}


def scenario_subset(clips: SpriteClips, n: int) -> SpriteClips:
    """The first ``n`` clips of ``clips`` (every per-clip array cut, the settings kept)."""
    from dataclasses import replace

    return replace(clips, **{k: v[:n] for k, v in clips.arrays().items() if k != "shape_names"})


def load_sets(out: Path) -> dict[str, np.ndarray]:
    with np.load(out / "data" / "sets.npz") as f:
        return {k: f[k] for k in f.files}


def write_clip_folder(folder: Path, clips_uint8: np.ndarray) -> None:
    """Clips as .npy files (float (T, H, W, 3) in [0, 1]) named clip_00000.npy, ..., read by `shiftvdm eval`."""
    from shiftvdm.data.video_io import write_video

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for i, clip in enumerate(clips_uint8):
        write_video(folder / f"clip_{i:05d}.npy", clip, fps=8)


# ----------------------------------------------------------------------------------------- training stages
def train_config(cfg: DemoConfig, out_dir: Path, *sections: dict[str, Any], mode: str):
    from shiftvdm.recipes.train import STAGE_DEFAULTS
    from shiftvdm.train.config import TrainConfig

    d = cfg.data
    data: dict[str, Any] = deep_merge(STAGE_DEFAULTS[mode], {
        "backbone": cfg.backbone,
        "data": {"train": "(in memory)", "num_frames": d.num_frames, "height": d.size, "width": d.size},
        "run": {"out_dir": str(out_dir), "seed": cfg.seed},
    })
    for s in sections:
        data = deep_merge(data, s)
    if mode in ("pretrain", "sft"):  # what the stage means wins over shared arm settings (SFT = no rollouts)
        data = deep_merge(data, {"loss": {"lambda_aw": 0.0, "asymmetric": False}, "discriminator": {"refresh": False},
                                 "rollout": {"passes_per_buffer": 1}})
    data["mode"] = mode
    return config_from_dict(TrainConfig, data, f"demo {mode} stage")


def train_stage(cfg, clips_uint8: np.ndarray, evaluate=None):
    from shiftvdm.recipes.train import run_training
    from shiftvdm.train.clips import TensorClips

    run_dir = Path(cfg.run.out_dir)
    resume = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)  # a half-made folder without checkpoints: start clean
    return run_training(cfg, resume=resume, clips=TensorClips(torch.from_numpy(clips_uint8)), evaluate=evaluate)


def sample_clips(backbone, first_frames_uint8: np.ndarray, seed: int, batch: int = 64, desc: str | None = None) -> np.ndarray:
    """One clip per conditioning frame with the stochastic sampler and a fixed seed: uint8 (N, T, H, W, 3).
    With ``desc``, a progress bar (clips) is shown."""
    from tqdm.auto import tqdm

    from shiftvdm.data.video_io import to_uint8

    out = []
    gen = generator_for(seed, "demo-eval")
    bar = tqdm(total=len(first_frames_uint8), desc=desc, unit="clip", disable=desc is None, leave=False)
    with torch.no_grad():
        for i in range(0, len(first_frames_uint8), batch):
            frames = torch.from_numpy(first_frames_uint8[i:i + batch]).permute(0, 3, 1, 2).float() / 127.5 - 1
            cond = backbone.encode_condition(frames)
            video = backbone.decode(backbone.sample(cond, 1, gen, stochastic=True)[:, 0])
            out.append(to_uint8(video.cpu()))
            bar.update(len(frames))
    bar.close()
    return np.concatenate(out)


def curve_hook(cfg: DemoConfig, heldout: np.ndarray, snapshot: tuple[int, Path] | None = None):
    """Training-curve evaluation: sprite metrics of held-out samples, incl. the hacking monitor (speed W1
    to held-out real clips, which the reward never sees); optionally saves the model at one step."""
    from shiftvdm.eval import sprite_motion_metrics

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
        from shiftvdm.backbone.toy import residual_std

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
    """Fakes from the SFT model on target first frames, then Eq. 7 pre-training of IC and LC."""
    from shiftvdm.backbone import load_backbone_from_path
    from shiftvdm.data.manifest import write_manifest
    from shiftvdm.recipes.train_reward import TrainRewardConfig, train_reward

    sets = load_sets(out)
    n, k = cfg.data.critic_clips, cfg.data.fakes_per_clip
    real = sets["target"][:n]
    folder = out / "critic_data"
    write_clip_folder(folder / "real", real)
    backbone = load_backbone_from_path(out / "runs" / "sft" / "model")
    fake_dir = folder / "fake"
    fake_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    from shiftvdm.data.video_io import write_video

    for j in range(k):
        clips = sample_clips(backbone, real[:, 0], seed=cfg.seed + 1000 + j, desc=f"fakes {j + 1}/{k}")
        for i, clip in enumerate(clips):
            name = f"clip_{i:05d}_fake{j}.npy"
            write_video(fake_dir / name, clip, fps=8)
            rows.append({"path": name, "source": f"clip_{i:05d}", "fps": 8})
    write_manifest(fake_dir / "manifest.jsonl", rows)
    rc = config_from_dict(TrainRewardConfig, deep_merge({"seed": cfg.seed}, cfg.critic), "demo critic stage")
    if (out / "critic").exists():
        shutil.rmtree(out / "critic")
    metrics = train_reward(rc, folder / "real", fake_dir, out / "critic")
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
                                     "discriminator": {"critic": str(out / "critic" / "critic")}},
                      cfg.arms_common, cfg.arms[name], extra, mode=cfg.arms[name].get("mode", "shift"))
    result = train_stage(tc, sets["target"], evaluate=curve_hook(cfg, sets["heldout"], snapshot))
    return {"steps": result.steps, "seconds": round(result.timers.get("wall", 0.0), 2), "stopped_by": result.stopped_by,
            "timers": {k: round(v, 2) for k, v in result.timers.items()}}


# ----------------------------------------------------------------------------------------- evaluation
def models_to_evaluate(cfg: DemoConfig, out: Path, steps: int) -> dict[str, Path]:
    runs = out / "runs"
    models = {"base": runs / "pretrain" / "model", "sft": runs / "sft" / "model"}
    for name in cfg.arms:
        if name == TIME_MATCHED_ARM:
            models[f"{name}@{steps}steps"] = runs / name / f"model-step-{steps}"
            models[f"{name}@equal-time"] = runs / name / "model"
        else:
            models[name] = runs / name / "model"
    return {k: v for k, v in models.items() if (v / "config.json").is_file()}


def eval_stage(cfg: DemoConfig, out: Path, steps: int) -> dict[str, Any]:
    from shiftvdm.backbone import load_backbone_from_path
    from shiftvdm.eval import evaluate_videos, prepare_reference

    sets = load_sets(out)
    heldout = sets["heldout"]
    logging.getLogger("shiftvdm.eval").setLevel(logging.WARNING)  # one line per model instead of per clip
    results: dict[str, dict[str, float]] = {}
    reference = prepare_reference(heldout, sprites=True)  # tracked once for every model
    real = evaluate_videos(heldout, reference=reference, sprites=True)
    results[REFERENCE] = real.aggregate
    write_clip_folder(out / "samples" / REFERENCE, heldout[: cfg.eval.grid_clips])
    to_evaluate = models_to_evaluate(cfg, out, steps)
    for index, (name, path) in enumerate(to_evaluate.items(), 1):
        backbone = load_backbone_from_path(path)
        clips = sample_clips(backbone, heldout[:, 0], cfg.eval.seed, desc=f"eval {index}/{len(to_evaluate)} {name}: sampling")
        folder = out / "samples" / name
        write_clip_folder(folder, clips)
        result = evaluate_videos(folder, reference=reference, sprites=True, fps=8)
        result.save_json(out / "eval" / f"{name}.json")
        results[name] = result.aggregate
        print(f"[demo] eval {index}/{len(to_evaluate)} {name}: static {result.aggregate.get('sprite_static_fraction', float('nan')):.3f} "
              f"speed W1 {result.aggregate.get('sprite_speed_w1', float('nan')):.3f}", flush=True)
    return results


def write_metrics(cfg: DemoConfig, out: Path, models: dict[str, dict[str, float]], steps: int, stages: Stages) -> None:
    arm_info = {k.split(":", 1)[1]: v.get("result", {}) for k, v in stages.state.items() if k.startswith("arm:")}
    order = [REFERENCE, "base", "sft", f"{TIME_MATCHED_ARM}@{steps}steps", f"{TIME_MATCHED_ARM}@equal-time"]
    order += [a for a in cfg.arms if a not in (TIME_MATCHED_ARM,)]
    metrics = {
        "title": "shiftvdm demo — SHIFT vs SFT on a motion gap with a known cause (CPU)",
        "summary": comparison_verdicts(models, shift=SHIFT_ARM, time_matched=TIME_MATCHED_ARM, steps=steps,
                                       baselines=[a for a in cfg.arms if a not in (SHIFT_ARM, TIME_MATCHED_ARM)],
                                       appearance_margin=cfg.eval.appearance_margin, arm_info=arm_info),
        "models": {k: {c: models[k].get(c) for c in DEMO_COLUMNS} for k in order if k in models},
        "criteria": success_criteria(models, shift=SHIFT_ARM, time_matched=f"{TIME_MATCHED_ARM}@equal-time"),
        "all_metrics": models,
        "columns": DEMO_COLUMNS,
        "reference_model": REFERENCE,
        "model_help": demo_model_help(steps),
        **demo_column_info(),
        "clip_columns": [k for k in order if (out / "samples" / k).is_dir()],
        "notes": [n for n in [f"{cfg.data.heldout_clips} held-out conditioning frames; one sample per frame per model, same sampler "
                  "seed for every model.", scenario_note(cfg.data.scenario), query_note(stages)] if n],
        "scenario": cfg.data.scenario.name,
        "stages": {k: {"seconds": v.get("seconds"), "status": v.get("status"), "threads": v.get("threads")}
                   for k, v in stages.state.items()},
        "arms": arm_info,
        "torch_threads": torch.get_num_threads(),
        "config": config_to_dict(cfg),
    }
    save_json(metrics, out / "metrics.json")


def scenario_note(sc: Scenario) -> str:
    g, t = sc.generic, sc.target
    looks = (f"generic clips: {g.background} background, {'/'.join(g.shapes)}; target and held-out clips: "
             f"{t.background} background, {'/'.join(t.shapes)}")
    return (f"Scenario {sc.name!r}: {looks}; every set moves by one law ({sc.motion.sprite_size:g}-px sprite, "
            f"{sc.motion.speed[0]:g}-{sc.motion.speed[1]:g} px/frame, random direction, reflecting walls); "
            f"{g.static_prob:.0%} of the generic clips are static, the target clips always move.")


def query_note(stages: Stages) -> str:
    q = stages.state.get("data", {}).get("result", {}).get("queries")
    if not q:
        return ""
    return (f"LC discriminator: {q['per_clip']} query points per clip ({q['sampling']}), of which "
            f"{q['on_object_mean']:.1f} land on the sprite on average (fewest {q['on_object_min']}; "
            f"{q['clips_with_none']:.0%} of clips with none), counted from the ground truth of {q['clips_counted']} "
            "target clips.")


def time_budget(shift_info: dict[str, Any]) -> tuple[float, str]:
    """The time-matched arm's budget: SHIFT's training CPU seconds (load on other processes does not change it;
    both arms run at one thread count), or its wall seconds for a SHIFT arm recorded without a CPU clock."""
    cpu = shift_info.get("timers", {}).get("cpu")
    return (float(cpu), "cpu") if cpu else (float(shift_info.get("seconds", 0.0)), "wall")


def run_demo(cfg: DemoConfig, out: Path) -> Path:
    from shiftvdm.eval.report import build_report

    out.mkdir(parents=True, exist_ok=True)
    stages = Stages(out)
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
    return report


# ----------------------------------------------------------------------------------------- time budget
def _timed(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up: first-call allocations and kernel selection are not a step's cost
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def calibrate(cfg: DemoConfig, repeats: int = 2, clips: int = 4) -> dict[str, Any]:
    """Unit costs in seconds, measured on a throw-away model built from the demo's own backbone settings:
    ``train`` {batch: s/step} (forward+backward), ``sample_clip_step`` (s per clip per sampler step),
    ``feature_clip`` (critic features, s per clip), ``reference_clip`` / ``eval_clip`` (evaluation
    metrics of the real reference / of one model, s per clip). Torch's global RNG state is saved and restored
    and every draw uses its own generator, so no stage's random stream moves."""
    from shiftvdm.backbone import BackboneConfig, load_backbone
    from shiftvdm.rewards.critic import CriticConfig, MotionCritic

    d = cfg.data
    batches = sorted({int(s.get("rollout", {}).get("batch_size", 8)) for s in (cfg.pretrain, cfg.sft, cfg.arms_common)})
    with torch.random.fork_rng(devices=[]):
        gen = torch.Generator().manual_seed(12345)
        options = {k: v for k, v in cfg.backbone.get("options", {}).items() if k != "pretrained_path"}
        backbone = load_backbone(BackboneConfig(name=cfg.backbone.get("name", "toy"), pretrained=None, options=options))
        params = backbone.trainable_parameters()
        unit: dict[str, Any] = {"train": {}}
        for b in batches:
            video = torch.rand(b, d.num_frames, 3, d.size, d.size, generator=gen) * 2 - 1

            def step(video=video) -> None:
                latents = backbone.encode_video(video)
                cond = backbone.encode_condition(video[:, 0])
                backbone.denoising_loss(latents, cond, backbone.draw_noise(latents, gen)).mean().backward()
                for p in params:
                    p.grad = None
            unit["train"][b] = _timed(step, repeats)
        steps = int(options.get("num_inference_steps", 12))
        frames = torch.rand(clips, 3, d.size, d.size, generator=gen) * 2 - 1
        with torch.no_grad():
            cond = backbone.encode_condition(frames)
            t = _timed(lambda: backbone.decode(backbone.sample(cond, 1, gen, stochastic=True)[:, 0]), 1)
        unit["sample_clip_step"] = t / (clips * steps)
        critic = MotionCritic(config_from_dict(CriticConfig, cfg.critic.get("critic", {}), "demo critic.critic"))
        videos = torch.rand(clips, d.num_frames, 3, d.size, d.size, generator=gen) * 2 - 1
        queries = critic.sample_queries(d.size, d.size, gen)
        unit["feature_clip"] = _timed(lambda: critic.features(videos, queries), 1) / clips
        from shiftvdm.eval import evaluate_videos, prepare_reference

        pixels = MotionCritic.videos_to_uint8(videos)
        t0 = time.perf_counter()
        reference = prepare_reference(pixels, sprites=True)
        unit["reference_clip"] = (time.perf_counter() - t0) / clips  # held-out clips are tracked once
        unit["eval_clip"] = _timed(lambda: evaluate_videos(pixels, reference=reference, sprites=True), 1) / clips
    return unit


def _train_seconds(unit: dict[str, Any], batch: int) -> float:
    """Seconds per training step at ``batch`` (linear in the batch from the nearest measured size)."""
    measured = unit["train"]
    near = min(measured, key=lambda b: abs(int(b) - batch))
    return measured[near] * batch / int(near)


def estimate_stage_seconds(cfg: DemoConfig, unit: dict[str, Any]) -> dict[str, float]:
    """Expected seconds of every stage from the unit costs of :func:`calibrate` (same keys as stages.json)."""
    d, ev = cfg.data, cfg.eval
    eval_steps = int(cfg.backbone.get("options", {}).get("num_inference_steps", 12))
    sample = lambda n, steps=eval_steps: n * steps * unit["sample_clip_step"]  # noqa: E731

    def run(section: dict[str, Any]) -> tuple[int, int, int]:
        r = section.get("run", {})
        batch = int(section.get("rollout", {}).get("batch_size", 8))
        return int(r.get("max_steps", 100)), batch, int(r.get("eval_every", 0))

    def curves(steps: int, every: int) -> float:  # held-out samples every `every` steps and at the end
        return (steps // every + 1) * sample(ev.curve_clips) if every > 0 else 0.0

    est: dict[str, float] = {}
    steps, batch, _ = run(cfg.pretrain)
    est["pretrain"] = steps * _train_seconds(unit, batch)
    steps, batch, every = run(cfg.sft)
    est["sft"] = steps * _train_seconds(unit, batch) + curves(steps, every)
    est["critic"] = (sample(d.critic_clips * d.fakes_per_clip)  # fake generation
                     + d.critic_clips * (1 + d.fakes_per_clip) * unit["feature_clip"])  # features of real and fakes
    shift_seconds = 0.0
    for name, arm in cfg.arms.items():
        s = deep_merge(cfg.arms_common, arm)
        steps, batch, every = run(s)
        if arm.get("mode") == "sft":
            continue
        ro = s.get("rollout", {})
        group, buffer = int(ro.get("group_size", 8)), int(ro.get("buffer_size", 8))
        per_buffer = max(1, int(ro.get("passes_per_buffer", 1)) * buffer // max(1, batch))  # generator steps
        buffers = -(-steps // per_buffer)
        rollouts = buffers * (sample(buffer * group, int(ro.get("num_inference_steps", eval_steps)))
                              + buffer * (1 + group) * unit["feature_clip"])  # P fakes and the real clip scored
        est[f"arm:{name}"] = rollouts + steps * (1 + group) * _train_seconds(unit, batch) + curves(steps, every)
        if name == SHIFT_ARM:
            shift_seconds = est[f"arm:{name}"]
    for name, arm in cfg.arms.items():
        if arm.get("mode") == "sft":  # time-limited to SHIFT's wall time
            steps, batch, every = run(deep_merge(cfg.arms_common, arm))
            est[f"arm:{name}"] = shift_seconds if name == TIME_MATCHED_ARM else \
                steps * _train_seconds(unit, batch) + curves(steps, every)
    models = 2 + len(cfg.arms) + (1 if TIME_MATCHED_ARM in cfg.arms else 0)
    per_model = sample(d.heldout_clips) + d.heldout_clips * unit["eval_clip"]
    est["eval"] = d.heldout_clips * unit["reference_clip"] + models * per_model  # the reference is tracked once
    return {k: round(v, 2) for k, v in est.items()}


def estimate_line(estimates: dict[str, float], threads: int) -> str:
    parts = ", ".join(f"{k.removeprefix('arm:')} {v:.0f} s" for k, v in estimates.items())
    return f"[demo] estimate: ~{sum(estimates.values()) / 60:.1f} min ({parts}) on {threads} threads"


def remaining_seconds(estimates: dict[str, float], actual: dict[str, float]) -> float:
    """Estimated seconds of the stages not yet run, scaled by actual/estimated over the stages run so far."""
    done = [k for k in actual if k in estimates]
    spent, expected = sum(actual[k] for k in done), sum(estimates[k] for k in done)
    scale = spent / expected if expected > 0 and spent > 0 else 1.0
    return scale * sum(v for k, v in estimates.items() if k not in actual)


def prune_checkpoints(run_dir: Path) -> None:
    """Drop a finished stage's training checkpoints: the stage is reused from its model folder, and the
    checkpoints (optimizer state, buffers) are most of the demo's disk use."""
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)


def choose_threads(requested: int) -> int:
    """``requested``, or 2 threads on an idle machine and 1 on a busy one: these models are so small that a
    second OpenMP thread competing with other processes makes every step 2-3x slower (measured)."""
    if requested > 0:
        return requested
    cores = os.cpu_count() or 1
    busy = busy_cores()
    if busy is None:  # no /proc/stat: the 1-minute load average (it lags: a job that just ended still counts)
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return 2 if cores - busy >= 1.5 else 1  # two threads only when about two cores are free


def busy_cores(seconds: float = 0.5) -> float | None:
    """How many cores other processes keep busy right now (from /proc/stat over ``seconds``), or None."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
        return sum(values), values[3] + (values[4] if len(values) > 4 else 0)  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    elapsed = total1 - total0
    return (os.cpu_count() or 1) * (1.0 - (idle1 - idle0) / elapsed) if elapsed > 0 else None


def load_demo_config(config: str | None, quick: bool, overrides: list[str]) -> DemoConfig:
    """The demo config; with ``quick`` its ``quick`` section is applied, and the command-line overrides win over both."""
    from shiftvdm.config import parse_overrides

    cfg = load_config(DemoConfig, config or "demo_cpu", overrides)  # validates the overrides against the preset
    if quick and cfg.quick:
        data = deep_merge(deep_merge(config_to_dict(cfg), cfg.quick), parse_overrides(overrides))
        data["quick"] = {}
        cfg = config_from_dict(DemoConfig, data, "demo --quick")
    return cfg


def main(argv: list[str], prog: str = "shiftvdm demo") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run of every stage (~3 min; shows no effect)")
    parser.add_argument("--out", default=None, help="run folder (default: shiftvdm-demo, or shiftvdm-demo-quick)")
    parser.add_argument("--scenario", choices=sorted(SCENARIO_PRESETS), default=None,
                        help=f"which shipped scenario to run (default: {DEFAULT_SCENARIO}); see `shiftvdm.data.scenarios`")
    parser.add_argument("--config", default=None, help="demo config (default: the shipped preset of --scenario)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides of the demo config, e.g. data.heldout_clips=512")
    args = parser.parse_args(argv)
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
    args = parser.parse_args(argv)
    from shiftvdm.errors import DataError
    from shiftvdm.eval.report import build_report

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
