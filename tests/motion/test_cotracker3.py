"""CoTracker3 offline (motion/cotracker3.py) and the token LC head (rewards/lc.py).

Golden parity: tests/fixtures/cotracker3/cotracker3_parity.npz holds what the official CoTracker3
(facebookresearch/co-tracker@82e02e80) computed on weights drawn by our code, written by
tests/fixtures/oracle/make_cotracker3_fixture.py; this module regenerates the same weights.
"""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from shiftvdm.errors import CheckpointError, ConfigError, DataError
from shiftvdm.motion.base import TRACKERS, Tracks, get_tracker
from shiftvdm.motion.weights import identify_network
from shiftvdm.motion.cotracker3 import NETWORK, NUM_PARAMETERS, CoTracker3, CoTracker3Tracker, support_grid
from shiftvdm.rewards.lc import (
    TRACKFORMER,
    LCConfig,
    LCDiscriminator,
    TrackFormerHead,
    build_lc_discriminator,
    trackformer_config,
)

ROOT = Path(__file__).resolve().parents[1]  # tests/
KEYS_TSV = ROOT.parents[1] / "shared" / "reference" / "official-keys" / "cotracker3_offline_keys.tsv"
FIXTURE = ROOT / "fixtures" / "cotracker3" / "cotracker3_parity.npz"

_spec = importlib.util.spec_from_file_location("make_cotracker3_fixture",
                                               ROOT / "fixtures" / "oracle" / "make_cotracker3_fixture.py")
oracle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(oracle)  # type: ignore[union-attr]

# A reduced network through the same code path (fast; for behaviour tests).
SMALL = dict(latent_dim=16, corr_hidden=32, corr_dim=16, hidden=32, heads=2, time_depth=1, space_depth=1,
             num_virtual_tracks=4, model_resolution=(32, 48))


def _small_tracker(mode: str = "predictor", **kwargs) -> CoTracker3Tracker:
    model = CoTracker3(**SMALL)
    model.load_state_dict(oracle.draw_weights(model, seed=1))
    return CoTracker3Tracker.from_model(model, mode=mode, device="cpu", **kwargs)


def _official_keys() -> dict[str, tuple[int, ...]]:
    if not KEYS_TSV.is_file():
        pytest.skip(f"official key list not found at {KEYS_TSV}")
    keys = {}
    for line in KEYS_TSV.read_text().splitlines():
        name, shape = line.split("\t")
        keys[name] = tuple(int(d) for d in re.findall(r"\d+", shape))
    return keys


# ----- layout and loading ----------------------------------------------------------------------

def test_key_layout_equals_the_official_list():
    model = CoTracker3()
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == _official_keys()
    assert len(ours) == 188 and "updateformer.virual_tracks" in ours
    assert sum(p.numel() for p in model.parameters()) == NUM_PARAMETERS == 25_385_700
    assert model.input_dim == 1110


def test_strict_load_refusals_name_the_key(tmp_path):
    state = oracle.draw_weights(CoTracker3(**SMALL), seed=1)
    path = tmp_path / "small.safetensors"
    save_file(state, str(path))
    tracker = get_tracker("cotracker3", checkpoint=str(path), device="cpu", **SMALL)
    assert isinstance(tracker, CoTracker3Tracker) and tracker.token_dim == 2 + 4 * 16 + 84
    broken = dict(state)
    broken.pop("corr_mlp.fc2.bias")
    broken["fnet.conv3.weight"] = torch.zeros(16, 8, 1, 1)
    broken["extra.weight"] = torch.zeros(1)
    torch.save({"model": broken}, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=r"broken.pth: not a CoTracker3 offline checkpoint: missing 1 keys "
                                              r"\(first: corr_mlp.fc2.bias\); unexpected 1 keys \(first: extra.weight\); "
                                              r"wrong shapes: fnet.conv3.weight \(16, 8, 1, 1\)"):
        get_tracker("cotracker3", checkpoint=str(tmp_path / "broken.pth"), **SMALL)
    # a reduced file given to the released sizes: missing layers and wrong widths are both named
    with pytest.raises(CheckpointError, match=r"missing 88 keys.*wrong shapes: corr_mlp.fc1.bias \(32,\) "
                                              r"\(expected \(384,\)\)"):
        get_tracker("cotracker3", checkpoint=str(path), model_resolution=(32, 48))
    # the key signature other networks' loaders use to say "this file looks like CoTracker3"
    assert identify_network(set(_official_keys())) == NETWORK and identify_network(set(state)) == NETWORK
    assert identify_network({"fnet.conv1.weight", "cnet.conv1.weight"}) != NETWORK
    with pytest.raises(ConfigError, match="needs a local checkpoint path"):
        get_tracker("cotracker3")
    with pytest.raises(CheckpointError, match="not found"):
        get_tracker("cotracker3", checkpoint=str(tmp_path / "missing.pth"))
    assert "cotracker3" in TRACKERS and "cotracker" not in TRACKERS


# ----- golden parity with the official implementation ------------------------------------------

@pytest.fixture(scope="module")
def parity():
    if not FIXTURE.is_file():
        pytest.skip(f"fixture missing: {FIXTURE}")
    golden = dict(np.load(FIXTURE))
    model = CoTracker3(model_resolution=oracle.RESOLUTION)
    state = oracle.draw_weights(model)
    return golden, state


def test_predictor_mode_equals_official_predictor(parity, tmp_path):
    golden, state = parity
    path = tmp_path / "scaled_offline.pth"
    torch.save({"model": state}, path)  # the release's layout: a state dict under "model"
    tracker = get_tracker("cotracker3", checkpoint=str(path), device="cpu", model_resolution=oracle.RESOLUTION)
    clip, queries = oracle.parity_clip(), oracle.parity_queries()
    tracks = tracker(clip, queries)
    assert isinstance(tracks, Tracks) and tracks.points.shape == (8, 48, 2)
    np.testing.assert_allclose(tracks.points, golden["predictor_tracks"], atol=1e-3, rtol=0)
    agreement = (tracks.visible == golden["predictor_visible"]).mean()
    assert agreement >= 0.995
    assert 0.2 < golden["predictor_visible"].mean() < 0.8  # the weights make the 0.9 threshold bite
    np.testing.assert_allclose(tracks.points[0], queries, atol=1e-4)
    assert tracks.visible[0].all() and np.all((tracks.confidence > 0) & (tracks.confidence < 1))


def test_shift_mode_equals_authors_patched_predictor(parity):
    golden, state = parity
    model = CoTracker3(model_resolution=oracle.RESOLUTION)
    model.load_state_dict(state)
    out = CoTracker3Tracker.from_model(model, mode="shift", device="cpu").features(oracle.parity_clip(),
                                                                                   oracle.parity_queries())
    np.testing.assert_allclose(out["tracks"], golden["shift_tracks"], atol=1e-3, rtol=0)  # model-resolution px
    np.testing.assert_allclose(out["visibility"], golden["shift_visibility"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["confidence"], golden["shift_confidence"], atol=1e-5, rtol=0)
    assert out["tokens"].shape == (48, 8, 1110)
    tokens = out["tokens"]
    np.testing.assert_allclose(tokens[list(oracle.TOKEN_POINTS)], golden["shift_tokens_points"], atol=2e-3, rtol=0)
    np.testing.assert_allclose(tokens.mean(axis=0), golden["shift_tokens_mean"], atol=1e-3, rtol=0)
    # the raw probabilities are not thresholded and frame 0 is the network's, not the query
    assert not np.isin(out["visibility"], [0.0, 1.0]).all()
    assert np.abs(out["tracks"][0] - oracle.parity_queries() * [127 / 99, 95 / 71]).max() > 1e-3


# ----- conventions -----------------------------------------------------------------------------

def test_support_grid_and_time_embedding_by_hand():
    grid = support_grid(6, 384, 512)
    assert grid.shape == (36, 2)
    np.testing.assert_allclose(grid[0], [8.0, 8.0])
    np.testing.assert_allclose(grid[5], [504.0, 8.0])  # row-major: x runs fastest
    np.testing.assert_allclose(grid[-1], [504.0, 376.0])
    model = CoTracker3(**SMALL)
    table = model.time_emb[0].numpy()  # (60, D)
    assert model.time_embedding(60) is model.time_emb
    half = table.shape[1] // 2
    np.testing.assert_allclose(table[7, 3], math.sin(7 / 10000 ** (3 / half)), atol=1e-6)
    np.testing.assert_allclose(table[7, half + 3], math.cos(7 / 10000 ** (3 / half)), atol=1e-6)
    # linear interpolation, align_corners=False: output frame i samples source (i + 0.5)·60/8 − 0.5
    emb8 = model.time_embedding(8)[0].numpy()
    for i in (0, 3, 7):
        src = min(max((i + 0.5) * 60 / 8 - 0.5, 0), 59)
        low = int(math.floor(src))
        high, w = min(low + 1, 59), src - low
        np.testing.assert_allclose(emb8[i], (1 - w) * table[low] + w * table[high], atol=1e-6)


def test_torch_batched_path_equals_numpy_path():
    clip = oracle.parity_clip(4, (40, 56))
    clips = np.stack([clip, clip[:, ::-1].copy(), np.roll(clip, 5, axis=2)])
    queries = oracle.parity_queries(10, (40, 56))
    for mode in ("predictor", "shift"):
        tracker = _small_tracker(mode, chunk_size=2)
        batched = tracker.track(torch.from_numpy(clips).permute(0, 1, 4, 2, 3), queries)
        as_float = tracker.track(torch.from_numpy(clips).permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0, queries,
                                 value_range=(-1.0, 1.0))
        for i, single in enumerate(clips):
            numpy_out = tracker.features(single, queries)
            for name in ("tracks", "visibility", "confidence", "visible"):
                np.testing.assert_allclose(getattr(batched, name)[i].numpy(), numpy_out[name], atol=1e-5, rtol=0,
                                           err_msg=f"{mode}/{name}")
                # [-1, 1] floats differ from the uint8 values by ~1e-5 (float rounding); the random network
                # amplifies that a little
                np.testing.assert_allclose(getattr(as_float, name)[i].numpy(), numpy_out[name], atol=1e-2, rtol=0)
            if mode == "shift":
                np.testing.assert_allclose(batched.tokens[i].numpy(), numpy_out["tokens"], atol=1e-5, rtol=0)
            tracks = tracker(single, queries)  # the PointTracker interface: input pixels in both modes
            scale = [(56 - 1) / (48 - 1), (40 - 1) / (32 - 1)] if mode == "shift" else [1.0, 1.0]
            np.testing.assert_allclose(tracks.points, numpy_out["tracks"] * scale, atol=1e-4)
        assert batched.size == ((40, 56) if mode == "predictor" else (32, 48))
        assert (batched.tokens is None) == (mode == "predictor")
        with torch.autocast("cpu", dtype=torch.bfloat16):  # a caller's autocast does not reach the tracker
            under_autocast = tracker.track(torch.from_numpy(clips).permute(0, 1, 4, 2, 3), queries)
        assert under_autocast.tracks.dtype == torch.float32
        np.testing.assert_allclose(under_autocast.tracks.numpy(), batched.tracks.numpy(), atol=1e-5)
        assert not batched.tracks.requires_grad and not any(p.requires_grad for p in tracker.model.parameters())


def test_per_clip_queries_and_bad_inputs():
    tracker = _small_tracker("shift")
    clips = torch.from_numpy(np.stack([oracle.parity_clip(3, (32, 48))] * 2)).permute(0, 1, 4, 2, 3)
    q = oracle.parity_queries(6, (32, 48))
    per_clip = tracker.track(clips, np.stack([q, q[::-1].copy()]))
    # reversed query order: the same tracks in reverse (up to summation order in the attention)
    np.testing.assert_allclose(per_clip.tracks[1].flip(1).numpy(), per_clip.tracks[0].numpy(), atol=1e-3)
    gray = np.full((3, 32, 48), 90, np.uint8)
    gray[:, 10:20, 15:30] = 200
    np.testing.assert_array_equal(tracker(gray, q).points, tracker(np.repeat(gray[..., None], 3, -1), q).points)
    with pytest.raises(DataError, match="outside the 32x48 frame"):
        tracker.track(clips, np.array([[48.0, 3.0]]))
    with pytest.raises(DataError, match=r"queries must be \(N, 2\) or \(2, N, 2\)"):
        tracker.track(clips, np.zeros((3, 5, 2)))
    with pytest.raises(DataError, match=r"\(B, T, 3, H, W\)"):
        tracker.track(clips[0], q)
    with pytest.raises(DataError, match="uint8"):
        tracker(np.zeros((3, 32, 48, 3), np.float32), q)
    with pytest.raises(ConfigError, match="mode must be one of"):
        _small_tracker("online")
    with pytest.raises(ConfigError, match="multiples of the stride"):
        CoTracker3(model_resolution=(30, 48))


def test_motion_does_not_import_rewards():
    for path in (ROOT.parent / "src" / "shiftvdm" / "motion").glob("*.py"):
        assert "shiftvdm.rewards" not in path.read_text(), path.name


# ----- the LC discriminator over CoTracker3 tokens ----------------------------------------------

def test_trackformer_preset_has_the_authors_layout():
    head = build_lc_discriminator(TRACKFORMER, 1110)
    assert isinstance(head, TrackFormerHead)
    assert sum(p.numel() for p in head.parameters()) == 21_805_825
    keys = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    trunk = {k[len("updateformer."):]: s for k, s in _official_keys().items()
             if k.startswith("updateformer.") and "flow_head" not in k and "vis_conf_head" not in k}
    head_keys = {"classfier_head.norm.weight": (384,), "classfier_head.norm.bias": (384,),
                 "classfier_head.classifier.0.weight": (192, 384), "classfier_head.classifier.0.bias": (192,),
                 "classfier_head.classifier.3.weight": (1, 192), "classfier_head.classifier.3.bias": (1,)}
    assert keys == {**trunk, **head_keys}
    assert isinstance(build_lc_discriminator(LCConfig(), 25), LCDiscriminator)  # today's head stays the default
    with pytest.raises(ConfigError, match="build_lc_discriminator"):
        LCDiscriminator(TRACKFORMER, 1110)
    with pytest.raises(ConfigError, match="lc.kind"):
        build_lc_discriminator(LCConfig(kind="flow"), 25)  # type: ignore[arg-type]


def test_token_head_on_tracker_tokens_trains_and_ignores_point_order():
    tracker = _small_tracker("shift")
    clips = torch.from_numpy(np.stack([oracle.parity_clip(4, (32, 48)), oracle.parity_clip(4, (32, 48))[::-1].copy()]))
    tokens = tracker.track(clips.permute(0, 1, 4, 2, 3), oracle.parity_queries(12, (32, 48))).tokens
    torch.manual_seed(0)
    head = build_lc_discriminator(trackformer_config(dim=32, depth=1, heads=2, num_virtual_tracks=4), tracker.token_dim)
    head.eval()
    logits = head(tokens)
    assert logits.shape == (2,) and logits.abs().max() < 0.05  # classifier starts at std 0.001
    np.testing.assert_allclose(head(tokens[:, torch.randperm(12)]).detach(), logits.detach(), atol=1e-5)
    head.train()
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2)
    target = torch.tensor([1.0, 0.0])
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(tokens), target)
        opt.zero_grad()
        loss.backward()
        assert head.input_transform.weight.grad.abs().sum() > 0  # the whole trunk trains, not only the classifier
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]  # slow start by design (std-0.001 classifier)
    with pytest.raises(DataError, match=rf"\(B, N, T, {tracker.token_dim}\)"):
        head(tokens[..., :10])
