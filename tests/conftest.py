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


# --- tiny models (built by tests/support.py; import its helpers directly where a test needs options) -------
@pytest.fixture
def toy_backbone():
    """The trainer tests' toy backbone (``support.TOY_TRAIN``) with its zero-initialised layers filled, as after
    pre-training: LoRA gradients are non-zero. No LoRA yet."""
    from support import pretrained_toy

    return pretrained_toy()


@pytest.fixture
def small_toy_backbone():
    """The smaller toy backbone (``support.TOY_SMALL``, 8/16 channels) with its output conv filled. No LoRA yet."""
    from support import small_toy

    return small_toy()


@pytest.fixture(scope="session")
def pretrained_toy_dir(tmp_path_factory) -> Path:
    """A saved toy base model folder (``support.save_pretrained_toy``), shared by the CLI and multi-process tests."""
    from support import save_pretrained_toy

    return save_pretrained_toy(tmp_path_factory.mktemp("pretrained_toy") / "base")


@pytest.fixture
def tiny_svd():
    """A random-init tiny latent-space SVD (float32, 4 frames of 32×32, 2 sampling steps). No LoRA yet."""
    from support import tiny_backbone

    return tiny_backbone("svd")


@pytest.fixture
def tiny_wan():
    """A random-init tiny Wan2.2-TI2V (float32, 2 sampling steps). No LoRA yet."""
    from support import tiny_backbone

    return tiny_backbone("wan")
