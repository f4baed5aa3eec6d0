"""VBench-I2V's Quality / I2V / Total Score (eval/vbench_score.py): VBench's normalisation and weights, blank
groups when a dimension is missing, and their rows in the paper table."""

from __future__ import annotations

import pytest

from shiftvdm.eval.paper import paper_table
from shiftvdm.eval.results import EvalResult
from shiftvdm.eval.vbench_score import vbench_i2v_note, vbench_i2v_scores

VALUES = {"subject_consistency": 0.9, "background_consistency": 0.95, "motion_smoothness": 0.98,
          "dynamic_degree": 0.4, "aesthetic_quality": 0.6, "imaging_quality": 0.7, "i2v_subject": 0.97,
          "i2v_background": 0.96, "camera_motion": 0.3}
# VBench's scripts/cal_i2v_final_score.py (commit 884b25e) run on VALUES (keys mapped by its I2VKEY) printed
# these; by hand: Quality = ((0.9-0.1462)/0.8538 + (0.95-0.2615)/0.7385 + (0.98-0.706)/0.2915 + 0.5·0.4 + 0.6
# + 0.7)/5.5, I2V = (0.1·0.3 + (0.97-0.1462)/0.8538 + (0.96-0.2615)/0.7385)/2.1, Total = their mean
VBENCH_QUALITY, VBENCH_I2V, VBENCH_TOTAL = 0.7736613526412842, 0.9241424380631744, 0.8489018953522294


def test_groups_reproduce_vbench_final_score():
    scores, lacking = vbench_i2v_scores(VALUES)
    assert scores["vbench_quality"] == pytest.approx(VBENCH_QUALITY, abs=1e-12)
    assert scores["vbench_i2v"] == pytest.approx(VBENCH_I2V, abs=1e-12)
    assert scores["vbench_total"] == pytest.approx(VBENCH_TOTAL, abs=1e-12)
    assert lacking == {}
    assert scores["vbench_quality"] == pytest.approx(((0.9 - 0.1462) / 0.8538 + (0.95 - 0.2615) / 0.7385
                                                      + (0.98 - 0.706) / 0.2915 + 0.5 * 0.4 + 0.6 + 0.7) / 5.5)


def test_a_group_is_blank_when_a_dimension_is_missing():
    without_camera = {k: v for k, v in VALUES.items() if k != "camera_motion"}
    scores, lacking = vbench_i2v_scores(without_camera)
    assert scores["vbench_quality"] == pytest.approx(VBENCH_QUALITY, abs=1e-12)
    assert scores["vbench_i2v"] is None and scores["vbench_total"] is None
    assert lacking == {"vbench_i2v": ["camera_motion"], "vbench_total": ["camera_motion"]}
    assert "VBench-I2V I2V Score lacks camera_motion" in vbench_i2v_note(lacking)
    scores, lacking = vbench_i2v_scores({**without_camera, "dynamic_degree": None,
                                         "imaging_quality": float("nan")})
    assert set(scores.values()) == {None}
    assert lacking["vbench_quality"] == ["dynamic_degree", "imaging_quality"]


def test_groups_are_rows_of_the_paper_table():
    scores, _ = vbench_i2v_scores({k: v for k, v in VALUES.items() if k != "camera_motion"})
    result = EvalResult(aggregate={"dynamic_degree": 0.4, **scores}, per_video=[],
                        settings={"suite": ["dynamic_degree"], "missing_dimensions": []})
    table = paper_table({"shift": result})
    assert f"| VBench-I2V Quality Score [%] | {100 * VBENCH_QUALITY:.2f} |" in table
    assert "| VBench-I2V I2V Score [%] | — |" in table and "| VBench-I2V Total Score [%] | — |" in table
    assert result.to_dict()["aggregate"]["vbench_total"] is None
