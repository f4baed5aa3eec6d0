"""Motion smoothness with AMT-S (issue 30 item 2): key layout and strict loading of ``amt-s.pth``, golden parity
of the interpolated frames and the score with the official AMT-S run by VBench's procedure on seeded weights,
and VBench's rule on hand-built clips (static, smooth fade, one cut).

The fixture ``tests/fixtures/amt/amt_golden.npz`` came from a throwaway script: ``seeded_amt_state_dict(5)``
saved as ``{"state_dict": ...}``, loaded by MCG-NKU/AMT's ``networks/AMT-S.py`` ``Model(3, 4, 3)``, and run as
``vbench/motion_smoothness.py`` does (even frames, InputPadder(16), one pair at a time with embt 1/2 and
scale 1, unpad, ``tensor2img``, ``cv2.absdiff`` against the odd frames) on two blocky translating clips
(5×128×136, 6×120×128). ``amt_s_keys.tsv`` lists the official model's state-dict keys and shapes. The
official code is not in this repository.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shiftvdm.errors import CheckpointError, DataError
from shiftvdm.eval.amt import (
    AMTS,
    MOTION_SMOOTHNESS,
    interpolate_even_frames,
    load_amt,
    seeded_amt_state_dict,
    smoothness_from_interpolated,
    vbench_motion_smoothness,
)
from shiftvdm.motion.weights import identify_network

FIXTURES = Path(__file__).parents[1] / "fixtures" / "amt"


@pytest.fixture(scope="module")
def amt_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("amt") / "amt-s.pth"
    torch.save({"state_dict": seeded_amt_state_dict(5)}, path)  # the released file's layout
    return path


def test_keys_equal_the_official_amt_s():
    rows = [line.split("\t") for line in (FIXTURES / "amt_s_keys.tsv").read_text().splitlines()]
    official = {k: tuple(int(d) for d in s.strip("()").split(",") if d.strip()) for k, s in rows}
    ours = {k: tuple(v.shape) for k, v in AMTS().state_dict().items()}
    assert ours == official and len(ours) == 213
    assert sum(p.numel() for p in AMTS().parameters()) == 2_990_543
    assert identify_network(set(ours)) == "AMT-S"


def test_golden_parity_with_official_amt_s_through_vbenchs_procedure(amt_file):
    golden = np.load(FIXTURES / "amt_golden.npz")
    model = load_amt(amt_file)
    for name in ("odd", "even"):
        frames = golden[f"{name}_frames"]
        ours = interpolate_even_frames(model, frames, chunk=2)  # both pairs in one batch
        expected = golden[f"{name}_interpolated"]
        assert ours.shape == expected.shape
        off = np.abs(ours.astype(int) - expected.astype(int))
        assert off.max() <= 1 and (off > 0).mean() < 1e-3  # uint8 truncation of equal floats up to rounding
        assert vbench_motion_smoothness(model, frames) == pytest.approx(float(golden[f"{name}_score"]), abs=1e-5)
        # the float frame before quantisation, on a crop (first pair)
        even = torch.from_numpy(frames[::2]).permute(0, 3, 1, 2).float() / 255.0
        h, w = even.shape[-2:]
        ph, pw = (-h) % 16, (-w) % 16
        padded = F.pad(even, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2], mode="replicate")
        with torch.no_grad():
            middle = model(padded[:1], padded[1:2])[0, :, ph // 2:ph // 2 + h, pw // 2:pw // 2 + w]
        crop = middle.permute(1, 2, 0)[40:72, 40:72].numpy()
        np.testing.assert_allclose(crop, golden[f"{name}_float"], atol=1e-5, rtol=0)


def test_released_layout_loads_strictly_and_others_are_refused(amt_file, tmp_path):
    state = torch.load(amt_file, weights_only=True)["state_dict"]
    bad = tmp_path / "amt-g.pth"
    torch.save({"state_dict": {k: v for k, v in state.items() if not k.startswith("comb_block")}}, bad)
    with pytest.raises(CheckpointError, match=r"amt-g.pth: not a AMT-S checkpoint: missing 5 keys"):
        load_amt(bad)
    scorer = MOTION_SMOOTHNESS.build({"amt-s.pth": amt_file}, torch.device("cpu"))
    small = np.zeros((5, 100, 100, 3), np.uint8)
    with pytest.raises(DataError, match="at least 128x128 pixels"):
        scorer.score(small, None)
    assert MOTION_SMOOTHNESS.weights[0].name == "amt-s.pth" and not MOTION_SMOOTHNESS.needs_image


def test_vbench_rule_on_hand_built_clips():
    def blend(frames):  # a perfect linear interpolator of the odd frames
        even = frames[::2].astype(float)
        return ((even[:-1] + even[1:]) / 2).astype(np.uint8)

    rng = np.random.default_rng(0)
    static = np.repeat(rng.integers(0, 256, (1, 8, 8, 3), dtype=np.uint8), 9, axis=0)
    assert smoothness_from_interpolated(static, blend(static)) == 1.0
    fade = np.stack([np.full((8, 8, 3), 20 * t, np.uint8) for t in range(9)])  # a smooth linear change
    assert smoothness_from_interpolated(fade, blend(fade)) == 1.0
    cut = fade.copy()
    cut[3:] = 255 - cut[3:]  # one cut between frames 2 and 3: frame 3 is far from the blend of 2 and 4
    value = smoothness_from_interpolated(cut, blend(cut))
    assert value < 0.95
    # VBench: mean over the odd frames 1, 3, 5, 7 of the mean |difference|; the cut costs frame 3 only
    expected_frame3 = np.abs(cut[3].astype(int) - blend(cut)[1].astype(int)).mean()
    assert value == pytest.approx((255 - expected_frame3 / 4) / 255)
    even_count = fade[:8]  # 8 frames: the last odd frame (7) has no interpolation and is not compared
    assert smoothness_from_interpolated(even_count, blend(even_count)) == 1.0
    with pytest.raises(DataError, match="at least 3 frames"):
        smoothness_from_interpolated(fade[:2], blend(fade[:2]))
