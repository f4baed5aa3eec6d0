"""The contract between a network-based evaluation dimension and the suite that runs it.

A dimension of the paper's table (VBench-I2V's subject consistency, motion smoothness, aesthetic quality, …)
needs a released network, read from the user's local copy under ``--weights DIR`` by its released file name.
Each dimension module describes itself with a ``DimensionSpec``; the suite (``eval/paper.py``) finds the
files, refuses a missing one by name (``WeightFile.source`` says where to get it), builds the scorer once and
feeds it one clip at a time. Scorers run their network batched over the clip's frames on ``device``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch


@dataclass(frozen=True)
class WeightFile:
    """A released weight file, by the name it is distributed under, and where a user gets it."""

    name: str
    source: str


class ClipScorer(Protocol):
    def score(self, frames: np.ndarray, image: np.ndarray | None) -> float:
        """One clip's value: ``frames`` uint8 (T, H, W, 3); ``image`` the conditioning image, uint8
        (H, W, 3), for the i2v dimensions (None otherwise)."""
        ...


@dataclass(frozen=True)
class DimensionSpec:
    """A per-clip dimension: its name in the table, its weight files, whether it reads the conditioning
    image, and how to build its scorer from ``{file name: path}`` on a device."""

    name: str
    weights: tuple[WeightFile, ...]
    needs_image: bool
    build: Callable[[Mapping[str, Path], torch.device], ClipScorer]


__all__ = ["ClipScorer", "DimensionSpec", "WeightFile"]
