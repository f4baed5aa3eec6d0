"""Shared test set-up: offline hub, few threads, and the location of the real sample videos."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

# The test models are tiny: one thread is faster, and several times faster when other processes share the cores.
torch.set_num_threads(1)


def real_videos_dir() -> Path:
    """../shared/data/real-videos next to the clone (override with SHIFTVDM_REAL_VIDEOS)."""
    env = os.environ.get("SHIFTVDM_REAL_VIDEOS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "real-videos"


@pytest.fixture
def real_videos() -> list[Path]:
    folder = real_videos_dir()
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in {".avi", ".mp4", ".webm", ".mov", ".gif"}) \
        if folder.is_dir() else []
    if not files:
        pytest.skip(f"real sample videos not found in {folder}")
    return files
