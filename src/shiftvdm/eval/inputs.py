"""What ``evaluate_videos`` scores: clips from a folder, a manifest, arrays or paths, read frame by frame.

Files are listed through ``data.manifest.load_manifest`` and opened only after the data layer's
outside-root rule (``require_inside_root``); videos are decoded by ``data.video_io.stream_video``, so a
clip's frames go through the metrics one at a time. Ground-truth and conditioning sets are matched to
the clips by position (arrays) or by manifest ``source`` / file stem.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from shiftvdm.data.dataset import entry_fps_hint
from shiftvdm.data.manifest import FOLDER_MANIFEST_NAMES, ClipEntry, load_manifest, require_inside_root
from shiftvdm.data.video_io import DEFAULT_FPS, VIDEO_EXTENSIONS, read_video, stream_video
from shiftvdm.errors import DataError

logger = logging.getLogger(__name__)

# Motion smoothness interpolates a middle frame and acceleration needs three positions.
MIN_FRAMES = 3
# Manifest keys that may name a clip's conditioning image (relative to the manifest's folder).
CONDITIONING_KEYS = ("conditioning", "conditioning_image", "image", "first_frame")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

ClipsInput = str | Path | np.ndarray | Sequence[np.ndarray] | Sequence[str | Path]


@dataclass
class EvalClip:
    """A clip to score: an array in memory or a file (with its manifest entry and the manifest's folder)."""

    name: str
    frames: np.ndarray | None = None
    entry: ClipEntry | None = None
    fps: float | None = None
    root: Path | None = None

    @property
    def path(self) -> Path | None:
        return None if self.entry is None else self.entry.path


@dataclass
class OpenClip:
    """An opened clip: its size and rate are known, its uint8 (H, W, 3) frames come one at a time."""

    frames: Iterator[np.ndarray]
    num_frames: int
    fps: float
    height: int
    width: int


def collect_clips(clips: ClipsInput, label: str = "videos") -> list[EvalClip]:
    """Turn a folder/manifest path, a (N, T, H, W, 3) array, or a list of arrays or paths into EvalClips.

    Raises:
        DataError: the folder/manifest is missing, malformed or lists no video.
    """
    if isinstance(clips, (str, Path)):
        manifest = load_manifest(clips)
        return [EvalClip(name=e.relpath, entry=e, root=manifest.root) for e in manifest.entries]
    if isinstance(clips, np.ndarray):
        if clips.ndim != 5:
            raise DataError(f"{label}: expected clips as (N, T, H, W, 3), got an array of shape {clips.shape}")
        clips = list(clips)
    sources = []
    for i, clip in enumerate(clips):
        if isinstance(clip, (str, Path)):
            path = Path(clip).resolve()
            sources.append(EvalClip(name=str(clip), entry=ClipEntry(path=path, relpath=str(clip))))
        else:
            sources.append(EvalClip(name=f"{label}_{i:03d}", frames=np.asarray(clip)))
    if not sources:
        raise DataError(f"{label}: no clips given")
    return sources


def check_array(frames: np.ndarray, name: str) -> np.ndarray:
    """A (T, H, W, 3) clip as uint8: uint8 kept, float in [0, 1] rounded; DataError otherwise."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise DataError(f"{name}: expected a (T, H, W, 3) clip, got shape {frames.shape}")
    if frames.shape[0] == 0:
        raise DataError(f"{name}: empty (no frames)")
    if frames.dtype != np.uint8:
        if not np.issubdtype(frames.dtype, np.floating):
            raise DataError(f"{name}: expected uint8 or float values in [0, 1], got {frames.dtype}")
        if not np.isfinite(frames).all():
            raise DataError(f"{name}: the clip holds NaN or infinite values")
        frames = np.rint(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)
    return frames


def open_clip(source: EvalClip, *, max_frames: int | None = None) -> OpenClip:
    """Open a clip for reading frame by frame; DataError naming the clip and the reason."""
    if source.frames is not None:
        array = check_array(source.frames, source.name)[:max_frames]
        num, height, width = array.shape[:3]
        clip = OpenClip(iter(array), num, float(source.fps or DEFAULT_FPS), height, width)
    else:
        require_inside_root(source.entry)  # the same rule as data check and training
        hint = entry_fps_hint(source.entry) if source.entry is not None else None  # a manifest's "fps" of a .npy
        info, frames = stream_video(source.path, max_frames=max_frames, fps_hint=hint)
        clip = OpenClip(frames, info.num_frames, float(info.fps), info.height, info.width)
    if clip.height < 2 or clip.width < 2:
        raise DataError(f"{source.name}: frames of {clip.height}x{clip.width} pixels are too small")
    return clip


def too_short(num_frames: int, min_frames: int) -> str | None:
    """Why a clip of ``num_frames`` frames is skipped, or None."""
    if num_frames >= min_frames:
        return None
    why = " (motion smoothness interpolates a middle frame)" if min_frames == MIN_FRAMES else ""
    return f"too short: {num_frames} frame{'s' if num_frames != 1 else ''}, at least {min_frames} needed{why}"


def usable_clips(sources: list[EvalClip], label: str, *, max_frames: int | None, min_frames: int,
                 fps: float | None, skipped: list[dict[str, str]], strict: bool, progress: bool = False,
                 ) -> Iterator[tuple[int, EvalClip, OpenClip]]:
    """Yield (position, clip, opened clip) of the usable clips; record the others in ``skipped``.

    ``fps`` (when given) replaces every clip's own rate; ``progress`` shows a bar over the clips on stderr.
    """
    bar = tqdm(sources, desc=label, unit="clip", file=sys.stderr, disable=not progress, leave=False)
    for position, source in enumerate(bar):
        try:
            clip = open_clip(source, max_frames=max_frames)
            reason = too_short(clip.num_frames, min_frames)
        except DataError as exc:
            reason = str(exc)
            # read_video's messages start with the path; keep the reason only, the name is listed anyway
            prefix = f"{source.path}: " if source.path is not None else f"{source.name}: "
            reason = reason[len(prefix):] if reason.startswith(prefix) else reason
        if reason is not None:
            skipped.append({"set": label, "name": source.name, "reason": reason})
            logger.warning("%s %s: skipped (%s)", label, source.name, reason)
            continue
        if strict and any(s["set"] == label for s in skipped):
            continue  # --strict: only look for further bad files, score nothing
        if fps is not None:
            clip.fps = fps
        yield position, source, clip


def read_image(path: Path) -> np.ndarray:
    """A conditioning image: an image file, a .npy (H, W, 3) array, or a video's first frame."""
    if not path.is_file():
        raise DataError(f"{path}: missing conditioning image")
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        from PIL import Image

        try:
            with Image.open(path) as image:
                return np.asarray(image.convert("RGB"))
        except Exception as exc:  # PIL raises several types for corrupt files
            raise DataError(f"{path}: unreadable conditioning image: {exc}") from exc
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise DataError(f"{path}: unreadable conditioning image: {exc}") from exc
        if array.ndim == 4:  # a clip: its first frame
            array = array[0]
        if array.ndim != 3 or array.shape[-1] != 3:
            raise DataError(f"{path}: expected an (H, W, 3) image, got shape {array.shape}")
        return check_array(array[None], str(path))[0]
    return read_video(path, max_frames=1).frames[0]


class PartnerSet:
    """A ground-truth or conditioning set, matched to clips by position (arrays) or by name (files)."""

    def __init__(self, value: ClipsInput | None, label: str) -> None:
        self.index: dict[str, EvalClip] | None = None
        self.aligned: list[EvalClip] | None = None
        self.label = label
        self.unmatched_clips: list[str] = []  # clips that found no partner here (``match``)
        self._matched: set[int] = set()  # id() of the partners some clip found
        if value is None:
            return
        if isinstance(value, (str, Path)) and Path(value).is_dir() and not _has_videos(Path(value)):
            # a folder of images (conditioning frames)
            files = sorted(p for p in Path(value).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS + (".npy",))
            if not files:
                raise DataError(f"{value}: no images or videos found for {label}")
            self.index = _index_by_stem([EvalClip(name=p.name, entry=ClipEntry(path=p.resolve(), relpath=p.name))
                                         for p in files])
            return
        sources = collect_clips(value, label)
        if all(s.frames is not None for s in sources):
            self.aligned = sources
        else:
            self.index = _index_by_stem(sources)

    @property
    def given(self) -> bool:
        return self.aligned is not None or self.index is not None

    def partners(self) -> list[EvalClip]:
        """Every clip or image of the set, once."""
        if self.aligned is not None:
            return list(self.aligned)
        unique = {id(p): p for p in (self.index or {}).values()}
        return list(unique.values())

    def unmatched_partners(self) -> list[str]:
        """Names of the set's entries no clip was matched with (so far)."""
        return [p.name for p in self.partners() if id(p) not in self._matched]

    def match(self, source: EvalClip, position: int) -> EvalClip | None:
        """The partner of ``source``: the same position for arrays, else by manifest source or file stem (each
        call counted: ``unmatched_clips`` and ``unmatched_partners`` say what found nothing)."""
        partner = self._find(source, position)
        if partner is None:
            self.unmatched_clips.append(source.name)
        else:
            self._matched.add(id(partner))
        return partner

    def _find(self, source: EvalClip, position: int) -> EvalClip | None:
        if self.aligned is not None:
            return self.aligned[position] if position < len(self.aligned) else None
        if self.index is None:
            return None
        keys = []
        if source.entry is not None and source.entry.source:
            keys += [Path(source.entry.source).as_posix(), Path(source.entry.source).stem]
        if source.path is not None:
            keys.append(source.path.stem)
        for key in keys:
            if key in self.index:
                return self.index[key]
        return None


def conditioning_image(source: EvalClip, position: int, conditioning: PartnerSet) -> np.ndarray | None:
    """The clip's conditioning image: its partner in ``conditioning``, else a manifest key, else None."""
    partner = conditioning.match(source, position)
    if partner is not None:
        if partner.frames is not None:
            frames = check_array(partner.frames if partner.frames.ndim == 4 else partner.frames[None], partner.name)
            return frames[0]
        return read_image(partner.path)
    if source.entry is not None:
        for key in CONDITIONING_KEYS:
            value = source.entry.meta.get(key)
            if isinstance(value, str) and value:
                path = Path(value)
                if not path.is_absolute():  # manifest paths are relative to the manifest's folder
                    path = (source.root or source.entry.path.parent) / path
                return read_image(path)
    return None


def _index_by_stem(sources: list[EvalClip]) -> dict[str, EvalClip]:
    index: dict[str, EvalClip] = {}
    for source in sources:
        if source.path is not None:
            index.setdefault(source.path.stem, source)
            index.setdefault(Path(source.entry.relpath).as_posix(), source)
    return index


def _has_videos(folder: Path) -> bool:
    return any(p.suffix.lower() in VIDEO_EXTENSIONS for p in folder.iterdir()) or any(
        (folder / n).is_file() for n in FOLDER_MANIFEST_NAMES)
