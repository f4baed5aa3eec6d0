"""Critic pre-training (the paper's Eq. 7 on real clips and generated fakes), used by `shiftvdm train-critic`.

    1. pair every fake with its real clip (manifest ``source``, else a file name ``<real stem>_<k>``);
    2. split by REAL CLIP into train / validation, a real clip and all its fakes on the same side
       (the reference split real clips only and paired fakes by category, leaking validation clips);
    3. compute the frozen extractors' features once (a real clip and its fakes share query points)
       and cache them in ``out/features/``;
    4. AdamW on the discriminators only (``CriticTrainer.step``, the step SHIFT's refresh takes: BCE,
       real = 1, fake = 0, then EMA),
       validation accuracy and ROC-AUC of IC, LC and the combined reward; metrics in ``out/logs/``
       (JSON lines + TensorBoard, utils/metrics_log.py);
    5. atomic checkpoints in ``out/checkpoints/`` (utils/step_checkpoints.py): ``trainer_state.pt`` holds
       ``{"trainer": CriticTrainer.state_dict(), "history", "log_sizes"}`` (the trainer's state, as a SHIFT
       run that refreshes its critic holds it) and ``critic/`` a critic folder; a resume continues exactly
       (batches and dropout are seeded from (seed, step)). The final critic goes to ``out/critic/``, the
       metrics to ``out/metrics.json``.

``prepare_data`` checks everything about the clips before anything is written; ``pretrain_discriminators``
then writes the folder. The run-folder rules (refusing a used folder, the config match on resume) are the
recipe's (recipes/train_reward.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shiftvdm.config import config_to_dict
from shiftvdm.data.dataset import VideoClipDataset, entry_fps_hint
from shiftvdm.data.manifest import ClipEntry, require_inside_root
from shiftvdm.data.video_io import probe_video, to_tensor
from shiftvdm.errors import CheckpointError, DataError
from shiftvdm.rewards.critic import CriticConfig, MotionCritic, MotionFeatures
from shiftvdm.rewards.critic_training import CriticTrainer, PretrainConfig, evaluate_discriminators
from shiftvdm.utils.checkpoint import file_sizes, load_safetensors, read_newest_intact, save_json, \
    save_safetensors, truncate_logs
from shiftvdm.utils import preemption
from shiftvdm.utils.metrics_log import MetricsLogger
from shiftvdm.utils.seeding import derive_seed, generator_for, numpy_rng_for
from shiftvdm.utils.step_checkpoints import STATE_FILE, checkpoint_dirs, read_step_state, write_checkpoint

logger = logging.getLogger(__name__)

# Settings that may change on --resume (they do not change what has been computed so far).
RESUMABLE_CHANGES = {"max_steps", "val_every", "checkpoint_every", "keep_checkpoints", "progress"}
FEATURES_VERSION = 1


@dataclass
class RewardDataConfig:
    num_frames: int = 0  # frames per clip (0 = the first real clip's length; reference 24)
    height: int = 0  # clip height in px (0 = the first real clip's; reference 320)
    width: int = 0  # clip width in px (0 = the first real clip's; reference 576)
    fps: float | None = None  # resample clips to this rate (None = each clip's own rate)
    val_fraction: float = 0.1  # share of REAL clips (with all their fakes) held out (reference 90/10)
    max_real_clips: int = 0  # use only the first N real clips (0 = all)
    # Negative augmentation: each real clip also serves as a fake with Gaussian pixel noise of this std
    # (0-255 units, cycling over the list) on frames 1..F-1. Flow features read noise as motion; without
    # these negatives the demo's IC discriminator scored noisier fakes higher and SHIFT learned speckle.
    # [] = off (the paper). Training only: validation keeps the genuine fakes.
    noise_negatives: list[float] = field(default_factory=list)


@dataclass
class TrainRewardConfig:
    critic: CriticConfig = field(default_factory=CriticConfig)  # features and discriminator sizes
    optim: PretrainConfig = field(default_factory=PretrainConfig)  # AdamW 2e-4 (0.9, 0.999), wd 0.01, clip 1, EMA 0.99
    data: RewardDataConfig = field(default_factory=RewardDataConfig)  # clip size and split
    max_steps: int = 1000  # optimizer steps (reference checkpoints used: IC 501 / LC 1000 on DAVIS)
    batch_size: int = 6  # real clips per step, each with one of its fakes (reference 6 per GPU)
    val_every: int = 100  # validate every N steps (and at the end)
    checkpoint_every: int = 100  # resumable checkpoint every N steps (and at the end)
    keep_checkpoints: int = 2  # resumable checkpoints kept
    seed: int = 42  # split, query points, batches and dropout (reference global_seed 42)
    progress: bool = True  # progress bar

    def __post_init__(self) -> None:
        if self.max_steps < 0 or self.batch_size < 1 or self.val_every < 1 or self.checkpoint_every < 1:
            raise ValueError("max_steps >= 0, batch_size >= 1, val_every >= 1 and checkpoint_every >= 1 are required")
        if not 0.0 < self.data.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {self.data.val_fraction}")
        if any(not (0.0 < float(std) <= 255.0) for std in self.data.noise_negatives):
            raise ValueError(f"data.noise_negatives must hold stds in (0, 255] (pixel units), got {self.data.noise_negatives}")


# ----- data: pairing and split -------------------------------------------------------------------

def _source_keys(entry: ClipEntry) -> set[str]:
    """Names by which a fake's ``source`` may refer to this real clip."""
    rel = entry.relpath.replace("\\", "/")
    return {rel, str(entry.path), Path(rel).name, Path(rel).stem, entry.path.stem}


def pair_fakes(reals: list[ClipEntry], fakes: list[ClipEntry]) -> list[int]:
    """For each fake, the index of its real clip.

    A fake names its real clip in the manifest's ``source`` (relative path, absolute path, file name or
    stem); without ``source``, a file named ``<real stem>_<k>`` or ``<real stem>-<k>`` is matched by
    the longest real stem. Raises DataError listing fakes that match no real clip (or several).
    """
    by_key: dict[str, set[int]] = {}
    for i, entry in enumerate(reals):
        for key in _source_keys(entry):
            by_key.setdefault(key, set()).add(i)
    stems = sorted(((entry.path.stem, i) for i, entry in enumerate(reals)), key=lambda s: -len(s[0]))
    out, problems = [], []
    for fake in fakes:
        match: set[int] = set()
        if fake.source:
            src = fake.source.replace("\\", "/")
            match = by_key.get(src) or by_key.get(Path(src).name) or by_key.get(Path(src).stem) or set()
        else:
            stem = fake.path.stem
            for real_stem, i in stems:
                if stem.startswith(real_stem) and stem[len(real_stem):len(real_stem) + 1] in ("_", "-"):
                    match = {i}
                    break
        if len(match) != 1:
            problems.append(f"{fake.relpath} (source {fake.source!r}: "
                            f"{'no matching real clip' if not match else 'several real clips match'})")
        else:
            out.append(next(iter(match)))
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... ({len(problems)} in all)" if len(problems) > 5 else "")
        raise DataError(f"cannot pair generated clips with real clips: {shown}. Give each fake a manifest "
                        "\"source\" naming its real clip (`shiftvdm generate` writes it), or name it <real stem>_<k>.")
    return out


def split_by_source(num_real: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of train and validation REAL clips; fakes follow their real clip."""
    if num_real < 2:
        raise DataError(f"need at least 2 real clips to hold one out for validation, got {num_real}")
    order = numpy_rng_for(seed, "reward-split").permutation(num_real)
    num_val = min(num_real - 1, max(1, int(round(val_fraction * num_real))))
    return np.sort(order[num_val:]), np.sort(order[:num_val])


def clip_size(cfg: RewardDataConfig, first_real: ClipEntry) -> tuple[int, int, int]:
    """(frames, height, width) of the clips: the config's, each 0 taken from the first real clip."""
    num_frames, height, width = cfg.num_frames, cfg.height, cfg.width
    if num_frames and height and width:
        return num_frames, height, width
    info = probe_video(first_real.path, fps_hint=entry_fps_hint(first_real))
    return num_frames or info.num_frames, height or info.height, width or info.width


@dataclass
class PretrainingData:
    """The checked clips of a pre-training run: pairing, clip size and the split by source clip.

    Fakes are indexed as in ``fakes``; with noise negatives, index ``len(fakes) + i`` is the noisy copy
    of real clip ``i`` (training only).
    """

    reals: list[ClipEntry]
    fakes: list[ClipEntry]
    fake_source: np.ndarray  # real clip of every fake, noisy copies included
    size: tuple[int, int, int]
    train_real: np.ndarray
    val_real: np.ndarray
    train_fake: np.ndarray
    val_fake: np.ndarray


def prepare_data(cfg: TrainRewardConfig, reals: list[ClipEntry], fakes: list[ClipEntry]) -> PretrainingData:
    """Pair, size and split the clips; raises DataError (naming the clip) before anything is written.

    Every clip must lie inside its manifest's folder (``require_inside_root``, the rule every reader uses).
    """
    if cfg.data.max_real_clips:
        reals = reals[:cfg.data.max_real_clips]
    for entry in reals + fakes:
        require_inside_root(entry)
    fake_source = pair_fakes(reals, fakes)
    size = clip_size(cfg.data, reals[0])
    train_real, val_real = split_by_source(len(reals), cfg.data.val_fraction, cfg.seed)
    num_fakes = len(fake_source)
    if cfg.data.noise_negatives:  # noisy real copies follow the fakes (compute_features); training only
        fake_source = fake_source + list(range(len(reals)))
    source_arr = np.asarray(fake_source)
    train_fake = np.flatnonzero(np.isin(source_arr, train_real))
    val_fake = np.flatnonzero(np.isin(source_arr[:num_fakes], val_real))
    if len(train_fake) == 0 or len(val_fake) == 0:
        raise DataError(f"after the split by source clip, {len(train_fake)} fakes are in train and {len(val_fake)} "
                        "in validation; both need some (generate fakes for more real clips)")
    logger.info("clips %dx%dx%d; real: %d train / %d val; fake: %d train / %d val%s", *size, len(train_real),
                len(val_real), len(train_fake), len(val_fake),
                f" (train includes {len(reals) - len(val_real)} noisy real copies)" if cfg.data.noise_negatives else "")
    return PretrainingData(reals, fakes, source_arr, size, train_real, val_real, train_fake, val_fake)


# ----- features ----------------------------------------------------------------------------------

def features_key(cfg: TrainRewardConfig, reals: list[ClipEntry], fakes: list[ClipEntry],
                 size: tuple[int, int, int]) -> str:
    """Hash of everything the cached features depend on: feature settings, clip files (size, mtime), seed."""
    c = config_to_dict(cfg.critic)
    feature_fields = {k: v for k, v in c.items() if k not in ("ic", "lc", "w_ic", "w_lc", "r_min", "r_max",
                                                               "ema_decay", "use_ema", "init_seed")}
    feature_fields["w_ic>0"], feature_fields["w_lc>0"] = cfg.critic.w_ic > 0, cfg.critic.w_lc > 0

    def stamp(e: ClipEntry) -> list:
        st = e.path.stat()
        return [str(e.path), st.st_size, st.st_mtime_ns]

    key = json.dumps([FEATURES_VERSION, feature_fields, list(size), cfg.data.fps, cfg.seed, cfg.data.noise_negatives,
                      [stamp(e) for e in reals], [stamp(e) for e in fakes]], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()


def noisy_copy(frames: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """uint8 frames with Gaussian pixel noise of ``std`` (0-255 units) on every frame but the first
    (the conditioning frame of a generated clip is the clean input image)."""
    out = frames.astype(np.float32)
    out[1:] += rng.normal(0.0, std, out[1:].shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def compute_features(critic: MotionCritic, reals: list[ClipEntry], fakes: list[ClipEntry], fake_source: list[int],
                     size: tuple[int, int, int], fps: float | None, seed: int, progress: bool,
                     noise_negatives: list[float] | None = None) -> tuple[MotionFeatures, MotionFeatures]:
    """Features of every real clip and every fake; a fake uses its real clip's query points.

    With ``noise_negatives``, the fakes are followed by one noisy copy of each real clip (real clip i ->
    fake ``len(fakes) + i``), with the real clip's query points.
    """
    from tqdm.auto import tqdm

    num_frames, height, width = size
    real_data = VideoClipDataset(reals, num_frames, height, width, fps=fps)
    fake_data = VideoClipDataset(fakes, num_frames, height, width, fps=fps)
    fakes_of: dict[int, list[int]] = {}
    for j, r in enumerate(fake_source):
        fakes_of.setdefault(r, []).append(j)
    stds = list(noise_negatives or [])
    real_feats: list[MotionFeatures | None] = [None] * len(reals)
    fake_feats: list[MotionFeatures | None] = [None] * (len(fakes) + (len(reals) if stds else 0))
    with tqdm(total=len(reals) * (2 if stds else 1) + len(fakes), desc="features", dynamic_ncols=True,
              disable=not progress) as bar:
        for r in range(len(reals)):
            queries = critic.sample_queries(height, width, generator_for(seed, "queries", r))
            frames = real_data.frames(r)
            real_feats[r] = critic.features(to_tensor(frames)[None], queries)
            bar.update(1)
            if stds:
                noisy = noisy_copy(frames, float(stds[r % len(stds)]), numpy_rng_for(seed, "noise-negative", r))
                fake_feats[len(fakes) + r] = critic.features(to_tensor(noisy)[None], queries)
                bar.update(1)
            for j in fakes_of.get(r, []):
                fake_feats[j] = critic.features(to_tensor(fake_data.frames(j))[None], queries)
                bar.update(1)
    return MotionFeatures.cat(real_feats), MotionFeatures.cat(fake_feats)  # type: ignore[arg-type]


def save_features(path: Path, key: str, real: MotionFeatures, fake: MotionFeatures) -> None:
    """Cache real and fake features in one safetensors file, stamped with their ``features_key``."""
    tensors = {}
    for name, feats in (("real", real), ("fake", fake)):
        for branch in ("ic", "lc"):
            t = getattr(feats, branch)
            if t is not None:
                tensors[f"{name}.{branch}"] = t
    save_safetensors(tensors, path, metadata={"key": key})


def load_features(path: Path, key: str) -> tuple[MotionFeatures, MotionFeatures] | None:
    """The cached features if ``path`` holds them for this ``key``; None (recompute) otherwise."""
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as fh:
            if (fh.metadata() or {}).get("key") != key:
                logger.info("%s: cached features were made from other clips or settings; recomputing", path)
                return None
        tensors = load_safetensors(path)
    except Exception as exc:  # a damaged cache is recomputed, never trusted
        logger.warning("%s: unreadable feature cache (%s); recomputing", path, exc)
        return None
    return (MotionFeatures(tensors.get("real.ic"), tensors.get("real.lc")),
            MotionFeatures(tensors.get("fake.ic"), tensors.get("fake.lc")))


# ----- training ----------------------------------------------------------------------------------

def run_checkpoints(out: str | Path) -> list[Path]:
    """Complete checkpoints of the run in ``out`` (``out/checkpoints/step-N``), oldest first."""
    return checkpoint_dirs(Path(out) / "checkpoints")


def pick_batch(step: int, seed: int, train_real: np.ndarray, fakes_of: dict[int, np.ndarray],
               train_fake: np.ndarray, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """B train real clips and, for each, one random fake of its own (any train fake if it has none)."""
    gen = generator_for(seed, "reward-batch", step)
    reals = train_real[torch.randint(len(train_real), (batch_size,), generator=gen).numpy()]
    picks = []
    for r in reals:
        own = fakes_of.get(int(r))
        pool = own if own is not None and len(own) else train_fake
        picks.append(int(pool[int(torch.randint(len(pool), (1,), generator=gen))]))
    return torch.as_tensor(reals, dtype=torch.long), torch.as_tensor(picks, dtype=torch.long)


def _restore(trainer: CriticTrainer, out: Path) -> tuple[list[dict], dict | None]:
    """Load the newest intact checkpoint into ``trainer`` (an empty or cut trainer_state.pt falls back to the
    previous one); returns the validation history and the log sizes. The trainer's ``steps`` is the step."""
    found = read_newest_intact(run_checkpoints(out), read_step_state)
    if found is None:
        logger.info("--resume: no checkpoint in %s, starting from step 0", out)
        return [], None
    last, state = found
    if "trainer" not in state:  # written before CriticTrainer (e17d547): weights in critic/, no replay store
        if "optimizer" not in state or "step" not in state:
            raise CheckpointError(f"{last / STATE_FILE}: neither a critic trainer state nor an older checkpoint")
        state = {**state, "trainer": {"critic": MotionCritic.load(last / "critic").state_dict(),
                                      "optimizer": state["optimizer"], "replay": None, "steps": int(state["step"])}}
    trainer.load_state_dict(state["trainer"], str(last))
    logger.info("resumed from %s (step %d)", last, trainer.steps)
    return json.loads(state["history"]), state.get("log_sizes")


def pretrain_discriminators(cfg: TrainRewardConfig, critic: MotionCritic, data: PretrainingData, out: str | Path,
                            resume: bool = False) -> dict[str, Any]:
    """Features (cached), then ``cfg.max_steps`` Eq. 7 steps with validation and checkpoints; writes
    ``out/critic/`` and ``out/metrics.json`` and returns the metrics. After a preemption signal (checked before
    each step; the feature computation runs to its end first) it writes a checkpoint of the step reached and
    returns ``{"preempted": True, "step", "checkpoint"}`` instead."""
    out = Path(out)
    num_fakes = len(data.fakes)
    key = features_key(cfg, data.reals, data.fakes, data.size)
    cache = out / "features" / "features.safetensors"
    loaded = load_features(cache, key)
    t0 = time.perf_counter()
    if loaded is None:
        real_feats, fake_feats = compute_features(critic, data.reals, data.fakes, data.fake_source[:num_fakes].tolist(),
                                                  data.size, cfg.data.fps, cfg.seed, cfg.progress,
                                                  cfg.data.noise_negatives)
        save_features(cache, key, real_feats, fake_feats)
    else:
        real_feats, fake_feats = loaded
        logger.info("features loaded from %s", cache)
    feature_seconds = time.perf_counter() - t0

    trainer = CriticTrainer(critic, cfg.optim)
    history, log_sizes = _restore(trainer, out) if resume else ([], None)
    start = trainer.steps
    metrics_log = MetricsLogger(out / "logs")
    truncate_logs(metrics_log.log_dir, log_sizes)  # the steps a resume recomputes are logged once
    train_real, train_fake, source = data.train_real, data.train_fake, data.fake_source
    fakes_of = {int(r): train_fake[source[train_fake] == r] for r in train_real}
    val_real_feats = real_feats.index(torch.as_tensor(data.val_real))
    val_fake_feats = fake_feats.index(torch.as_tensor(data.val_fake))
    metrics_log.open(total=cfg.max_steps, initial=start, desc="train-critic", progress=cfg.progress)
    val_metrics: dict[str, float] = history[-1] if history else {}
    t_train = time.perf_counter()
    saved: Path | None = None  # the checkpoint of the current step, once written

    def save(done: int) -> Path:
        state = {"trainer": trainer.state_dict(), "history": json.dumps(history),
                 "log_sizes": file_sizes([metrics_log.path])}
        return write_checkpoint(out / "checkpoints", done, state, {"critic": critic.save},
                                keep=max(cfg.keep_checkpoints, 1))

    try:
        for step in range(start, cfg.max_steps):
            if preemption.requested():  # a safe point: checkpoint this step and stop (utils/preemption.py)
                return {"preempted": True, "step": step, "checkpoint": str(saved or save(step))}
            saved = None
            real_idx, fake_idx = pick_batch(step, cfg.seed, train_real, fakes_of, train_fake, cfg.batch_size)
            torch.manual_seed(derive_seed(cfg.seed, "reward-dropout", step))  # dropout: exact on resume
            metrics = trainer.step(real_feats.index(real_idx), fake_feats.index(fake_idx),
                                   generator_for(cfg.seed, "reward-noise", step))
            done = step + 1
            metrics_log.log(metrics, done)
            if done % cfg.val_every == 0 or done == cfg.max_steps:
                val_metrics = {"step": done, **evaluate_discriminators(critic, val_real_feats, val_fake_feats)}
                history.append(val_metrics)
                metrics_log.log({k: v for k, v in val_metrics.items() if k != "step"}, done)
                logger.info("step %d: %s", done, ", ".join(f"{k}={v:.3f}" for k, v in val_metrics.items() if k != "step"))
            if done % cfg.checkpoint_every == 0 or done == cfg.max_steps:
                saved = save(done)
            shown = {"loss": f"{metrics['disc/loss']:.3f}"}  # AUCs only once a validation has run (never "nan")
            shown.update({f"auc_{b}": f"{val_metrics[f'val/auc_{b}']:.2f}" for b in ("ic", "lc")
                          if math.isfinite(val_metrics.get(f"val/auc_{b}", float("nan")))})
            metrics_log.advance(1, **shown)
    finally:
        metrics_log.close()
    if cfg.max_steps == 0 or not history:
        val_metrics = {"step": start, **evaluate_discriminators(critic, val_real_feats, val_fake_feats)}
        history.append(val_metrics)
    critic.save(out / "critic")
    result = {
        "final": val_metrics,
        "history": history,
        "split": {"train_real": len(train_real), "val_real": len(data.val_real), "train_fake": len(train_fake),
                  "noise_negatives": len(train_real) if cfg.data.noise_negatives else 0,
                  "val_fake": len(data.val_fake), "val_real_clips": [data.reals[i].relpath for i in data.val_real]},
        "clip_size": list(data.size),
        "seconds": {"features": feature_seconds, "training": time.perf_counter() - t_train},
    }
    save_json(result, out / "metrics.json")
    return result


__all__ = ["PretrainingData", "RESUMABLE_CHANGES", "RewardDataConfig", "TrainRewardConfig", "clip_size",
           "compute_features", "features_key", "load_features", "noisy_copy", "pair_fakes", "pick_batch",
           "prepare_data", "pretrain_discriminators", "run_checkpoints", "save_features", "split_by_source"]
