"""Cached conditioning (`shiftvdm data encode`, then ``data.cache``): what the trainer would encode from each real clip.

For every clip the cache holds what ``collect_buffer`` computes from it: the clip's latents
(``backbone.encode_video``, the VAE posterior mode, scaled as the backbone trains on it), its first frame (uint8:
the exact pixels the trainer conditions on) and every tensor of ``backbone.encode_condition`` (SVD: the CLIP image
embedding; Wan: the UMT5 embeddings of the prompt and of the negative prompt, the first frame's latent). With a
cache the trainer reads these instead of encoding: no real clip goes through the VAE again and, when every clip is
cached, the Wan text encoder is not loaded at all.

SVD's noise-augmented first-frame latent E(x₀ + σ_c·n) depends on each step's noise draw, so it cannot be cached;
the backbone encodes it once per draw (not once per loss pass: svd.py keeps the last one).

Layout of CACHE:

- ``cache.json``: the key: cache version, model identity (family, folder, a fingerprint of its files' names, sizes
  and modification times, the backbone options), clip size, frames and fps, default prompt. A training run whose
  settings differ is refused, naming each setting.
- ``records/ab/<sha>.safetensors``: one per clip, named by the clip's resolved path and prompt; written
  atomically, so a stopped ``data encode`` continues where it stopped (records present are kept). Its metadata
  names the clip file's size and modification time, checked when the record is read.
- ``blobs/ab/<sha>.safetensors``: tensors of 64 KiB or more, stored once by content (every clip with the same
  prompt shares one prompt embedding), trailing all-zero rows dropped (Wan pads prompt embeddings to 512 tokens
  with zeros) and restored on reading, bit for bit.

Ranks split the clips (clip i goes to rank i mod world); every file is written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from shiftvdm.backbone import BackboneConfig
from shiftvdm.backbone.base import Backbone, Condition
from shiftvdm.data.dataset import VideoClipDataset
from shiftvdm.data.manifest import ClipEntry, LazyEntries, require_inside_root
from shiftvdm.data.video_io import to_tensor
from shiftvdm.errors import DataError
from shiftvdm.utils.checkpoint import atomic_write, write_text

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
KEY_FILE = "cache.json"
BLOB_MIN_BYTES = 64 * 1024
# Backbone options that change nothing the cache holds (sampling, memory, loading): a change keeps the cache valid.
IGNORED_OPTIONS = frozenset({"load_text_encoder", "num_inference_steps", "sampler", "gradient_checkpointing",
                             "prompt_cache_size", "decode_chunk_size", "guidance_scale", "conditioning_dropout_prob",
                             "p_mean", "p_std", "cond_p_mean", "cond_p_std", "sigma_shift", "train_grid_steps",
                             "min_timestep_boundary", "max_timestep_boundary", "share_timestep_across_batch",
                             "timestep_weighting", "loss_on_first_frame"})


def _folder_fingerprint(folder: Path) -> str:
    """sha256 of every file's relative path, size and modification time (not the bytes: weights are GBs)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def model_identity(backbone: BackboneConfig) -> dict[str, Any]:
    """What identifies the model that encoded a cache: family, folder (resolved) and its fingerprint, options."""
    folder = None if backbone.pretrained in (None, "tiny", "tiny-pixel") else Path(backbone.pretrained).resolve()
    options = {k: v for k, v in sorted(dict(backbone.options).items()) if k not in IGNORED_OPTIONS}
    return {"family": backbone.name, "pretrained": str(folder) if folder else backbone.pretrained,
            "fingerprint": _folder_fingerprint(folder) if folder and folder.is_dir() else None,
            "options": json.loads(json.dumps(options, default=str))}


def cache_key(backbone: BackboneConfig, data: Any) -> dict[str, Any]:
    """The settings a cache is valid for (``data`` is a DataConfig)."""
    return {"version": CACHE_VERSION, "model": model_identity(backbone), "num_frames": data.num_frames,
            "height": data.height, "width": data.width, "fps": data.fps, "prompt": data.prompt}


def _differences(theirs: dict, mine: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(theirs) | set(mine)):
        a, b = theirs.get(key), mine.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} in the cache, {b!r} now")
    return out


def read_key(cache: str | Path) -> dict[str, Any]:
    path = Path(cache) / KEY_FILE
    if not path.is_file():
        raise DataError(f"{cache}: not a latent cache (no {KEY_FILE}); make one with `shiftvdm data encode`")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable cache key ({exc})") from exc


def check_key(cache: str | Path, key: dict[str, Any]) -> None:
    """Refuse a cache made with other settings, naming each one that differs."""
    changed = _differences(read_key(cache), json.loads(json.dumps(key, default=str)))
    if changed:
        raise DataError(f"{cache}: the cache was encoded with other settings ({'; '.join(changed)}); encode again "
                        "with `shiftvdm data encode` into a new folder, or train with the cache's settings")


def record_name(root: Path, relpath: str, prompt: str | None) -> str:
    """A clip's record name: its path as the manifest writes it, joined to the manifest's folder and normalised
    (not resolved: no system call, so 100 k names cost nothing), and its prompt."""
    text = os.path.normpath(os.path.join(root, relpath)) + ("\0" if prompt is None else "\1" + prompt)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def _record_path(cache: Path, name: str) -> Path:
    return cache / "records" / name[:2] / f"{name}.safetensors"


def _trim(t: Tensor) -> tuple[Tensor, int]:
    """Drop trailing all-zero rows along dim 1 (Wan's prompt padding); returns the tensor and the full length."""
    if t.ndim < 2 or t.shape[1] == 0:
        return t, t.shape[1] if t.ndim >= 2 else 0
    nonzero = t.reshape(t.shape[0], t.shape[1], -1).ne(0).any(dim=2).any(dim=0)
    keep = int(nonzero.nonzero().max()) + 1 if bool(nonzero.any()) else 0
    return t[:, :keep].contiguous(), t.shape[1]


def _write_blob(cache: Path, t: Tensor) -> tuple[str, int]:
    trimmed, length = _trim(t)
    digest = hashlib.sha256()
    digest.update(f"{trimmed.dtype}{tuple(trimmed.shape)}{length}".encode())
    digest.update(trimmed.view(torch.uint8).numpy().tobytes() if trimmed.numel() else b"")
    name = digest.hexdigest()[:40]
    path = cache / "blobs" / name[:2] / f"{name}.safetensors"
    if not path.is_file():
        atomic_write(path, lambda tmp: save_file({"t": trimmed}, str(tmp)))
    return name, length


def _read_blob(cache: Path, name: str, length: int) -> Tensor:
    path = cache / "blobs" / name[:2] / f"{name}.safetensors"
    try:
        with safe_open(str(path), "pt") as fh:
            t = fh.get_tensor("t")
    except (OSError, Exception) as exc:  # safetensors raises its own error types
        raise DataError(f"{path}: missing or unreadable cache blob ({exc}); encode the clips again") from exc
    if t.ndim >= 2 and t.shape[1] < length:
        t = torch.cat([t, t.new_zeros(t.shape[0], length - t.shape[1], *t.shape[2:])], dim=1)
    return t


def write_record(cache: Path, root: Path, entry: ClipEntry, prompt: str | None, latents: Tensor,
                 first_frame: np.ndarray, cond: Condition) -> Path:
    """One clip's record: ``latents`` (1, ...), ``first_frame`` uint8 (H, W, 3), ``cond`` of batch 1."""
    stat = entry.path.stat()
    tensors = {"latents": latents[0].contiguous().cpu(),
               "first_frame": torch.from_numpy(np.ascontiguousarray(first_frame))}
    blobs = {}
    for key, value in cond.tensors.items():
        value = value.detach().cpu().contiguous()
        if value.numel() * value.element_size() >= BLOB_MIN_BYTES:
            blobs[key] = _write_blob(cache, value)
        else:
            tensors[f"cond.{key}"] = value
    meta = {"path": str(entry.path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "prompt": prompt,
            "cond_prompt": None if cond.prompts is None else cond.prompts[0], "blobs": blobs}
    path = _record_path(cache, record_name(root, entry.relpath, prompt))
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"shiftvdm": json.dumps(meta)}))


def read_record(cache: Path, root: Path, entry: ClipEntry,
                prompt: str | None) -> tuple[Tensor, Tensor, dict[str, Tensor], str | None]:
    """(latents, first frame (3, H, W) in [-1, 1], condition tensors of batch 1, the condition's prompt)."""
    require_inside_root(entry)
    path = _record_path(cache, record_name(root, entry.relpath, prompt))
    if not path.is_file():
        raise DataError(f"{entry.path}: not in the cache {cache} (prompt {prompt!r}); run `shiftvdm data encode` "
                        "on this manifest (it continues where it stopped)")
    try:
        with safe_open(str(path), "pt") as fh:
            meta = json.loads(fh.metadata()["shiftvdm"])
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # a damaged record: safetensors' own errors, KeyError, JSON
        raise DataError(f"{path}: unreadable cache record ({exc}); delete it and run `shiftvdm data encode` again") \
            from exc
    stat = entry.path.stat() if entry.path.exists() else None
    if stat is None or (stat.st_size, stat.st_mtime_ns) != (meta["size"], meta["mtime_ns"]):
        raise DataError(f"{entry.path}: the clip changed (or is gone) since it was encoded into {cache}; "
                        "run `shiftvdm data encode` into a new cache folder")
    cond = {k.removeprefix("cond."): v for k, v in tensors.items() if k.startswith("cond.")}  # batch of 1
    for key, (name, length) in meta["blobs"].items():
        cond[key] = _read_blob(cache, name, length)
    return tensors["latents"], to_tensor(tensors["first_frame"]), cond, meta["cond_prompt"]


class CachedClips:
    """A ClipSource (train/shift.py) whose clips were encoded by ``data encode``: ``load_encoded`` gives the
    latents and the Condition without a VAE or text encoder; ``load`` still decodes pixels (rewards, samples)."""

    def __init__(self, cache: str | Path, dataset: VideoClipDataset, root: Path,
                 default_prompt: str | None = None) -> None:
        self.cache = Path(cache)
        self.dataset = dataset
        self.root = Path(root)  # the manifest's folder: record names join entry paths to it
        self.default_prompt = default_prompt

    def __len__(self) -> int:
        return len(self.dataset)

    def prompt(self, index: int) -> str | None:
        return self.dataset.entries[index].prompt or self.default_prompt

    def missing(self) -> list[str]:
        """Paths (as the manifest writes them) of clips without a record: one stat per clip, no decode, and for a
        streamed manifest one sequential read of it."""
        entries = self.dataset.entries
        if isinstance(entries, LazyEntries):
            pairs = ((r["path"], r.get("prompt") or None) for r in entries.records())
        else:
            pairs = ((e.relpath, e.prompt) for e in entries)
        present = set()  # one listing of the records (no stat per clip)
        if (self.cache / "records").is_dir():
            for folder in os.scandir(self.cache / "records"):
                if folder.is_dir():
                    present.update(e.name.removesuffix(".safetensors") for e in os.scandir(folder.path))
        root = str(self.root)
        return [relpath for relpath, prompt in pairs
                if record_name(root, relpath, prompt or self.default_prompt) not in present]

    def load(self, indices: list[int]) -> tuple[Tensor, list[str] | None]:
        items = [self.dataset[i] for i in indices]
        video = torch.stack([it["video"] for it in items])
        prompts = [self.prompt(i) for i in indices]
        return video, (None if all(p is None for p in prompts) else [p or "" for p in prompts])

    def load_encoded(self, indices: list[int]) -> tuple[Tensor, Condition]:
        """(latents (N, ...), Condition) of these clips, as ``encode_video`` / ``encode_condition`` gave them."""
        rows = [read_record(self.cache, self.root, self.dataset.entries[i], self.prompt(i)) for i in indices]
        latents = torch.stack([r[0] for r in rows])
        first = torch.stack([r[1] for r in rows])
        tensors = {k: torch.cat([r[2][k] for r in rows]) for k in rows[0][2]}
        prompts = [r[3] for r in rows]  # as collect_buffer batches them: None for none, "" for a missing one
        return latents, Condition(first_frame=first, tensors=tensors,
                                  prompts=None if all(p is None for p in prompts) else [p or "" for p in prompts])


def encode_clips(backbone: Backbone, dataset: VideoClipDataset, root: Path, cache: str | Path, key: dict[str, Any], *,
                 default_prompt: str | None = None, rank: int = 0, world: int = 1,
                 progress: bool = True, on_clip: Callable[[int], None] | None = None) -> dict[str, int]:
    """Encode this rank's share of ``dataset`` into ``cache`` (clip i on rank i mod world); records already there
    are kept. Writes (or checks) the key first. Returns counts: encoded, already cached.

    Raises:
        DataError: the cache holds other settings (named), or a clip cannot be read (named).
    """
    cache = Path(cache)
    if (cache / KEY_FILE).exists():
        check_key(cache, key)
    else:
        # (another rank's temporary key file, a dot file, is no reason to refuse: ranks start together)
        if cache.exists() and any(not p.name.startswith(".") for p in cache.iterdir()):
            raise DataError(f"{cache}: exists and is not a latent cache (no {KEY_FILE}); give a new or empty folder")
        text = json.dumps(key, indent=1, default=str) + "\n"
        write_text(cache / KEY_FILE, text)
    clips = CachedClips(cache, dataset, root, default_prompt)
    mine = list(range(rank, len(dataset), world))
    counts = {"encoded": 0, "cached": 0}
    from tqdm.auto import tqdm

    device = backbone.device
    for index in tqdm(mine, desc=f"encode (rank {rank})", unit="clip", disable=not progress or None):
        entry, prompt = dataset.entries[index], clips.prompt(index)
        if _record_path(cache, record_name(root, entry.relpath, prompt)).is_file():
            counts["cached"] += 1
            continue
        frames = dataset.frames(index)  # uint8 (F, H, W, 3)
        video = to_tensor(frames)[None]
        with torch.no_grad():
            latents = backbone.encode_video(video.to(device))
            cond = backbone.encode_condition(video[:, 0].to(device), None if prompt is None else [prompt])
        write_record(cache, root, entry, prompt, latents, frames[0], cond)
        counts["encoded"] += 1
        if on_clip is not None:
            on_clip(index)
    return counts


def process_share() -> tuple[int, int]:
    """(rank, world) from the launcher's environment (torchrun / accelerate launch); (0, 1) without one."""
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 0, 1


__all__ = ["CACHE_VERSION", "CachedClips", "cache_key", "check_key", "encode_clips", "model_identity",
           "process_share", "read_key"]
