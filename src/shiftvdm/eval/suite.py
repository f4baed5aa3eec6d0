"""The evaluation suite: every metric of ``shiftvdm.eval`` on a set of clips, aggregated into one result.

``evaluate_videos`` takes clips as arrays or as a folder/manifest (``eval.inputs``), streams each clip's
frames once through the per-clip metrics (flow is computed a batch of pairs at a time and reduced at
once; only what a metric needs is kept: a batch of frames, the previous frame, the sub-sampled
frames of a flow batch, one tracking chunk), lists the files it cannot use with the reason, and returns
an ``EvalResult`` (``eval.results``): set-level values in ``aggregate``, per-clip values in ``per_video``,
and ``format_table()`` / ``to_json()`` for people and programs. Training validation, the demo, the
report and ``shiftvdm eval`` all go through it.

Metric groups (``metrics=``): "dynamic_degree", "motion_score", "smoothness", "flicker", "frechet_motion"
and "appearance" (all by default), plus "sprites" when asked for (synthetic clips with bright sprites;
these hold whole clips, which such clips are small enough for). Set-level values: dynamic_degree is
the fraction of dynamic clips; Fréchet distances compare the whole set with ``reference``; every other
value is the mean over the clips that have it.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shiftvdm.errors import DataError
from shiftvdm.eval.appearance import (
    ClipFidelityStream,
    ImageStatisticsStream,
    first_frame_fidelity,
    image_statistics_frechet,
)
from shiftvdm.eval.dynamic_degree import DynamicDegreeStream, dynamic_degree, sampling_interval, vbench_status
from shiftvdm.eval.flicker import FlickerStream
from shiftvdm.eval.frechet_motion import (FrechetMotionResult, TrackChunkStream, frechet_motion_from_chunks,
                                         sample_note)
from shiftvdm.eval.inputs import (
    MIN_FRAMES,
    ClipsInput,
    EvalClip,
    OpenClip,
    PartnerSet,
    collect_clips,
    conditioning_image,
    open_clip,
    usable_clips,
)
from shiftvdm.eval.motion_score import FlowPairStream, motion_score_from_statistics
from shiftvdm.eval.results import METRIC_ROWS, SPRITE_ROWS, EvalResult, json_value
from shiftvdm.eval.smoothness import SmoothnessStream
from shiftvdm.eval.sprites import sprite_motion_metrics
from shiftvdm.motion.base import FlowEstimator, PointTracker, get_flow_estimator, get_tracker

logger = logging.getLogger(__name__)

METRIC_GROUPS = ("dynamic_degree", "motion_score", "smoothness", "flicker", "frechet_motion", "appearance",
                 "sprites")
DEFAULT_METRICS = METRIC_GROUPS[:-1]
# per-clip means, in the order of the aggregate
MEAN_KEYS = ("motion_score", "motion_score_256", "motion_smoothness", "temporal_flicker", "first_frame_psnr",
             "first_frame_ssim", "gt_psnr", "gt_ssim")

__all__ = ["DEFAULT_METRICS", "METRIC_GROUPS", "METRIC_ROWS", "MIN_FRAMES", "SPRITE_ROWS", "EvalResult",
           "ReferenceFeatures", "evaluate_videos", "prepare_reference"]


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


# ---------------------------------------------------------------------------------------------
# one clip, frame by frame
# ---------------------------------------------------------------------------------------------

class _ClipMetrics:
    """The per-clip metrics of the chosen groups on one clip, fed frame by frame."""

    def __init__(self, chosen: set[str], estimator: FlowEstimator, clip: OpenClip) -> None:
        self.chosen = chosen
        # consecutive pairs serve the motion score, and dynamic degree when it keeps every frame
        every_frame = "motion_score" in chosen or sampling_interval(clip.fps) == 1
        wants_pairs = bool(chosen & {"motion_score", "dynamic_degree"}) and every_frame
        self.pairs = FlowPairStream(estimator) if wants_pairs else None
        self.dynamic = (DynamicDegreeStream(clip.fps, estimator, consecutive=self.pairs)
                        if "dynamic_degree" in chosen else None)
        # a middle frame needs two neighbours (only reachable with min_frames=2)
        self.smoothness = SmoothnessStream(estimator) if "smoothness" in chosen and clip.num_frames >= 3 else None
        self.flicker = FlickerStream() if "flicker" in chosen else None

    def add(self, frame: np.ndarray) -> None:
        for stream in (self.pairs, self.dynamic, self.smoothness, self.flicker):
            if stream is not None:
                stream.add(frame)

    def values(self) -> dict[str, Any]:
        row: dict[str, Any] = {}
        if "motion_score" in self.chosen:
            row.update(motion_score_from_statistics(self.pairs.result()))
        if self.dynamic is not None:
            verdict = self.dynamic.result()
            row.update(dynamic=verdict.is_dynamic, dynamic_pairs_above=verdict.pairs_above,
                       dynamic_pairs=len(verdict.pair_scores), dynamic_required_pairs=verdict.required_pairs,
                       dynamic_threshold_px=verdict.threshold, dynamic_interval=verdict.interval,
                       dynamic_top5_mean_px=float(np.mean(verdict.pair_scores)) if verdict.pair_scores else None,
                       dynamic_vbench_exact=verdict.vbench_exact)
        if "smoothness" in self.chosen:
            row["motion_smoothness"] = self.smoothness.result() if self.smoothness is not None else None
        if self.flicker is not None:
            row["temporal_flicker"] = self.flicker.result()
        return row


class _ClipFeatures:
    """One clip's share of the set-level metrics (point tracks, image statistics, frames for sprites)."""

    def __init__(self, clip: OpenClip, tracker: PointTracker, *, tracks: bool, stats: bool, sprites: bool) -> None:
        self.size = (clip.height, clip.width)
        self.tracks = TrackChunkStream(clip.num_frames, tracker) if tracks else None
        self.stats = ImageStatisticsStream(clip.num_frames) if stats else None
        self.frames: list[np.ndarray] | None = [] if sprites else None  # sprite metrics need the whole clip
        self.count = 0

    def add(self, frame: np.ndarray) -> None:
        for stream in (self.tracks, self.stats):
            if stream is not None:
                stream.add(frame)
        if self.frames is not None:
            self.frames.append(frame)
        self.count += 1

    def store(self, features: _SetFeatures) -> None:
        if self.tracks is not None:
            features.chunks.append(self.tracks.chunks)
        if self.stats is not None:
            features.image_stats.append(self.stats.result())
        if self.frames is not None:
            features.sprite_clips.append(np.stack(self.frames))
        features.lengths.append(self.count)
        features.sizes.append(self.size)


def _fidelity_to_partners(source: EvalClip, position: int, first: np.ndarray, *, conditioning: PartnerSet,
                          ground_truth: PartnerSet | None, max_frames: int | None, notes: list[str],
                          missing_gt: list[str]) -> tuple[dict[str, Any], OpenClip | None, EvalClip | None]:
    """First-frame fidelity to the conditioning image, and the opened ground-truth clip (None if unusable)."""
    row: dict[str, Any] = {}
    try:
        image = conditioning_image(source, position, conditioning)
        if image is not None:
            row.update(first_frame_fidelity(first[None], image))
    except DataError as exc:
        notes.append(f"conditioning image of {source.name} not used: {exc}")
    if ground_truth is None:
        return row, None, None
    partner = ground_truth.match(source, position)
    if partner is None:
        missing_gt.append(source.name)
        return row, None, None
    try:
        return row, open_clip(partner, max_frames=max_frames), partner
    except DataError as exc:
        notes.append(f"ground truth of {source.name} not used: {exc}")
        return row, None, None


def _stream_clip(clip: OpenClip, consumers: list, gt: OpenClip | None, fidelity: ClipFidelityStream) -> None:
    """Read the clip once: every frame to every consumer, and to the ground-truth comparison while it lasts."""
    targets = gt.frames if gt is not None else None
    for frame in clip.frames:
        for consumer in consumers:
            consumer.add(frame)
        if targets is not None:
            target = next(targets, None)
            if target is None:
                targets = None  # the ground truth is shorter: compare the frames both have
            else:
                fidelity.add(frame, target)


def _score_set(sources: list[EvalClip], chosen: set[str], estimator: FlowEstimator, tracker: PointTracker, *,
               features: _SetFeatures, need_tracks: bool, need_stats: bool, conditioning: PartnerSet | None,
               ground_truth: PartnerSet | None, fps: float | None, max_frames: int | None, min_frames: int,
               skipped: list[dict[str, str]], notes: list[str], missing_gt: list[str], strict: bool,
               progress: bool) -> list[dict[str, Any]]:
    """Per-clip rows of every usable clip of ``sources``; their set-level features go to ``features``."""
    per_video = []
    for position, source, clip in usable_clips(sources, "videos", max_frames=max_frames, min_frames=min_frames,
                                               fps=fps, skipped=skipped, strict=strict, progress=progress):
        tick = time.perf_counter()
        row: dict[str, Any] = {"name": source.name, "path": source.path, "frames": clip.num_frames,
                               "height": clip.height, "width": clip.width, "fps": clip.fps}
        metrics = _ClipMetrics(chosen, estimator, clip)
        shares = _ClipFeatures(clip, tracker, tracks=need_tracks, stats=need_stats, sprites="sprites" in chosen)
        fidelity, gt, partner, partner_row = ClipFidelityStream(), None, None, {}
        first = next(clip.frames)
        clip.frames = itertools.chain([first], clip.frames)
        if conditioning is not None:
            partner_row, gt, partner = _fidelity_to_partners(
                source, position, first, conditioning=conditioning, ground_truth=ground_truth,
                max_frames=max_frames, notes=notes, missing_gt=missing_gt)
        _stream_clip(clip, [metrics, shares], gt, fidelity)
        if shares.count != clip.num_frames:
            raise DataError(f"{source.name}: read {shares.count} frames, expected {clip.num_frames}")
        row.update(metrics.values())
        row.update(partner_row)
        if gt is not None:
            row.update(fidelity.result())
            row["gt_name"] = partner.name
        shares.store(features)
        per_video.append(row)
        logger.info("scored %s (%d frames, %dx%d) in %.1f s", source.name, clip.num_frames, clip.height,
                    clip.width, time.perf_counter() - tick)
    return per_video


def _reference_set(sources: list[EvalClip], *, need_tracks: bool, need_stats: bool, need_sprites: bool,
                   tracker: PointTracker, max_frames: int | None, min_frames: int,
                   skipped: list[dict[str, str]], strict: bool, progress: bool = False) -> _SetFeatures:
    """The reference clips' features: point-track chunks, image statistics and/or the frames themselves."""
    ref = _SetFeatures()
    for _, _source, clip in usable_clips(sources, "reference", max_frames=max_frames, min_frames=min_frames,
                                         fps=None, skipped=skipped, strict=strict, progress=progress):
        shares = _ClipFeatures(clip, tracker, tracks=need_tracks, stats=need_stats, sprites=need_sprites)
        _stream_clip(clip, [shares], None, ClipFidelityStream())
        shares.store(ref)
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
                      max_frames: int | None = None, min_frames: int = MIN_FRAMES,
                      progress: bool = False) -> ReferenceFeatures:
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
                              min_frames=min_frames, skipped=skipped, strict=strict, progress=progress)
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
                    min_frames: int = MIN_FRAMES, progress: bool = False) -> EvalResult:
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
        tracker: point tracker name ("lk", "cotracker3") or instance.
        fps: frame rate to use for every clip (dynamic degree); default: the file's own rate, 8 for arrays.
        strict: any unusable clip is an error (after listing all of them) instead of being skipped.
        metrics: metric groups to compute (``METRIC_GROUPS``); default all but "sprites".
        sprites: also compute the sprite-tracking metrics (``sprites.sprite_motion_metrics``).
        sprite_threshold: gray level (0-1) separating sprites from background.
        max_frames: read at most this many frames of each clip.
        min_frames: clips with fewer frames are skipped as too short.
        progress: show a progress bar over the clips on stderr.

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
    appearance = "appearance" in chosen
    cond_set = PartnerSet(conditioning, "conditioning") if appearance else None
    gt_set = PartnerSet(ground_truth, "ground truth") if appearance and ground_truth is not None else None

    skipped: list[dict[str, str]] = []
    notes: list[str] = []
    missing_gt: list[str] = []
    ours = _SetFeatures()
    per_video = _score_set(sources, chosen, estimator, point_tracker, features=ours, need_tracks=need_tracks,
                           need_stats=need_stats, conditioning=cond_set, ground_truth=gt_set, fps=fps,
                           max_frames=max_frames, min_frames=min_frames, skipped=skipped, notes=notes,
                           missing_gt=missing_gt, strict=strict, progress=progress)
    ref, num_reference = _reference_features(reference, chosen, need_tracks=need_tracks, need_stats=need_stats,
                                             tracker=point_tracker, max_frames=max_frames, min_frames=min_frames,
                                             skipped=skipped, strict=strict, progress=progress)
    _refuse_unusable(skipped, strict=strict, scored=len(per_video), given=len(sources), reference=ref,
                     num_reference=num_reference)

    unmatched = _unmatched_inputs(cond_set, gt_set, notes)
    rates: dict[float, list[str]] = {}
    for row in per_video:
        if row.get("fps"):
            rates.setdefault(round(float(row["fps"]), 3), []).append(row["name"])
    if fps is None and len(rates) > 1:  # per-frame motion of clips at other rates is not the same time step
        listed = "; ".join(f"{r:g} fps: {', '.join(n[:3])}{' ...' if len(n) > 3 else ''}" for r, n in sorted(rates.items()))
        logger.warning("videos of %d frame rates: %s", len(rates), listed)
        notes.append(f"videos of {len(rates)} frame rates, compared frame for frame (set --fps to use one): {listed}")
    if strict and gt_set is not None and per_video and len(missing_gt) == len(per_video):
        raise DataError(f"no ground-truth clip matched any of the {len(per_video)} videos (by manifest source or file "
                        "name; --strict): check the names, or leave out --ground-truth")

    aggregate: dict[str, float] = {}
    counts: dict[str, str] = {}
    vbench_exact = _aggregate_clip_metrics(per_video, chosen, estimator, aggregate, counts, notes)
    if missing_gt:
        notes.append(f"ground truth: no match (by manifest source or file name) for {len(missing_gt)} clip(s): "
                     + ", ".join(missing_gt[:5]) + (" ..." if len(missing_gt) > 5 else ""))
    if reference is not None and ref.lengths:
        notes.extend(_mismatch_notes(ours, ref))
        _aggregate_against_reference(ours, ref, point_tracker, need_tracks, need_stats, aggregate, counts, notes)
    elif reference is None and ("frechet_motion" in chosen or appearance):
        notes.append("no --reference: Fréchet motion and image-statistics distances not computed")
    if "sprites" in chosen:
        _aggregate_sprites(ours, ref, per_video, sprite_threshold, aggregate, counts, notes)

    settings = {"flow": estimator.name, "dynamic_vbench_exact": "dynamic_degree" in chosen and vbench_exact,
                "tracker": point_tracker.name, "fps": fps, "max_frames": max_frames,
                "min_frames": min_frames, "metrics": sorted(chosen), "num_videos": len(sources),
                "num_reference": num_reference, "unmatched": unmatched,
                "seconds": round(time.perf_counter() - started, 2)}
    return EvalResult(aggregate=aggregate, per_video=[json_value(r) for r in per_video], skipped=skipped,
                      notes=notes, counts=counts, settings=settings)


# ---------------------------------------------------------------------------------------------
# set-level values
# ---------------------------------------------------------------------------------------------

def _unmatched_inputs(conditioning: PartnerSet | None, ground_truth: PartnerSet | None,
                      notes: list[str]) -> dict[str, int]:
    """Counts of the inputs that found no partner, for the JSON (settings.unmatched) and the table (a note each):
    videos without a conditioning image or ground truth, and conditioning images or ground-truth clips that no
    video was matched with."""
    counts: dict[str, int] = {}
    for partners, key in ((conditioning, "conditioning"), (ground_truth, "ground_truth")):
        if partners is None or not partners.given:
            continue
        label = partners.label
        for what, names in ((f"videos_without_{key}", partners.unmatched_clips),
                            (f"{key}_matched_by_no_video", partners.unmatched_partners())):
            counts[what] = len(names)
            if names and what.startswith(key):  # (videos without ground truth have their own note already)
                notes.append(f"{label}: {len(names)} input(s) matched by no video: " + ", ".join(names[:5])
                             + (" ..." if len(names) > 5 else ""))
            elif names and key == "conditioning":
                notes.append(f"conditioning: no image matched {len(names)} video(s): " + ", ".join(names[:5])
                             + (" ..." if len(names) > 5 else ""))
    return counts


def _reference_features(reference: ClipsInput | ReferenceFeatures | None, chosen: set[str], *, need_tracks: bool,
                        need_stats: bool, tracker: PointTracker, max_frames: int | None, min_frames: int,
                        skipped: list[dict[str, str]], strict: bool, progress: bool) -> tuple[_SetFeatures, int]:
    """The reference's features (prepared, or read now when a chosen metric needs them) and its clip count."""
    need_sprites = "sprites" in chosen
    if isinstance(reference, ReferenceFeatures):
        reference.check_covers(need_tracks=need_tracks, need_stats=need_stats, need_sprites=need_sprites,
                               tracker=tracker.name, max_frames=max_frames, min_frames=min_frames)
        skipped.extend(reference.skipped)
        return reference.features, reference.num_clips
    if reference is not None and (need_tracks or need_stats or need_sprites):
        sources = collect_clips(reference, "reference")
        ref = _reference_set(sources, need_tracks=need_tracks, need_stats=need_stats, need_sprites=need_sprites,
                             tracker=tracker, max_frames=max_frames, min_frames=min_frames, skipped=skipped,
                             strict=strict, progress=progress)
        return ref, len(sources)
    return _SetFeatures(), 0


def _refuse_unusable(skipped: list[dict[str, str]], *, strict: bool, scored: int, given: int,
                     reference: _SetFeatures, num_reference: int) -> None:
    """DataError when --strict met a bad clip, or when no video (or no reference clip) is usable."""
    if strict and skipped:
        listing = "".join(f"\n  [{s['set']}] {s['name']}: {s['reason']}" for s in skipped)
        raise DataError(f"{len(skipped)} clip{'s' if len(skipped) != 1 else ''} cannot be used (--strict):{listing}")
    if not scored:
        listing = "".join(f"\n  {s['name']}: {s['reason']}" for s in skipped if s["set"] == "videos")
        raise DataError(f"no usable video among the {given} given:{listing}")
    if num_reference and not reference.lengths:
        listing = "".join(f"\n  {s['name']}: {s['reason']}" for s in skipped if s["set"] == "reference")
        raise DataError(f"no usable reference video among the {num_reference} given:{listing}")


def _aggregate_clip_metrics(per_video: list[dict[str, Any]], chosen: set[str], estimator: FlowEstimator,
                            aggregate: dict[str, float], counts: dict[str, str], notes: list[str]) -> bool:
    """Dynamic degree and the means of the per-clip values; returns whether dynamic degree is VBench-exact."""
    vbench_exact = False
    if "dynamic_degree" in chosen:
        aggregate["dynamic_degree"] = dynamic_degree([r["dynamic"] for r in per_video])
        counts["dynamic_degree"] = str(len(per_video))
        vbench_exact, note = vbench_status(estimator, [bool(r.get("dynamic_vbench_exact")) for r in per_video])
        notes.append(note)
    for key in MEAN_KEYS:
        values = [r[key] for r in per_video if r.get(key) is not None and math.isfinite(r[key])]
        if values:
            aggregate[key] = float(np.mean(values))
            counts[key] = str(len(values))
    if "smoothness" in chosen:
        notes.append(f"motion smoothness: frames interpolated by {estimator.name.upper()} flow warping, a "
                     "weight-free stand-in for VBench's AMT network (values are not VBench's)")
    return vbench_exact


def _aggregate_against_reference(ours: _SetFeatures, ref: _SetFeatures, tracker: PointTracker, need_tracks: bool,
                                 need_stats: bool, aggregate: dict[str, float], counts: dict[str, str],
                                 notes: list[str]) -> None:
    """The Fréchet motion and image-statistics distances between the set and its reference."""
    if need_tracks:
        try:
            result: FrechetMotionResult = frechet_motion_from_chunks(ours.chunks, ref.chunks, ours.lengths, ref.lengths)
        except DataError as exc:  # fewer than 2 windows in a set
            notes.append(f"Fréchet motion distances not computed: {exc}")
            need_tracks = False
    if need_tracks:
        aggregate.update(frechet_motion_velocity=result.velocity, frechet_motion_acceleration=result.acceleration,
                         frechet_motion_combined=result.combined)
        for key in ("frechet_motion_velocity", "frechet_motion_acceleration", "frechet_motion_combined"):
            counts[key] = f"{result.num_windows[0]}/{result.num_windows[1]} windows"
        notes.append(f"Fréchet motion: {tracker.name.upper()} point tracks (FVMD uses PIPs++), "
                     f"{result.window}-frame windows; acceleration is the true second difference "
                     "(FVMD's code applies its acceleration step to positions, which gives velocity again)")
        notes.extend(result.notes)
    if need_stats:
        stats_a, stats_b = np.concatenate(ours.image_stats), np.concatenate(ref.image_stats)
        counts["image_stats_frechet"] = f"{len(stats_a)}/{len(stats_b)} frames"
        try:
            aggregate["image_stats_frechet"] = image_statistics_frechet(stats_a, stats_b)
        except DataError as exc:  # fewer than 2 frames in a set: refused, not printed from one sample
            notes.append(f"image-statistics Fréchet distance not computed: {exc}")
            return
        note = sample_note("image-statistics Fréchet distance", len(stats_a), len(stats_b), stats_a.shape[1], "frames")
        notes.extend([note] if note else [])


def _aggregate_sprites(ours: _SetFeatures, ref: _SetFeatures, per_video: list[dict[str, Any]], threshold: float,
                       aggregate: dict[str, float], counts: dict[str, str], notes: list[str]) -> None:
    """The sprite metrics of the set (and speed_w1 against the reference's clips when they are comparable)."""
    shapes = {c.shape for c in ours.sprite_clips}
    if len(shapes) != 1:
        notes.append(f"sprite metrics skipped: they need clips of one shape, got {len(shapes)} shapes")
        return
    ref_clips = ref.sprite_clips if ref.sprite_clips else None
    if ref_clips is not None and len({c.shape[1:] for c in ref_clips} | {next(iter(shapes))[1:]}) != 1:
        notes.append("sprite speed_w1 skipped: reference clips differ in frame size from the videos")
        ref_clips = None
    if ref_clips is not None and len({c.shape for c in ref_clips}) != 1:
        ref_clips = [c[:min(len(x) for x in ref_clips)] for c in ref_clips]
    sprite = sprite_motion_metrics(ours.sprite_clips, reference=ref_clips, threshold=threshold)
    for key, value in sprite.aggregate.items():
        aggregate[f"sprite_{key}"] = value
        counts[f"sprite_{key}"] = str(len(ours.sprite_clips))
    for row, values in zip(per_video, sprite.clip_dicts()):
        row.update(values)
    notes.extend(sprite.notes)


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
