"""The evaluation suite: every metric of ``shiftvdm.eval`` on a set of clips, aggregated into one result.

``evaluate_videos`` takes clips as arrays or as a folder/manifest, reads them one at a time (a long HD clip
is never held twice, and flow is reduced pair by pair), lists the files it cannot use with the reason,
and returns an ``EvalResult``: set-level values in ``aggregate``, per-clip values in ``per_video``, and
``format_table()`` / ``to_json()`` for people and programs. Training validation, the demo, the report and
``shiftvdm eval`` all go through it.

Metric groups (``metrics=``): "dynamic_degree", "motion_score", "smoothness", "flicker", "frechet_motion"
and "appearance" (all by default), plus "sprites" when asked for (synthetic clips with bright sprites).
Set-level values: dynamic_degree is the fraction of dynamic clips; Fréchet distances compare the whole
set with ``reference``; every other value is the mean over the clips that have it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shiftvdm.data.manifest import FOLDER_MANIFEST_NAMES, ClipEntry, load_manifest, require_inside_root
from shiftvdm.data.video_io import DEFAULT_FPS, VIDEO_EXTENSIONS, read_video
from shiftvdm.errors import DataError
from shiftvdm.eval.appearance import (
    clip_fidelity,
    first_frame_fidelity,
    image_statistics_frechet,
    video_image_statistics,
)
from shiftvdm.eval.dynamic_degree import dynamic_degree, sampling_interval, vbench_status, video_dynamic_degree
from shiftvdm.eval.flicker import temporal_flicker
from shiftvdm.eval.frechet_motion import FrechetMotionResult, frechet_motion_from_chunks, track_chunks
from shiftvdm.eval.motion_score import flow_pair_statistics, motion_score_from_statistics
from shiftvdm.eval.smoothness import motion_smoothness
from shiftvdm.eval.sprites import sprite_motion_metrics
from shiftvdm.motion.base import FlowEstimator, PointTracker, get_flow_estimator, get_tracker
from shiftvdm.utils.checkpoint import atomic_write

logger = logging.getLogger(__name__)

METRIC_GROUPS = ("dynamic_degree", "motion_score", "smoothness", "flicker", "frechet_motion", "appearance",
                 "sprites")
DEFAULT_METRICS = METRIC_GROUPS[:-1]
# Motion smoothness interpolates a middle frame and acceleration needs three positions.
MIN_FRAMES = 3
# Manifest keys that may name a clip's conditioning image (relative to the manifest's folder).
CONDITIONING_KEYS = ("conditioning", "conditioning_image", "image", "first_frame")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

# Display rows: aggregate key -> (label, description). Order is the table's order.
METRIC_ROWS: dict[str, tuple[str, str]] = {
    "dynamic_degree": ("dynamic degree", "fraction of dynamic clips, VBench rule"),
    "motion_score": ("motion score [px/frame]", "mean flow magnitude, native size"),
    "motion_score_256": ("motion score @256 [px/frame]", "same, flow rescaled to a 256-px short side"),
    "motion_smoothness": ("motion smoothness", "VBench (255-MAE)/255; flow-warp stand-in for AMT"),
    "temporal_flicker": ("temporal flicker", "VBench (255-MAE)/255 of consecutive frames"),
    "frechet_motion_velocity": ("Fréchet motion: velocity", "FVMD-style, vs reference"),
    "frechet_motion_acceleration": ("Fréchet motion: acceleration", "FVMD-style (true 2nd difference)"),
    "frechet_motion_combined": ("Fréchet motion: combined", "FVMD-style, velocity + acceleration"),
    "image_stats_frechet": ("Fréchet image statistics", "colour/contrast/sharpness stats vs reference"),
    "first_frame_psnr": ("first frame PSNR [dB]", "vs conditioning image"),
    "first_frame_ssim": ("first frame SSIM", "vs conditioning image"),
    "gt_psnr": ("PSNR vs ground truth [dB]", "per-frame mean, matched clips"),
    "gt_ssim": ("SSIM vs ground truth", "per-frame mean, matched clips"),
}
SPRITE_ROWS: dict[str, str] = {
    "speed": "mean centroid step [px/frame], clips never lost",
    "displacement": "|last - first centroid| [px]",
    "static_fraction": "share of clips displaced < 2 px",
    "lost_fraction": "share of clips losing the sprite in a frame",
    "frames_tracked": "share of frames 1..T-1 with a sprite",
    "mass_speed": "mass-weighted centroid step [px/frame]",
    "mass_displacement": "mass-weighted displacement [px]",
    "mass_ratio": "sprite mass in later frames / frame 0",
    "area": "sprite pixels per frame",
    "max_intensity": "mean per-frame max gray (0-1)",
    "bg_flicker": "mean |gray change| on background (0-1)",
    "speed_w1": "W1 of per-frame speeds vs reference [px/frame]",
}


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------

@dataclass
class ClipSource:
    """A clip to score: an array in memory or a file (with its manifest entry and the manifest's folder)."""

    name: str
    frames: np.ndarray | None = None
    entry: ClipEntry | None = None
    fps: float | None = None
    root: Path | None = None

    @property
    def path(self) -> Path | None:
        return None if self.entry is None else self.entry.path


ClipsInput = str | Path | np.ndarray | Sequence[np.ndarray] | Sequence[str | Path]


def collect_clips(clips: ClipsInput, label: str = "videos") -> list[ClipSource]:
    """Turn a folder/manifest path, a (N, T, H, W, 3) array, or a list of arrays or paths into ClipSources.

    Raises:
        DataError: the folder/manifest is missing, malformed or lists no video.
    """
    if isinstance(clips, (str, Path)):
        manifest = load_manifest(clips)
        return [ClipSource(name=e.relpath, entry=e, root=manifest.root) for e in manifest.entries]
    if isinstance(clips, np.ndarray):
        if clips.ndim != 5:
            raise DataError(f"{label}: expected clips as (N, T, H, W, 3), got an array of shape {clips.shape}")
        clips = list(clips)
    sources = []
    for i, clip in enumerate(clips):
        if isinstance(clip, (str, Path)):
            path = Path(clip).resolve()
            sources.append(ClipSource(name=str(clip), entry=ClipEntry(path=path, relpath=str(clip))))
        else:
            sources.append(ClipSource(name=f"{label}_{i:03d}", frames=np.asarray(clip)))
    if not sources:
        raise DataError(f"{label}: no clips given")
    return sources


def _check_array(frames: np.ndarray, name: str) -> np.ndarray:
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


def load_clip(source: ClipSource, *, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Frames (uint8 (T, H, W, 3)) and fps of a ClipSource; DataError naming the clip and the reason."""
    if source.frames is not None:
        frames = _check_array(source.frames, source.name)
        fps = source.fps or DEFAULT_FPS
    else:
        require_inside_root(source.entry)  # the same rule as data check and training
        video = read_video(source.path, max_frames=max_frames)
        frames, fps = video.frames, video.fps
    if max_frames is not None:
        frames = frames[:max_frames]
    if frames.shape[1] < 2 or frames.shape[2] < 2:
        raise DataError(f"{source.name}: frames of {frames.shape[1]}x{frames.shape[2]} pixels are too small")
    return frames, float(fps)


def _read_image(path: Path) -> np.ndarray:
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
        return _check_array(array[None], str(path))[0]
    return read_video(path, max_frames=1).frames[0]


def _index_by_stem(sources: list[ClipSource]) -> dict[str, ClipSource]:
    index: dict[str, ClipSource] = {}
    for source in sources:
        if source.path is not None:
            index.setdefault(source.path.stem, source)
            index.setdefault(Path(source.entry.relpath).as_posix(), source)
    return index


def _match(source: ClipSource, position: int, index: dict[str, ClipSource] | None,
           aligned: list[ClipSource] | None) -> ClipSource | None:
    """The partner clip of ``source``: the same position for arrays, else by manifest source or file stem."""
    if aligned is not None:
        return aligned[position] if position < len(aligned) else None
    if index is None:
        return None
    keys = []
    if source.entry is not None and source.entry.source:
        keys += [Path(source.entry.source).as_posix(), Path(source.entry.source).stem]
    if source.path is not None:
        keys.append(source.path.stem)
    for key in keys:
        if key in index:
            return index[key]
    return None


def _partner_set(value: ClipsInput | None, label: str) -> tuple[dict[str, ClipSource] | None, list[ClipSource] | None]:
    """Index a ground-truth/conditioning set: by name when it comes from files, by position for arrays."""
    if value is None:
        return None, None
    if isinstance(value, (str, Path)) and Path(value).is_dir() and not _has_videos(Path(value)):
        # a folder of images (conditioning frames)
        files = sorted(p for p in Path(value).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS + (".npy",))
        if not files:
            raise DataError(f"{value}: no images or videos found for {label}")
        sources = [ClipSource(name=p.name, entry=ClipEntry(path=p.resolve(), relpath=p.name)) for p in files]
        return _index_by_stem(sources), None
    sources = collect_clips(value, label)
    if all(s.frames is not None for s in sources):
        return None, sources
    return _index_by_stem(sources), None


def _has_videos(folder: Path) -> bool:
    return any(p.suffix.lower() in VIDEO_EXTENSIONS for p in folder.iterdir()) or any(
        (folder / n).is_file() for n in FOLDER_MANIFEST_NAMES)


# ---------------------------------------------------------------------------------------------
# result
# ---------------------------------------------------------------------------------------------

def _json_value(value: Any) -> Any:
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _format_value(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


@dataclass
class EvalResult:
    """What ``evaluate_videos`` measured.

    Attributes:
        aggregate: metric name -> set-level value (see ``METRIC_ROWS`` for names and meaning).
        per_video: one dict per scored clip: name, path, frames, height, width, fps and its metric values.
        skipped: clips that could not be used: {"set", "name", "reason"}.
        notes: caveats to read the numbers with (estimators used, mismatched sets, small sets...).
        counts: metric name -> number of clips (or windows/frames for Fréchet values) behind the value.
        settings: the options of the run.
    """

    aggregate: dict[str, float]
    per_video: list[dict[str, Any]]
    skipped: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (non-finite values become null)."""
        return _json_value({"aggregate": self.aggregate, "per_video": self.per_video, "skipped": self.skipped,
                            "notes": self.notes, "counts": self.counts, "settings": self.settings})

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, ensure_ascii=False)

    def save_json(self, path: str | Path) -> Path:
        """Write ``to_json()`` atomically to ``path``."""
        text = self.to_json() + "\n"
        return atomic_write(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def format_table(self) -> str:
        """A readable aligned table: one row per metric with its set-level value, then skipped files and notes."""
        rows = [("metric", "value", "n", "what")]
        for key, (label, what) in METRIC_ROWS.items():
            if key in self.aggregate:
                if key == "dynamic_degree" and self.settings.get("dynamic_vbench_exact"):
                    what = "fraction of dynamic clips, VBench-exact (RAFT, 20 iterations)"
                elif key == "dynamic_degree":
                    what = f"{what} (stand-in: VBench uses RAFT; this run used {str(self.settings.get('flow', '?')).upper()})"
                rows.append((label, _format_value(self.aggregate[key]), self.counts.get(key, ""), what))
        for key, what in SPRITE_ROWS.items():
            full = f"sprite_{key}"
            if full in self.aggregate:
                rows.append((f"sprite {key.replace('_', ' ')}", _format_value(self.aggregate[full]),
                             self.counts.get(full, ""), what))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}".rstrip() for r in rows]
        lines.insert(1, "-" * max(len(line) for line in lines))
        scored = len(self.per_video)
        header = (f"{scored} clip{'s' if scored != 1 else ''} scored"
                  f"{f', {len(self.skipped)} skipped' if self.skipped else ''}"
                  f" (flow: {self.settings.get('flow', '?')}, tracker: {self.settings.get('tracker', '?')})")
        out = [header, *lines]
        if self.skipped:
            out += ["", "skipped:"] + [f"  [{s['set']}] {s['name']}: {s['reason']}" for s in self.skipped]
        if self.notes:
            out += ["", "notes:"] + [f"  - {note}" for note in self.notes]
        return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# the suite
# ---------------------------------------------------------------------------------------------

@dataclass
class _SetFeatures:
    """What the set-level metrics need from each clip, kept after its frames are dropped."""

    chunks: list[list[np.ndarray]] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    image_stats: list[np.ndarray] = field(default_factory=list)
    sprite_clips: list[np.ndarray] = field(default_factory=list)


def _resolve_metrics(metrics: Iterable[str] | None, sprites: bool) -> set[str]:
    chosen = set(DEFAULT_METRICS if metrics is None else metrics)
    unknown = chosen - set(METRIC_GROUPS)
    if unknown:
        raise DataError(f"unknown metric group(s) {sorted(unknown)}; expected some of {list(METRIC_GROUPS)}")
    if sprites:
        chosen.add("sprites")
    return chosen


def _too_short(frames: np.ndarray, min_frames: int) -> str | None:
    if len(frames) >= min_frames:
        return None
    why = " (motion smoothness interpolates a middle frame)" if min_frames == MIN_FRAMES else ""
    return f"too short: {len(frames)} frame{'s' if len(frames) != 1 else ''}, at least {min_frames} needed{why}"


def _conditioning_for(source: ClipSource, position: int, index: dict[str, ClipSource] | None,
                      aligned: list[ClipSource] | None) -> np.ndarray | None:
    partner = _match(source, position, index, aligned)
    if partner is not None:
        if partner.frames is not None:
            frames = _check_array(partner.frames if partner.frames.ndim == 4 else partner.frames[None], partner.name)
            return frames[0]
        return _read_image(partner.path)
    if source.entry is not None:
        for key in CONDITIONING_KEYS:
            value = source.entry.meta.get(key)
            if isinstance(value, str) and value:
                path = Path(value)
                if not path.is_absolute():  # manifest paths are relative to the manifest's folder
                    path = (source.root or source.entry.path.parent) / path
                return _read_image(path)
    return None


def _score_clip(frames: np.ndarray, fps: float, chosen: set[str], estimator: FlowEstimator) -> dict[str, Any]:
    """Per-clip metric values of one loaded clip."""
    row: dict[str, Any] = {}
    if chosen & {"motion_score", "dynamic_degree"}:
        # consecutive pairs are needed by the motion score, or by dynamic degree when it keeps every frame
        every_frame = "motion_score" in chosen or sampling_interval(fps) == 1
        stats = flow_pair_statistics(frames, estimator) if every_frame else None
        if "motion_score" in chosen:
            row.update(motion_score_from_statistics(stats))
        if "dynamic_degree" in chosen:
            verdict = video_dynamic_degree(frames, fps, estimator, consecutive=stats)
            row.update(dynamic=verdict.is_dynamic, dynamic_pairs_above=verdict.pairs_above,
                       dynamic_pairs=len(verdict.pair_scores), dynamic_required_pairs=verdict.required_pairs,
                       dynamic_threshold_px=verdict.threshold, dynamic_interval=verdict.interval,
                       dynamic_top5_mean_px=float(np.mean(verdict.pair_scores)) if verdict.pair_scores else None,
                       dynamic_vbench_exact=verdict.vbench_exact)
    if "smoothness" in chosen:
        # a middle frame needs two neighbours (only reachable with min_frames=2)
        row["motion_smoothness"] = motion_smoothness(frames, estimator) if len(frames) >= 3 else None
    if "flicker" in chosen:
        row["temporal_flicker"] = temporal_flicker(frames)
    return row


def _load_set(sources: list[ClipSource], label: str, *, max_frames: int | None, min_frames: int,
              fps: float | None, skipped: list[dict[str, str]], strict: bool):
    """Yield (position, source, frames, fps) of the usable clips; record the others in ``skipped``."""
    for position, source in enumerate(sources):
        try:
            frames, clip_fps = load_clip(source, max_frames=max_frames)
            reason = _too_short(frames, min_frames)
        except DataError as exc:
            reason = str(exc)
            # read_video's messages start with the path; keep the reason only, the name is listed anyway
            prefix = f"{source.path}: " if source.path is not None else f"{source.name}: "
            reason = reason[len(prefix):] if reason.startswith(prefix) else reason
            frames = None
        if reason is not None:
            skipped.append({"set": label, "name": source.name, "reason": reason})
            logger.warning("%s %s: skipped (%s)", label, source.name, reason)
            continue
        if strict and any(s["set"] == label for s in skipped):
            continue  # --strict: only look for further bad files, score nothing
        yield position, source, frames, (fps if fps is not None else clip_fps)


def _range(values: list[int]) -> str:
    return f"{min(values)}" if min(values) == max(values) else f"{min(values)}–{max(values)}"


def _sizes(sizes: set[tuple[int, int]]) -> str:
    return ", ".join(f"{h}x{w}" for h, w in sorted(sizes)[:4]) + (" ..." if len(sizes) > 4 else "")


def _mismatch_notes(ours: _SetFeatures, ref: _SetFeatures) -> list[str]:
    notes = []
    sizes_a, sizes_b = set(ours.sizes), set(ref.sizes)
    if not sizes_a & sizes_b:
        notes.append(f"reference mismatch: no frame size in common (videos {_sizes(sizes_a)}; reference "
                     f"{_sizes(sizes_b)}). Fréchet values compare tracks rescaled to 256x256 and image "
                     "statistics on 64x64 thumbnails, so they are computable, but they also measure the "
                     "difference in framing and resolution")
    if max(ours.lengths) < min(ref.lengths) or max(ref.lengths) < min(ours.lengths):
        notes.append(f"reference mismatch: clip lengths do not overlap (videos {_range(ours.lengths)} frames; "
                     f"reference {_range(ref.lengths)} frames); motion windows are cut to the shorter length")
    return notes


def _reference_set(sources: list[ClipSource], *, need_tracks: bool, need_stats: bool, need_sprites: bool,
                   tracker: PointTracker, max_frames: int | None, min_frames: int,
                   skipped: list[dict[str, str]], strict: bool) -> _SetFeatures:
    """The reference clips' features: point-track chunks, image statistics and/or the frames themselves."""
    ref = _SetFeatures()
    for _, _source, frames, _ in _load_set(sources, "reference", max_frames=max_frames, min_frames=min_frames,
                                          fps=None, skipped=skipped, strict=strict):
        if need_tracks:
            ref.chunks.append(track_chunks(frames, tracker))
        if need_stats:
            ref.image_stats.append(video_image_statistics(frames))
        if need_sprites:
            ref.sprite_clips.append(frames)
        ref.lengths.append(int(frames.shape[0]))
        ref.sizes.append((int(frames.shape[1]), int(frames.shape[2])))
    return ref


@dataclass
class ReferenceFeatures:
    """A reference set read and tracked once, for scoring several sets of clips against it.

    ``evaluate_videos(reference=...)`` accepts it in place of the clips; it must have been prepared with
    the same tracker, ``max_frames`` and ``min_frames`` and with every metric group that call needs.
    """

    features: _SetFeatures
    num_clips: int
    skipped: list[dict[str, str]]
    tracker: str
    max_frames: int | None
    min_frames: int
    has_tracks: bool
    has_stats: bool
    has_sprites: bool

    def check_covers(self, *, need_tracks: bool, need_stats: bool, need_sprites: bool, tracker: str,
                     max_frames: int | None, min_frames: int) -> None:
        problems = []
        if need_tracks and not self.has_tracks:
            problems.append("point tracks (metric group 'frechet_motion')")
        if need_stats and not self.has_stats:
            problems.append("image statistics (metric group 'appearance')")
        if need_sprites and not self.has_sprites:
            problems.append("frames for the sprite metrics (sprites=True)")
        if problems:
            raise DataError("prepared reference lacks " + ", ".join(problems) + ": prepare it with those metrics")
        settings = [("max_frames", self.max_frames, max_frames), ("min_frames", self.min_frames, min_frames)]
        if need_tracks:  # the tracker only matters for the tracks
            settings.append(("tracker", self.tracker, tracker))
        for name, ours, theirs in settings:
            if ours != theirs:
                raise DataError(f"prepared reference has {name}={ours!r} but this evaluation uses {theirs!r}")


def prepare_reference(reference: ClipsInput, *, tracker: str | PointTracker = "lk",
                      metrics: Iterable[str] | None = None, sprites: bool = False, strict: bool = False,
                      max_frames: int | None = None, min_frames: int = MIN_FRAMES) -> ReferenceFeatures:
    """Read, track and summarise ``reference`` once (arguments as in ``evaluate_videos``).

    Raises:
        DataError: no usable reference clip, or ``strict`` and a clip is unusable.
    """
    chosen = _resolve_metrics(metrics, sprites)
    point_tracker = get_tracker(tracker) if isinstance(tracker, str) else tracker
    sources = collect_clips(reference, "reference")
    skipped: list[dict[str, str]] = []
    features = _reference_set(sources, need_tracks="frechet_motion" in chosen, need_stats="appearance" in chosen,
                              need_sprites="sprites" in chosen, tracker=point_tracker, max_frames=max_frames,
                              min_frames=min_frames, skipped=skipped, strict=strict)
    if strict and skipped:
        listing = "".join(f"\n  {s['name']}: {s['reason']}" for s in skipped)
        raise DataError(f"{len(skipped)} reference clip{'s' if len(skipped) != 1 else ''} cannot be used "
                        f"(--strict):{listing}")
    if not features.lengths:
        listing = "".join(f"\n  {s['name']}: {s['reason']}" for s in skipped)
        raise DataError(f"no usable reference video among the {len(sources)} given:{listing}")
    return ReferenceFeatures(features=features, num_clips=len(sources), skipped=skipped, tracker=point_tracker.name,
                             max_frames=max_frames, min_frames=min_frames, has_tracks="frechet_motion" in chosen,
                             has_stats="appearance" in chosen, has_sprites="sprites" in chosen)


def evaluate_videos(videos: ClipsInput, *, reference: ClipsInput | ReferenceFeatures | None = None,
                    ground_truth: ClipsInput | None = None, conditioning: ClipsInput | None = None,
                    flow: str | FlowEstimator = "dis", tracker: str | PointTracker = "lk",
                    fps: float | None = None, strict: bool = False, metrics: Iterable[str] | None = None,
                    sprites: bool = False, sprite_threshold: float = 0.4, max_frames: int | None = None,
                    min_frames: int = MIN_FRAMES) -> EvalResult:
    """Score a set of clips with the motion and appearance metrics.

    Args:
        videos: a folder or manifest of clips, a (N, T, H, W, 3) array, or a list of (T, H, W, 3) arrays
            (uint8, or float in [0, 1]) or of file paths.
        reference: clips to compare the set with (Fréchet motion and image-statistics distances), or
            a ``prepare_reference`` result when several sets are scored against the same clips.
        ground_truth: clips to compare each clip with frame by frame (PSNR/SSIM); matched by position
            for arrays, else by the manifest's ``source`` or the file name (stem).
        conditioning: the conditioning images (image files, .npy, or videos whose first frame is used),
            matched like ``ground_truth``; without it, a manifest key among ``CONDITIONING_KEYS``.
        flow: flow estimator name ("dis", "farneback", "raft") or instance.
        tracker: point tracker name ("lk", "cotracker") or instance.
        fps: frame rate to use for every clip (dynamic degree); default: the file's own rate, 8 for arrays.
        strict: any unusable clip is an error (after listing all of them) instead of being skipped.
        metrics: metric groups to compute (``METRIC_GROUPS``); default all but "sprites".
        sprites: also compute the sprite-tracking metrics (``sprites.sprite_motion_metrics``).
        sprite_threshold: gray level (0-1) separating sprites from background.
        max_frames: read at most this many frames of each clip.
        min_frames: clips with fewer frames are skipped as too short.

    Returns:
        The EvalResult.

    Raises:
        DataError: no usable clip (in ``videos`` or in ``reference``), or ``strict`` and a clip is unusable.
    """
    started = time.perf_counter()
    chosen = _resolve_metrics(metrics, sprites)
    estimator = get_flow_estimator(flow) if isinstance(flow, str) else flow
    point_tracker = get_tracker(tracker) if isinstance(tracker, str) else tracker
    need_tracks = "frechet_motion" in chosen and reference is not None
    need_stats = "appearance" in chosen and reference is not None
    sources = collect_clips(videos, "videos")
    gt_index, gt_aligned = _partner_set(ground_truth, "ground truth") if "appearance" in chosen else (None, None)
    cond_index, cond_aligned = _partner_set(conditioning, "conditioning") if "appearance" in chosen else (None, None)

    skipped: list[dict[str, str]] = []
    notes: list[str] = []
    per_video: list[dict[str, Any]] = []
    ours = _SetFeatures()
    missing_gt: list[str] = []
    for position, source, frames, clip_fps in _load_set(sources, "videos", max_frames=max_frames,
                                                        min_frames=min_frames, fps=fps, skipped=skipped,
                                                        strict=strict):
        tick = time.perf_counter()
        row: dict[str, Any] = {"name": source.name, "path": source.path, "frames": int(frames.shape[0]),
                               "height": int(frames.shape[1]), "width": int(frames.shape[2]), "fps": clip_fps}
        row.update(_score_clip(frames, clip_fps, chosen, estimator))
        if "appearance" in chosen:
            try:
                image = _conditioning_for(source, position, cond_index, cond_aligned)
                if image is not None:
                    row.update(first_frame_fidelity(frames, image))
            except DataError as exc:
                notes.append(f"conditioning image of {source.name} not used: {exc}")
            if ground_truth is not None:
                partner = _match(source, position, gt_index, gt_aligned)
                if partner is None:
                    missing_gt.append(source.name)
                else:
                    try:
                        gt_frames, _ = load_clip(partner, max_frames=max_frames)
                        row.update(clip_fidelity(frames, gt_frames))
                        row["gt_name"] = partner.name
                    except DataError as exc:
                        notes.append(f"ground truth of {source.name} not used: {exc}")
        if need_tracks:
            ours.chunks.append(track_chunks(frames, point_tracker))
        if need_stats:
            ours.image_stats.append(video_image_statistics(frames))
        if "sprites" in chosen:
            ours.sprite_clips.append(frames)
        ours.lengths.append(int(frames.shape[0]))
        ours.sizes.append((int(frames.shape[1]), int(frames.shape[2])))
        per_video.append(row)
        logger.info("scored %s (%d frames, %dx%d) in %.1f s", source.name, frames.shape[0], frames.shape[1],
                    frames.shape[2], time.perf_counter() - tick)
        del frames

    if isinstance(reference, ReferenceFeatures):
        reference.check_covers(need_tracks=need_tracks, need_stats=need_stats, need_sprites="sprites" in chosen,
                               tracker=point_tracker.name, max_frames=max_frames, min_frames=min_frames)
        ref, num_reference = reference.features, reference.num_clips
        skipped.extend(reference.skipped)
    elif reference is not None and (need_tracks or need_stats or "sprites" in chosen):
        ref_sources = collect_clips(reference, "reference")
        num_reference = len(ref_sources)
        ref = _reference_set(ref_sources, need_tracks=need_tracks, need_stats=need_stats,
                             need_sprites="sprites" in chosen, tracker=point_tracker, max_frames=max_frames,
                             min_frames=min_frames, skipped=skipped, strict=strict)
    else:
        ref, num_reference = _SetFeatures(), 0

    if strict and skipped:
        listing = "".join(f"\n  [{s['set']}] {s['name']}: {s['reason']}" for s in skipped)
        raise DataError(f"{len(skipped)} clip{'s' if len(skipped) != 1 else ''} cannot be used (--strict):{listing}")
    if not per_video:
        listing = "".join(f"\n  {s['name']}: {s['reason']}" for s in skipped if s["set"] == "videos")
        raise DataError(f"no usable video among the {len(sources)} given:{listing}")
    if num_reference and not ref.lengths:
        listing = "".join(f"\n  {s['name']}: {s['reason']}" for s in skipped if s["set"] == "reference")
        raise DataError(f"no usable reference video among the {num_reference} given:{listing}")

    aggregate: dict[str, float] = {}
    counts: dict[str, str] = {}

    def mean_of(key: str) -> None:
        values = [r[key] for r in per_video if r.get(key) is not None and math.isfinite(r[key])]
        if values:
            aggregate[key] = float(np.mean(values))
            counts[key] = str(len(values))

    vbench_exact = False
    if "dynamic_degree" in chosen:
        aggregate["dynamic_degree"] = dynamic_degree([r["dynamic"] for r in per_video])
        counts["dynamic_degree"] = str(len(per_video))
        vbench_exact, note = vbench_status(estimator, [bool(r.get("dynamic_vbench_exact")) for r in per_video])
        notes.append(note)
    for key in ("motion_score", "motion_score_256", "motion_smoothness", "temporal_flicker",
                "first_frame_psnr", "first_frame_ssim", "gt_psnr", "gt_ssim"):
        mean_of(key)
    if "smoothness" in chosen:
        notes.append(f"motion smoothness: frames interpolated by {estimator.name.upper()} flow warping, a "
                     "weight-free stand-in for VBench's AMT network (values are not VBench's)")
    if missing_gt:
        notes.append(f"ground truth: no match (by manifest source or file name) for {len(missing_gt)} clip(s): "
                     + ", ".join(missing_gt[:5]) + (" ..." if len(missing_gt) > 5 else ""))

    if reference is not None and ref.lengths:
        notes.extend(_mismatch_notes(ours, ref))
        if need_tracks:
            result: FrechetMotionResult = frechet_motion_from_chunks(ours.chunks, ref.chunks, ours.lengths,
                                                                     ref.lengths)
            aggregate.update(frechet_motion_velocity=result.velocity,
                             frechet_motion_acceleration=result.acceleration,
                             frechet_motion_combined=result.combined)
            for key in ("frechet_motion_velocity", "frechet_motion_acceleration", "frechet_motion_combined"):
                counts[key] = f"{result.num_windows[0]}/{result.num_windows[1]} windows"
            notes.append(f"Fréchet motion: {point_tracker.name.upper()} point tracks (FVMD uses PIPs++), "
                         f"{result.window}-frame windows; acceleration is the true second difference "
                         "(FVMD's code applies its acceleration step to positions, which gives velocity again)")
            notes.extend(result.notes)
        if need_stats:
            stats_a, stats_b = np.concatenate(ours.image_stats), np.concatenate(ref.image_stats)
            aggregate["image_stats_frechet"] = image_statistics_frechet(stats_a, stats_b)
            counts["image_stats_frechet"] = f"{len(stats_a)}/{len(stats_b)} frames"
    elif reference is None and ("frechet_motion" in chosen or "appearance" in chosen):
        notes.append("no --reference: Fréchet motion and image-statistics distances not computed")

    if "sprites" in chosen:
        shapes = {c.shape for c in ours.sprite_clips}
        if len(shapes) != 1:
            notes.append(f"sprite metrics skipped: they need clips of one shape, got {len(shapes)} shapes")
        else:
            ref_clips = ref.sprite_clips if ref.sprite_clips else None
            if ref_clips is not None and len({c.shape[1:] for c in ref_clips} | {next(iter(shapes))[1:]}) != 1:
                notes.append("sprite speed_w1 skipped: reference clips differ in frame size from the videos")
                ref_clips = None
            if ref_clips is not None and len({c.shape for c in ref_clips}) != 1:
                ref_clips = [c[:min(len(x) for x in ref_clips)] for c in ref_clips]
            sprite = sprite_motion_metrics(ours.sprite_clips, reference=ref_clips, threshold=sprite_threshold)
            for key, value in sprite.aggregate.items():
                aggregate[f"sprite_{key}"] = value
                counts[f"sprite_{key}"] = str(len(ours.sprite_clips))
            for row, values in zip(per_video, sprite.clip_dicts()):
                row.update(values)
            notes.extend(sprite.notes)

    settings = {"flow": estimator.name, "dynamic_vbench_exact": "dynamic_degree" in chosen and vbench_exact,
                "tracker": point_tracker.name, "fps": fps, "max_frames": max_frames,
                "min_frames": min_frames, "metrics": sorted(chosen), "num_videos": len(sources),
                "num_reference": num_reference, "seconds": round(time.perf_counter() - started, 2)}
    return EvalResult(aggregate=aggregate, per_video=[_json_value(r) for r in per_video], skipped=skipped,
                      notes=notes, counts=counts, settings=settings)
