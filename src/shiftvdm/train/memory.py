"""The memory plan of one rank, computed from the config before anything large is allocated.

    plan = memory_plan(cfg, backbone, world_size, critic_config)
    print(plan.table())
    plan.check()          # ConfigError naming the setting to change when it does not fit

Device rows: the frozen model, the trainable LoRA weights with their gradients, AdamW moments and
weight EMA (fp32, 4 bytes each), the discriminators (and their optimizer when the refresh is on),
and the decoded rollouts and reward features of one rollout chunk (the scoring working set). The
denoiser's activations are not estimated here: they depend on the kernels and on gradient
checkpointing; measure them with ``shiftvdm shift --dry-run``.

Host rows (the rollout buffer lives in CPU memory): this rank's share of the buffer — real and
rollout latents (float32), conditionings, rewards — and the reward features kept for the refresh
(only when ``critic.refresh`` is on: the IC maps at ``critic.ic_size`` and the LC features
in ``critic.feature_dtype``; of every clip, or with ``critic.refresh_features=recompute`` of the real clips only,
the fakes' being decoded and featurised again at the refresh: a device row), and the critic's replay store
(``critic.train.replay_size`` fakes, 0 in the paper). ``run.checkpoint_buffer`` decides whether the buffer is written into
every checkpoint as well (disk row).
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shiftvdm.backbone import latent_layout
from shiftvdm.errors import ConfigError
from shiftvdm.rewards.critic import MotionCritic

GIB = 1024 ** 3


@dataclass
class ModelSizes:
    """What the plan needs to know about the backbone (``model_sizes`` reads it from a built one)."""

    frozen_bytes: int  # every frozen parameter and buffer, in its own dtype
    trainable_params: int  # LoRA (or full) trainable parameters
    latent_numel: int  # elements of one clip's latents
    cond_bytes: int = 0  # bytes of one stored conditioning (image latents, embeddings)


def latent_numel(backbone: str, options: dict[str, Any], frames: int, height: int, width: int) -> int:
    """Latent elements of one clip of backbone family ``backbone`` with ``options``, as its spec gives them
    (each family module's ``latent_layout``, e.g. SVD 4·F·H/8·W/8)."""
    return latent_layout(backbone, options).numel(frames, height, width)


def model_sizes(backbone: Any, cfg: Any) -> ModelSizes:
    """Count a built backbone's frozen bytes and trainable parameters (every nn.Module attribute)."""
    seen: set[int] = set()
    frozen = trainable = 0
    modules = [m for m in vars(backbone).values() if isinstance(m, nn.Module)]
    for module in modules:
        for p in list(module.parameters()) + list(module.buffers()):
            if id(p) in seen:
                continue
            seen.add(id(p))
            if getattr(p, "requires_grad", False):
                trainable += p.numel()
            else:
                frozen += p.numel() * p.element_size()
    d = cfg.data
    return ModelSizes(frozen, trainable, latent_numel(cfg.backbone.name, dict(cfg.backbone.options), d.num_frames,
                                                      d.height, d.width))


@dataclass
class MemoryRow:
    where: str  # "device", "host" or "disk"
    name: str
    bytes: int
    setting: str = ""  # the setting that shrinks this row (named in a refusal)


@dataclass
class MemoryPlan:
    rows: list[MemoryRow]
    world_size: int
    device_capacity: int | None = None  # bytes of one device (None = unknown: not checked)
    host_capacity: int | None = None  # bytes of host memory shared by ``local_ranks`` ranks
    local_ranks: int = 1
    notes: list[str] = field(default_factory=list)

    def total(self, where: str) -> int:
        return sum(r.bytes for r in self.rows if r.where == where)

    def table(self) -> str:
        lines = [f"memory plan per rank ({self.world_size} ranks):"]
        for where in ("device", "host", "disk"):
            rows = [r for r in self.rows if r.where == where]
            if not rows:
                continue
            for r in rows:
                lines.append(f"  {where:<6} {r.name:<52} {r.bytes / GIB:10.3f} GiB")
            cap = {"device": self.device_capacity, "host": self.host_capacity, "disk": None}[where]
            extra = ""
            if cap is not None:
                shared = self.local_ranks if where == "host" else 1
                extra = f"  (of {cap / GIB:.1f} GiB{f' shared by {shared} ranks' if shared > 1 else ''})"
            lines.append(f"  {where:<6} {'total':<52} {self.total(where) / GIB:10.3f} GiB{extra}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def check(self) -> None:
        """ConfigError when the device or the host cannot hold the plan, naming the largest rows' settings."""
        for where, cap, shared in (("device", self.device_capacity, 1), ("host", self.host_capacity, self.local_ranks)):
            if cap is None:
                continue
            need = self.total(where) * shared
            if need <= cap:
                continue
            rows = sorted((r for r in self.rows if r.where == where and r.setting), key=lambda r: -r.bytes)
            hints = "; ".join(f"{r.name} need {r.bytes / GIB:.1f} GiB per rank: {r.setting}" for r in rows[:2])
            raise ConfigError(f"the memory plan does not fit: {where} needs {need / GIB:.1f} GiB"
                              f"{f' for {shared} ranks' if shared > 1 else ''} but has {cap / GIB:.1f} GiB. "
                              f"{hints}.\n{self.table()}")


def _critic_sizes(critic_config: Any) -> tuple[int, int, int, int]:
    """(trainable discriminator params, all critic params, IC channels, LC feature dim), built on the meta device."""
    with torch.device("meta"):
        critic = MotionCritic(critic_config)
    trainable = sum(p.numel() for p in critic.discriminator_parameters())
    total = sum(p.numel() for p in critic.parameters())
    return trainable, total, critic.ic_channels, critic.lc_dim


def replay_clips(cfg: Any) -> int:
    """Fake clips the refresh's replay store keeps (``critic.train.replay_size``; 0 in the paper)."""
    train = getattr(cfg.critic, "train", None)
    return int(getattr(train, "replay_size", 0) or 0)


def buffer_share(cfg: Any, world_size: int) -> int:
    """Conditionings in this rank's buffer share (train/shift.py chunk_indices: padded to world × batch)."""
    quantum = world_size * cfg.rollout.batch_size
    size = max(quantum, math.ceil(cfg.rollout.buffer_size / quantum) * quantum)
    return size // world_size


def memory_plan(cfg: Any, backbone: Any, world_size: int, critic_config: Any = None, *,
                device_capacity: int | None = None, host_capacity: int | None = None,
                local_ranks: int | None = None) -> MemoryPlan:
    """The per-rank plan for a TrainConfig. ``backbone`` is a built Backbone or a :class:`ModelSizes`."""
    sizes = backbone if isinstance(backbone, ModelSizes) else model_sizes(backbone, cfg)
    r, d = cfg.rollout, cfg.data
    shift = cfg.uses_rollouts
    rows = [MemoryRow("device", "frozen model", sizes.frozen_bytes, "backbone.options.dtype=bfloat16"),
            MemoryRow("device", "trainable weights (fp32)", 4 * sizes.trainable_params, "lora.rank=..."),
            MemoryRow("device", "their gradients (fp32)", 4 * sizes.trainable_params, "lora.rank=..."),
            MemoryRow("device", "AdamW moments (2 × fp32)", 8 * sizes.trainable_params, "lora.rank=...")]
    if cfg.optim.ema_decay > 0:
        rows.append(MemoryRow("device", "weight EMA (fp32)", 4 * sizes.trainable_params, "optim.ema_decay=0"))
    n = buffer_share(cfg, world_size)
    group = r.group_size if shift else 0
    clips = n * (1 + group)
    rows += [MemoryRow("host", f"buffer: real latents ({n} clips, fp32)", 4 * n * sizes.latent_numel,
                       "rollout.buffer_size=... (or more ranks)"),
             MemoryRow("host", "buffer: conditionings", n * sizes.cond_bytes, "rollout.buffer_size=...")]
    notes = ["denoiser activations not estimated: measure with `shiftvdm shift --dry-run`"]
    if shift and critic_config is not None:
        c = critic_config
        rows.append(MemoryRow("host", f"buffer: rollout latents ({n * group} clips, fp32)",
                              4 * n * group * sizes.latent_numel, "rollout.buffer_size=... or rollout.group_size=..."))
        d_trainable, d_total, ic_ch, lc_dim = _critic_sizes(c)
        rows.append(MemoryRow("device", "discriminators + EMA copies (fp32)", 4 * d_total, "critic.ic / critic.lc sizes"))
        if cfg.critic.refresh:
            rows.append(MemoryRow("device", "discriminator gradients + AdamW (fp32)", 12 * d_trainable,
                                  "critic.refresh=false"))
        feat_bytes = 2 if c.feature_dtype == "float16" else 4
        ic_h, ic_w = c.ic_size or (d.height, d.width)
        ic_per_clip = (d.num_frames - 1) * ic_ch * ic_h * ic_w if c.w_ic > 0 else 0
        lc_per_clip = c.num_queries * d.num_frames * lc_dim if c.w_lc > 0 else 0
        chunk = r.rollout_batch_size * (1 + group)
        rows.append(MemoryRow("device", f"scoring: decoded clips of one chunk ({chunk}, fp32)",
                              4 * chunk * d.num_frames * 3 * d.height * d.width, "rollout.rollout_batch_size=1"))
        rows.append(MemoryRow("device", "scoring: reward features of one chunk (fp32)",
                              4 * chunk * (ic_per_clip + lc_per_clip), "rollout.rollout_batch_size=1"))
        if cfg.critic.refresh:
            dtype_hint = "" if c.feature_dtype == "float16" else "critic.feature_dtype=float16, "
            recompute = getattr(cfg.critic, "refresh_features", "stored") == "recompute"
            kept = n if recompute else clips  # recompute: only the real clips' features stay in the buffer
            what = f"{n} real clips" if recompute else f"{clips} clips"
            hint = "" if recompute else "critic.refresh_features=recompute, "
            rows.append(MemoryRow("host", f"buffer: IC maps for the refresh ({what} at {ic_h}×{ic_w})",
                                  feat_bytes * kept * ic_per_clip,
                                  f"set {hint}{dtype_hint}a smaller critic.ic_size, rollout.buffer_size or more ranks"))
            rows.append(MemoryRow("host", f"buffer: LC features for the refresh ({what})",
                                  feat_bytes * kept * lc_per_clip,
                                  f"set {hint}{dtype_hint}fewer critic.num_queries, rollout.buffer_size or more ranks"))
            disc_batch = min(n, cfg.critic.batch_size or r.batch_size)
            if recompute:
                rows.append(MemoryRow("device", f"refresh: fakes decoded + featurised ({disc_batch}, fp32)",
                                      4 * disc_batch * (d.num_frames * 3 * d.height * d.width + ic_per_clip
                                                        + lc_per_clip), "critic.batch_size=..."))
            replay = replay_clips(cfg)
            if replay:
                rows.append(MemoryRow("host", f"critic replay store ({replay} fake clips)",
                                      feat_bytes * replay * (ic_per_clip + lc_per_clip), "critic.train.replay_size=0"))
        else:
            notes.append("refresh off: no reward features are kept in the buffer")
    host = sum(x.bytes for x in rows if x.where == "host")
    if getattr(cfg.run, "checkpoint_buffer", True):
        rows.append(MemoryRow("disk", "buffer in every checkpoint", host, "run.checkpoint_buffer=false"))
    if device_capacity is None and torch.cuda.is_available():
        device_capacity = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    if host_capacity is None:
        try:
            host_capacity = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            host_capacity = None
    if local_ranks is None:
        local_ranks = max(1, min(world_size, torch.cuda.device_count() or 1))
    return MemoryPlan(rows, world_size, device_capacity, host_capacity, local_ranks, notes)


# ----- measured memory: what the kernel says is available, and the peak of a block of work ---------------

def meminfo(key: str) -> int:
    """A /proc/meminfo field in bytes (``MemAvailable``, ``MemTotal``); 0 where there is none."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def mem_available() -> int:
    """Memory the kernel says can be allocated now without swapping, in bytes."""
    return meminfo("MemAvailable")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so the next ``peak_rss`` covers only what follows;
    False where that is not allowed (then ``peak_rss`` is the process peak)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@contextlib.contextmanager
def measure_peak() -> Iterator[dict[str, Any]]:
    """Measure the block on its own: fills the yielded dict on exit with ``seconds``, ``peak_rss``,
    ``peak_is_step_only`` (False: VmHWM could not be reset, the peak is the process's) and, with CUDA,
    ``peak_device_memory``."""
    gc.collect()  # garbage of earlier work must not count as this block's
    reset = reset_peak_rss()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    found: dict[str, Any] = {}
    t0 = time.perf_counter()
    yield found
    found.update(seconds=time.perf_counter() - t0, peak_rss=peak_rss(), peak_is_step_only=reset)
    if torch.cuda.is_available():  # on a GPU machine the device peak is the figure that matters
        found["peak_device_memory"] = torch.cuda.max_memory_allocated()


def peak_rss() -> int:
    """Peak resident memory of this process in bytes (VmHWM, else getrusage)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


__all__ = ["GIB", "MemoryPlan", "MemoryRow", "ModelSizes", "buffer_share", "latent_numel", "mem_available", "meminfo",
           "measure_peak", "memory_plan", "model_sizes", "peak_rss", "reset_peak_rss"]
