"""The demo's evaluation: every model sampled on the same held-out frames, `shiftvdm eval` metrics, metrics.json."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shiftvdm.backbone import load_backbone_from_path
from shiftvdm.config import config_to_dict
from shiftvdm.data.video_io import to_uint8
from shiftvdm.eval import evaluate_videos, prepare_reference
from shiftvdm.recipes.demo.scenarios import Scenario
from shiftvdm.recipes.demo.report import (
    DEMO_COLUMNS,
    REFERENCE,
    comparison_verdicts,
    demo_column_info,
    demo_model_help,
    success_criteria,
)
from shiftvdm.recipes.demo.config import SHIFT_ARM, TIME_MATCHED_ARM, DemoConfig
from shiftvdm.recipes.demo.datasets import load_sets, write_clip_folder
from shiftvdm.utils.checkpoint import save_json
from shiftvdm.utils.seeding import generator_for
from shiftvdm.recipes.demo.stages import Stages


def sample_clips(backbone, first_frames_uint8: np.ndarray, seed: int, batch: int = 64, desc: str | None = None) -> np.ndarray:
    """One clip per conditioning frame with the stochastic sampler and a fixed seed: uint8 (N, T, H, W, 3).
    With ``desc``, a progress bar (clips) is shown."""
    from tqdm.auto import tqdm

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
