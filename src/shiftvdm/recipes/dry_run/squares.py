"""The dry run's clips: deterministic moving squares, so a full-size step needs no dataset on disk."""

from __future__ import annotations

import torch
from torch import Tensor


class MovingSquares:
    """Deterministic clips in [-1, 1]: a bright square moving over a smooth gradient (a few px per frame)."""

    def __init__(self, count: int, shape: tuple[int, int, int], prompt: str = "a white square moves right") -> None:
        self.count, self.shape, self.prompt = count, shape, prompt

    def __len__(self) -> int:
        return self.count

    def load(self, indices: list[int]) -> tuple[Tensor, list[str]]:
        frames, height, width = self.shape
        ys = torch.linspace(-1, 1, height).view(height, 1)
        xs = torch.linspace(-1, 1, width).view(1, width)
        clips = []
        for i in indices:
            video = torch.empty(frames, 3, height, width)
            side = max(2, height // 4)
            for f in range(frames):
                background = 0.5 * (xs * torch.cos(torch.tensor(0.3 * i)) + ys * 0.5).expand(height, width)
                video[f] = background
                x0 = (2 * f + 3 * i) % max(1, width - side)
                y0 = (f + i) % max(1, height - side)
                video[f, :, y0:y0 + side, x0:x0 + side] = 0.9
            clips.append(video)
        return torch.stack(clips), [self.prompt] * len(indices)


__all__ = ["MovingSquares"]
