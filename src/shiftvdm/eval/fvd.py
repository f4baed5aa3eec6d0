"""Fréchet Video Distance: I3D logits of two clip sets, their Gaussian fits, the Fréchet distance in float64.

``I3DFeatureStream`` takes clips one at a time (uint8 (T, H, W, 3)), preprocesses each as the variant's
reference script does (``eval.i3d``) and runs I3D on the device a batch of same-length clips at a time;
only the 400-d features are kept. ``fvd`` is the squared Fréchet distance between the two feature sets'
Gaussians, |μa − μb|² + Tr(Σa + Σb − 2 (Σa Σb)^½), with unbiased covariances (``np.cov``, as StyleGAN-V
and VideoGPT) in float64 and no regularisation, so a set against itself gives 0.

Values from different I3D ports (pytorch-i3d / VideoGPT, StyleGAN-V's TorchScript, TF-Hub) and from
different clip lengths or sizes are not comparable: the result names the variant and the frames used.
"""

from __future__ import annotations

import numpy as np
import torch

from shiftvdm.errors import DataError
from shiftvdm.eval.frechet_motion import fit_gaussian, frechet_distance
from shiftvdm.eval.i3d import (
    FVD_MIN_FRAMES,
    VIDEOGPT_VARIANT,
    InceptionI3d,
    preprocess_videogpt,
)


class I3DFeatureStream:
    """I3D features of clips fed one at a time, computed in batches of ``batch_size`` same-length clips."""

    def __init__(self, model: InceptionI3d, *, batch_size: int = 8, variant: str = VIDEOGPT_VARIANT) -> None:
        if batch_size < 1:
            raise DataError(f"I3D batch size must be at least 1, got {batch_size}")
        self.model, self.batch_size, self.variant = model, batch_size, variant
        self.device = next(model.parameters()).device
        self._pending: list[torch.Tensor] = []
        self._features: list[np.ndarray] = []
        self.lengths: list[int] = []

    def add(self, frames: np.ndarray, name: str = "clip") -> None:
        """Queue one clip (uint8 (T, H, W, 3), T >= ``FVD_MIN_FRAMES``)."""
        if len(frames) < FVD_MIN_FRAMES:
            raise DataError(f"{name}: FVD needs at least {FVD_MIN_FRAMES} frames, got {len(frames)}")
        video = preprocess_videogpt(frames)
        if self._pending and self._pending[0].shape != video.shape:
            self._flush()
        self._pending.append(video)
        self.lengths.append(len(frames))
        if len(self._pending) >= self.batch_size:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        batch = torch.stack(self._pending).to(self.device)
        self._pending = []
        with torch.no_grad():
            logits = self.model(batch.float())
        self._features.append(logits.double().cpu().numpy())

    def result(self) -> np.ndarray:
        """(N, 400) float64 features of every clip added so far, in order."""
        self._flush()
        if not self._features:
            return np.zeros((0, self.model.logits.conv3d.out_channels))
        return np.concatenate(self._features)


def fvd(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Squared Fréchet distance between the Gaussian fits of (N, D) and (M, D) I3D features, in float64."""
    for label, features in (("generated", features_a), ("reference", features_b)):
        if len(features) < 2:
            raise DataError(f"FVD needs at least 2 {label} clips (a covariance), got {len(features)}")
    return frechet_distance(fit_gaussian(features_a), fit_gaussian(features_b), eps=0.0)


__all__ = ["I3DFeatureStream", "fvd"]
