"""Real training clips as a ClipSource (what train/shift.py reads), with the pre-flight data check."""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from shiftvdm.data.check import check_dataset, format_report, mixed_clip_warnings
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
    """Clips decoded from a manifest or folder through VideoClipDataset."""

    def __init__(self, dataset, default_prompt: str | None = None) -> None:
        self.dataset = dataset
        self.default_prompt = default_prompt

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, indices: list[int]) -> tuple[Tensor, list[str] | None]:
        items = [self.dataset[i] for i in indices]
        video = torch.stack([it["video"] for it in items])
        prompts = [it.get("prompt") or self.default_prompt for it in items]
        return video, (None if all(p is None for p in prompts) else [p or "" for p in prompts])


def open_training_clips(data_cfg, backbone_cfg=None) -> DatasetClips | CachedClips:
    """Check every entry first (as `shiftvdm data check`), then stop with the list or drop bad ones.

    With ``data.cache`` the clips were decoded and checked when `shiftvdm data encode` cached them: the cache's
    key must match ``backbone_cfg`` and ``data_cfg`` (a difference is refused by name) and every clip must have a
    record (a missing one is refused, never encoded here)."""
    if not data_cfg.train:
        raise DataError("data.train is empty: give a manifest (jsonl/json/csv) or a folder of videos")
    if data_cfg.cache:
        return open_cached_clips(data_cfg, backbone_cfg)
    report = check_dataset(data_cfg.train, num_frames=data_cfg.num_frames, fps=data_cfg.fps)
    if report.bad:
        if not data_cfg.skip_bad:
            raise DataError(f"{data_cfg.train}: {len(report.bad)} bad entries (fix them or set data.skip_bad=true "
                            f"/ pass --skip-bad):\n{format_report(report)}")
        logger.warning("dropping %d bad entries of %s (data.skip_bad)", len(report.bad), data_cfg.train)
    if not report.good:
        raise DataError(f"{data_cfg.train}: no usable clip")
    for warning in mixed_clip_warnings(report, data_cfg.height, data_cfg.width, data_cfg.fps):
        logger.warning("%s", warning)
    dataset = VideoClipDataset(report.good, num_frames=data_cfg.num_frames, height=data_cfg.height,
                               width=data_cfg.width, fps=data_cfg.fps, cache_dir=data_cfg.cache_dir)
    return DatasetClips(dataset, data_cfg.prompt)


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
