"""VBench-I2V's own aggregate scores: Quality Score, I2V Score and Total Score.

The constants are VBench's, from github.com/Vchitect/VBench ``scripts/constant.py`` (``NORMALIZE_DIC_I2V``,
``DIM_WEIGHT_I2V``, ``I2V_QUALITY_LIST``, ``I2V_LIST``, ``I2V_QUALITY_WEIGHT``, ``I2V_WEIGHT``) as used by
``scripts/cal_i2v_final_score.py``, both last changed in commit 884b25ee5249d9fc5c727a9293e58784a8f9a64b
(unchanged at 45e79ec14e69a2187202c675d2dbce1a71843d53). VBench's rule: each dimension value (in [0, 1]) is
normalised as (value − Min)/(Max − Min) and multiplied by its weight; a group is the sum of those over its
dimensions divided by the sum of their weights; Total = (w_q·Quality + w_i·I2V)/(w_q + w_i).

One difference on purpose: VBench's script counts a dimension absent from the submission as 0. Here a group is
left blank (None) unless every one of its dimensions has a value, and the lacking dimensions are named.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

# dimension (VBench's result key, mapped by its I2VKEY) -> (Min, Max, weight)
I2V_DIMENSION_CONSTANTS: dict[str, tuple[float, float, float]] = {
    "camera_motion": (0.0, 1.0, 0.1),           # "Video-Text Camera Motion"
    "i2v_subject": (0.1462, 1.0, 1.0),          # "Video-Image Subject Consistency"
    "i2v_background": (0.2615, 1.0, 1.0),       # "Video-Image Background Consistency"
    "subject_consistency": (0.1462, 1.0, 1.0),
    "background_consistency": (0.2615, 1.0, 1.0),
    "motion_smoothness": (0.7060, 0.9975, 1.0),
    "dynamic_degree": (0.0, 1.0, 0.5),
    "aesthetic_quality": (0.0, 1.0, 1.0),
    "imaging_quality": (0.0, 1.0, 1.0),
}
QUALITY_DIMENSIONS = ("subject_consistency", "background_consistency", "motion_smoothness", "dynamic_degree",
                      "aesthetic_quality", "imaging_quality")  # I2V_QUALITY_LIST
I2V_DIMENSIONS = ("camera_motion", "i2v_subject", "i2v_background")  # I2V_LIST
QUALITY_WEIGHT = 1.0  # I2V_QUALITY_WEIGHT
I2V_WEIGHT = 1.0
# group key -> its dimensions; "vbench_total" combines the other two
VBENCH_I2V_GROUPS: dict[str, tuple[str, ...]] = {
    "vbench_quality": QUALITY_DIMENSIONS,
    "vbench_i2v": I2V_DIMENSIONS,
    "vbench_total": QUALITY_DIMENSIONS + I2V_DIMENSIONS,
}
GROUP_LABELS = {"vbench_quality": "VBench-I2V Quality Score", "vbench_i2v": "VBench-I2V I2V Score",
                "vbench_total": "VBench-I2V Total Score"}


def _has(values: Mapping[str, float | None], name: str) -> bool:
    value = values.get(name)
    return value is not None and math.isfinite(value)


def _group(values: Mapping[str, float | None], dims: tuple[str, ...]) -> float:
    weighted = total_weight = 0.0
    for d in dims:
        low, high, weight = I2V_DIMENSION_CONSTANTS[d]
        weighted += (values[d] - low) / (high - low) * weight
        total_weight += weight
    return weighted / total_weight


def vbench_i2v_scores(values: Mapping[str, float | None]) -> tuple[dict[str, float | None], dict[str, list[str]]]:
    """(VBench-I2V group scores, the dimensions each blank group lacks) from dimension values in [0, 1].

    Returns ``{"vbench_quality", "vbench_i2v", "vbench_total"}`` -> score in [0, 1] (VBench's scale; shown
    ×100 on its leaderboard), None where a dimension lacks a finite value; and group -> lacking dimensions
    for the blank groups only.
    """
    lacking = {key: [d for d in dims if not _has(values, d)] for key, dims in VBENCH_I2V_GROUPS.items()}
    scores: dict[str, float | None] = dict.fromkeys(VBENCH_I2V_GROUPS)
    if not lacking["vbench_quality"]:
        scores["vbench_quality"] = _group(values, QUALITY_DIMENSIONS)
    if not lacking["vbench_i2v"]:
        scores["vbench_i2v"] = _group(values, I2V_DIMENSIONS)
    if scores["vbench_quality"] is not None and scores["vbench_i2v"] is not None:
        scores["vbench_total"] = ((QUALITY_WEIGHT * scores["vbench_quality"] + I2V_WEIGHT * scores["vbench_i2v"])
                                  / (QUALITY_WEIGHT + I2V_WEIGHT))
    return scores, {key: dims for key, dims in lacking.items() if dims}


def vbench_i2v_note(lacking: Mapping[str, list[str]]) -> str:
    """One line saying how the VBench-I2V rows are made and which dimensions each blank one lacks."""
    note = ("VBench-I2V Quality / I2V / Total Score: VBench's scripts/cal_i2v_final_score.py rule and "
            "scripts/constant.py constants (commit 884b25e)")
    if lacking:
        note += "; blank: " + "; ".join(f"{GROUP_LABELS[k]} lacks {', '.join(v)}" for k, v in lacking.items())
        if any("camera_motion" in v for v in lacking.values()):
            note += " (camera_motion is not computed by shiftvdm)"
    return note


__all__ = ["GROUP_LABELS", "I2V_DIMENSIONS", "I2V_DIMENSION_CONSTANTS", "QUALITY_DIMENSIONS", "VBENCH_I2V_GROUPS",
           "vbench_i2v_note", "vbench_i2v_scores"]
