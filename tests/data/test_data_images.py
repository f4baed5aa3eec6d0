"""data/images.py: a conditioning image file as the (1, 3, H, W) tensor in [-1, 1] an I2V pipeline feeds its encoder.

What a user relies on: exact values (uint8 / 255 · 2 − 1, RGB order), a cover-resize and centre crop for other
sizes (never a stretch), any PIL-readable mode, and errors that name the path and the problem.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from shiftvdm.data.images import load_image
from shiftvdm.errors import DataError


def test_same_size_image_values_are_exact(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png", height=6, width=10)
    assert image.shape == (1, 3, 6, 10) and image.dtype == torch.float32
    expected = torch.from_numpy(pixels.astype(np.float32) / 255.0).permute(2, 0, 1)[None] * 2.0 - 1.0
    assert torch.equal(image, expected)  # bit for bit the pipeline's arithmetic, channels in RGB order
    assert image.min() >= -1.0 and image.max() <= 1.0


def test_other_sizes_are_cover_resized_and_centre_cropped(tmp_path):
    # a 12-wide, 4-high image of vertical stripes: to 4×4 the height already fits, so the middle 4 columns stay
    pixels = np.zeros((4, 12, 3), dtype=np.uint8)
    pixels[:, :, 0] = (np.arange(12) * 20)[None]
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    image = load_image(tmp_path / "wide.png", height=4, width=4)
    assert image.shape == (1, 3, 4, 4)
    expected = torch.tensor([80.0, 100.0, 120.0, 140.0]) / 255 * 2 - 1
    assert (image[0, 0, 0] - expected).abs().max() <= 2 / 255  # columns 4-7, not a squeeze of all 12
    # a small image is scaled up to cover the target (aspect kept), then cropped: a flat colour stays flat
    Image.fromarray(np.full((5, 5, 3), 200, dtype=np.uint8)).save(tmp_path / "small.png")
    up = load_image(tmp_path / "small.png", height=16, width=24)
    assert up.shape == (1, 3, 16, 24)
    assert (up - (200 / 255 * 2 - 1)).abs().max() <= 1 / 255


def test_grayscale_and_alpha_images_become_rgb(tmp_path):
    Image.fromarray(np.full((4, 4), 51, dtype=np.uint8), mode="L").save(tmp_path / "gray.png")
    gray = load_image(tmp_path / "gray.png", 4, 4)
    assert gray.shape == (1, 3, 4, 4) and torch.equal(gray, torch.full_like(gray, 51 / 255.0 * 2 - 1))
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3], rgba[..., 3] = 255, 10
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "alpha.png")
    assert torch.equal(load_image(tmp_path / "alpha.png", 4, 4), torch.ones(1, 3, 4, 4))  # alpha is dropped


def test_unusable_paths_are_refused_by_name(tmp_path):
    with pytest.raises(DataError, match="is a folder"):
        load_image(tmp_path, 4, 4)
    with pytest.raises(DataError, match=r"nope\.png: missing"):
        load_image(tmp_path / "nope.png", 4, 4)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"bad\.png: unreadable image"):
        load_image(tmp_path / "bad.png", 4, 4)
