"""Fréchet motion distance, FVMD-style: grid point tracks -> velocity/acceleration angle histograms -> Fréchet.

Reference: FVMD (Liu et al., arXiv 2407.16124; DSL-Lab/FVMD-frechet-video-motion-distance @ 4d592d96).
What carries over:

* a 20×20 grid of query points, 8 px inside the borders of a 256×256 frame, tracked through windows of
  16 frames that start every 15 frames (consecutive windows share one frame; the tail that does not fill
  a window is dropped);
* velocity = first difference of the positions, zero for the first frame of a window;
* features: the window's (frames, 20, 20, 2) vectors are cut into cubes of 4 frames × 5×5 points; each cube
  gives an 8-bin histogram of the vector angles, every vector weighted by
  ceil(log2(min(|v|, 255) + 1)) / 8 (a log-magnitude bin); the window's feature is all its cubes'
  histograms concatenated (4·4·4·8 = 512 numbers for velocity);
* one Gaussian per set of windows and the Fréchet distance
  d² = |μ₁ − μ₂|² + Tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^½), reported for velocity, acceleration and their
  concatenation ("combined"), as the reference does (d², not d).

Differs from the reference:

* Tracker: FVMD runs PIPs++ (downloaded weights) on frames resized to 256×256. We track with our
  weight-free tracker (``shiftvdm.motion``, LK by default) at the clip's own size and rescale the tracks
  to 256×256 coordinates, so velocities are in the same "pixels of a 256-px frame" unit.
* Acceleration: the reference calls ``calc_acceleration`` on the positions instead of the velocities,
  so its "acceleration" is the velocity again (shifted, with two leading zeros). We compute the true
  second difference a_t = v_t − v_{t−1} (zero for the first two frames). Our acceleration distances
  therefore measure something different from (and are not comparable with) FVMD's published ones.
* Short clips: FVMD drops clips shorter than one window. We use the shortest clip of the two sets as
  the window length L when it is below 16 (a clip shorter than 16 frames is then one window of its own
  length, and longer clips are cut into L-frame windows), with 4-frame cubes (fewer when L < 4). All
  windows of one comparison share L, so their features live in one space; the result names L.
* Small sets: the features have hundreds of dimensions and an evaluation set often has fewer windows,
  so the sample covariance is singular. We regularise both covariances with ε·I (ε = 1e-6 × their mean
  variance), which changes the distance by O(ε) and keeps the matrix square root well defined, and
  compute the trace term through the eigenvalues of the symmetric Σ₁^½ Σ₂ Σ₁^½ — in the span of the
  samples when there are fewer samples than dimensions (exact, and fast). A set of one window has zero
  covariance. With fewer windows than dimensions the covariance part is noisy — the result says so.
* Angle bins: like the reference we bin atan2(dx, dy) (its argument order); any fixed convention gives
  the same partition of the circle up to a relabelling of bins, hence the same distances.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from shiftvdm.errors import DataError
from shiftvdm.motion.base import PointTracker, check_video, grid_queries

logger = logging.getLogger(__name__)

FVMD_WINDOW = 16  # frames per tracking window (FVMD S_max)
FVMD_GRID = 20  # query points per side (FVMD N = 400)
FVMD_FRAME = 256  # FVMD resizes frames to 256×256; tracks are expressed in that frame
FVMD_MARGIN = 8.0  # grid margin in pixels of the 256-px frame (FVMD: 8 + i/(N-1)·(H-16))
CUBE_POINTS = 5  # cube side in grid points
CUBE_FRAMES = 4  # cube length in frames
ANGLE_BINS = 8
MAGNITUDE_BINS = 256  # magnitudes are clipped to [0, 255] before the log weight
# Diagonal loading of the covariances, relative to their mean variance (see module docstring).
COVARIANCE_EPS = 1e-6


# ---------------------------------------------------------------------------------------------
# Gaussian fits and the Fréchet distance (shared with the appearance statistics)
# ---------------------------------------------------------------------------------------------

@dataclass
class GaussianFit:
    """Mean and covariance of a feature set.

    Attributes:
        mean: float64 (D,).
        cov: float64 (D, D); zero for a single sample.
        num_samples: rows the fit came from.
        factor: optional float64 (n, D) with cov = factorᵀ·factor (the centred rows / √(n−1)); lets
            ``frechet_distance`` work in the n-dimensional span of the samples when n is below D.
    """

    mean: np.ndarray
    cov: np.ndarray
    num_samples: int
    factor: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])


def fit_gaussian(features: np.ndarray) -> GaussianFit:
    """Fit a Gaussian to (n, D) features (unbiased covariance, ddof=1; zero covariance when n == 1)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] == 0:
        raise DataError(f"fit_gaussian: expected a non-empty (n, D) feature array, got shape {features.shape}")
    if not np.all(np.isfinite(features)):
        raise DataError("fit_gaussian: the features contain NaN or infinite values")
    mean = features.mean(axis=0)
    factor = (features - mean) / np.sqrt(max(features.shape[0] - 1, 1))
    return GaussianFit(mean=mean, cov=factor.T @ factor, num_samples=int(features.shape[0]), factor=factor)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    eigvals, eigvecs = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return (eigvecs * np.sqrt(np.clip(eigvals, 0.0, None))) @ eigvecs.T


def _trace_sqrt_product(cov_a: np.ndarray, cov_b: np.ndarray) -> float:
    """Tr (A B)^½ for symmetric PSD A, B, as the sum of √eigenvalues of the symmetric A^½ B A^½."""
    root_a = _sqrt_psd(cov_a)
    middle = root_a @ cov_b @ root_a
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2.0), 0.0, None)).sum())


def frechet_distance(fit_a: GaussianFit, fit_b: GaussianFit, eps: float = COVARIANCE_EPS) -> float:
    """Squared Fréchet (2-Wasserstein) distance between two Gaussians.

    d² = |μa − μb|² + Tr(Σa + Σb − 2 (Σa Σb)^½), after adding ``eps`` × mean variance to both diagonals
    (see the module docstring). When both fits carry their sample factors and have fewer samples in all
    than dimensions, the trace term is computed exactly in the span of the samples: outside it both
    covariances are the loading ε·I, which contributes ε per dimension. Returns a float >= 0.
    """
    if fit_a.dim != fit_b.dim:
        raise DataError(f"frechet_distance: feature sizes differ ({fit_a.dim} vs {fit_b.dim})")
    dim = fit_a.dim
    trace_a, trace_b = float(np.trace(fit_a.cov)), float(np.trace(fit_b.cov))
    loading = eps * (trace_a + trace_b) / (2.0 * dim)
    diff = fit_a.mean - fit_b.mean
    rows = (fit_a.num_samples + fit_b.num_samples) if fit_a.factor is not None and fit_b.factor is not None else dim
    if rows < dim:
        basis, _ = np.linalg.qr(np.concatenate([fit_a.factor, fit_b.factor]).T)  # (D, n) orthonormal columns
        in_a, in_b = fit_a.factor @ basis, fit_b.factor @ basis
        inner = np.eye(basis.shape[1]) * loading
        trace_sqrt = (_trace_sqrt_product(in_a.T @ in_a + inner, in_b.T @ in_b + inner)
                      + (dim - basis.shape[1]) * loading)
    else:
        identity = np.eye(dim) * loading
        trace_sqrt = _trace_sqrt_product(fit_a.cov + identity, fit_b.cov + identity)
    value = float(diff @ diff + trace_a + trace_b + 2.0 * dim * loading - 2.0 * trace_sqrt)
    # rounding can leave a tiny negative number for identical sets
    return max(value, 0.0)


def frechet_distance_between(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Squared Fréchet distance between the Gaussian fits of two (n, D) feature sets.

    Refused (DataError) below 2 samples in a set: one sample has no covariance, and the "distance" would compare
    one point with a distribution. Fewer samples than D are allowed (routine for FVD and FVMD): the caller marks
    the value with n (``sample_note``)."""
    n_a, n_b = len(features_a), len(features_b)
    if min(n_a, n_b) < MIN_SAMPLES:
        raise DataError(f"a Fréchet distance needs at least {MIN_SAMPLES} samples in each set, got {n_a} and {n_b}; "
                        "give more clips (or longer ones)")
    return frechet_distance(fit_gaussian(features_a), fit_gaussian(features_b))


MIN_SAMPLES = 2  # per set, for a Fréchet distance


def sample_note(name: str, n_a: int, n_b: int, dim: int, unit: str) -> str | None:
    """A note for a Fréchet value fitted from fewer samples than its feature dimension (rank-deficient covariances,
    regularised): the value is computed, and read with its n."""
    if min(n_a, n_b) >= dim:
        return None
    return (f"{name}: fitted from {n_a} vs {n_b} {unit}, fewer than its {dim} feature dimensions; the covariances "
            "are rank-deficient (regularised with eps·I), so compare it only with values of the same n")


# ---------------------------------------------------------------------------------------------
# tracks
# ---------------------------------------------------------------------------------------------

def window_starts(num_frames: int, window: int) -> list[int]:
    """First frames of the windows FVMD tracks: every ``window - 1`` frames while a whole window fits."""
    if window < 2:
        raise DataError(f"window_starts: a window needs at least 2 frames, got {window}")
    stride = window - 1
    return list(range(0, num_frames - window + 1, stride))


class TrackChunkStream:
    """``track_chunks`` of a clip of ``num_frames`` frames given one at a time (holds one chunk's frames)."""

    def __init__(self, num_frames: int, tracker: PointTracker, *, chunk: int = FVMD_WINDOW,
                 grid: int = FVMD_GRID) -> None:
        if num_frames < 2:
            raise DataError(f"video has {num_frames} frame(s); motion needs at least 2")
        self.tracker, self.grid = tracker, grid
        self.length = min(chunk, num_frames)
        starts = window_starts(num_frames, self.length)
        self._end = starts[-1] + self.length  # frames after the last whole chunk are not tracked
        self._frames: list[np.ndarray] = []
        self._seen = 0
        self._queries: np.ndarray | None = None
        self._to_clip: np.ndarray | None = None
        self.chunks: list[np.ndarray] = []

    def _place_queries(self, height: int, width: int) -> None:
        # the grid is laid out in the 256×256 frame, then mapped to the clip's pixels
        self._to_clip = np.array([width / FVMD_FRAME, height / FVMD_FRAME], dtype=np.float32)
        queries = grid_queries(self.grid, FVMD_FRAME, FVMD_FRAME, FVMD_MARGIN) * self._to_clip
        self._queries = np.clip(queries, 0.0, np.array([width - 1, height - 1], dtype=np.float32))

    def add(self, frame: np.ndarray) -> None:
        if self._queries is None:
            self._place_queries(frame.shape[0], frame.shape[1])
        if self._seen < self._end:
            self._frames.append(frame)
            if len(self._frames) == self.length:  # consecutive chunks share one frame
                tracks = self.tracker(np.stack(self._frames), self._queries)
                self.chunks.append((tracks.points / self._to_clip).astype(np.float32))
                self._frames = self._frames[-1:]
        self._seen += 1


def track_chunks(video: np.ndarray, tracker: PointTracker, *, chunk: int = FVMD_WINDOW,
                 grid: int = FVMD_GRID) -> list[np.ndarray]:
    """Track the FVMD query grid through the clip's 16-frame chunks (the whole clip when shorter).

    Args:
        video: uint8 (T, H, W, 3), T >= 2.
        tracker: a PointTracker; queries are placed on each chunk's first frame.
        chunk: frames per chunk (FVMD's window).
        grid: points per side.

    Returns:
        One float32 (L, grid², 2) array per chunk: (x, y) positions rescaled to a 256×256 frame.
    """
    check_video(video, min_frames=2)
    stream = TrackChunkStream(len(video), tracker, chunk=chunk, grid=grid)
    for frame in video:
        stream.add(frame)
    return stream.chunks


def windows_from_chunks(chunks: list[np.ndarray], window: int) -> list[np.ndarray]:
    """Cut tracked chunks into windows of ``window`` frames (stride ``window - 1`` inside each chunk).

    A chunk tracked from its first frame contains, frame for frame, the tracks of any shorter window
    starting there (the tracker follows the same points), so windows shorter than a chunk are taken
    from inside it instead of tracking the clip again.
    """
    windows = []
    for points in chunks:
        for start in window_starts(points.shape[0], window):
            windows.append(points[start:start + window])
    return windows


# ---------------------------------------------------------------------------------------------
# features
# ---------------------------------------------------------------------------------------------

def velocity_acceleration(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(S, N, 2) positions -> velocity and acceleration (S, N, 2), zero-padded at the start.

    Velocity v_t = p_t − p_{t−1} (v_0 = 0) as FVMD; acceleration a_t = v_t − v_{t−1} for t >= 2 and 0
    before (FVMD's padding, but the true second difference: see the module docstring).
    """
    velocity = np.zeros_like(points, dtype=np.float32)
    velocity[1:] = points[1:] - points[:-1]
    acceleration = np.zeros_like(velocity)
    acceleration[2:] = velocity[2:] - velocity[1:-1]
    return velocity, acceleration


def cube_histograms(vectors: np.ndarray, *, grid: int = FVMD_GRID, cube_points: int = CUBE_POINTS,
                    cube_frames: int = CUBE_FRAMES, angle_bins: int = ANGLE_BINS) -> np.ndarray:
    """Magnitude-weighted angle histograms of FVMD's space-time cubes.

    Args:
        vectors: (S, grid², 2) velocity or acceleration of one window, grid points in row-major order.

    Returns:
        float64 (S // cube_frames · (grid // cube_points)² · angle_bins,) — the window's feature.
    """
    num_frames = vectors.shape[0]
    if vectors.shape[1] != grid * grid:
        raise DataError(f"cube_histograms: expected {grid * grid} points, got {vectors.shape[1]}")
    cubes_t, cubes_side = num_frames // cube_frames, grid // cube_points
    if cubes_t == 0 or cubes_side == 0:
        raise DataError(f"cube_histograms: a window of {num_frames} frames × {grid}² points holds no "
                        f"{cube_frames}-frame × {cube_points}² cube")
    v = vectors[:cubes_t * cube_frames].reshape(cubes_t * cube_frames, grid, grid, 2)
    v = v[:, :cubes_side * cube_points, :cubes_side * cube_points]
    v = v.reshape(cubes_t, cube_frames, cubes_side, cube_points, cubes_side, cube_points, 2)
    v = v.transpose(0, 2, 4, 1, 3, 5, 6).reshape(cubes_t * cubes_side * cubes_side, -1, 2).astype(np.float64)
    angle = np.arctan2(v[..., 0], v[..., 1])  # FVMD's argument order, see the module docstring
    bins = np.clip(np.floor((angle + np.pi) / (2.0 * np.pi / angle_bins)), 0, angle_bins - 1).astype(np.int64)
    magnitude = np.clip(np.linalg.norm(v, axis=-1), 0.0, MAGNITUDE_BINS - 1)
    max_bits = np.log2(MAGNITUDE_BINS)
    weight = np.ceil(np.clip(np.log2(magnitude + 1.0), 0.0, max_bits)) / max_bits
    hist = np.zeros((v.shape[0], angle_bins))
    rows = np.repeat(np.arange(v.shape[0]), v.shape[1])
    np.add.at(hist, (rows, bins.ravel()), weight.ravel())
    return hist.ravel()


def motion_window_features(window_points: np.ndarray, *, grid: int = FVMD_GRID) -> tuple[np.ndarray, np.ndarray]:
    """One window's (S, grid², 2) tracks -> (velocity feature, acceleration feature)."""
    cube_frames = min(CUBE_FRAMES, window_points.shape[0])
    velocity, acceleration = velocity_acceleration(window_points)
    return (cube_histograms(velocity, grid=grid, cube_frames=cube_frames),
            cube_histograms(acceleration, grid=grid, cube_frames=cube_frames))


def motion_features(chunks_per_video: list[list[np.ndarray]], window: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack the velocity and acceleration features of every window of a set of clips: two (n, D) arrays."""
    velocity, acceleration = [], []
    for chunks in chunks_per_video:
        for points in windows_from_chunks(chunks, window):
            feat_v, feat_a = motion_window_features(points)
            velocity.append(feat_v)
            acceleration.append(feat_a)
    if not velocity:
        raise DataError(f"no clip holds a {window}-frame motion window")
    return np.stack(velocity), np.stack(acceleration)


# ---------------------------------------------------------------------------------------------
# the distance
# ---------------------------------------------------------------------------------------------

@dataclass
class FrechetMotionResult:
    """FVMD-style distances (squared Fréchet distances, as FVMD reports them).

    Attributes:
        velocity, acceleration, combined: the three distances.
        window: frames per window used for both sets.
        num_windows: windows in the evaluated set and in the reference set.
        dim: feature size of velocity (acceleration is the same, combined twice that).
        notes: caveats a reader needs (short clips, small sets).
    """

    velocity: float
    acceleration: float
    combined: float
    window: int
    num_windows: tuple[int, int]
    dim: int
    notes: list[str] = field(default_factory=list)


def comparison_window(lengths_a: list[int], lengths_b: list[int]) -> int:
    """The shared window length: 16 frames, or the shortest clip of both sets when shorter."""
    shortest = min(min(lengths_a), min(lengths_b))
    if shortest < 2:
        raise DataError("Fréchet motion distance: every clip needs at least 2 frames")
    return min(FVMD_WINDOW, shortest)


def frechet_motion_from_chunks(chunks_a: list[list[np.ndarray]], chunks_b: list[list[np.ndarray]],
                               lengths_a: list[int], lengths_b: list[int]) -> FrechetMotionResult:
    """Distances between two sets given their tracked chunks (``track_chunks`` per clip) and clip lengths."""
    window = comparison_window(lengths_a, lengths_b)
    vel_a, acc_a = motion_features(chunks_a, window)
    vel_b, acc_b = motion_features(chunks_b, window)
    notes = []
    if window < FVMD_WINDOW:
        notes.append(f"motion windows of {window} frames (shortest clip) instead of FVMD's {FVMD_WINDOW}")
    dim = vel_a.shape[1]
    if min(len(vel_a), len(vel_b)) <= 2 * dim:
        notes.append(f"Fréchet motion: fitted from {len(vel_a)} vs {len(vel_b)} windows, fewer than its {2 * dim} "
                     "combined feature dimensions; the covariances are rank-deficient (regularised with eps·I), so "
                     "compare it only with values of the same n")
    result = FrechetMotionResult(
        velocity=frechet_distance_between(vel_a, vel_b),
        acceleration=frechet_distance_between(acc_a, acc_b),
        combined=frechet_distance_between(np.concatenate([vel_a, acc_a], 1), np.concatenate([vel_b, acc_b], 1)),
        window=window, num_windows=(len(vel_a), len(vel_b)), dim=dim, notes=notes)
    logger.info("Fréchet motion (window %d, %d vs %d windows): velocity %.4g, acceleration %.4g, combined %.4g",
                window, len(vel_a), len(vel_b), result.velocity, result.acceleration, result.combined)
    return result


def frechet_motion_distance(videos: list[np.ndarray], reference: list[np.ndarray],
                            tracker: PointTracker) -> FrechetMotionResult:
    """FVMD-style Fréchet motion distance between two sets of uint8 (T, H, W, 3) clips.

    Args:
        videos: the evaluated clips.
        reference: the reference (usually real) clips.
        tracker: e.g. ``shiftvdm.motion.get_tracker("lk")``.
    """
    if not videos or not reference:
        raise DataError("Fréchet motion distance needs at least one clip in each set")
    chunks_a = [track_chunks(v, tracker) for v in videos]
    chunks_b = [track_chunks(v, tracker) for v in reference]
    return frechet_motion_from_chunks(chunks_a, chunks_b, [len(v) for v in videos], [len(v) for v in reference])
