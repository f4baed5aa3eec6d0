"""The only source of randomness: generators derived from (seed, stream, *counters).

Deriving every stream from named keys (never from global RNG state) gives bit-exact resume and
distinct draws per rank and step, fixing the reference code's repeated and colliding seeds.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed that depends on ``seed`` and every key, stable across runs and platforms."""
    text = "/".join([str(int(seed))] + [str(k) for k in keys])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def generator_for(seed: int, *keys: int | str, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator seeded from ``(seed, *keys)``, e.g. ``generator_for(seed, "rollout", rank, step)``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, *keys))
    return gen


def numpy_rng_for(seed: int, *keys: int | str) -> np.random.Generator:
    """A numpy Generator seeded from ``(seed, *keys)``."""
    return np.random.default_rng(derive_seed(seed, *keys))
