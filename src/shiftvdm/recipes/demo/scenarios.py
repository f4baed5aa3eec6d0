"""The demo's data scenarios: which sprite clips the base is pre-trained on and which the user fine-tunes on.

A scenario is two *looks* (how clips appear: background, sprite shape, colours) and one *motion law*
(sprite size, speed range, uniformly random direction, elastic reflection off the walls, shared by every
set). The generic pre-training set uses the generic look, the user's target set and the held-out set the
target look, so the gap between them is appearance only — what a user's domain data usually is — unless
the scenario also gives the generic set static clips (``static_prob``), the one motion difference the
``static-base`` scenario has on purpose.

Scenarios shipped (configs ``demo_cpu.yaml`` and ``demo_static_base.yaml``):

* ``collapse``: the base moves like its data (generic clips all move: flat backgrounds, squares); the
  target clips move by the same law but look different (textured backgrounds, discs). The question is
  the paper's: does SFT on the target set keep the base's motion?
* ``static-base``: generic clips 60 % static, target clips always moving, one look (flat, squares). The
  base moves too little for a reason SFT can fix given time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from shiftvdm.data.synthetic import SpriteClips, make_sprite_clips
from shiftvdm.errors import ConfigError


@dataclass
class ClipLook:
    """How the clips of one set appear (the motion law is shared, see :class:`MotionLaw`)."""

    background: Literal["flat", "textured"] = "flat"  # one colour per clip, or a smooth random pattern
    texture_contrast: float = 0.06  # std of the textured pattern around its level (unused when flat)
    shapes: tuple[str, ...] = ("square",)  # sprite shapes, drawn uniformly
    color_range: tuple[float, float] = (0.55, 1.0)  # sprite colour channels, uniform (brighter than any background)
    background_range: tuple[float, float] = (0.05, 0.3)  # background level per channel, uniform
    static_prob: float = 0.0  # share of clips whose sprite never moves

    def __post_init__(self) -> None:
        self.shapes = tuple(self.shapes)
        self.color_range = tuple(float(v) for v in self.color_range)
        self.background_range = tuple(float(v) for v in self.background_range)
        if self.color_range[0] <= self.background_range[1]:
            # the sprite tracker of the evaluation relies on sprites brighter than every background
            raise ConfigError(f"ClipLook: color_range {self.color_range} must lie above background_range "
                              f"{self.background_range} (sprites brighter than the background)")
        if not 0.0 <= self.static_prob <= 1.0:
            raise ConfigError(f"ClipLook: static_prob={self.static_prob} must be in [0, 1]")


@dataclass
class MotionLaw:
    """How sprites move and how large they are: the same for every set of a scenario."""

    num_sprites: int = 1
    sprite_size: float = 5.0  # side (square) or diameter (disc) in pixels
    speed: tuple[float, float] = (1.5, 2.5)  # px/frame, uniform; direction uniform on the circle

    def __post_init__(self) -> None:
        self.speed = tuple(float(v) for v in self.speed)
        if self.num_sprites < 1 or self.sprite_size <= 0 or not 0 <= self.speed[0] <= self.speed[1]:
            raise ConfigError(f"MotionLaw: need num_sprites >= 1, sprite_size > 0 and 0 <= speed low <= high, got "
                              f"{self.num_sprites}, {self.sprite_size}, {self.speed}")


@dataclass
class Scenario:
    """A named pair of looks and their shared motion law."""

    name: str = "collapse"
    generic: ClipLook = field(default_factory=ClipLook)
    target: ClipLook = field(default_factory=lambda: ClipLook(background="textured", texture_contrast=0.08,
                                                              shapes=("disc",)))
    motion: MotionLaw = field(default_factory=MotionLaw)

    def clips(self, which: Literal["generic", "target"], num_clips: int, num_frames: int, size: int,
              seed: int, *, static_prob: float | None = None) -> SpriteClips:
        """Render ``num_clips`` clips of the generic or target set (held-out clips are target clips drawn
        with another seed). ``static_prob`` overrides the look's (target sets always move in the demo)."""
        look = {"generic": self.generic, "target": self.target}[which]
        m = self.motion
        return make_sprite_clips(
            num_clips, num_frames, size, seed, num_sprites=m.num_sprites, sprite_size=m.sprite_size, speed=m.speed,
            static_prob=look.static_prob if static_prob is None else static_prob, background=look.background,
            shapes=look.shapes, color_range=look.color_range, background_range=look.background_range,
            texture_contrast=look.texture_contrast, antialias=False)

    def describe(self) -> dict:
        return asdict(self)


def queries_on_objects(queries: np.ndarray, clips: SpriteClips) -> np.ndarray:
    """How many query points (x, y) fall on a sprite in frame 0 of each clip: int (N,).

    ``queries`` is (Q, 2), shared by every clip, or (N, Q, 2), one set per clip. A query counts when it lies
    within the sprite's half extent of its centre (square: both axes; disc and triangle: the circumscribed
    radius), from the ground truth, so it does not depend on any tracker.
    """
    queries = np.asarray(queries, dtype=np.float64)
    if queries.ndim not in (2, 3) or queries.shape[-1] != 2 or (queries.ndim == 3 and len(queries) != len(clips)):
        raise ConfigError(f"queries must be (Q, 2) or ({len(clips)}, Q, 2) points (x, y), got shape {queries.shape}")
    per_clip = queries if queries.ndim == 3 else queries[None]
    centres = clips.trajectories[:, :, 0, :].astype(np.float64)  # (N, K, 2)
    d = per_clip[:, None, :, :] - centres[:, :, None, :]  # (N, K, Q, 2)
    r = clips.radii[:, :, None].astype(np.float64) + 1e-6
    square = (clips.shapes == clips.shape_names.index("square"))[:, :, None]
    inside = np.where(square, (np.abs(d) <= r[..., None]).all(-1), np.hypot(d[..., 0], d[..., 1]) <= r)
    inside &= clips.sprite_mask[:, :, None]
    return inside.any(axis=1).sum(axis=1)
