"""Real training clips as a ClipSource (what train/shift.py reads), each clip checked when it is first read.

Start-up is bounded: the manifest is streamed (``stream_manifest``: one pass over its lines, nothing decoded or
stat-ed) and a clip is checked (``check_entry``, the check of `shiftvdm data check`) the first time a step or the
sample grid reads it, so a 100 k-entry dataset starts as fast as a small one. A bad clip stops the run when it is
read, with the same message the start-up check gave (every rank stops: train/shift.py collects a buffer inside
``Distributed.together``); with ``data.skip_bad`` it is replaced by the next good clip of the manifest.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from shiftvdm.data.check import CheckReport, check_entry, mixed_clip_warnings
from shiftvdm.data.dataset import VideoClipDataset
from shiftvdm.data.manifest import stream_manifest
from shiftvdm.errors import DataError
from shiftvdm.train.latent_cache import CachedClips, cache_key, check_key

logger = logging.getLogger(__name__)


class TensorClips:
    """Clips held in memory as uint8 (N, F, H, W, 3); used by the demo and by tests."""

    def __init__(self, videos_uint8: Tensor, prompts: list[str] | None = None) -> None:
        if videos_uint8.ndim != 5 or videos_uint8.shape[-1] != 3:
            raise DataError(f"expected clips of shape (N, F, H, W, 3), got {tuple(videos_uint8.shape)}")
        self.videos = videos_uint8
        self.prompts = prompts

    def __len__(self) -> int:
        return int(self.videos.shape[0])

    def load(self, indices: list[int]) -> tuple[Tensor, list[str] | None]:
        v = self.videos[torch.as_tensor(indices, dtype=torch.long)]
        video = v.permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0  # (B, F, 3, H, W) in [-1, 1]
        prompts = [self.prompts[i] for i in indices] if self.prompts is not None else None
        return video, prompts


class DatasetClips:
    """Clips decoded from a manifest or folder through VideoClipDataset, each checked on its first read.

    Args:
        dataset: the VideoClipDataset (its entries may be a streamed manifest's ``LazyEntries``).
        default_prompt: prompt of clips whose entry has none.
        skip_bad: replace a bad clip by the next good one in manifest order (wrapping) instead of stopping.
        name: the dataset as the user gave it (``data.train``), for messages.
    """

    _UNKNOWN, _GOOD, _BAD = 0, 1, 2

    def __init__(self, dataset, default_prompt: str | None = None, *, skip_bad: bool = False,
                 name: str | None = None) -> None:
        self.dataset = dataset
        self.default_prompt = default_prompt
        self.skip_bad = skip_bad
        self.name = name or "data.train"
        self.status = np.zeros(len(dataset), dtype=np.int8)  # 1 byte per clip: unknown / good / bad
        self.checks = 0  # clips checked so far (each at most once per process)
        # what the clips read so far are (rate, size) and the mixes already reported: clips are checked as they
        # are read, so a second frame rate or a cropped aspect ratio is named when first met, not at start-up
        self.seen = CheckReport(root=Path(self.name))
        self.rates_reported = 1
        self.crop_reported = False

    def __len__(self) -> int:
        return len(self.dataset)

    def _reason(self, index: int) -> str | None:
        """Why clip ``index`` is bad (None when good), checked once and remembered."""
        if self.status[index] == self._GOOD:
            return None
        entry = self.dataset.entries[index]
        self.checks += 1
        reason = check_entry(entry, self.dataset.num_frames, self.dataset.fps, self.seen.infos)
        self.status[index] = self._GOOD if reason is None else self._BAD
        if reason is None:
            self._report_mixed(entry.relpath)
        if reason is not None and self.skip_bad:
            logger.warning("%s: dropping bad entry %s: %s (data.skip_bad)", self.name, entry.relpath, reason)
        return reason

    def _report_mixed(self, relpath: str) -> None:
        """Warn when this clip brings a new frame rate (data.fps unset) or is the first cropped one; the warning
        names the clips read so far (``shiftvdm data check`` names every clip at once)."""
        info = self.seen.infos.get(relpath)
        if info is None:
            return
        rates = {round(float(i.fps), 3) for i in self.seen.infos.values()} if self.dataset.fps is None else set()
        target = self.dataset.width / self.dataset.height
        cropped = abs(info.width / info.height - target) > 0.01 * target
        if len(rates) > self.rates_reported or (cropped and not self.crop_reported):
            for warning in mixed_clip_warnings(self.seen, self.dataset.height, self.dataset.width, self.dataset.fps):
                if ("frame rates" in warning and len(rates) > self.rates_reported) or \
                        ("aspect ratio" in warning and cropped and not self.crop_reported):
                    logger.warning("%s", warning)
            self.rates_reported = max(self.rates_reported, len(rates))
            self.crop_reported = self.crop_reported or cropped

    def _good(self, indices: list[int]) -> list[int]:
        """``indices`` with every bad clip replaced (data.skip_bad) or, without it, a DataError naming each bad one."""
        bad = [(i, reason) for i in dict.fromkeys(indices) if (reason := self._reason(i)) is not None]
        if not bad:
            return indices
        if not self.skip_bad:
            listed = "\n".join(f"  {self.dataset.entries[i].relpath}: {reason}" for i, reason in bad)
            raise DataError(f"{self.name}: {len(bad)} bad entries (fix them or set data.skip_bad=true / pass "
                            f"--skip-bad):\nbad entries:\n{listed}\n(clips are checked as training reads them; "
                            f"`shiftvdm data check {self.name}` lists every bad entry at once)")
        return [self._replacement(i) if self.status[i] == self._BAD else i for i in indices]

    def _replacement(self, index: int) -> int:
        """The next good clip after ``index`` in manifest order, wrapping (deterministic: the same on a resume)."""
        n = len(self)
        for step in range(1, n):
            j = (index + step) % n
            if self.status[j] != self._BAD and self._reason(j) is None:
                return j
        raise DataError(f"{self.name}: no usable clip (all {n} entries are bad)")

    def load(self, indices: list[int]) -> tuple[Tensor, list[str] | None]:
        items = [self.dataset[i] for i in self._good(list(indices))]
        video = torch.stack([it["video"] for it in items])
        prompts = [it.get("prompt") or self.default_prompt for it in items]
        return video, (None if all(p is None for p in prompts) else [p or "" for p in prompts])


def open_training_clips(data_cfg, backbone_cfg=None) -> DatasetClips | CachedClips:
    """The training clips of ``data_cfg``: the manifest streamed, each clip checked when first read.

    Nothing is decoded or stat-ed here (a 100 k-entry manifest is one pass over its lines): a bad clip stops the
    run when a step reads it, naming the file and the reason, or with ``data.skip_bad`` is replaced by the next
    good clip (see :class:`DatasetClips`). ``shiftvdm data check`` checks every entry up front.

    With ``data.cache`` the clips were decoded and checked when `shiftvdm data encode` cached them: the cache's
    key must match ``backbone_cfg`` and ``data_cfg`` (a difference is refused by name) and every clip must have a
    record (a missing one is refused, never encoded here)."""
    if not data_cfg.train:
        raise DataError("data.train is empty: give a manifest (jsonl/json/csv) or a folder of videos")
    if data_cfg.cache:
        return open_cached_clips(data_cfg, backbone_cfg)
    manifest = stream_manifest(data_cfg.train)  # a JSONL manifest is read lazily; other kinds whole (no decode)
    dataset = VideoClipDataset(manifest, num_frames=data_cfg.num_frames, height=data_cfg.height,
                               width=data_cfg.width, fps=data_cfg.fps, cache_dir=data_cfg.cache_dir)
    return DatasetClips(dataset, data_cfg.prompt, skip_bad=data_cfg.skip_bad, name=str(data_cfg.train))


def open_cached_clips(data_cfg, backbone_cfg) -> CachedClips:
    """The clips of ``data.train`` read from ``data.cache`` (see train/latent_cache.py)."""
    if backbone_cfg is None:
        raise DataError("data.cache: the cache is keyed by the model; give the backbone config too")
    check_key(data_cfg.cache, cache_key(backbone_cfg, data_cfg))
    manifest = stream_manifest(data_cfg.train)  # a JSONL manifest is read lazily: 100 k entries start fast
    dataset = VideoClipDataset(manifest, num_frames=data_cfg.num_frames, height=data_cfg.height,
                               width=data_cfg.width, fps=data_cfg.fps, cache_dir=data_cfg.cache_dir)
    clips = CachedClips(data_cfg.cache, dataset, manifest.root, data_cfg.prompt)
    missing = clips.missing()
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataError(f"data.cache={data_cfg.cache}: {len(missing)} of {len(dataset)} clips of {data_cfg.train} are "
                        f"not cached ({shown}); run `shiftvdm data encode` on it (it continues where it stopped)")
    return clips
