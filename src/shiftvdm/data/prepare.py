"""`shiftvdm data prepare`: a raw dataset (DAVIS frame folders, folders of videos, a manifest) -> training clips.

Every source (an image-sequence folder or a video) is cut into windows of ``frames`` frames at ``fps``, starting
every ``stride`` frames of that timeline (default: non-overlapping), resized to cover ``size`` and centre-cropped,
and written as ``clips/<source>_sNNNNN.<format>`` (NNNNN: the window's first frame on the ``fps`` timeline).
``train.jsonl`` / ``val.jsonl`` list them, split by source so no source is in both.

Resumable: the settings are recorded in ``prepare.json`` (a rerun with other settings is refused by name);
each clip is written atomically, and each finished source leaves a record under ``.prepare/`` so that a rerun
neither decodes it again nor writes a clip twice. The manifests are written last, from the records.
"""

from __future__ import annotations

import concurrent.futures
import csv
import hashlib
import io
import json
import logging
import math
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from shiftvdm.data.manifest import load_manifest, require_inside_root, write_manifest
from shiftvdm.data.video_io import (
    CLIP_EXTENSIONS,
    VIDEO_EXTENSIONS,
    num_resampled_frames,
    resize_center_crop,
    stream_video,
    write_video,
)
from shiftvdm.errors import DataError
from shiftvdm.utils.checkpoint import clean_stale_temps, write_text

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
# DAVIS-2017 ships frames only; its videos were shot at 24 fps (the authors' clips are 24 frames = 1 s).
DAVIS_FPS = 24.0
# DAVIS-2017's JPEGImages resolutions, in the order they are looked for.
DAVIS_RESOLUTIONS = ("480p", "Full-Resolution")
SETTINGS_FILE = "prepare.json"
RECORDS_DIR = ".prepare"
# What prepare.json must agree on for a rerun to continue (the clips depend on these; the split does not).
CLIP_SETTINGS = ("src", "frames", "fps", "stride", "source_fps", "size", "format")


@dataclass
class PrepareSettings:
    """What ``shiftvdm data prepare`` was asked to do (recorded in ``prepare.json``)."""

    src: str
    frames: int
    fps: float | None = None  # None: each source's own rate
    stride: int | None = None  # None: ``frames`` (non-overlapping)
    source_fps: float = DAVIS_FPS  # rate of image-sequence folders
    size: tuple[int, int] | None = None  # (height, width); None: keep each source's size
    format: str = "mp4"
    captions: str | None = None
    val_fraction: float = 0.0
    seed: int = 0
    strict: bool = False

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise DataError(f"--frames must be >= 1, got {self.frames}")
        if self.stride is not None and self.stride < 1:
            raise DataError(f"--stride must be >= 1, got {self.stride}")
        for name in ("fps", "source_fps"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise DataError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise DataError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.format not in ("mp4", "npy"):
            raise DataError(f"--format must be mp4 or npy, got {self.format!r}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise DataError(f"--size must be HxW with positive sides, got {self.size}")

    @property
    def window_stride(self) -> int:
        return self.stride if self.stride is not None else self.frames


def parse_size(text: str) -> tuple[int, int]:
    """``"320x576"`` -> (320, 576) (height × width)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise DataError(f"--size: expected HxW with positive integers (e.g. 320x576), got {text!r}")
    return int(match[1]), int(match[2])


def natural_key(name: str) -> list:
    """Sort key putting ``frame2`` before ``frame10`` (digit runs compared as numbers)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in re.split(r"(\d+)", name) if part]


@dataclass
class Source:
    """One sequence to cut into windows: a folder of frames or a video file."""

    name: str  # unique, a relative path without extension ("bear", "sub/clip"); clips are named after it
    path: Path
    frames: list[Path] | None = None  # image files in order (a frame folder); None for a video
    prompt: str | None = None  # from a source manifest
    fps_hint: float | None = None  # a .npy source's rate (manifest "fps")


@dataclass
class SourceRecord:
    """What preparing one source produced; written under ``.prepare/`` when the source is finished."""

    name: str
    clips: list[dict] = field(default_factory=list)  # {"path", "start"} relative to the output folder
    fps: float | None = None
    skipped: str | None = None  # why the whole source gave no clip ("short: ...", "unreadable: ...")
    bad: list[str] = field(default_factory=list)  # unreadable frames, each "path: reason"
    dropped_windows: int = 0  # windows left out because a frame in them was unreadable


# ---------------------------------------------------------------------------------------------------- discovery

def _images_in(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir()),
                  key=lambda p: natural_key(p.name))


def _davis_images_root(src: Path) -> Path | None:
    for resolution in DAVIS_RESOLUTIONS:
        if (src / "JPEGImages" / resolution).is_dir():
            return src / "JPEGImages" / resolution
    return None


def discover_sources(src: str | Path, exclude: Path | None = None) -> list[Source]:
    """The sequences under ``src``: a DAVIS root (``JPEGImages/480p``, else ``Full-Resolution``; ``Annotations``
    ignored), any folder of image-sequence folders and/or videos (recursive), or a manifest file.

    Raises:
        DataError: ``src`` missing, or holding no sequence.
    """
    src = Path(src)
    if not src.exists():
        raise DataError(f"{src}: not found (expected a DAVIS root, a folder of frame folders or videos, or a manifest)")
    if src.is_file() and src.suffix.lower() in CLIP_EXTENSIONS:
        return [Source(name=src.stem, path=src)]
    if src.is_file():
        manifest = load_manifest(src)
        sources = []
        for entry in manifest.entries:
            require_inside_root(entry)
            name = entry.path.relative_to(manifest.root).with_suffix("").as_posix()
            fps = entry.meta.get("fps")
            sources.append(Source(name=name, path=entry.path, prompt=entry.prompt,
                                  fps_hint=float(fps) if isinstance(fps, (int, float)) else None))
        return sources
    root = _davis_images_root(src) or src
    sources: list[Source] = []
    skip = exclude.resolve() if exclude is not None else None

    def wanted(path: Path) -> bool:  # DAVIS masks and our own output folder are not sources
        return "Annotations" not in path.relative_to(root).parts and (
            skip is None or not path.resolve().is_relative_to(skip))

    folders = sorted((p for p in root.rglob("*") if p.is_dir() and wanted(p)), key=lambda p: natural_key(p.as_posix()))
    for folder in [root, *folders]:
        images = _images_in(folder)
        if images:
            name = folder.relative_to(root).as_posix() if folder != root else root.name
            sources.append(Source(name=name, path=folder, frames=images))
    videos = sorted((p for p in root.rglob("*") if p.suffix.lower() in CLIP_EXTENSIONS and p.is_file() and wanted(p)),
                    key=lambda p: natural_key(p.as_posix()))
    for video in videos:
        sources.append(Source(name=video.relative_to(root).with_suffix("").as_posix(), path=video))
    if not sources:
        raise DataError(f"{src}: no image-sequence folders ({', '.join(IMAGE_EXTENSIONS)}) or videos "
                        f"({', '.join(VIDEO_EXTENSIONS)}) found")
    seen: dict[str, Source] = {}
    for source in sources:
        if source.name in seen:
            raise DataError(f"{source.path} and {seen[source.name].path}: two sources named {source.name!r} "
                            "(a video beside a frame folder of the same name); rename one")
        seen[source.name] = source
    return sources


# ---------------------------------------------------------------------------------------------------- captions

def load_captions(path: str | Path) -> dict[str, str]:
    """Captions keyed by file name: WISA's ``[{"video_name", "captions"}]`` JSON, or a jsonl/json/csv with
    ``path`` (or ``video_name``) and ``prompt`` (or ``caption`` / ``captions``). A list of captions keeps
    the first.

    Raises:
        DataError: naming the file and entry when unreadable or without a name or caption.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the captions file ({exc})") from exc
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            records = [(f"line {i}", json.loads(line)) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
        elif suffix == ".json":
            data = json.loads(text)
            data = data.get("clips", data) if isinstance(data, dict) else data
            if not isinstance(data, list):
                raise DataError(f"{path}: expected a list of {{\"video_name\", \"captions\"}} objects")
            records = [(f"entry {i}", r) for i, r in enumerate(data)]
        elif suffix == ".csv":
            reader = csv.DictReader(io.StringIO(text, newline=""))
            records = [(f"line {reader.line_num}", {k.strip(): v for k, v in row.items() if k}) for row in reader]
        else:
            raise DataError(f"{path}: unknown captions file type {suffix!r}: expected .json (WISA), .jsonl or .csv")
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from exc
    captions: dict[str, str] = {}
    for where, record in records:
        if not isinstance(record, dict):
            raise DataError(f"{path} {where}: expected an object, got {type(record).__name__}")
        name = next((record[k] for k in ("video_name", "path", "name") if record.get(k)), None)
        caption = next((record[k] for k in ("prompt", "caption", "captions") if record.get(k)), None)
        if isinstance(caption, list):
            caption = caption[0] if caption else None
        if not isinstance(name, str) or not isinstance(caption, str) or not caption.strip():
            raise DataError(f"{path} {where}: needs a file name (video_name or path) and a caption "
                            "(captions, caption or prompt)")
        captions[Path(name).name] = caption.strip()
    return captions


def match_captions(sources: list[Source], captions: dict[str, str]) -> tuple[dict[str, str], list[str], list[str]]:
    """Join captions to sources by file name (with or without extension).

    Returns:
        (caption per source name, source names without a caption, caption names without a source).
    """
    by_stem: dict[str, str] = {}
    for key in captions:
        by_stem.setdefault(Path(key).stem, key)
    joined, used, missing = {}, set(), []
    for source in sources:
        file_name = source.path.name
        key = file_name if file_name in captions else by_stem.get(Path(file_name).stem if source.frames is None
                                                                   else file_name)
        if key is None:
            missing.append(source.name)
        else:
            joined[source.name] = captions[key]
            used.add(key)
    return joined, missing, sorted(k for k in captions if k not in used)


# ---------------------------------------------------------------------------------------------------- windows

def window_starts(num_frames: int, frames: int, stride: int) -> list[int]:
    """Starts of the ``frames``-long windows every ``stride`` frames of a ``num_frames``-frame timeline."""
    return list(range(0, num_frames - frames + 1, stride)) if num_frames >= frames else []


def _timeline(total: int, src_fps: float, fps: float | None) -> np.ndarray:
    """Source frame index of each frame at ``fps`` (``resample_frames``'s rule: the frame on screen)."""
    step = 1.0 if fps is None else src_fps / fps
    count = num_resampled_frames(total, src_fps, fps)
    return np.minimum(np.floor(np.arange(count) * step + 1e-6).astype(np.int64), total - 1)


def _read_image(path: Path) -> np.ndarray:
    import PIL.Image

    try:
        with PIL.Image.open(path) as handle:
            return np.array(handle.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: unreadable frame ({exc})") from exc


class _Frames:
    """A source's frames, read in order one at a time: (length, fps, iterator of uint8 (H, W, 3) or DataError)."""

    def __init__(self, source: Source, source_fps: float) -> None:
        self.source = source
        if source.frames is not None:
            self.total, self.fps = len(source.frames), source_fps
            self._iter: Iterator = (self._image(p) for p in source.frames)
        else:
            info, frames = stream_video(source.path, fps_hint=source.fps_hint)
            self.total, self.fps, self._iter = info.num_frames, info.fps, frames

    @staticmethod
    def _image(path: Path) -> np.ndarray | DataError:
        try:
            return _read_image(path)
        except DataError as exc:
            return exc

    def __iter__(self) -> Iterator[np.ndarray | DataError]:
        return self._iter


def _clip_name(source: Source, start: int, fmt: str) -> str:
    return f"clips/{source.name}_s{start:05d}.{fmt}"


def prepare_source(source: Source, settings: PrepareSettings, out: Path) -> SourceRecord:
    """Cut one source into its windows and write the missing clips (existing ones are complete: atomic writes)."""
    record = SourceRecord(name=source.name)
    try:
        frames = _Frames(source, settings.source_fps)
    except DataError as exc:
        if settings.strict:
            raise
        record.skipped = f"unreadable: {exc}"
        return record
    timeline = _timeline(frames.total, frames.fps, settings.fps)
    record.fps = float(settings.fps or frames.fps)
    starts = window_starts(len(timeline), settings.frames, settings.window_stride)
    if not starts:
        record.skipped = (f"short: {len(timeline)} frames at {record.fps:g} fps < --frames {settings.frames}")
        return record
    todo = {s for s in starts if not (out / _clip_name(source, s, settings.format)).is_file()}
    needed = set(int(i) for s in todo for i in timeline[s:s + settings.frames])
    last_needed = max(needed) if needed else -1
    cache: dict[int, np.ndarray | DataError] = {}  # source frames still needed by a window ahead
    ordered = sorted(todo)
    next_start = 0
    shape = None
    try:
        for index, picture in enumerate(frames):
            if index > last_needed:
                break
            if index not in needed:
                continue
            if isinstance(picture, np.ndarray):
                if settings.size is not None:
                    picture = resize_center_crop(picture[None], *settings.size)[0]
                if shape is None:
                    shape = picture.shape
                elif picture.shape != shape:
                    picture = DataError(f"{source.frames[index] if source.frames else source.path}: frame of size "
                                        f"{picture.shape[1]}x{picture.shape[0]}, the sequence's first is "
                                        f"{shape[1]}x{shape[0]} (give --size to resize every frame)")
            if isinstance(picture, DataError):
                if settings.strict:
                    raise picture
                record.bad.append(str(picture))
            cache[index] = picture
            # write every window whose last frame has now been read
            while next_start < len(ordered) and timeline[ordered[next_start] + settings.frames - 1] <= index:
                start = ordered[next_start]
                window = [cache[int(i)] for i in timeline[start:start + settings.frames]]
                if any(isinstance(w, DataError) for w in window):
                    record.dropped_windows += 1
                else:
                    write_video(out / _clip_name(source, start, settings.format), np.stack(window), record.fps)
                next_start += 1
                keep_from = timeline[ordered[next_start]] if next_start < len(ordered) else index + 1
                for old in [k for k in cache if k < keep_from]:
                    del cache[old]
    except DataError as exc:  # a video that fails half-way
        if settings.strict:
            raise
        record.bad.append(str(exc))
    for start in starts:
        name = _clip_name(source, start, settings.format)
        if (out / name).is_file():
            record.clips.append({"path": name, "start": start})
    if not record.clips and record.skipped is None:
        record.skipped = f"unreadable: {record.bad[0] if record.bad else 'no window could be read'}"
    return record


# ---------------------------------------------------------------------------------------------------- the run

def _record_path(out: Path, name: str) -> Path:
    return out / RECORDS_DIR / f"{hashlib.sha256(name.encode()).hexdigest()[:24]}.json"


def _check_settings(out: Path, settings: PrepareSettings) -> None:
    """Refuse to continue a folder prepared with other clip settings, naming each; record them otherwise."""
    path = out / SETTINGS_FILE
    mine = {k: v for k, v in asdict(settings).items() if k in CLIP_SETTINGS}
    mine["size"] = list(mine["size"]) if mine["size"] is not None else None
    if path.is_file():
        try:
            theirs = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: unreadable ({exc}); it records the settings of the clips in {out}") from exc
        changed = [f"{k}: {theirs.get(k)!r} then, {mine[k]!r} now" for k in CLIP_SETTINGS if theirs.get(k) != mine[k]]
        if changed:
            raise DataError(f"{out} was prepared with other settings ({'; '.join(changed)}); prepare into a new "
                            "--out folder, or repeat the original settings to continue")
    elif out.exists() and any(p.name != RECORDS_DIR for p in out.iterdir()):
        raise DataError(f"{out}: exists and is not a `shiftvdm data prepare` output (no {SETTINGS_FILE}); "
                        "give a new or empty --out folder")
    out.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(mine, indent=1) + "\n")


def split_sources(names: list[str], val_fraction: float, seed: int) -> set[str]:
    """The sources held out for validation: a seeded shuffle of the sorted names, the first
    ``round(val_fraction × n)`` (at least one when ``val_fraction`` > 0 and there are two or more)."""
    if val_fraction <= 0 or len(names) < 2:
        return set()
    order = sorted(names)
    random.Random(seed).shuffle(order)
    count = min(len(order) - 1, max(1, round(val_fraction * len(order))))
    return set(order[:count])


@dataclass
class PrepareSummary:
    sequences: int
    clips_train: int
    clips_val: int
    frames: int
    skipped: list[str]  # "source: reason"
    bad: list[str]  # unreadable frames / videos
    dropped_windows: int
    uncaptioned: list[str] = field(default_factory=list)
    unmatched_captions: list[str] = field(default_factory=list)
    reused: int = 0  # sources finished by an earlier run

    def lines(self) -> list[str]:
        def few(items: list[str]) -> str:
            return ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")

        out = [f"sequences: {self.sequences} ({self.sequences - len(self.skipped)} cut into clips, "
               f"{len(self.skipped)} skipped; {self.reused} finished by an earlier run)",
               f"clips: {self.clips_train + self.clips_val} (train {self.clips_train}, val {self.clips_val}); "
               f"frames: {self.frames}",
               f"skipped: {len(self.skipped)} sequences, {len(self.bad)} unreadable frames or videos, "
               f"{self.dropped_windows} windows holding one"]
        out += [f"  skipped {s}" for s in self.skipped]
        out += [f"  unreadable {b}" for b in self.bad]
        if self.uncaptioned:
            out.append(f"captions: no caption for {len(self.uncaptioned)} sources: {few(self.uncaptioned)}")
        if self.unmatched_captions:
            out.append(f"captions: {len(self.unmatched_captions)} captions match no source: "
                       f"{few(self.unmatched_captions)}")
        return out


def prepare_dataset(settings: PrepareSettings, out: str | Path, *, workers: int = 1,
                    progress: bool = True, on_source: Callable[[SourceRecord], None] | None = None) -> PrepareSummary:
    """Run ``data prepare``: discover, cut and write clips (``workers`` sources at a time), then the manifests.

    Raises:
        DataError: bad arguments or sources; with ``settings.strict`` the first unreadable frame or video.
    """
    out = Path(out)
    sources = discover_sources(settings.src, exclude=out)
    captions, uncaptioned, unmatched = {}, [], []
    if settings.captions:
        captions, uncaptioned, unmatched = match_captions(sources, load_captions(settings.captions))
    _check_settings(out, settings)
    (out / RECORDS_DIR).mkdir(exist_ok=True)
    for folder in [out, out / RECORDS_DIR, out / "clips", *(p for p in (out / "clips").rglob("*") if p.is_dir())]:
        clean_stale_temps(folder)  # half-written clips of a stopped run (ours: the folder is this command's)
    records: dict[str, SourceRecord] = {}
    todo = []
    for source in sources:
        path = _record_path(out, source.name)
        if path.is_file():
            try:
                record = SourceRecord(**json.loads(path.read_text(encoding="utf-8")))
                if record.name == source.name and all((out / c["path"]).is_file() for c in record.clips):
                    records[source.name] = record
                    continue
            except (OSError, ValueError, TypeError):
                pass  # a damaged record: prepare the source again (its finished clips are kept)
        todo.append(source)
    reused = len(records)

    def run(source: Source) -> SourceRecord:
        record = prepare_source(source, settings, out)
        text = json.dumps(asdict(record))
        write_text(_record_path(out, source.name), text)
        return record

    from tqdm.auto import tqdm

    bar = tqdm(total=len(sources), initial=reused, desc="prepare", unit="seq", disable=not progress or None)
    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:  # decode, resize, encode release the GIL
        futures = [pool.submit(run, s) for s in todo]
        try:
            for future in concurrent.futures.as_completed(futures):
                record = future.result()
                records[record.name] = record
                if on_source is not None:
                    on_source(record)
                bar.update(1)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        finally:
            bar.close()

    prompts = {s.name: s.prompt for s in sources}
    prompts.update(captions)
    val = split_sources([n for n, r in records.items() if r.clips], settings.val_fraction, settings.seed)
    train_rows, val_rows = [], []
    for source in sources:  # manifest order: discovery order (natural sort), then start
        record = records[source.name]
        for clip in record.clips:
            row = {"path": clip["path"], "source": source.name}
            if prompts.get(source.name):
                row["prompt"] = prompts[source.name]
            row["fps"] = record.fps
            row["start"] = clip["start"]
            (val_rows if source.name in val else train_rows).append(row)
    write_manifest(out / "train.jsonl", train_rows)
    if settings.val_fraction > 0:
        write_manifest(out / "val.jsonl", val_rows)
    return PrepareSummary(
        sequences=len(sources), clips_train=len(train_rows), clips_val=len(val_rows),
        frames=(len(train_rows) + len(val_rows)) * settings.frames,
        skipped=[f"{n}: {records[n].skipped}" for n in records if records[n].skipped],
        bad=[b for s in sources for b in records[s.name].bad], dropped_windows=sum(r.dropped_windows
                                                                                    for r in records.values()),
        uncaptioned=uncaptioned if settings.captions else [], unmatched_captions=unmatched, reused=reused)
