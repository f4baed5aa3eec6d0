"""A torch Dataset of video clips from a manifest: decode, resample to fps and frame count, resize + crop.

Each item is the first ``num_frames`` frames of a clip at the target fps (the clip's own rate when ``fps`` is
None), resized to cover ``height`` × ``width`` and centre-cropped, as a float32 tensor in [-1, 1]. With a
``cache_dir`` the processed uint8 frames are kept as one .npy per clip, keyed by the file's path, size and
modification time and the processing settings, so a changed file or setting is decoded afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from shiftvdm.data.manifest import (
    ClipEntry,
    LazyEntries,
    Manifest,
    load_manifest,
    require_inside_root,
)
from shiftvdm.data.video_io import (
    read_video,
    resample_frames,
    resize_center_crop,
    to_tensor,
)
from shiftvdm.errors import DataError
from shiftvdm.utils.checkpoint import atomic_write

logger = logging.getLogger(__name__)

# Bumped when the processing changes, so old cache files are not reused.
_CACHE_VERSION = 1


def _entries_of(manifest_or_entries: Manifest | Sequence[ClipEntry] | str | Path) -> Sequence[ClipEntry]:
    if isinstance(manifest_or_entries, (str, Path)):
        manifest_or_entries = load_manifest(manifest_or_entries)
    if isinstance(manifest_or_entries, Manifest):
        entries = manifest_or_entries.entries
        return entries if isinstance(entries, LazyEntries) else list(entries)  # lazy: parsed when read
    entries = list(manifest_or_entries)
    if not all(isinstance(e, ClipEntry) for e in entries):
        raise DataError("expected a Manifest, a manifest path or a list of ClipEntry")
    return entries


def entry_fps_hint(entry: ClipEntry) -> float | None:
    """The manifest's "fps" of an entry (used for files that record no rate, i.e. .npy), if valid."""
    value = entry.meta.get("fps")
    try:
        value = float(value) if value is not None else None
    except (TypeError, ValueError):
        raise DataError(f"{entry.relpath}: manifest field \"fps\" must be a number, got {value!r}") from None
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise DataError(f"{entry.relpath}: manifest field \"fps\" must be positive, got {value}")
    return value


def load_clip_frames(entry: ClipEntry, num_frames: int, height: int, width: int,
                     fps: float | None = None) -> np.ndarray:
    """Decode one entry into uint8 (num_frames, height, width, 3) frames.

    Raises:
        DataError: naming the file: missing, empty, unreadable or truncated, too few frames, or a path outside
            the dataset root.
    """
    require_inside_root(entry)
    fps_hint = entry_fps_hint(entry)
    try:
        if fps is None:
            video = read_video(entry.path, max_frames=num_frames, fps_hint=fps_hint)
        else:
            # decode only what is shown up to the last sampled time (long videos stay cheap)
            video = read_video(entry.path, until_time=(num_frames - 1) / fps, fps_hint=fps_hint)
        frames = resample_frames(video.frames, video.fps, fps, num_frames)
    except DataError as exc:
        message = str(exc)
        raise DataError(message if message.startswith(str(entry.path)) else f"{entry.path}: {message}") from exc
    return resize_center_crop(frames, height, width)


class VideoClipDataset(Dataset):
    """Clips of a manifest as ``{"video", "first_frame", "index", "path", "prompt"}`` items.

    Args:
        manifest_or_entries: a ``Manifest``, a list of ``ClipEntry``, or a manifest file / video folder path.
        num_frames: F, frames per item.
        height, width: output size (resize to cover, then centre crop).
        fps: target frame rate; None keeps each clip's own rate.
        cache_dir: optional folder for decoded clips (one .npy each).

    Items: ``video`` float32 (F, 3, H, W) in [-1, 1]; ``first_frame`` (3, H, W) = ``video[0]``; ``index`` int;
    ``path`` str; ``prompt`` str or None.
    """

    def __init__(self, manifest_or_entries: Manifest | Sequence[ClipEntry] | str | Path, num_frames: int,
                 height: int, width: int, fps: float | None = None, cache_dir: str | Path | None = None) -> None:
        if num_frames < 1 or height < 1 or width < 1:
            raise DataError(f"num_frames, height and width must be >= 1, got {num_frames}, {height}, {width}")
        if fps is not None and not (fps > 0 and math.isfinite(fps)):
            raise DataError(f"fps must be a positive number or None, got {fps}")
        self.entries = _entries_of(manifest_or_entries)
        self.num_frames, self.height, self.width, self.fps = num_frames, height, width, fps
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None

    def __len__(self) -> int:
        return len(self.entries)

    def _cache_path(self, entry: ClipEntry) -> Path | None:
        if self.cache_dir is None:
            return None
        try:
            stat = entry.path.stat()
        except OSError:
            return None  # a missing file is reported by the decode below
        key = json.dumps([_CACHE_VERSION, str(entry.path), stat.st_size, stat.st_mtime_ns, self.num_frames,
                          self.height, self.width, self.fps])
        return self.cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npy"

    def frames(self, index: int) -> np.ndarray:
        """uint8 (F, H, W, 3) frames of clip ``index`` (from the cache when present)."""
        entry = self.entries[index]
        cache_path = self._cache_path(entry)
        if cache_path is not None and cache_path.is_file():
            try:
                cached = np.load(cache_path, allow_pickle=False)
                if cached.shape == (self.num_frames, self.height, self.width, 3) and cached.dtype == np.uint8:
                    return cached
            except Exception as exc:  # a damaged cache file is rebuilt, never trusted
                logger.warning("%s: unreadable cache file, decoding again (%s)", cache_path, exc)
        frames = load_clip_frames(entry, self.num_frames, self.height, self.width, self.fps)
        if cache_path is not None:
            def write(tmp: Path) -> None:
                with open(tmp, "wb") as fh:
                    np.save(fh, frames, allow_pickle=False)

            atomic_write(cache_path, write)
        return frames

    def __getitem__(self, index: int) -> dict:
        entry = self.entries[index]
        video = to_tensor(self.frames(index))  # (F, 3, H, W)
        return {"video": video, "first_frame": video[0].clone(), "index": index, "path": str(entry.path),
                "prompt": entry.prompt}


def collate_clips(items: list[dict]) -> dict:
    """DataLoader ``collate_fn`` for ``VideoClipDataset`` items (torch's default cannot batch ``prompt=None``).

    Returns ``video`` (B, F, 3, H, W), ``first_frame`` (B, 3, H, W), ``index`` (B,) int64, ``path`` list[str] and
    ``prompt`` list[str | None].
    """
    return {
        "video": torch.stack([item["video"] for item in items]),
        "first_frame": torch.stack([item["first_frame"] for item in items]),
        "index": torch.tensor([item["index"] for item in items], dtype=torch.int64),
        "path": [item["path"] for item in items],
        "prompt": [item["prompt"] for item in items],
    }


def load_clips_tensor(manifest_or_entries: Manifest | Sequence[ClipEntry] | str | Path, num_frames: int,
                      height: int, width: int, fps: float | None = None,
                      cache_dir: str | Path | None = None) -> torch.Tensor:
    """Decode a whole (small) dataset into one uint8 tensor (N, F, H, W, 3); ``to_tensor`` makes it model input."""
    dataset = VideoClipDataset(manifest_or_entries, num_frames, height, width, fps=fps, cache_dir=cache_dir)
    if len(dataset) == 0:
        raise DataError("the dataset has no clips")
    out = torch.empty((len(dataset), num_frames, height, width, 3), dtype=torch.uint8)
    for i in range(len(dataset)):
        out[i] = torch.from_numpy(dataset.frames(i))
    return out
