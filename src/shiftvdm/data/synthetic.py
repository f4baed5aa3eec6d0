"""Synthetic moving-sprite clips with known ground truth (the demo's data and the motion tests' fixtures).

Each clip shows 1..K sprites (disc, square or triangle; random colour, size, speed and a uniformly random
direction, so the motion cannot be predicted from frame 0) moving in straight lines and reflecting off the
walls, over a smooth textured or flat background. Rendering is anti-aliased at sub-pixel positions, so a
coverage-weighted centroid of a rendered sprite matches its recorded centre to a small fraction of a pixel.

Coordinates: ``x`` is the column and ``y`` the row, in pixels, with pixel ``(row i, column j)`` centred at
``(x=j, y=i)``; a frame spans ``[-0.5, S - 0.5]`` on both axes.

Everything is vectorised numpy driven by one generator derived from the seed, so the same seed gives the
same arrays, and (through ``write_synthetic_dataset``) the same file bytes.
"""

from __future__ import annotations

import io
import json
import logging
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from shiftvdm.data.manifest import write_manifest
from shiftvdm.data.video_io import write_video
from shiftvdm.errors import DataError
from shiftvdm.utils.atomic import staged_dir, sweep_staging
from shiftvdm.utils.checkpoint import atomic_write, clean_stale_temps, save_json
from shiftvdm.utils.outputs import STAMP_FILE, check_output_dir, check_replaceable, write_stamp
from shiftvdm.utils.outputs import entries as folder_entries
from shiftvdm.utils.run_lock import LOCK_FILE, run_lock
from shiftvdm.utils.seeding import numpy_rng_for

logger = logging.getLogger(__name__)

SHAPES = ("disc", "square", "triangle")
# Textured backgrounds are drawn per block of this many clips from a generator keyed by the block index, so
# the result does not depend on how rendering is chunked.
_BLOCK = 256
# Rendering works on chunks of at most this many float32 values (~16 MB per buffer).
_MAX_CHUNK_VALUES = 4_000_000
# Highest spatial frequency (cycles per frame) of the textured background.
_TEXTURE_MAX_FREQ = 4
# Ground truth format version written to dataset.json.
GROUND_TRUTH_VERSION = 1


@dataclass
class SpriteClips:
    """A batch of synthetic clips and their ground truth.

    Attributes:
        videos: uint8 (N, T, S, S, 3) RGB.
        trajectories: float32 (N, K, T, 2) sprite centres (x, y) in pixels; zeros where ``sprite_mask`` is False.
        sprite_mask: bool (N, K), which sprite slots are used (K = the largest sprite count).
        num_sprites: int (N,) sprites per clip.
        colors: float32 (N, K, 3) RGB in [0, 1].
        radii: float32 (N, K) half extent of each sprite in pixels (disc radius, half side, triangle circumradius).
        shapes: int8 (N, K) index into ``shape_names``.
        angles: float32 (N, K) rotation of triangles in radians (0 for other shapes).
        velocities: float32 (N, K, 2) initial velocity (x, y) in px/frame (0 for static clips).
        is_static: bool (N,) clips whose sprites never move.
        backgrounds: uint8 (N, S, S, 3) the background without sprites.
        shape_names: names of the shape indices.
        settings: the generator settings, seed included.
    """

    videos: np.ndarray
    trajectories: np.ndarray
    sprite_mask: np.ndarray
    num_sprites: np.ndarray
    colors: np.ndarray
    radii: np.ndarray
    shapes: np.ndarray
    angles: np.ndarray
    velocities: np.ndarray
    is_static: np.ndarray
    backgrounds: np.ndarray
    shape_names: tuple[str, ...] = SHAPES
    settings: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.videos)

    def clip_ground_truth(self, index: int) -> dict:
        """JSON-ready ground truth of one clip (positions rounded to 1e-4 px)."""
        sprites = []
        for k in np.flatnonzero(self.sprite_mask[index]):
            sprites.append({
                "shape": self.shape_names[int(self.shapes[index, k])],
                "color": [round(float(c), 4) for c in self.colors[index, k]],
                "radius": round(float(self.radii[index, k]), 4),
                "angle": round(float(self.angles[index, k]), 4),
                "velocity": [round(float(v), 4) for v in self.velocities[index, k]],
                "trajectory": [[round(float(x), 4), round(float(y), 4)] for x, y in self.trajectories[index, k]],
            })
        return {"static": bool(self.is_static[index]), "num_sprites": int(self.num_sprites[index]),
                "sprites": sprites}

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array, under the names ``save_npz`` uses."""
        return {
            "videos": self.videos, "trajectories": self.trajectories, "sprite_mask": self.sprite_mask,
            "num_sprites": self.num_sprites, "colors": self.colors, "radii": self.radii, "shapes": self.shapes,
            "angles": self.angles, "velocities": self.velocities, "is_static": self.is_static,
            "backgrounds": self.backgrounds, "shape_names": np.array(self.shape_names),
        }


def _pair(value: float | tuple[float, float], name: str) -> tuple[float, float]:
    lo, hi = (value, value) if isinstance(value, (int, float)) else tuple(value)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise DataError(f"{name} must be a number or a (low, high) pair with low <= high, got {value!r}")
    return float(lo), float(hi)


def _reflect(position: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Fold unbounded straight-line positions into [lo, hi] as a ball bouncing elastically off both walls."""
    span = hi - lo
    safe = np.where(span > 0, span, 1.0)
    u = np.mod(position - lo, 2.0 * safe)
    folded = lo + np.where(u <= safe, u, 2.0 * safe - u)
    return np.where(span > 0, folded, lo)


def _textured_backgrounds(rng: np.random.Generator, count: int, size: int, level: np.ndarray,
                          contrast: float) -> np.ndarray:
    """Smooth periodic random fields: low-frequency Fourier series with a 1/(1+|k|) amplitude spectrum.

    Returns float32 (count, S, S, 3): per channel ``level`` plus a zero-mean pattern of standard deviation
    ``contrast`` (then clipped to [0, 1]).
    """
    freqs = np.arange(-_TEXTURE_MAX_FREQ, _TEXTURE_MAX_FREQ + 1)
    nf = len(freqs)
    amplitude = 1.0 / (1.0 + np.hypot(freqs[:, None], freqs[None, :]))
    amplitude[_TEXTURE_MAX_FREQ, _TEXTURE_MAX_FREQ] = 0.0  # no DC term: the level sets the mean
    coeffs = (rng.standard_normal((count, nf, nf, 3)) + 1j * rng.standard_normal((count, nf, nf, 3)))
    coeffs *= amplitude[None, :, :, None]
    grid = np.arange(size)
    basis = np.exp(2j * np.pi * np.outer(grid, freqs) / size)  # (S, nf)
    # field[n, y, x, c] = Re sum_{ky,kx} coeffs[n, ky, kx, c] e^{2πi(ky·y + kx·x)/S}, separably
    partial = np.einsum("nabc,xb->naxc", coeffs, basis)  # (n, nf, S, 3)
    pattern = np.einsum("naxc,ya->nyxc", partial, basis).real  # (n, S, S, 3)
    pattern -= pattern.mean(axis=(1, 2), keepdims=True)
    pattern /= pattern.std(axis=(1, 2), keepdims=True) + 1e-12
    return np.clip(level[:, None, None, :] + contrast * pattern, 0.0, 1.0).astype(np.float32)


def _box_coverage(coord: np.ndarray, centre: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Exact overlap of unit pixels [c-0.5, c+0.5] with the interval [centre-half, centre+half]."""
    return np.clip(np.minimum(coord + 0.5, centre + half) - np.maximum(coord - 0.5, centre - half), 0.0, 1.0)


def _triangle_sdf(px: np.ndarray, py: np.ndarray, circumradius: np.ndarray) -> np.ndarray:
    """Signed distance to an equilateral triangle centred (centroid) at the origin, apex towards -y."""
    k = math.sqrt(3.0)
    half_side = circumradius * k / 2.0
    x = np.abs(px) - half_side
    y = -py + half_side / k  # image rows grow downwards; the formula wants y up
    fold = x + k * y > 0
    x, y = np.where(fold, (x - k * y) / 2.0, x), np.where(fold, (-k * x - y) / 2.0, y)
    x = x - np.clip(x, -2.0 * half_side, 0.0)
    return -np.hypot(x, y) * np.sign(y)


def _sprite_alpha(shape: int, cx: np.ndarray, cy: np.ndarray, radius: np.ndarray, angle: np.ndarray,
                  size: int, antialias: bool) -> np.ndarray:
    """Coverage (n, T, S, S) in [0, 1] of one sprite per clip. cx, cy: (n, T); radius, angle: (n,)."""
    grid = np.arange(size, dtype=np.float32)
    r = radius[:, None, None]
    if SHAPES[shape] == "square":
        if antialias:
            ax = _box_coverage(grid[None, None, :], cx[..., None], r)  # (n, T, S)
            ay = _box_coverage(grid[None, None, :], cy[..., None], r)
        else:
            ax = (np.abs(grid[None, None, :] - cx[..., None]) <= r).astype(np.float32)
            ay = (np.abs(grid[None, None, :] - cy[..., None]) <= r).astype(np.float32)
        return ay[..., :, None] * ax[..., None, :]
    dx = grid[None, None, None, :] - cx[..., None, None]  # (n, T, 1, S)
    dy = grid[None, None, :, None] - cy[..., None, None]  # (n, T, S, 1)
    r = radius[:, None, None, None]
    if SHAPES[shape] == "disc":
        sdf = np.sqrt(dx * dx + dy * dy) - r
    else:
        cos, sin = np.cos(angle)[:, None, None, None], np.sin(angle)[:, None, None, None]
        sdf = _triangle_sdf(cos * dx + sin * dy, -sin * dx + cos * dy, r)
    if antialias:  # signed-distance coverage: linear ramp over one pixel across the edge
        return np.clip(0.5 - sdf, 0.0, 1.0).astype(np.float32)
    return (sdf <= 0).astype(np.float32)


def _render(bg: np.ndarray, trajectories: np.ndarray, mask: np.ndarray, shapes: np.ndarray, radii: np.ndarray,
            angles: np.ndarray, colors: np.ndarray, num_frames: int, antialias: bool) -> np.ndarray:
    """Composite the sprites of m clips over their backgrounds (m, S, S, 3) -> uint8 (m, T, S, S, 3)."""
    m, size = bg.shape[0], bg.shape[1]
    frames = np.broadcast_to(bg[:, None], (m, num_frames, size, size, 3)).copy()
    alpha = np.empty((m, num_frames, size, size, 1), dtype=np.float32)
    for k in range(trajectories.shape[1]):  # later sprites are drawn over earlier ones
        alpha.fill(0.0)
        for shape in np.unique(shapes[:, k]):
            rows = np.flatnonzero((shapes[:, k] == shape) & mask[:, k])
            if len(rows) == 0:
                continue
            alpha[rows, ..., 0] = _sprite_alpha(int(shape), trajectories[rows, k, :, 0], trajectories[rows, k, :, 1],
                                                radii[rows, k].astype(np.float32),
                                                angles[rows, k].astype(np.float32), size, antialias)
        # over-compositing, in place: frames += alpha * (colour - frames)
        blend = colors[:, k].astype(np.float32)[:, None, None, None, :] - frames
        blend *= alpha
        frames += blend
    frames *= 255.0
    return np.rint(frames, out=frames).astype(np.uint8)


def make_sprite_clips(
    num_clips: int,
    num_frames: int,
    size: int,
    seed: int,
    *,
    num_sprites: int | tuple[int, int] = (1, 3),
    sprite_size: float | tuple[float, float] = (6.0, 12.0),
    speed: float | tuple[float, float] = (1.0, 3.0),
    static_prob: float = 0.0,
    background: Literal["textured", "flat"] = "textured",
    shapes: tuple[str, ...] = SHAPES,
    color_range: tuple[float, float] = (0.55, 1.0),
    background_range: tuple[float, float] = (0.05, 0.3),
    texture_contrast: float = 0.06,
    antialias: bool = True,
) -> SpriteClips:
    """Render ``num_clips`` clips of moving sprites with their ground truth.

    Args:
        num_clips: N.
        num_frames: T.
        size: S, frames are S × S.
        seed: the only source of randomness (via ``numpy_rng_for(seed, "sprite-clips")``).
        num_sprites: sprites per clip, uniform over [min, max] (or a fixed count).
        sprite_size: sprite extent in pixels (disc diameter, square side, triangle circumdiameter), uniform.
        speed: pixels per frame, uniform; the direction is uniform on the circle.
        static_prob: probability that a clip's sprites never move.
        background: "textured" (smooth random pattern) or "flat" (one colour per clip).
        shapes: shape names drawn uniformly, from ``SHAPES``.
        color_range: each sprite colour channel is uniform in this range (kept above the background's
            range so that sprites are brighter than the background: easy, known segmentation).
        background_range: each background channel's level is uniform in this range.
        texture_contrast: standard deviation of the textured pattern around its level.
        antialias: render at sub-pixel positions with anti-aliased edges; if False, centres are rounded to
            whole pixels and edges are hard (crisp sprites; trajectories record the rounded centres).

    Returns:
        SpriteClips with uint8 videos (N, T, S, S, 3) and the ground truth.
    """
    if num_clips < 1 or num_frames < 1 or size < 2:
        raise DataError(f"need num_clips >= 1, num_frames >= 1 and size >= 2, got {num_clips}, {num_frames}, {size}")
    count_lo, count_hi = (num_sprites, num_sprites) if isinstance(num_sprites, int) else tuple(num_sprites)
    if not (isinstance(count_lo, int) and isinstance(count_hi, int) and 1 <= count_lo <= count_hi):
        raise DataError("num_sprites must be a count >= 1 or a (min, max) pair with 1 <= min <= max, "
                        f"got {num_sprites!r}")
    size_lo, size_hi = _pair(sprite_size, "sprite_size")
    speed_lo, speed_hi = _pair(speed, "speed")
    color_lo, color_hi = _pair(color_range, "color_range")
    bg_lo, bg_hi = _pair(background_range, "background_range")
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown or not shapes:
        raise DataError(f"shapes must be a non-empty subset of {SHAPES}, got {shapes!r}")
    if background not in ("textured", "flat"):
        raise DataError(f"background must be 'textured' or 'flat', got {background!r}")
    if not 0.0 <= static_prob <= 1.0:
        raise DataError(f"static_prob must be in [0, 1], got {static_prob}")
    if size_lo <= 0 or size_hi > size or speed_lo < 0 or not (0 <= color_lo and color_hi <= 1 and 0 <= bg_lo
                                                              and bg_hi <= 1):
        raise DataError(f"sprite_size must lie in (0, {size}], speed >= 0, colour and background ranges in [0, 1]; "
                        f"got sprite_size={sprite_size!r}, speed={speed!r}, color_range={color_range!r}, "
                        f"background_range={background_range!r}")

    rng = numpy_rng_for(seed, "sprite-clips")
    n, t_len, k_max = num_clips, num_frames, count_hi
    counts = rng.integers(count_lo, count_hi + 1, size=n)
    mask = np.arange(k_max)[None, :] < counts[:, None]  # (N, K)
    shape_index = np.array([SHAPES.index(s) for s in shapes], dtype=np.int8)
    sprite_shapes = shape_index[rng.integers(0, len(shapes), size=(n, k_max))]
    radii = rng.uniform(size_lo, size_hi, size=(n, k_max)) / 2.0
    angles = np.where(sprite_shapes == SHAPES.index("triangle"), rng.uniform(0, 2 * np.pi, size=(n, k_max)), 0.0)
    colors = rng.uniform(color_lo, color_hi, size=(n, k_max, 3))
    speeds = rng.uniform(speed_lo, speed_hi, size=(n, k_max))
    directions = rng.uniform(0.0, 2.0 * np.pi, size=(n, k_max))
    start_u = rng.uniform(0.0, 1.0, size=(n, k_max, 2))
    is_static = rng.uniform(size=n) < static_prob
    levels = rng.uniform(bg_lo, bg_hi, size=(n, 3))

    # Trajectories: p(t) = reflect(p0 + v t) into [r - 0.5, S - 0.5 - r], so the whole sprite stays inside.
    speeds = np.where(is_static[:, None], 0.0, speeds)
    velocities = np.stack([speeds * np.cos(directions), speeds * np.sin(directions)], axis=-1)  # (N, K, 2)
    lo = (radii - 0.5)[..., None]  # (N, K, 1)
    hi = (size - 0.5 - radii)[..., None]
    start = lo + start_u * (hi - lo)  # (N, K, 2)
    steps = np.arange(t_len, dtype=np.float64)[None, None, :, None]
    raw = start[:, :, None, :] + velocities[:, :, None, :] * steps  # (N, K, T, 2)
    trajectories = _reflect(raw, lo[..., None, :], hi[..., None, :])
    if not antialias:
        trajectories = np.clip(np.rint(trajectories), np.ceil(lo)[..., None, :], np.floor(hi)[..., None, :])
    trajectories = np.where(mask[..., None, None], trajectories, 0.0).astype(np.float32)

    videos = np.empty((n, t_len, size, size, 3), dtype=np.uint8)
    backgrounds = np.empty((n, size, size, 3), dtype=np.uint8)
    for block, first in enumerate(range(0, n, _BLOCK)):
        sl = slice(first, min(n, first + _BLOCK))
        if background == "textured":
            bg_rng = numpy_rng_for(seed, "sprite-clips", "background", block)
            bg = _textured_backgrounds(bg_rng, sl.stop - sl.start, size, levels[sl], texture_contrast)
        else:
            bg = np.broadcast_to(levels[sl, None, None, :].astype(np.float32), (sl.stop - sl.start, size, size, 3))
        backgrounds[sl] = np.rint(np.asarray(bg) * 255.0).astype(np.uint8)
        chunk = max(1, _MAX_CHUNK_VALUES // (t_len * size * size * 3))
        for chunk_start in range(sl.start, sl.stop, chunk):
            part = slice(chunk_start, min(sl.stop, chunk_start + chunk))
            videos[part] = _render(bg[part.start - sl.start:part.stop - sl.start], trajectories[part],
                                   mask[part], sprite_shapes[part], radii[part], angles[part], colors[part],
                                   t_len, antialias)

    settings = {
        "num_clips": n, "num_frames": t_len, "size": size, "seed": int(seed), "num_sprites": [count_lo, count_hi],
        "sprite_size": [size_lo, size_hi], "speed": [speed_lo, speed_hi], "static_prob": float(static_prob),
        "background": background, "shapes": list(shapes), "color_range": [color_lo, color_hi],
        "background_range": [bg_lo, bg_hi], "texture_contrast": float(texture_contrast),
        "antialias": bool(antialias),
    }
    return SpriteClips(
        videos=videos,
        trajectories=trajectories,
        sprite_mask=mask,
        num_sprites=counts.astype(np.int64),
        colors=np.where(mask[..., None], colors, 0.0).astype(np.float32),
        radii=np.where(mask, radii, 0.0).astype(np.float32),
        shapes=np.where(mask, sprite_shapes, -1).astype(np.int8),
        angles=np.where(mask, angles, 0.0).astype(np.float32),
        velocities=np.where(mask[..., None], velocities, 0.0).astype(np.float32),
        is_static=is_static,
        backgrounds=backgrounds,
        settings=settings,
    )


def save_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Atomically write an .npz whose bytes depend only on the arrays (``np.savez`` stamps the current time)."""
    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, mode="w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, array in arrays.items():
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, buffer.getvalue())

    return atomic_write(path, write)


def load_ground_truth(dataset_dir: str | Path) -> SpriteClips:
    """Load ``ground_truth.npz`` (and the settings in ``dataset.json``) written by ``write_synthetic_dataset``."""
    dataset_dir = Path(dataset_dir)
    npz_path = dataset_dir / "ground_truth.npz"
    if not npz_path.is_file():
        raise DataError(f"{npz_path}: missing; expected a folder written by `shiftvdm data synth`")
    try:
        with np.load(npz_path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        settings = json.loads((dataset_dir / "dataset.json").read_text())
    except Exception as exc:
        raise DataError(f"{npz_path}: unreadable ground truth ({exc})") from exc
    names = tuple(str(s) for s in arrays.pop("shape_names"))
    return SpriteClips(**arrays, shape_names=names, settings=settings.get("settings", {}))


def _settings_differences(old: dict, new: dict) -> list[str]:
    """``name old -> new`` for every setting that differs (the JSON forms: lists, floats)."""
    old, new = json.loads(json.dumps(old)), json.loads(json.dumps(new))
    return [f"{k} {old.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]


def _dataset_state(out_dir: Path, header: dict, overwrite: bool) -> Literal["new", "continue", "replace"]:
    """What ``out_dir`` holds and what writing ``header``'s dataset into it does, or a DataError if refused.

    "new": empty or missing (the lock file and what a writer killed before ``dataset.json`` left do not count);
    "continue": an unfinished dataset (``dataset.json``, no manifest) with the same settings, without
    ``overwrite``; "replace": a dataset or an unfinished one, with ``overwrite``."""
    if not out_dir.is_dir():
        return "new"
    manifest, info = out_dir / "manifest.jsonl", out_dir / "dataset.json"
    leftovers = [p for p in out_dir.iterdir()
                 if not (p.name in (LOCK_FILE, STAMP_FILE)
                         or (p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file())
                         or (p.name == "clips" and p.is_dir() and not any(p.iterdir())))]
    if not leftovers:
        return "new"
    if not (manifest.exists() or info.exists()):
        raise DataError(f"{out_dir}: exists and is not empty; choose a new folder for the synthetic dataset")
    if overwrite:
        return "replace"
    if manifest.exists():
        raise DataError(f"{out_dir}: already holds a dataset; pass --overwrite to replace it")
    try:
        old = json.loads(info.read_text())
        old_settings = dict(old["settings"], version=old.get("version"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{info}: unreadable ({exc}); the folder holds an unfinished dataset (no manifest.jsonl) "
                        "whose settings are unknown; pass --overwrite to replace it") from None
    differences = _settings_differences(old_settings, dict(header["settings"], version=header["version"]))
    if differences:
        raise DataError(f"{out_dir}: holds an unfinished dataset (no manifest.jsonl) written with other settings "
                        f"({'; '.join(differences)}); rerun with its settings to finish it, or pass --overwrite "
                        "to replace it")
    return "continue"


SYNTH_OUTPUTS = ("clips", "dataset.json", "ground_truth.npz", "manifest.jsonl")


def _write_dataset(out_dir: Path, clips: SpriteClips, header: dict, fps: float, format: str, *,
                   resume: bool = False) -> None:
    """The files of a synthetic dataset: the stamp and ``dataset.json`` first, the clips, the manifest (its
    completion mark) last. A folder with ``dataset.json`` and no manifest is an unfinished dataset whose settings
    are known; with ``resume`` the clips an interrupted run wrote (atomically: complete, the same bytes) are kept."""
    if not (resume and (out_dir / STAMP_FILE).is_file()):
        write_stamp(out_dir, "data synth", inputs={"settings": header["settings"]}, outputs=SYNTH_OUTPUTS)
    if not (resume and (out_dir / "dataset.json").is_file()):
        save_json(header, out_dir / "dataset.json")
    (out_dir / "clips").mkdir(exist_ok=True)
    if not (resume and (out_dir / "ground_truth.npz").is_file()):
        save_npz(out_dir / "ground_truth.npz", clips.arrays())
    records, skipped = [], 0
    for i in range(len(clips)):
        relpath = f"clips/clip_{i:05d}.{format}"
        if resume and (out_dir / relpath).is_file():
            skipped += 1
        else:
            write_video(out_dir / relpath, clips.videos[i], fps)  # atomic: a kill never leaves half a clip
        records.append({"path": relpath, "fps": float(fps), "clip": i, "ground_truth": clips.clip_ground_truth(i)})
    if resume:
        logger.info("continued the unfinished dataset in %s: %d of %d clips were already written", out_dir,
                    skipped, len(clips))
    write_manifest(out_dir / "manifest.jsonl", records)


def write_synthetic_dataset(
    out_dir: str | Path,
    num_clips: int = 64,
    num_frames: int = 16,
    size: int = 64,
    seed: int = 0,
    *,
    fps: float = 8.0,
    format: Literal["mp4", "npy"] = "mp4",
    overwrite: bool = False,
    **sprite_options,
) -> Path:
    """Render sprite clips and write them as a dataset folder.

    Layout: ``clips/clip_00000.mp4`` (or ``.npy``: float32 [0, 1], exact), ``manifest.jsonl`` (one line per clip
    with its ground truth under meta key ``"ground_truth"``), ``ground_truth.npz`` (every ``SpriteClips`` array,
    the rendered videos included) and ``dataset.json`` (the settings). Every file is written atomically;
    ``dataset.json`` first, the manifest last, so a folder without the manifest is an unfinished dataset. A
    rerun with the same settings into an unfinished dataset (e.g. after a kill) continues it, writing only the
    missing clips; other settings are refused, naming them, unless ``overwrite``. The same arguments give the
    same bytes, continued or not. The folder is locked (``.lock``, ``utils/run_lock.py``) while it is written;
    the lock file is removed when the dataset is complete.

    Args:
        out_dir: the dataset folder (created).
        num_clips, num_frames, size, seed, **sprite_options: passed to ``make_sprite_clips``.
        fps: the frame rate recorded in the mp4s and the manifest.
        format: "mp4" (H.264, visually lossless) or "npy" (lossless).
        overwrite: replace an existing (or unfinished) dataset in ``out_dir``.

    Returns:
        The path of ``manifest.jsonl``.
    """
    out_dir = Path(out_dir)
    if format not in ("mp4", "npy"):
        raise DataError(f"format must be 'mp4' or 'npy', got {format!r}")
    if not (fps > 0 and math.isfinite(fps)):
        raise DataError(f"fps must be a positive number, got {fps}")
    clips = make_sprite_clips(num_clips, num_frames, size, seed, **sprite_options)  # bad settings fail here, first
    manifest_path = out_dir / "manifest.jsonl"
    header = {"generator": "shiftvdm.data.synthetic.make_sprite_clips", "version": GROUND_TRUTH_VERSION,
              "coordinates": "x = column, y = row, pixel centres at integers",
              "settings": dict(clips.settings, fps=float(fps), format=format)}

    check_output_dir(out_dir, "--out")  # a file, a read-only folder, a folder under a file: refused before work
    sweep_staging(out_dir)  # what a killed --overwrite left beside it (only writers no longer running)
    _dataset_state(out_dir, header, overwrite)  # refused before the lock: a refused command writes nothing
    with run_lock(out_dir, what="--out"):
        try:
            state = _dataset_state(out_dir, header, overwrite)  # again: another job may have written meanwhile
            for folder in (out_dir, out_dir / "clips"):  # what a killed writer left half-written
                for stale in clean_stale_temps(folder) if folder.is_dir() else []:
                    logger.info("removed %s (left by an interrupted write)", stale)
            if state != "replace":
                _write_dataset(out_dir, clips, header, fps, format, resume=state == "continue")
            else:
                listed = check_replaceable(out_dir, "data synth")  # a dataset this command did not make: refused
                # the successor is built beside the old dataset and swapped in only when complete: a full disk or a
                # kill keeps the old one; files the stamp does not list (a user's) move over to the new folder
                carry = sorted(folder_entries(out_dir) - set(listed))
                with staged_dir(out_dir, carry=carry) as staging:
                    _write_dataset(staging, clips, header, fps, format)
                logger.info("--overwrite: replaced the dataset in %s (removed %s)", out_dir, ", ".join(listed))
        finally:
            # a complete dataset (finished now, or the old one a failed --overwrite kept) holds only its own files
            # (the same bytes from the same arguments). Removed while held: a job that opened the old lock file
            # before this is refused or, getting it after the release, finds the manifest and is refused too
            # (without --overwrite).
            if manifest_path.is_file():
                (out_dir / LOCK_FILE).unlink(missing_ok=True)
    logger.info("wrote %d synthetic clips (%d frames of %dx%d, seed %d) to %s", len(clips), num_frames, size,
                size, seed, out_dir)
    return manifest_path
