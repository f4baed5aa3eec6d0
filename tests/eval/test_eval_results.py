"""eval/results.py: what ``evaluate_videos`` returns, as JSON for programs and as a table for people.

What a user relies on: the JSON is strict (non-finite values become null, numpy/paths/tuples become JSON types)
and round-trips from the saved file; the table lists the metrics present in a fixed order with their counts and
meaning, says which flow the dynamic degree used, and lists skipped clips and notes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from shiftvdm.eval.results import METRIC_ROWS, SPRITE_ROWS, EvalResult, json_value


def result(**overrides) -> EvalResult:
    fields = dict(aggregate={"motion_score": 1.25, "dynamic_degree": 0.5, "temporal_flicker": float("nan")},
                  per_video=[{"name": "a", "path": Path("/x/a.mp4"), "frames": np.int64(16), "motion_score": np.float32(1.5)},
                             {"name": "b", "path": Path("/x/b.mp4"), "frames": 16, "motion_score": 1.0}],
                  skipped=[{"set": "videos", "name": "c.mp4", "reason": "unreadable"}],
                  notes=["estimators: DIS flow"], counts={"motion_score": "2", "dynamic_degree": "2"},
                  settings={"flow": "dis", "tracker": "lk", "size": (32, 32)})
    fields.update(overrides)
    return EvalResult(**fields)


def test_json_value_makes_plain_json_types():
    value = {"f": np.float32(0.5), "i": np.int64(3), "b": np.bool_(True), "nan": float("nan"), "inf": np.float64(np.inf),
             "p": Path("/a/b"), "t": (1, np.float64(2.5)), "nested": [{"x": np.float16(1.0)}], "s": "ok", "n": None}
    out = json_value(value)
    assert out == {"f": 0.5, "i": 3, "b": True, "nan": None, "inf": None, "p": "/a/b", "t": [1, 2.5],
                   "nested": [{"x": 1.0}], "s": "ok", "n": None}
    assert type(out["i"]) is int and type(out["f"]) is float and type(out["b"]) is bool
    json.dumps(out, allow_nan=False)  # strict JSON


def test_json_is_strict_and_round_trips_through_the_saved_file(tmp_path):
    res = result()
    data = json.loads(res.to_json())
    assert data["aggregate"] == {"motion_score": 1.25, "dynamic_degree": 0.5, "temporal_flicker": None}
    assert data["per_video"][0] == {"name": "a", "path": "/x/a.mp4", "frames": 16, "motion_score": 1.5}
    assert data["settings"]["size"] == [32, 32] and data["skipped"][0]["reason"] == "unreadable"
    path = res.save_json(tmp_path / "eval.json")
    assert path == tmp_path / "eval.json" and [p.name for p in tmp_path.iterdir()] == ["eval.json"]  # no temporary left
    assert json.loads(path.read_text(encoding="utf-8")) == data == res.to_dict()
    assert path.read_text(encoding="utf-8").endswith("}\n") and "NaN" not in path.read_text(encoding="utf-8")


def test_table_rows_follow_the_metric_order_with_counts_and_descriptions():
    lines = result().format_table().splitlines()
    assert lines[0] == "2 clips scored, 1 skipped (flow: dis, tracker: lk)"
    header, rule = lines[1], lines[2]
    assert header.split()[:4] == ["metric", "value", "n", "what"] and set(rule) == {"-"}
    rows = lines[3:6]
    assert [r.split("  ")[0] for r in rows] == ["dynamic degree", "motion score [px/frame]", "temporal flicker"]
    assert "0.5000" in rows[0] and "stand-in: VBench uses RAFT; this run used DIS" in rows[0]
    assert "1.2500" in rows[1] and rows[1].split()[-6] == "2"  # value, then its count, then what it measures
    assert "n/a" in rows[2]  # a NaN value is shown as n/a
    assert lines[lines.index("skipped:") + 1] == "  [videos] c.mp4: unreadable"
    assert lines[-2:] == ["notes:", "  - estimators: DIS flow"]
    order = list(METRIC_ROWS)
    assert order.index("dynamic_degree") < order.index("motion_score") < order.index("temporal_flicker")


def test_table_number_formats_sprites_and_vbench_exact():
    res = EvalResult(aggregate={"motion_score": 123.456, "motion_score_256": 2e-5, "gt_psnr": 1e6, "dynamic_degree": 1.0,
                                "sprite_speed": 0.0, "sprite_bg_flicker": 0.01},
                     per_video=[{"name": "a"}], settings={"flow": "raft", "dynamic_vbench_exact": True})
    table = res.format_table()
    assert table.splitlines()[0] == "1 clip scored (flow: raft, tracker: ?)"
    assert "123.46" in table and "2.000e-05" in table and "1.000e+06" in table
    assert "VBench-exact (RAFT, 20 iterations)" in table
    assert "sprite speed" in table and SPRITE_ROWS["speed"] in table and "0.0000" in table
    assert "sprite bg flicker" in table and "skipped:" not in table and "notes:" not in table
    assert "first frame" not in table  # metrics that were not computed get no row


def test_empty_result_still_formats():
    lines = EvalResult(aggregate={}, per_video=[]).format_table().splitlines()
    assert lines[0] == "0 clips scored (flow: ?, tracker: ?)"
    assert len(lines) == 3 and lines[1].split() == ["metric", "value", "n", "what"]  # the header only, no rows
