"""RAFT large/small as released (issue 11 item 2): key layout, strict loading, golden parity with the
official code, the two interfaces; and VBench's dynamic-degree rule (item 6) on known flows and in the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from shiftvdm.errors import CheckpointError, ConfigError
from shiftvdm.eval.dynamic_degree import (
    dynamic_threshold,
    judge_dynamic,
    required_pairs,
    sampling_interval,
    vbench_status,
    video_dynamic_degree,
)
from shiftvdm.eval.motion_score import flow_pair_statistics, vbench_pair_score
from shiftvdm.motion import get_flow_estimator
from shiftvdm.motion.raft_flow import RAFT, CorrelationPyramid, InputPadder, PaddedFlow, RAFTFlow, seeded_state_dict
from shiftvdm.motion.weights import identify_network

KEYS = Path("/work/shared/reference/official-keys")
GOLDEN = Path(__file__).parents[1] / "fixtures" / "raft" / "raft_golden.npz"


def official_keys(name: str) -> list[tuple[str, tuple[int, ...]]]:
    rows = [line.rstrip("\n").split("\t") for line in (KEYS / name).read_text().splitlines() if line.strip()]
    return [(row[0], tuple(int(d) for d in row[1].strip("()").split(",") if d.strip())) for row in rows]


def save_checkpoint(tmp_path: Path, variant: str, seed: int, prefix: str = "module.", name: str = "") -> Path:
    path = tmp_path / (name or f"raft-{variant}-{seed}.pth")
    torch.save(seeded_state_dict(RAFT(variant), seed, prefix=prefix), path)
    return path


# ----- key layout -------------------------------------------------------------------------------

@pytest.mark.parametrize("variant, listing, params", [("large", "raft_large_keys.tsv", 5_257_536),
                                                      ("small", "raft_small_keys.tsv", 990_162)])
def test_keys_and_shapes_equal_the_official_lists(variant, listing, params):
    if not (KEYS / listing).is_file():
        pytest.skip("official key lists not available")
    ours = [(f"module.{k}", shape) for k, shape in RAFT.expected_keys(variant).items()]
    assert ours == official_keys(listing)  # same keys, shapes and order
    assert sum(p.numel() for p in RAFT(variant).parameters()) == params
    keys = dict(ours)
    if variant == "large":  # the aliased BatchNorm of a stride-2 block is stored under both names
        for stage in ("layer2", "layer3"):
            for leaf in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                assert f"module.cnet.{stage}.0.norm3.{leaf}" in keys
                assert f"module.cnet.{stage}.0.downsample.1.{leaf}" in keys
        model = RAFT("large")
        assert model.cnet.layer2[0].norm3 is model.cnet.layer2[0].downsample[1]


def test_signatures_name_raft_files():
    assert identify_network(set(RAFT.expected_keys("large"))) == "RAFT"
    assert identify_network(set(RAFT.expected_keys("small"))) == "RAFT-small"


# ----- golden parity with the official implementation -----------------------------------------

@pytest.fixture(scope="module")
def golden():
    return dict(np.load(GOLDEN, allow_pickle=False))


@pytest.mark.parametrize("variant", ["large", "small"])
def test_flow_equals_official_raft(tmp_path, golden, variant):
    # weights drawn by our code, saved as a DataParallel (module.) dump: the official model loaded the same
    state = seeded_state_dict(RAFT(variant), int(golden[f"{variant}_seed"]), prefix="module.")
    assert sum(float(v.double().sum()) for v in state.values()) == pytest.approx(float(golden[f"{variant}_weight_sum"]),
                                                                                 rel=1e-12)
    path = tmp_path / "raft.pth"
    torch.save(state, path)
    estimator = get_flow_estimator("raft", checkpoint=str(path), iters=int(golden[f"{variant}_iters"]), device="cpu")
    assert estimator.variant == variant
    frames = golden["frames"]  # (2, 123, 133, 3): pads to 128x136, rows 2/3 and columns 1/2
    padded = estimator.padded_flow(frames[:1], frames[1:])
    official = golden[f"{variant}_flow_up"].transpose(1, 2, 0)[None]
    assert padded.native and padded.pad == (1, 2, 2, 3) and padded.flow.shape == official.shape
    assert np.abs(official).max() > 20  # a field worth comparing (random weights move far)
    np.testing.assert_allclose(padded.flow, official, rtol=0, atol=1e-3)
    flow = estimator(frames[:1], frames[1:])  # numpy interface: un-padded as the official InputPadder.unpad
    np.testing.assert_array_equal(flow, padded.cropped())
    np.testing.assert_allclose(flow, official[:, 2:125, 1:134], rtol=0, atol=1e-3)


def test_parity_fixture_detects_the_transposed_window(tmp_path, golden, monkeypatch):
    # the defect of the earlier RAFT-small: (dx, dy) stacked with the y-offset slow; the fixture must see it
    state = seeded_state_dict(RAFT("small"), int(golden["small_seed"]))
    model = RAFT("small").eval()
    model.load_state_dict(state)
    frames = torch.from_numpy(golden["frames"]).permute(0, 3, 1, 2).float()
    a, b = InputPadder(123, 133)(frames[:1], frames[1:])
    original = CorrelationPyramid.__init__

    def transposed(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.window = self.window.flip(-1)

    monkeypatch.setattr(CorrelationPyramid, "__init__", transposed)
    with torch.no_grad():
        _, wrong = model(a, b, iters=int(golden["small_iters"]))
    assert np.abs(wrong[0].numpy() - golden["small_flow_up"]).max() > 1.0


def test_numpy_and_torch_paths_agree_and_chunks_do_not_matter(tmp_path):
    path = save_checkpoint(tmp_path, "small", seed=3)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(3, 122, 130, 3), dtype=np.uint8)
    whole = get_flow_estimator("raft", checkpoint=str(path), iters=2, device="cpu", chunk_size=8)
    single = get_flow_estimator("raft", checkpoint=str(path), iters=2, device="cpu", chunk_size=1)
    flow = whole(frames[:-1], frames[1:])
    assert flow.shape == (2, 122, 130, 2) and flow.dtype == np.float32
    tensors = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    with torch.enable_grad():  # no graph is built even when gradients are on
        out = whole.flow_torch(tensors[:-1], tensors[1:])
    assert out.shape == (2, 2, 122, 130) and not out.requires_grad and out.device == whole.device
    np.testing.assert_array_equal(out.permute(0, 2, 3, 1).numpy(), flow)
    np.testing.assert_allclose(single(frames[:-1], frames[1:]), flow, rtol=0, atol=1e-4)


def test_small_frames_are_upsampled_and_flow_comes_back_at_their_size(tmp_path):
    assert RAFTFlow.upsampling(121, 200) == 1 and RAFTFlow.upsampling(120, 200) == 2  # 121 pads to 128
    assert RAFTFlow.upsampling(20, 20) == 7
    path = save_checkpoint(tmp_path, "small", seed=4)
    estimator = get_flow_estimator("raft", checkpoint=str(path), iters=1, device="cpu")
    frames = np.random.default_rng(1).integers(0, 256, size=(2, 20, 24, 3), dtype=np.uint8)
    flow = estimator(frames[:1], frames[1:])
    assert flow.shape == (1, 20, 24, 2) and np.all(np.isfinite(flow))
    padded = estimator.padded_flow(frames[:1], frames[1:])
    assert not padded.native and padded.pad == (0, 0, 0, 0)
    np.testing.assert_array_equal(padded.flow, flow)


# ----- loading ---------------------------------------------------------------------------------

def test_loads_prefixed_unprefixed_and_safetensors_and_reads_the_variant(tmp_path):
    frames = np.random.default_rng(2).integers(0, 256, size=(2, 120, 128, 3), dtype=np.uint8)
    prefixed = save_checkpoint(tmp_path, "small", seed=5)
    plain = save_checkpoint(tmp_path, "small", seed=5, prefix="", name="plain.pth")
    tensors = tmp_path / "raft.safetensors"
    save_file({k: v.contiguous() for k, v in seeded_state_dict(RAFT("small"), 5).items()}, str(tensors))
    flows = [get_flow_estimator("raft", checkpoint=str(p), iters=1, device="cpu")(frames[:1], frames[1:])
             for p in (prefixed, plain, tensors)]
    np.testing.assert_array_equal(flows[0], flows[1])
    np.testing.assert_array_equal(flows[0], flows[2])
    large = save_checkpoint(tmp_path, "large", seed=6)
    estimator = get_flow_estimator("raft", checkpoint=str(large), iters=20, device="cpu")
    assert estimator.variant == "large" and estimator.vbench_exact
    assert not get_flow_estimator("raft", checkpoint=str(large), iters=12, device="cpu").vbench_exact
    with pytest.raises(CheckpointError, match="RAFT-large checkpoint but variant='small'"):
        get_flow_estimator("raft", checkpoint=str(large), variant="small")


def test_strict_load_refusals_name_the_key(tmp_path):
    state = seeded_state_dict(RAFT("large"), 7, prefix="module.")
    renamed = dict(state)
    renamed["module.update_block.mask.0.weights"] = renamed.pop("module.update_block.mask.0.weight")
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(CheckpointError, match=r"renamed.pth: not a RAFT checkpoint: missing 1 keys \(first: "
                                              r"update_block.mask.0.weight\); unexpected 1 keys \(first: "
                                              r"update_block.mask.0.weights\)"):
        RAFTFlow(tmp_path / "renamed.pth")
    wrong = dict(state)
    wrong["module.fnet.conv2.weight"] = torch.zeros(128, 128, 1, 1)
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match=r"wrong shapes: fnet.conv2.weight \(128, 128, 1, 1\) "
                                              r"\(expected \(256, 128, 1, 1\)\)"):
        RAFTFlow(tmp_path / "wrong.pth")
    with pytest.raises(ConfigError, match="needs a local checkpoint"):
        get_flow_estimator("raft")
    with pytest.raises(CheckpointError, match="not found"):
        get_flow_estimator("raft", checkpoint=str(tmp_path / "missing.pth"))


@pytest.mark.parametrize("listing", ["searaft_M_keys.tsv", "cotracker3_offline_keys.tsv"])
def test_other_networks_are_named(tmp_path, listing):
    if not (KEYS / listing).is_file():
        pytest.skip("official key lists not available")
    # the keys of the other network with one-element tensors: enough to be recognised, tiny on disk
    torch.save({key: torch.zeros(1) for key, _ in official_keys(listing)}, tmp_path / listing.replace(".tsv", ".pth"))
    other = identify_network({key for key, _ in official_keys(listing)})
    with pytest.raises(CheckpointError, match="not a RAFT checkpoint") as info:
        RAFTFlow(tmp_path / listing.replace(".tsv", ".pth"))
    if other is not None:  # its module registered a signature (SEA-RAFT / CoTracker3 helpers)
        assert f"looks like a {other} checkpoint" in str(info.value)


def test_torchvision_layout_is_named(tmp_path):
    torch.save({"feature_encoder.convnormrelu.0.weight": torch.zeros(1),
                "update_block.motion_encoder.convcorr1.0.weight": torch.zeros(1)}, tmp_path / "tv.pth")
    with pytest.raises(CheckpointError, match="looks like a torchvision RAFT"):
        RAFTFlow(tmp_path / "tv.pth")


# ----- VBench's dynamic-degree rule on known flows ---------------------------------------------

class ScriptedFlow:
    """Pair i gets ``fraction`` of its pixels moving by ``magnitudes[i]`` px (a 3-4-5 direction), the rest still."""

    name = "scripted"

    def __init__(self, magnitudes: list[float], fraction: float = 0.05) -> None:
        self.magnitudes, self.fraction, self.calls = list(magnitudes), fraction, 0

    def __call__(self, frames_a: np.ndarray, frames_b: np.ndarray) -> np.ndarray:
        n, h, w = frames_a.shape[:3]
        flow = np.zeros((n, h * w, 2), np.float32)
        count = int(h * w * self.fraction)
        for i in range(n):
            magnitude = self.magnitudes[self.calls + i]
            flow[i, :count] = (0.6 * magnitude, 0.8 * magnitude)
        self.calls += n
        return flow.reshape(n, h, w, 2)


def test_vbench_constants_follow_its_head():
    assert dynamic_threshold(320, 576) == pytest.approx(7.5) and dynamic_threshold(512, 512) == pytest.approx(12.0)
    assert dynamic_threshold(256, 256) == dynamic_threshold(256, 4096)  # the short side counts
    assert [sampling_interval(f) for f in (4, 8, 12, 20, 24, 25, 30)] == [1, 1, 2, 2, 3, 3, 4]  # half to even
    assert [required_pairs(n) for n in (16, 14, 8, 6, 2, 1)] == [4, 4, 2, 2, 0, 0]


@pytest.mark.parametrize("above, dynamic", [(4, True), (3, False)])
def test_sixteen_frames_at_8fps_need_four_pairs_above(above, dynamic):
    # 64x64: threshold 1.5 px; 204 = int(4096·0.05) pixels move, so a pair's score is exactly its magnitude
    magnitudes = [1.6] * above + [1.5] * (15 - above)  # 1.5 is not strictly above
    verdict = video_dynamic_degree(np.zeros((16, 64, 64, 3), np.uint8), 8.0, ScriptedFlow(magnitudes))
    assert verdict.threshold == pytest.approx(1.5) and verdict.required_pairs == 4
    assert verdict.pair_scores == pytest.approx(magnitudes) and verdict.pairs_above == above
    assert verdict.is_dynamic is dynamic and not verdict.vbench_exact


def test_24fps_keeps_every_third_frame_and_counts_kept_frames():
    # 16 frames at 24 fps: frames 0, 3, ..., 15 are kept (6), 5 pairs, round(4·6/16) = round(1.5) = 2
    estimator = ScriptedFlow([9.0, 0.0, 0.0, 0.0, 9.0])
    verdict = video_dynamic_degree(np.zeros((16, 64, 64, 3), np.uint8), 24.0, estimator)
    assert (verdict.interval, verdict.num_sampled_frames, verdict.required_pairs) == (3, 6, 2)
    assert estimator.calls == 5 and verdict.pairs_above == 2 and verdict.is_dynamic
    assert not judge_dynamic([9.0, 0.0, 0.0, 0.0, 0.0], 1.5, 2)


def test_pair_score_is_read_on_the_padded_flow():
    class Padding:
        name, vbench_exact = "padding", True

        def padded_flow(self, frames_a, frames_b):  # 124x130 padded to 128x136: (left, right, top, bottom)
            flow = np.zeros((len(frames_a), 128, 136, 2), np.float32)
            flow[:, :2] = (0.0, 10.0)  # 272 moving pixels, all in the two top padding rows
            return PaddedFlow(flow=flow, pad=(3, 3, 2, 2), native=True)

    video = np.zeros((5, 124, 130, 3), np.uint8)
    stats = flow_pair_statistics(video, Padding())
    cut = int(128 * 136 * 0.05)  # 870 pixels of the padded flow, as VBench's get_score
    assert stats.top_magnitude == pytest.approx([10.0 * 272 / cut] * 4)
    assert stats.mean_magnitude == pytest.approx([0.0] * 4)  # the motion score sees only the real frames
    verdict = video_dynamic_degree(video, 8.0, Padding(), consecutive=stats)
    assert verdict.vbench_exact and verdict.is_dynamic  # 3.13 px > 6·124/256 = 2.91 px on all 4 pairs
    exact, note = vbench_status(Padding(), [verdict.vbench_exact])
    assert exact and note.startswith("dynamic degree: VBench-exact")


def test_vbench_pair_score_matches_a_hand_computation():
    rng = np.random.default_rng(3)
    flow = rng.normal(size=(37, 41, 2)).astype(np.float32)
    magnitude = np.sqrt(flow[..., 0] ** 2 + flow[..., 1] ** 2).ravel()
    cut = int(37 * 41 * 0.05)
    assert vbench_pair_score(flow) == pytest.approx(float(np.sort(magnitude)[::-1][:cut].mean()), rel=1e-6)
    assert vbench_pair_score(np.ones((4, 4, 2), np.float32)) == pytest.approx(np.sqrt(2))  # int(0.8) = 0: the max


# ----- the eval CLI on a random-init RAFT ------------------------------------------------------

def test_eval_cli_with_a_raft_checkpoint_says_vbench_exact(tmp_path, capsys):
    from shiftvdm.recipes.evaluate import main

    clips = tmp_path / "clips"
    clips.mkdir()
    rng = np.random.default_rng(4)
    for i in range(2):
        np.save(clips / f"clip{i}.npy", rng.integers(0, 256, size=(3, 128, 128, 3), dtype=np.uint8))
    large = save_checkpoint(tmp_path, "large", seed=8, name="raft-things.pth")
    code = main([str(clips), "--flow", "raft", "--flow-checkpoint", str(large), "--device", "cpu",
                 "--metrics", "dynamic_degree,motion_score", "--json", str(tmp_path / "out.json")])
    out = capsys.readouterr().out
    assert code == 0 and "VBench-exact" in out and "RAFT, 20 iterations, raft-things.pth" in out
    assert "(flow: raft" in out and "motion score" in out
    import json

    data = json.loads((tmp_path / "out.json").read_text())
    assert data["settings"]["dynamic_vbench_exact"] is True
    assert all(row["dynamic_vbench_exact"] and row["dynamic_pairs"] == 2 for row in data["per_video"])

    small = save_checkpoint(tmp_path, "small", seed=9, name="raft-small.pth")
    code = main([str(clips), "--flow", "raft", "--flow-checkpoint", str(small), "--flow-iters", "2",
                 "--flow-chunk-size", "1", "--metrics", "dynamic_degree"])
    out = capsys.readouterr().out
    assert code == 0 and "not VBench-exact" in out and "RAFT-small, 2 iterations" in out
    main([str(clips), "--metrics", "dynamic_degree"])
    out = capsys.readouterr().out
    assert "stand-in" in out and "VBench-exact" not in out.replace("for VBench-exact", "")
    with pytest.raises(ConfigError, match="--flow-iters applies to a neural flow estimator"):
        main([str(clips), "--flow", "dis", "--flow-iters", "4"])
