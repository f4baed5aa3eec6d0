"""The demo's data stage: the scenario's generic, target and held-out clips, stored once per run folder."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shiftvdm.config import config_from_dict
from shiftvdm.data.synthetic import SpriteClips
from shiftvdm.data.video_io import write_video
from shiftvdm.recipes.demo.config import DemoConfig
from shiftvdm.recipes.demo.scenarios import queries_on_objects
from shiftvdm.rewards.critic import CriticConfig, MotionCritic
from shiftvdm.utils.atomic import atomic_write
from shiftvdm.utils.seeding import generator_for


def scenario_sets(cfg: DemoConfig) -> dict[str, SpriteClips]:
    """The generic (pre-training), target (fine-tuning) and held-out clips of the configured scenario."""
    d, sc = cfg.data, cfg.data.scenario
    return {"generic": sc.clips("generic", d.generic_clips, d.num_frames, d.size, d.seeds[0]),
            "target": sc.clips("target", d.target_clips, d.num_frames, d.size, d.seeds[1], static_prob=0.0),
            "heldout": sc.clips("target", d.heldout_clips, d.num_frames, d.size, d.seeds[2], static_prob=0.0)}


def make_data(cfg: DemoConfig, out: Path) -> dict[str, Any]:
    data_dir = out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    sets = scenario_sets(cfg)
    videos = {k: v.videos for k, v in sets.items()}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a handle: np.savez would append ".npz" to the temporary name
            np.savez_compressed(fh, **videos)

    atomic_write(data_dir / "sets.npz", write)
    write_clip_folder(data_dir / "heldout", sets["heldout"].videos)  # the real reference `shiftvdm eval` reads
    # how many of the LC discriminator's query points land on the sprite (the reward sees the object through them)
    with torch.random.fork_rng(devices=[]):  # building the critic draws from torch's global RNG: leave it as it was
        critic = MotionCritic(config_from_dict(CriticConfig, cfg.critic_training.get("critic", {}), "demo critic_training.critic"))
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
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for i, clip in enumerate(clips_uint8):
        write_video(folder / f"clip_{i:05d}.npy", clip, fps=8)
