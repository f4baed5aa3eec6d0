"""data/manifest.py ``stream_manifest``: a large JSONL manifest validated in one pass, entries parsed on access.

What a user relies on: the entries are exactly ``load_manifest``'s, a bad line or a duplicate is refused at
start-up naming the line (not when the clip is reached), and ``data check --workers`` reports as one worker does.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from shiftvdm.data.check import check_dataset
from shiftvdm.data.manifest import LazyEntries, load_manifest, stream_manifest
from shiftvdm.data.video_io import write_video
from shiftvdm.errors import DataError


def test_streamed_entries_equal_loaded_ones_and_bad_lines_are_named(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [{"path": f"clips/c{i}.npy", "source": f"s{i // 2}", "prompt": f"p{i}" if i % 3 else None, "fps": 8}
            for i in range(7)]
    path.write_text("\ufeff" + "\n\n".join(json.dumps(r) for r in rows) + "\n")  # a BOM and blank lines
    streamed, loaded = stream_manifest(path), load_manifest(path)
    assert isinstance(streamed.entries, LazyEntries) and len(streamed.entries) == 7
    assert streamed.entries[-1] == loaded.entries[-1] and streamed.entries[0:7] == loaded.entries
    assert list(streamed.entries.records()) == rows
    path.write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[1]) + "\n" + json.dumps(rows[0]) + "\n")
    with pytest.raises(DataError, match=r"train.jsonl: duplicate .*'clips/c0.npy' \(lines 1 and 3\)"):
        stream_manifest(path)
    path.write_text(json.dumps(rows[0]) + "\n{\"source\": \"x\"}\n")
    with pytest.raises(DataError, match=r"train.jsonl line 2: missing required key \"path\""):
        stream_manifest(path)
    path.write_text(json.dumps(rows[0]) + "\n{oops\n")
    with pytest.raises(DataError, match=r"train.jsonl line 2: invalid JSON"):
        stream_manifest(path)


def test_check_with_workers_reports_as_one_worker(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(4):
        write_video(tmp_path / f"c{i}.npy", rng.integers(0, 255, (3 + i, 8, 8, 3), dtype=np.uint8), 8.0)
    (tmp_path / "c9.npy").write_bytes(b"")
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps({"path": f"c{i}.npy"}) + "\n" for i in (0, 1, 9, 2, 3)))
    one = check_dataset(path, num_frames=4)
    two = check_dataset(stream_manifest(path), num_frames=4, workers=2)
    assert [e.relpath for e in two.good] == [e.relpath for e in one.good] == ["c1.npy", "c2.npy", "c3.npy"]
    assert [(e.relpath, r) for e, r in two.bad] == [(e.relpath, r) for e, r in one.bad]
    assert [e.relpath for e, _ in two.bad] == ["c0.npy", "c9.npy"]
