"""SEA-RAFT: official key layout, golden parity with the official code, loading, both interfaces, SHIFT's maps.

The golden fixture (tests/fixtures/sea_raft/reduced.npz) was computed by the official
princeton-vl/SEA-RAFT model (tests/fixtures/oracle/make_sea_raft_fixture.py) on weights drawn by our
``seeded_state_dict``, which this test draws again; no weight file is committed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shiftvdm.errors import CheckpointError, ConfigError, DataError
from shiftvdm.motion import get_flow_estimator
from shiftvdm.motion.base import FlowEstimator
from shiftvdm.motion.sea_raft import (
    VARIANTS,
    SEARAFT,
    SEARAFTConfig,
    SEARAFTFlow,
    centred_padding,
    correlation_pyramid,
    count_parameters,
    flow_confidence,
    infer_config,
    load_sea_raft,
    lookup_correlation,
    mixture_uncertainty,
    rms_normalise_flow,
    save_hub_folder,
    seeded_state_dict,
)
from shiftvdm.motion.weights import identify_network

KEYS_DIR = Path(__file__).resolve().parents[3] / "shared" / "reference" / "official-keys"
FIXTURE = Path(__file__).parents[1] / "fixtures" / "sea_raft" / "reduced.npz"


@pytest.fixture(scope="module")
def golden() -> dict:
    data = np.load(FIXTURE)
    dim, initial_dim, b1, b2, b3, radius, num_blocks = (int(v) for v in data["config"])
    config = SEARAFTConfig(dim=dim, initial_dim=initial_dim, block_dims=(b1, b2, b3), pretrain=str(data["pretrain"]),
                           radius=radius, num_blocks=num_blocks, iters=int(data["iters"]))
    state = seeded_state_dict(config, int(data["seed"]))
    return {"config": config, "state": state, "clip": data["clip"], "stride": int(data["stride"]),
            "flow": torch.from_numpy(data["flow"]), "info": torch.from_numpy(data["info"]),
            "checksum": float(data["weights_checksum"])}


@pytest.fixture(scope="module")
def model(golden) -> SEARAFT:
    net = SEARAFT(golden["config"])
    net.load_state_dict(golden["state"])
    return net


@pytest.fixture(scope="module")
def checkpoint(golden, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sea_raft") / "reduced.pth"
    torch.save(golden["state"], path)
    return path


def frames_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float()


# ---------------------------------------------------------------------------------------------
# layout
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant, tsv, params", [("M", "searaft_M_keys.tsv", 19_663_876),
                                                  ("S", "searaft_S_keys.tsv", 8_883_460)])
def test_keys_and_shapes_equal_the_official_lists(variant, tsv, params):
    if not (KEYS_DIR / tsv).is_file():
        pytest.skip(f"official key list {KEYS_DIR / tsv} not available")
    official = [tuple(line.split("\t")) for line in (KEYS_DIR / tsv).read_text().splitlines()]
    net = SEARAFT(VARIANTS[variant])
    ours = [(k, str(tuple(v.shape)), str(v.dtype)) for k, v in net.state_dict().items()]
    assert ours == official  # same keys, shapes, dtypes and order
    assert count_parameters(net) == params
    assert infer_config(net.state_dict()) == VARIANTS[variant]
    assert identify_network(set(net.state_dict())) == "SEA-RAFT"


def test_l_is_m_with_twelve_iterations():
    assert VARIANTS["L"].architecture() == VARIANTS["M"].architecture()
    assert (VARIANTS["S"].iters, VARIANTS["M"].iters, VARIANTS["L"].iters) == (4, 4, 12)


def test_network_stays_in_eval_mode(model):
    model.train()
    assert not any(m.training for m in model.modules())


def test_bad_config_is_a_config_error():
    with pytest.raises(ConfigError, match="pretrain 'resnet50'"):
        SEARAFTConfig(pretrain="resnet50")


# ---------------------------------------------------------------------------------------------
# golden parity with the official implementation
# ---------------------------------------------------------------------------------------------

def test_seeded_weights_are_the_ones_the_fixture_was_made_with(golden):
    checksum = sum(float(v.double().abs().sum()) for v in golden["state"].values())
    assert checksum == pytest.approx(golden["checksum"], rel=1e-9), \
        "seeded_state_dict changed: regenerate the fixture with tests/fixtures/oracle/make_sea_raft_fixture.py"
    # aliased BatchNorm keys are drawn identically
    assert torch.equal(golden["state"]["cnet.layer2.0.bn3.weight"], golden["state"]["cnet.layer2.0.downsample.1.weight"])


def test_flow_and_info_equal_the_official_model(golden, model):
    clip, stride = golden["clip"], golden["stride"]
    with torch.no_grad():
        flow, info = model(frames_tensor(clip[:-1]), frames_tensor(clip[1:]), golden["config"].iters)
    assert flow.shape == (2, 2, 123, 133) and info.shape == (2, 4, 123, 133)
    assert golden["flow"].abs().max() > 5  # the fixture's flow is several pixels: lookups matter
    # measured max |ours - official|: flow 1.1e-5 px, info 5.1e-7
    torch.testing.assert_close(flow[..., ::stride, ::stride], golden["flow"], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(info[..., ::stride, ::stride], golden["info"], atol=1e-5, rtol=1e-5)


def test_numpy_path_equals_official_and_torch_path(golden, model):
    clip, stride = golden["clip"], golden["stride"]
    estimator = SEARAFTFlow(model=model, device="cpu", chunk_size=1)
    assert isinstance(estimator, FlowEstimator)
    flow_np = estimator(clip[:-1], clip[1:])
    assert flow_np.dtype == np.float32 and flow_np.shape == (2, 123, 133, 2)
    np.testing.assert_allclose(flow_np[:, ::stride, ::stride].transpose(0, 3, 1, 2), golden["flow"].numpy(),
                               atol=1e-4, rtol=1e-5)
    batched = SEARAFTFlow(model=model, device="cpu", chunk_size=8)
    flow_t, info_t = batched.flow_torch(frames_tensor(clip[:-1]), frames_tensor(clip[1:]))
    np.testing.assert_allclose(flow_t.permute(0, 2, 3, 1).numpy(), flow_np, atol=1e-5, rtol=1e-6)
    assert flow_t.dtype == torch.float32 and not flow_t.requires_grad and not info_t.requires_grad


# ---------------------------------------------------------------------------------------------
# the pieces the parity depends on
# ---------------------------------------------------------------------------------------------

def test_centred_padding_matches_input_padder_rule():
    assert centred_padding(123, 133) == (1, 2, 2, 3)  # extra pixel at right/bottom
    assert centred_padding(320, 576) == (0, 0, 0, 0)


def test_lookup_window_has_the_x_offset_as_slow_axis():
    # A correlation volume whose value is the x coordinate (level 0), so each window entry reads x.
    h, w, r = 4, 6, 1
    volume = torch.arange(w, dtype=torch.float32).expand(h * w, 1, h, w).contiguous()
    coords = torch.zeros(1, 2, h, w)
    coords[:, 0], coords[:, 1] = 2.5, 1.0  # (x, y) of every pixel's centre
    window = lookup_correlation([volume], coords, r)[0, :, 0, 0].view(2 * r + 1, 2 * r + 1)
    expected_x = torch.tensor([1.5, 2.5, 3.5])
    assert torch.allclose(window, expected_x[:, None].expand(3, 3))


def test_correlation_pyramid_halves_fmap2_and_stays_fp32():
    fmap1, fmap2 = torch.randn(1, 8, 16, 18), torch.randn(1, 8, 16, 18)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pyramid = correlation_pyramid(fmap1, fmap2)
    assert [tuple(p.shape[-2:]) for p in pyramid] == [(16, 18), (8, 9), (4, 4), (2, 2)]
    assert all(p.dtype == torch.float32 for p in pyramid)
    expected = (fmap1[0, :, 3, 5] * fmap2[0, :, 7, 2]).sum() / math.sqrt(8)
    assert torch.allclose(pyramid[0][3 * 18 + 5, 0, 7, 2], expected, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------

def test_release_pth_loads_plain_and_nested(golden, model, checkpoint, tmp_path):
    loaded = load_sea_raft(checkpoint)
    assert loaded.config == golden["config"]  # inferred from the key shapes
    nested = tmp_path / "nested.pth"
    torch.save({"model": golden["state"]}, nested)
    x = frames_tensor(golden["clip"][:2])
    with torch.no_grad():
        ref = model(x[:1], x[1:], 2)
        for net in (loaded, load_sea_raft(nested)):
            out = net(x[:1], x[1:], 2)
            assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])


def test_hub_folder_round_trip_restores_aliases(golden, model, tmp_path):
    folder = save_hub_folder(model, tmp_path / "hub")
    from safetensors.torch import load_file

    stored = load_file(str(folder / "model.safetensors"))
    dropped = sorted(set(golden["state"]) - set(stored))
    assert len(dropped) == 30 and all(".downsample.1." in k for k in dropped)  # 3 stages × 2 nets × 5
    config = json.loads((folder / "config.json").read_text())
    assert config["block_dims"] == [16, 24, 32] and config["pretrain"] == "resnet34"
    loaded = load_sea_raft(folder)
    assert loaded.config == golden["config"]  # read from config.json, iters included
    x = frames_tensor(golden["clip"][:2])
    with torch.no_grad():
        ref, out = model(x[:1], x[1:]), loaded(x[:1], x[1:])
    assert torch.equal(ref[0], out[0]) and torch.equal(ref[1], out[1])


def test_hub_folder_without_config_json_infers_the_variant(golden, model, tmp_path):
    # The official PyTorchModelHubMixin.save_pretrained (args as a Namespace) writes no config.json.
    folder = save_hub_folder(model, tmp_path / "hub")
    (folder / "config.json").unlink()
    assert load_sea_raft(folder).config == golden["config"]


def test_hub_folder_with_official_style_config_json(golden, model, tmp_path):
    # Fields as in config/eval/spring-*.json, among training ones, optionally nested under "args".
    folder = save_hub_folder(model, tmp_path / "hub")
    c = golden["config"]
    fields = {"name": "spring-tiny", "gpus": [0, 1], "lr": 4e-4, "use_var": True, "var_min": 0, "var_max": 10,
              "pretrain": c.pretrain, "initial_dim": c.initial_dim, "block_dims": list(c.block_dims),
              "radius": c.radius, "dim": c.dim, "num_blocks": c.num_blocks, "iters": 3}
    (folder / "config.json").write_text(json.dumps({"args": fields}))
    loaded = load_sea_raft(folder)
    assert loaded.config.architecture() == c.architecture() and loaded.config.iters == 3
    (folder / "config.json").write_text(json.dumps({**fields, "dim": "32"}))
    with pytest.raises(CheckpointError, match=r"config\.json: field 'dim' must be an integer, got '32'"):
        load_sea_raft(folder)


def test_cast_network_is_refused(golden):
    net = SEARAFT(golden["config"])
    estimator = SEARAFTFlow(model=net, device="cpu")
    net.to(torch.bfloat16)
    with pytest.raises(ConfigError, match="autocast_dtype"):
        estimator.flow_torch(torch.zeros(1, 3, 128, 128), torch.zeros(1, 3, 128, 128))


def test_renamed_key_is_refused_naming_both_keys(golden, tmp_path):
    state = dict(golden["state"])
    state["flow_head.2.weight_renamed"] = state.pop("flow_head.2.weight")
    path = tmp_path / "renamed.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_sea_raft(path)
    message = str(err.value)
    assert str(path) in message and "missing 1 keys (first: flow_head.2.weight)" in message
    assert "unexpected 1 keys (first: flow_head.2.weight_renamed)" in message
    assert "looks like" not in message and "key shapes are" not in message


def test_wrong_shape_is_refused_naming_the_key(golden, tmp_path):
    state = dict(golden["state"])
    state["update_block.encoder.convf1.weight"] = torch.zeros(32, 2, 5, 5)
    path = tmp_path / "shape.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"wrong shapes: update_block\.encoder\.convf1\.weight "
                                              r"\(32, 2, 5, 5\) \(expected \(32, 2, 7, 7\)\)"):
        load_sea_raft(path)


def test_explicit_variant_mismatch_names_file_and_keys(checkpoint):
    with pytest.raises(CheckpointError) as err:
        load_sea_raft(checkpoint, variant="S")
    message = str(err.value)
    assert message.startswith(f"{checkpoint}: not a SEA-RAFT-S checkpoint")
    assert "missing 11 keys (first: update_block.refine.1." in message  # S has 2 refine blocks, the file 1
    assert "unexpected 220 keys (first: cnet.layer1.0.bn3.bias" in message  # ResNet-34 blocks, layer1 shortcut
    assert "wrong shapes: cnet.bn1.bias (8,) (expected (64,))" in message
    assert "key shapes are SEA-RAFT-custom's" in message and "not variant 'S' as requested" in message
    assert "looks like a SEA-RAFT checkpoint" not in message


def test_raft_file_says_it_looks_like_raft(tmp_path):
    tsv = KEYS_DIR / "raft_small_keys.tsv"
    if not tsv.is_file():
        pytest.skip("official RAFT key list not available")
    state = {}
    for line in tsv.read_text().splitlines():
        key, shape = line.split("\t")[:2]
        key = key.removeprefix("module.")  # the release file is a DataParallel dump
        dims = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
        state[key] = torch.zeros(dims, dtype=torch.int64 if key.endswith("num_batches_tracked") else torch.float32)
    looks_like = identify_network(set(state))
    if looks_like is None or looks_like == "SEA-RAFT":
        pytest.skip("no RAFT key signature registered (motion/raft_flow.py)")
    path = tmp_path / "raft-small.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=f"looks like a {looks_like} checkpoint"):
        load_sea_raft(path)


def test_missing_checkpoint_and_options_are_user_errors(tmp_path):
    with pytest.raises(CheckpointError, match="nothing is downloaded"):
        load_sea_raft(tmp_path / "absent.pth")
    with pytest.raises(ConfigError, match="checkpoint path is required"):
        get_flow_estimator("sea-raft")
    with pytest.raises(ConfigError, match="unknown variant 'XL'"):
        SEARAFTFlow(checkpoint=tmp_path / "absent.pth", variant="XL")
    with pytest.raises(ConfigError, match="chunk_size must be >= 1"):
        SEARAFTFlow(model=SEARAFT(SEARAFTConfig(dim=8, initial_dim=8, block_dims=(8, 8, 8), radius=1,
                                                num_blocks=1)), chunk_size=0)


def test_registry_builds_the_estimator(checkpoint, golden):
    estimator = get_flow_estimator("sea-raft", checkpoint=str(checkpoint), iters=2, device="cpu", chunk_size=3)
    assert isinstance(estimator, SEARAFTFlow) and estimator.name == "sea-raft"
    assert (estimator.iters, estimator.chunk_size, estimator.config) == (2, 3, golden["config"])


# ---------------------------------------------------------------------------------------------
# input handling
# ---------------------------------------------------------------------------------------------

def test_small_frames_are_upsampled_and_flow_rescaled(model, golden):
    small = golden["clip"][:, :40, :56]
    with pytest.raises(DataError, match="pad to less than 128"):
        model(frames_tensor(small[:1]), frames_tensor(small[1:2]))
    estimator = SEARAFTFlow(model=model, device="cpu", iters=2)
    flow = estimator(small[:1], small[1:2])
    assert flow.shape == (1, 40, 56, 2) and np.isfinite(flow).all()
    a, b = (F.interpolate(frames_tensor(f), size=(128, 179), mode="bilinear", align_corners=False)
            for f in (small[:1], small[1:2]))
    with torch.no_grad():
        up, _ = model(a, b, 2)
    expected = F.interpolate(up, size=(40, 56), mode="bilinear", align_corners=False)
    expected = expected * torch.tensor([56 / 179, 40 / 128]).view(1, 2, 1, 1)
    np.testing.assert_allclose(flow, expected.permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_gray_frames_and_iters_zero(model, golden):
    clip = golden["clip"]
    gray = clip[..., 1]
    flow = SEARAFTFlow(model=model, device="cpu", iters=0)(gray[:1], gray[1:2])
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    flow_rgb = SEARAFTFlow(model=model, device="cpu", iters=0)(rgb[:1], rgb[1:2])
    assert flow.shape == (1, 123, 133, 2) and np.array_equal(flow, flow_rgb)


def test_bf16_autocast_stays_close(model, golden):
    clip = golden["clip"]
    a, b = frames_tensor(clip[:1]), frames_tensor(clip[1:2])
    ref, _ = SEARAFTFlow(model=model, device="cpu", iters=2).flow_torch(a, b)
    low, info = SEARAFTFlow(model=model, device="cpu", iters=2, autocast_dtype="bfloat16").flow_torch(a, b)
    assert low.dtype == torch.float32 and info.dtype == torch.float32
    assert (low - ref).abs().mean() < 0.05 * ref.abs().mean()


# ---------------------------------------------------------------------------------------------
# SHIFT's confidence and RMS normalisation, by hand
# ---------------------------------------------------------------------------------------------

def test_confidence_against_hand_computation():
    # one sample, 4 pixels: (logit0, logit1, raw log b0, raw log b1)
    pixels = [(0.0, 0.0, 2.0, -3.0),    # π = ½, b0 = e², b1 = 1 (log b1 clamped to [0, 0])
              (1.0, 0.0, -1.0, 5.0),    # log b0 clamped up to 0: b0 = 1; b1 = 1
              (0.0, 2.0, 12.0, 0.5),    # log b0 clamped down to 10
              (-1.0, 1.0, 1.0, 0.0)]
    info = torch.tensor(pixels).T.reshape(1, 4, 1, 4)

    def hand(l0, l1, r0, r1):
        p0 = math.exp(l0) / (math.exp(l0) + math.exp(l1))
        return p0 * math.exp(min(max(r0, 0.0), 10.0)) + (1 - p0) * math.exp(min(max(r1, 0.0), 0.0))

    unc = [hand(*p) for p in pixels]
    assert torch.allclose(mixture_uncertainty(info)[0, 0], torch.tensor(unc), rtol=1e-6)
    median = sorted(unc)[1]  # torch.median: lower of the two middle values
    expected = [min(max(math.exp(-u / median), 1e-6), 1.0) for u in unc]
    conf = flow_confidence(info)
    assert conf.shape == (1, 1, 4)
    assert torch.allclose(conf[0, 0], torch.tensor(expected), rtol=1e-6)
    assert conf[0, 0, 2] == pytest.approx(1e-6)  # e^10 / median: clamped at the floor


def test_confidence_median_is_per_sample():
    info = torch.zeros(2, 4, 1, 3)
    info[0, 2] = torch.tensor([1.0, 2.0, 3.0])
    info[1, 2] = torch.tensor([4.0, 5.0, 6.0])
    conf = flow_confidence(info)
    assert torch.allclose(conf[:, 0, 1], torch.full((2,), math.exp(-1.0)))  # each sample's median → 1/e


def test_rms_normalisation_against_hand_computation():
    flow = torch.tensor([[[[3.0, 0.0]], [[4.0, 0.0]]], [[[1.0, -1.0]], [[1.0, 1.0]]]])  # (2, 2, 1, 2)
    out = rms_normalise_flow(flow)
    rms0 = math.sqrt((25 + 0) / 2)
    rms1 = math.sqrt((2 + 2) / 2)
    assert torch.allclose(out[0], flow[0] / (rms0 + 1e-6)) and torch.allclose(out[1], flow[1] / (rms1 + 1e-6))
    assert torch.equal(rms_normalise_flow(torch.zeros(1, 2, 3, 3)), torch.zeros(1, 2, 3, 3))
    with pytest.raises(DataError, match=r"\(N, 2, H, W\)"):
        rms_normalise_flow(torch.zeros(1, 3, 2, 2))
