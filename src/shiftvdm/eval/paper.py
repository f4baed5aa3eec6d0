"""The paper's table: VBench-I2V dimensions, Appearance / Motion / Overall, Motion Score and FVD.

``prepare_suite`` resolves ``--suite`` ("paper" or a comma list of dimensions) against what this build can
run, finds every released weight file under ``--weights DIR`` by its released name, and refuses a missing one
naming the dimension, the file and where to get it. ``evaluate_paper`` scores one folder of clips:

* dynamic_degree and motion_score through ``evaluate_videos`` with RAFT (``raft-things.pth``, 20 iterations:
  VBench's dynamic degree exactly; the motion score is the mean RAFT flow magnitude, px/frame);
* each per-clip network dimension of the registry (``eval/paper_dimensions.py``: ``DimensionSpec``s) on the
  clip's frames and, for the i2v dimensions, its conditioning image (``--images``; a VBench-I2V name
  ``<image stem>-<index>.mp4`` is matched to ``<image stem>.*``);
* fvd from I3D features of the clips and of ``--reference`` (``eval/fvd.py``), the reference read once for
  every compared model.

VBench's aggregation: a dimension's value is the mean of its per-clip values (dynamic degree: the fraction
of dynamic clips), reported in percent in the table. The paper does not define its Appearance / Motion /
Overall columns; we use Appearance = mean of ``APPEARANCE_DIMENSIONS`` (VBench-I2V's appearance-side
dimensions), Motion = mean of ``MOTION_DIMENSIONS``, and Overall = (2·Appearance + Motion)/3, which reproduces
the paper's three SVD rows to ±0.01 (``overall_score``). A composite is only given when all its dimensions are.
VBench-I2V's own Quality / I2V / Total Score follow its normalisation and weights (``eval/vbench_score.py``);
each is blank (null in the JSON) unless all its dimensions have values, and a note names the lacking ones.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shiftvdm.errors import CheckpointError, ConfigError, DataError
from shiftvdm.eval.dimensions import ClipScorer, DimensionSpec, WeightFile
from shiftvdm.eval.fvd import I3DFeatureStream, fvd
from shiftvdm.eval.i3d import (
    FVD_MIN_FRAMES,
    I3D_FILES,
    VIDEOGPT_VARIANT,
    InceptionI3d,
    load_i3d,
)
from shiftvdm.eval.inputs import (
    MIN_FRAMES,
    ClipsInput,
    EvalClip,
    PartnerSet,
    collect_clips,
    conditioning_image,
    read_image,
    usable_clips,
)
from shiftvdm.eval.paper_dimensions import PAPER_DIMENSIONS
from shiftvdm.eval.results import EvalResult, json_value
from shiftvdm.eval.suite import evaluate_videos
from shiftvdm.eval.vbench_score import (
    GROUP_LABELS,
    VBENCH_I2V_GROUPS,
    vbench_i2v_note,
    vbench_i2v_scores,
)
from shiftvdm.motion.base import FlowEstimator, get_flow_estimator

logger = logging.getLogger(__name__)

APPEARANCE_DIMENSIONS = ("subject_consistency", "background_consistency", "aesthetic_quality", "imaging_quality",
                         "i2v_subject", "i2v_background")
MOTION_DIMENSIONS = ("motion_smoothness", "dynamic_degree")
PAPER_SUITE = APPEARANCE_DIMENSIONS + MOTION_DIMENSIONS + ("motion_score", "fvd")

RAFT_FILE = WeightFile("raft-things.pth", "princeton-vl/RAFT: models.zip from its download_models.sh (VBench "
                                          "ships the same file for dynamic degree)")
# the dimensions this module computes itself, with their weight files (fvd: any one of them)
BUILTIN_WEIGHTS: dict[str, tuple[WeightFile, ...]] = {
    "dynamic_degree": (RAFT_FILE,),
    "motion_score": (RAFT_FILE,),
    "fvd": tuple(WeightFile(name, source) for name, source in I3D_FILES.items()),
}
RAFT_ITERS = 20  # VBench's dynamic degree

# table rows: key -> (label, scale); VBench dimensions and composites in percent as the paper reports them
LABELS: dict[str, str] = {
    "subject_consistency": "subject consistency", "background_consistency": "background consistency",
    "aesthetic_quality": "aesthetic quality", "imaging_quality": "imaging quality", "i2v_subject": "i2v subject",
    "i2v_background": "i2v background", "motion_smoothness": "motion smoothness", "dynamic_degree": "dynamic degree",
    "appearance": "Appearance", "motion": "Motion", "overall": "Overall",
    "motion_score": "Motion Score [px/frame]", "fvd": "FVD ↓", **GROUP_LABELS,
}
PERCENT = (set(APPEARANCE_DIMENSIONS + MOTION_DIMENSIONS) | {"appearance", "motion", "overall"}
           | set(VBENCH_I2V_GROUPS))
COMPOSITION_NOTE = ("Appearance = mean(" + ", ".join(APPEARANCE_DIMENSIONS) + "); Motion = mean("
                    + ", ".join(MOTION_DIMENSIONS) + "); Overall = (2·Appearance + Motion)/3 (the paper does not "
                    "define them; this fits its three SVD rows to ±0.01)")


def overall_score(appearance: float, motion: float) -> float:
    """The Overall column from Appearance and Motion: (2·Appearance + Motion)/3."""
    return (2.0 * appearance + motion) / 3.0


def composite_scores(values: Mapping[str, float | None]) -> dict[str, float]:
    """Appearance, Motion and Overall from the dimension values, each only when all its dimensions are there."""
    out: dict[str, float] = {}
    for key, dims in (("appearance", APPEARANCE_DIMENSIONS), ("motion", MOTION_DIMENSIONS)):
        present = [values.get(d) for d in dims]
        if all(v is not None and math.isfinite(v) for v in present):
            out[key] = float(np.mean(present))
    if "appearance" in out and "motion" in out:
        out["overall"] = overall_score(out["appearance"], out["motion"])
    return out


@dataclass
class PaperSuite:
    """What a run computes: the chosen dimensions, those this build lacks, and the weight files found."""

    chosen: list[str]
    unavailable: list[str]
    files: dict[str, Path]
    registry: Mapping[str, DimensionSpec]
    device: torch.device
    i3d: InceptionI3d | None = None
    fvd_file: str | None = None
    raft: FlowEstimator | None = None  # dynamic degree and motion score (built once for every compared model)
    scorers: dict[str, ClipScorer] = field(default_factory=dict)


def resolve_suite(text: str, registry: Mapping[str, DimensionSpec]) -> tuple[list[str], list[str]]:
    """(dimensions to compute, dimensions of the paper suite this build has no network for).

    Raises:
        ConfigError: an unknown dimension name, or one named explicitly that this build cannot compute.
    """
    known = set(PAPER_SUITE) | set(registry)
    available = set(BUILTIN_WEIGHTS) | set(registry)
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError("--suite: expected 'paper' or a comma list of dimensions")
    if names == ["paper"]:
        return [n for n in PAPER_SUITE if n in available] + sorted(set(registry) - set(PAPER_SUITE)), \
            [n for n in PAPER_SUITE if n not in available]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"--suite: unknown dimension(s) {', '.join(unknown)}; expected 'paper' or some of "
                          f"{', '.join(sorted(known))}")
    missing = [n for n in names if n not in available]
    if missing:
        raise ConfigError(f"--suite: no network for {', '.join(missing)} in this build (available: "
                          f"{', '.join(sorted(available))})")
    return list(dict.fromkeys(names)), []


def _weights_of(name: str, registry: Mapping[str, DimensionSpec]) -> tuple[WeightFile, ...]:
    return BUILTIN_WEIGHTS[name] if name in BUILTIN_WEIGHTS else registry[name].weights


def find_weights(chosen: list[str], weights: str | Path | None,
                 registry: Mapping[str, DimensionSpec]) -> dict[str, Path]:
    """{released file name: path} of every file the chosen dimensions need, from the ``weights`` folder.

    Raises:
        CheckpointError: a file is missing: names the dimension, the file, the folder and where to get it.
    """
    folder = Path(weights) if weights is not None else None
    if folder is not None and not folder.is_dir():
        raise CheckpointError(f"--weights {folder}: not a folder (it should hold the released weight files)")
    found: dict[str, Path] = {}
    problems: list[str] = []
    for name in chosen:
        files = _weights_of(name, registry)
        present = [f for f in files if folder is not None and (folder / f.name).is_file()]
        if name == "fvd":  # one I3D file is enough
            if not present:
                listing = " or ".join(f"{f.name} ({f.source})" for f in files)
                problems.append(f"dimension fvd needs one of {listing}")
            found.update({f.name: folder / f.name for f in present[:1]})
            continue
        for f in files:
            if f in present:
                found[f.name] = folder / f.name
            else:
                problems.append(f"dimension {name} needs {f.name}; get it from {f.source}")
    if problems:
        raise CheckpointError(f"missing weight files in {_where(folder)}: " + "; ".join(dict.fromkeys(problems)))
    return found


def _where(folder: Path | None) -> str:
    return f"--weights {folder}" if folder is not None else "a --weights folder (none given)"


def prepare_suite(text: str, weights: str | Path | None, *, device: str | torch.device | None = None,
                  registry: Mapping[str, DimensionSpec] | None = None, reference: bool = True) -> PaperSuite:
    """Resolve ``--suite``, find the weight files and build the networks once (for all compared models).

    Raises:
        ConfigError: unknown dimension, or fvd without a reference set.
        CheckpointError: a weight file missing or unreadable.
    """
    registry = PAPER_DIMENSIONS if registry is None else registry
    chosen, unavailable = resolve_suite(text, registry)
    if "fvd" in chosen and not reference:
        raise ConfigError("dimension fvd compares with real clips: give them with --reference")
    files = find_weights(chosen, weights, registry)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    suite = PaperSuite(chosen=chosen, unavailable=unavailable, files=files, registry=registry, device=device)
    if "fvd" in chosen:
        suite.fvd_file = next(n for n in I3D_FILES if n in files)
        suite.i3d = load_i3d(files[suite.fvd_file], device)
    if "dynamic_degree" in chosen or "motion_score" in chosen:
        suite.raft = get_flow_estimator("raft", checkpoint=files[RAFT_FILE.name], iters=RAFT_ITERS, device=str(device))
    for name in chosen:
        if name in registry and name not in BUILTIN_WEIGHTS:
            spec = registry[name]
            suite.scorers[name] = spec.build({f.name: files[f.name] for f in spec.weights}, device)
    return suite


def i3d_features(clips: ClipsInput, suite: PaperSuite, *, label: str = "reference", batch_size: int = 8,
                 max_frames: int | None = None, skipped: list[dict[str, str]] | None = None,
                 progress: bool = False) -> np.ndarray:
    """(N, 400) I3D features of the usable clips of ``clips`` (at least ``FVD_MIN_FRAMES`` frames each)."""
    assert suite.i3d is not None, "prepare_suite with fvd first"
    stream = I3DFeatureStream(suite.i3d, batch_size=batch_size)
    skipped = [] if skipped is None else skipped
    for _, source, clip in usable_clips(collect_clips(clips, label), label, max_frames=max_frames,
                                        min_frames=FVD_MIN_FRAMES, fps=None, skipped=skipped, strict=False,
                                        progress=progress):
        stream.add(np.stack(list(clip.frames)), source.name)
    return stream.result()


def _image_for(source: EvalClip, position: int, images: PartnerSet) -> np.ndarray | None:
    """The conditioning image of a clip; VBench-I2V's ``<stem>-<index>`` names fall back to ``<stem>``."""
    image = conditioning_image(source, position, images)
    if image is None and images.index is not None and source.path is not None:
        match = re.fullmatch(r"(.+)-\d+", source.path.stem)
        if match and match.group(1) in images.index:
            image = read_image(images.index[match.group(1)].path)
    return image


def _score_clips(videos: ClipsInput, suite: PaperSuite, *, images: ClipsInput | None, batch_size: int,
                 max_frames: int | None, min_frames: int, fps: float | None, strict: bool, progress: bool,
                 skipped: list[dict[str, str]], notes: list[str]) -> tuple[list[dict[str, Any]], np.ndarray | None]:
    """Per-clip rows of the registry dimensions and the I3D features, reading each clip once."""
    scorers = suite.scorers
    stream = I3DFeatureStream(suite.i3d, batch_size=batch_size) if suite.i3d is not None else None
    partners = PartnerSet(images, "conditioning images")
    rows: list[dict[str, Any]] = []
    no_image: list[str] = []
    short: list[str] = []
    for position, source, clip in usable_clips(collect_clips(videos, "videos"), "videos", max_frames=max_frames,
                                               min_frames=min_frames, fps=fps, skipped=skipped, strict=strict,
                                               progress=progress):
        frames = np.stack(list(clip.frames))
        row: dict[str, Any] = {"name": source.name, "frames": len(frames)}
        needs_image = any(suite.registry[n].needs_image for n in scorers)
        image = _image_for(source, position, partners) if needs_image else None
        for name, scorer in scorers.items():
            if suite.registry[name].needs_image and image is None:
                row[name] = None
                no_image.append(source.name)
                continue
            row[name] = float(scorer.score(frames, image if suite.registry[name].needs_image else None))
        if stream is not None:
            if len(frames) >= FVD_MIN_FRAMES:
                stream.add(frames, source.name)
            else:
                short.append(source.name)
        rows.append(row)
    if no_image:
        notes.append(f"no conditioning image (--images) for {len(set(no_image))} clip(s), i2v dimensions not "
                     f"scored on them: {', '.join(sorted(set(no_image))[:5])}")
    if short:
        notes.append(f"fvd: {len(short)} clip(s) under {FVD_MIN_FRAMES} frames left out: {', '.join(short[:5])}")
    return rows, (stream.result() if stream is not None else None)


def evaluate_paper(videos: ClipsInput, suite: PaperSuite, *, reference_features: np.ndarray | None = None,
                   images: ClipsInput | None = None, fps: float | None = None, max_frames: int | None = None,
                   min_frames: int = MIN_FRAMES, batch_size: int = 8, strict: bool = False,
                   progress: bool = False) -> EvalResult:
    """Score one set of clips with the suite's dimensions (see the module docstring).

    Args:
        videos: a folder or manifest of clips, or arrays (as ``evaluate_videos``).
        suite: from ``prepare_suite``.
        reference_features: I3D features of the real clips (``i3d_features``), needed for fvd.
        images: the conditioning images (folder matched by file stem, VBench-I2V names included).

    Raises:
        DataError: no usable clip, or ``strict`` and a clip is unusable.
    """
    started = time.perf_counter()
    chosen = suite.chosen
    skipped: list[dict[str, str]] = []
    notes: list[str] = []
    aggregate: dict[str, float | None] = {}
    counts: dict[str, str] = {}
    rows: dict[str, dict[str, Any]] = {}
    flow_groups = [g for g in ("dynamic_degree", "motion_score") if g in chosen]
    if flow_groups:
        flow = evaluate_videos(videos, flow=suite.raft, metrics=flow_groups, fps=fps, max_frames=max_frames,
                               min_frames=min_frames, strict=strict, progress=progress)
        for key in flow_groups:
            aggregate[key] = flow.aggregate[key]
            counts[key] = flow.counts.get(key, "")
        notes.extend(n for n in flow.notes if n.startswith("dynamic degree"))
        skipped.extend(flow.skipped)
        for row in flow.per_video:
            rows[row["name"]] = {k: row.get(k) for k in ("name", "frames", "dynamic", "motion_score") if k in row}
    features = None
    if suite.scorers or "fvd" in chosen:
        clip_rows, features = _score_clips(videos, suite, images=images, batch_size=batch_size,
                                           max_frames=max_frames, min_frames=min_frames, fps=fps, strict=strict,
                                           progress=progress, skipped=[] if flow_groups else skipped, notes=notes)
        for row in clip_rows:
            rows.setdefault(row["name"], {}).update(row)
    if not rows:
        raise DataError("no usable video among those given" + "".join(f"\n  {s['name']}: {s['reason']}"
                                                                    for s in skipped))
    for name in suite.scorers:
        values = [r[name] for r in rows.values() if r.get(name) is not None and math.isfinite(r[name])]
        if values:
            aggregate[name] = float(np.mean(values))
            counts[name] = str(len(values))
    if "fvd" in chosen:
        if reference_features is None:
            raise ConfigError("dimension fvd compares with real clips: give them with --reference")
        aggregate["fvd"] = fvd(features, reference_features)
        counts["fvd"] = f"{len(features)}/{len(reference_features)} clips"
        fewest, dim = min(len(features), len(reference_features)), features.shape[1]
        if fewest < dim:  # routine (I3D has 400 logits): computed, but only comparable at the same n
            notes.append(f"fvd: from {len(features)} generated and {len(reference_features)} reference clips, fewer "
                         f"than the {dim} I3D features: the covariances are rank-deficient and FVD depends on n; "
                         "compare it only with values from the same numbers of clips")
        notes.append(f"fvd: variant {VIDEOGPT_VARIANT} ({suite.fvd_file}; pytorch-i3d InceptionI3d, VideoGPT "
                     "preprocessing: shorter side to 224 bilinear, centre crop 224, [-1, 1], logits averaged over "
                     "time); values from other I3D ports or clip lengths are not comparable")
    aggregate.update(composite_scores(aggregate))
    notes.append(COMPOSITION_NOTE)
    groups, group_lacking = vbench_i2v_scores(aggregate)
    aggregate.update(groups)  # blank ones as None: null in the JSON, "—" in the table
    notes.append(vbench_i2v_note(group_lacking))
    if "motion_score" in chosen:
        notes.append("Motion Score: mean RAFT flow magnitude in px/frame at native size (the paper does not "
                     "define its Motion Score; unconfirmed that it is this)")
    lacking = [n for n in chosen if n in PAPER_SUITE and n not in aggregate]
    if suite.unavailable:
        notes.append("missing (no network in this build): " + ", ".join(suite.unavailable))
    if lacking:
        notes.append("no value (no usable clip): " + ", ".join(lacking))
    settings = {"suite": chosen, "missing_dimensions": suite.unavailable, "weights": sorted(suite.files),
                "fvd_variant": VIDEOGPT_VARIANT if "fvd" in chosen else None, "device": str(suite.device),
                "fps": fps, "max_frames": max_frames, "min_frames": min_frames, "num_videos": len(rows),
                "seconds": round(time.perf_counter() - started, 2)}
    return EvalResult(aggregate=aggregate, per_video=[json_value(r) for r in rows.values()], skipped=skipped,
                      notes=notes, counts=counts, settings=settings)


def _cell(key: str, value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{100 * value:.2f}" if key in PERCENT else f"{value:.2f}"


def paper_table(results: Mapping[str, EvalResult]) -> str:
    """One Markdown table: a row per dimension and composite, a column per model; missing ones named."""
    first = next(iter(results.values()))
    chosen = list(first.settings.get("suite", []))
    missing = list(first.settings.get("missing_dimensions", []))
    ordered = [k for k in PAPER_SUITE if k in chosen or k in missing] + [k for k in chosen if k not in PAPER_SUITE]
    dims = [k for k in ordered if k not in ("motion_score", "fvd")]
    keys = (dims + ["appearance", "motion", "overall"] + list(VBENCH_I2V_GROUPS)
            + [k for k in ("motion_score", "fvd") if k in ordered])
    names = list(results)
    lines = ["| dimension | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for key in keys:
        label = LABELS.get(key, key.replace("_", " ")) + (" [%]" if key in PERCENT else "")
        if key in missing:
            cells = ["missing: no network in this build"] * len(names)
        else:
            cells = [_cell(key, r.aggregate.get(key)) for r in results.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paper_report(results: Mapping[str, EvalResult]) -> str:
    """The table followed by each model's skipped clips and the notes (shared notes once)."""
    out = [paper_table(results)]
    seen: set[str] = set()
    for name, result in results.items():
        prefix = f"[{name}] " if len(results) > 1 else ""
        for s in result.skipped:
            out.append(f"{prefix}skipped [{s['set']}] {s['name']}: {s['reason']}")
        for note in result.notes:
            if note not in seen:
                seen.add(note)
                out.append(f"- {note}")
    return "\n".join([out[0], ""] + out[1:])


def model_names(folders: list[str]) -> list[str]:
    """Column names for compared folders: their names, or their paths when names repeat."""
    names = [Path(f).name or str(f) for f in folders]
    return names if len(set(names)) == len(names) else [str(f) for f in folders]


__all__ = ["APPEARANCE_DIMENSIONS", "MOTION_DIMENSIONS", "PAPER_SUITE", "PaperSuite", "composite_scores",
           "evaluate_paper", "find_weights", "i3d_features", "model_names", "overall_score", "paper_report",
           "paper_table", "prepare_suite", "resolve_suite"]
