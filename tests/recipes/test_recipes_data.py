"""recipes/data.py: `shiftvdm data synth` and `shiftvdm data check`, called through the recipe's own ``main``.

What a user relies on: every synth flag reaches the dataset (counts, sizes, format, sprite options), the same
arguments give the same bytes, pair flags take N or MIN,MAX and refuse anything else, and check exits 1 listing
each bad clip with its reason (0 with a summary when all are good).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from shiftvdm.errors import DataError
from shiftvdm.recipes.data import _float_pair, _int_pair, main

SYNTH = ["synth", "--clips", "3", "--frames", "5", "--size", "16", "--format", "npy", "--background", "flat",
         "--sprites", "2", "--sprite-size", "3,4", "--speed", "2", "--shapes", "square", "--seed", "4"]


def test_pair_flags_take_one_or_two_values():
    assert _int_pair("2") == (2, 2) and _int_pair("1,3") == (1, 3)
    assert _float_pair("2.5") == (2.5, 2.5) and _float_pair("0.5,1e1") == (0.5, 10.0)
    for bad in ("1,2,3", "a", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected N or MIN,MAX integers"):
            _int_pair(bad)
    for bad in ("1,2,3", "x,1"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected X or LO,HI numbers"):
            _float_pair(bad)


def test_synth_writes_what_the_flags_ask_for(tmp_path, capsys):
    out = tmp_path / "sprites"
    assert main([*SYNTH, "--out", str(out)]) == 0
    assert f"wrote 3 clips of 5x16x16 to {out}" in capsys.readouterr().out
    clips = sorted((out / "clips").glob("*.npy"))
    assert len(clips) == 3
    video = np.load(clips[0])
    assert video.shape == (5, 16, 16, 3) and video.dtype == np.float32 and 0 <= video.min() <= video.max() <= 1
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 3
    truth = np.load(out / "ground_truth.npz")
    assert truth["videos"].shape == (3, 5, 16, 16, 3)
    np.testing.assert_allclose(video, truth["videos"][0] / 255.0, atol=1e-6)  # the file is the rendered clip
    assert (truth["num_sprites"] == 2).all() and set(truth["shape_names"][truth["shapes"]].ravel()) == {"square"}
    speeds = np.linalg.norm(truth["velocities"], axis=-1)
    np.testing.assert_allclose(speeds, 2.0, rtol=1e-5)  # --speed 2: every sprite moves 2 px/frame
    extent = 2 * truth["radii"]
    assert ((extent >= 3.0 - 1e-5) & (extent <= 4.0 + 1e-5)).all()  # --sprite-size 3,4 (square side)
    settings = json.loads((out / "dataset.json").read_text())["settings"]
    assert settings["seed"] == 4 and settings["background"] == "flat" and settings["format"] == "npy"
    assert settings["num_sprites"] == [2, 2] and settings["sprite_size"] == [3.0, 4.0]
    assert settings["speed"] == [2.0, 2.0] and settings["antialias"] is True  # no --crisp


def test_same_arguments_same_bytes_and_overwrite_is_explicit(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main([*SYNTH, "--out", str(a)]) == 0 and main([*SYNTH, "--out", str(b)]) == 0
    for name in ("clips/clip_00000.npy", "clips/clip_00002.npy", "ground_truth.npz"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    with pytest.raises(DataError, match="pass --overwrite to replace it"):
        main([*SYNTH, "--out", str(a)])
    assert main([*SYNTH, "--out", str(a), "--seed", "5", "--overwrite"]) == 0
    assert (a / "clips/clip_00000.npy").read_bytes() != (b / "clips/clip_00000.npy").read_bytes()


def test_check_lists_bad_clips_and_exits_1(tmp_path, capsys):
    out = tmp_path / "sprites"
    main([*SYNTH, "--out", str(out)])
    capsys.readouterr()
    assert main(["check", str(out / "manifest.jsonl"), "--frames", "5"]) == 0
    assert "all 3 clips are good" in capsys.readouterr().out
    (out / "clips" / "clip_00001.npy").write_bytes(b"garbage")
    assert main(["check", str(out / "manifest.jsonl"), "--frames", "5"]) == 1
    report = capsys.readouterr().out.splitlines()
    assert report[0] == "bad entries:" and report[1].startswith("  clips/clip_00001.npy: ")
    assert len([line for line in report if line.startswith("  ")]) == 1  # only the broken clip
    assert main(["check", str(out / "manifest.jsonl"), "--frames", "6"]) == 1  # every clip is too short
    assert len([line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]) == 3
