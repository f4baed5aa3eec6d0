"""The per-clip network dimensions the paper suite (``eval/paper.py``) can run, by their table name.

Each entry is a ``DimensionSpec`` (``eval/dimensions.py``): the released weight files it reads from
``--weights DIR`` and how to build its scorer. A dimension of ``PAPER_SUITE`` with no entry here is reported
missing by name in the table ("no network in this build").
"""

from __future__ import annotations

from shiftvdm.eval.amt import MOTION_SMOOTHNESS
from shiftvdm.eval.dimensions import DimensionSpec
from shiftvdm.eval.vbench_dimensions import VBENCH_DIMENSIONS

PAPER_DIMENSIONS: dict[str, DimensionSpec] = {
    "motion_smoothness": MOTION_SMOOTHNESS,  # AMT-S, eval/amt.py
    **VBENCH_DIMENSIONS,  # DINO, CLIP, LAION head, MUSIQ: eval/vbench_dimensions.py
}

__all__ = ["PAPER_DIMENSIONS"]
