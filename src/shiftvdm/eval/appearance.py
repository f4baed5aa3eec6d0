"""Appearance metrics: PSNR, SSIM, first-frame fidelity, and a Fréchet distance on simple image statistics.

* PSNR = 10·log10(255² / MSE) over all pixels and channels; identical images are reported as
  ``MAX_PSNR_DB`` (100 dB) instead of infinity so that JSON and means stay finite.
* SSIM (Wang et al. 2004): 11×11 Gaussian window, σ = 1.5, K1 = 0.01, K2 = 0.03, L = 255, population
  (co)variances, computed per RGB channel and averaged; the 5-px border where the window does not fit is
  left out of the mean (as scikit-image does) when the image is larger than the window.
* Image statistics: a weight-free stand-in for FID's Inception features. Each frame is resized to a
  64×64 thumbnail (so clips of any size compare) and described by ``IMAGE_STAT_NAMES``: per-channel
  mean and standard deviation, saturation mean, gradient and Laplacian energy of the luma, and a
  4-bin histogram per channel. The Fréchet distance between the Gaussian fits of the frames of two
  sets (``frechet_motion.frechet_distance``) measures how far their colour, contrast and sharpness
  distributions are; it knows nothing about objects or semantics.
"""

from __future__ import annotations

import cv2
import numpy as np

from shiftvdm.errors import DataError
from shiftvdm.eval.frechet_motion import frechet_distance_between

MAX_PSNR_DB = 100.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
DATA_RANGE = 255.0
THUMBNAIL_SIZE = 64  # side of the square thumbnail the image statistics are computed on
HISTOGRAM_BINS = 4  # bins per channel of the colour histogram
IMAGE_STAT_NAMES: tuple[str, ...] = (
    ("mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b", "saturation", "gradient_energy", "laplacian_energy")
    + tuple(f"hist_{c}{i}" for c in "rgb" for i in range(HISTOGRAM_BINS))
)


def _check_image_pair(image_a: np.ndarray, image_b: np.ndarray) -> None:
    if image_a.shape != image_b.shape:
        raise DataError(f"images differ in shape: {image_a.shape} vs {image_b.shape}")
    if image_a.ndim not in (2, 3):
        raise DataError(f"expected (H, W) or (H, W, C) images, got shape {image_a.shape}")


def psnr(image_a: np.ndarray, image_b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (or clips) of the same shape, capped at ``MAX_PSNR_DB``."""
    if image_a.shape != image_b.shape:
        raise DataError(f"images differ in shape: {image_a.shape} vs {image_b.shape}")
    mse = float(np.mean((image_a.astype(np.float64) - image_b.astype(np.float64)) ** 2))
    if mse <= DATA_RANGE**2 * 10 ** (-MAX_PSNR_DB / 10):
        return MAX_PSNR_DB
    return float(10.0 * np.log10(DATA_RANGE**2 / mse))


def ssim(image_a: np.ndarray, image_b: np.ndarray) -> float:
    """Mean SSIM of two uint8 images (H, W) or (H, W, C), averaged over channels; 1 for identical images."""
    _check_image_pair(image_a, image_b)
    a = image_a.astype(np.float64)
    b = image_b.astype(np.float64)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    c1 = (SSIM_K1 * DATA_RANGE) ** 2
    c2 = (SSIM_K2 * DATA_RANGE) ** 2
    height, width = a.shape[:2]
    pad = SSIM_WINDOW // 2
    crop = pad if min(height, width) > SSIM_WINDOW else 0

    def blur(x: np.ndarray) -> np.ndarray:
        out = cv2.GaussianBlur(x, (SSIM_WINDOW, SSIM_WINDOW), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)
        return out.reshape(x.shape)

    values = []
    for ch in range(a.shape[2]):
        x, y = np.ascontiguousarray(a[..., ch]), np.ascontiguousarray(b[..., ch])
        mu_x, mu_y = blur(x), blur(y)
        var_x = blur(x * x) - mu_x**2
        var_y = blur(y * y) - mu_y**2
        cov_xy = blur(x * y) - mu_x * mu_y
        ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
        if crop:
            ssim_map = ssim_map[crop:-crop, crop:-crop]
        values.append(ssim_map.mean())
    return float(np.mean(values))


def resize_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a uint8 image to height×width (area averaging when shrinking, bilinear when enlarging)."""
    if image.shape[:2] == (height, width):
        return image
    shrink = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def first_frame_fidelity(video: np.ndarray, image: np.ndarray) -> dict[str, float]:
    """PSNR and SSIM of a clip's first frame against its conditioning image.

    The image is resized to the frame size when they differ (a model may generate at another size).

    Returns:
        {"first_frame_psnr": dB, "first_frame_ssim": [-1, 1]}.
    """
    frame = video[0]
    image = resize_to(np.asarray(image, dtype=np.uint8), frame.shape[0], frame.shape[1])
    return {"first_frame_psnr": psnr(frame, image), "first_frame_ssim": ssim(frame, image)}


class ClipFidelityStream:
    """``clip_fidelity`` of frame pairs given one at a time (clip frame, ground-truth frame)."""

    def __init__(self) -> None:
        self._psnrs: list[float] = []
        self._ssims: list[float] = []

    def add(self, frame: np.ndarray, target: np.ndarray) -> None:
        target = resize_to(target, frame.shape[0], frame.shape[1])
        self._psnrs.append(psnr(frame, target))
        self._ssims.append(ssim(frame, target))

    def result(self) -> dict[str, float]:
        if not self._psnrs:
            raise DataError("clip_fidelity: an empty clip")
        return {"gt_psnr": float(np.mean(self._psnrs)), "gt_ssim": float(np.mean(self._ssims)),
                "gt_frames": len(self._psnrs)}


def clip_fidelity(video: np.ndarray, ground_truth: np.ndarray) -> dict[str, float]:
    """Per-frame PSNR and SSIM of a clip against its ground truth, averaged over the frames they share.

    The ground truth is resized to the clip's frame size when they differ; only the first
    min(T_video, T_gt) frames are compared.

    Returns:
        {"gt_psnr": mean dB, "gt_ssim": mean SSIM, "gt_frames": frames compared}.
    """
    stream = ClipFidelityStream()
    for frame, target in zip(video, ground_truth):
        stream.add(frame, target)
    return stream.result()


def image_statistics(frame: np.ndarray) -> np.ndarray:
    """The ``IMAGE_STAT_NAMES`` features of one uint8 (H, W, 3) frame, on a 64×64 thumbnail, values ~[0, 1]."""
    thumb = resize_to(frame, THUMBNAIL_SIZE, THUMBNAIL_SIZE)
    pixels = thumb.reshape(-1, 3).astype(np.float64) / 255.0
    hsv = cv2.cvtColor(thumb, cv2.COLOR_RGB2HSV)
    gray = cv2.cvtColor(thumb, cv2.COLOR_RGB2GRAY).astype(np.float64) / 255.0
    grad_x = np.abs(np.diff(gray, axis=1)).mean()
    grad_y = np.abs(np.diff(gray, axis=0)).mean()
    laplacian = np.abs(cv2.Laplacian(gray, cv2.CV_64F, ksize=1)).mean()
    hist = [np.bincount(np.minimum(thumb[..., c].ravel().astype(np.int64) * HISTOGRAM_BINS // 256, HISTOGRAM_BINS - 1),
                        minlength=HISTOGRAM_BINS) / pixels.shape[0] for c in range(3)]
    return np.concatenate([pixels.mean(0), pixels.std(0), [hsv[..., 1].mean() / 255.0],
                           [grad_x + grad_y, laplacian], *hist])


def statistics_frame_indices(num_frames: int, max_frames: int = 32) -> np.ndarray:
    """The up to ``max_frames`` evenly spaced frames whose image statistics describe a clip."""
    if num_frames == 0:
        raise DataError("video_image_statistics: an empty clip")
    return np.unique(np.linspace(0, num_frames - 1, min(max_frames, num_frames)).round().astype(int))


class ImageStatisticsStream:
    """``video_image_statistics`` of a clip of ``num_frames`` frames given one at a time (keeps no frame)."""

    def __init__(self, num_frames: int, max_frames: int = 32) -> None:
        self._wanted = set(statistics_frame_indices(num_frames, max_frames).tolist())
        self._seen = 0
        self._rows: list[np.ndarray] = []

    def add(self, frame: np.ndarray) -> None:
        if self._seen in self._wanted:
            self._rows.append(image_statistics(frame))
        self._seen += 1

    def result(self) -> np.ndarray:
        return np.stack(self._rows)


def video_image_statistics(video: np.ndarray, max_frames: int = 32) -> np.ndarray:
    """Image statistics of up to ``max_frames`` evenly spaced frames of a clip: (n, len(IMAGE_STAT_NAMES))."""
    index = statistics_frame_indices(len(video), max_frames)
    return np.stack([image_statistics(video[t]) for t in index])


def image_statistics_frechet(stats_a: np.ndarray, stats_b: np.ndarray) -> float:
    """Squared Fréchet distance between two sets of per-frame image statistics (n, D)."""
    return frechet_distance_between(stats_a, stats_b)
