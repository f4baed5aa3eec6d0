"""Conditioning images: an image file as the tensor an image-to-video pipeline feeds its encoder."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch

from shiftvdm.errors import DataError

logger = logging.getLogger(__name__)


def load_image(path: str | Path, height: int, width: int) -> torch.Tensor:
    """An image file -> (1, 3, height, width) float32 in [-1, 1].

    An image of another size is scaled to cover height×width (Lanczos, as diffusers resizes) and centre-cropped;
    the pipeline would stretch it instead. The arithmetic (uint8 / 255, then 2x − 1, NCHW view of NHWC memory)
    is the pipeline's own, so the tensor is bit-identical to what ``StableVideoDiffusionPipeline`` feeds its VAE.
    """
    import PIL.Image

    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected an image file")
    if not path.is_file():
        raise DataError(f"{path}: missing (no such image file)")
    try:
        with PIL.Image.open(path) as handle:
            image = handle.convert("RGB")
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable image ({exc})") from exc
    if image.size != (width, height):
        scale = max(width / image.width, height / image.height)
        size = (max(width, math.ceil(image.width * scale)), max(height, math.ceil(image.height * scale)))
        image = image.resize(size, PIL.Image.Resampling.LANCZOS)
        left, top = (image.width - width) // 2, (image.height - height) // 2
        image = image.crop((left, top, left + width, top + height))
        logger.info("%s: resized and centre-cropped to %dx%d", path, width, height)
    array = np.array(image)[None].astype(np.float32) / 255.0  # (1, H, W, 3)
    return torch.from_numpy(array.transpose(0, 3, 1, 2)) * 2.0 - 1.0
