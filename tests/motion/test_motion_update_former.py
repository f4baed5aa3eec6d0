"""motion/update_former.py: CoTracker3's update transformer, shared by the tracker and the LC discriminator.

What a user relies on: the released checkpoints' parameter names load, attention is softmax(q·kᵀ/√d)·v with the
documented layout, point mixing goes through virtual tracks only (permutation-equivariant over points), time
attention mixes frames of one track only, and bad depths/widths are refused.
"""

from __future__ import annotations

import math

import pytest
import torch

from shiftvdm.errors import ConfigError
from shiftvdm.motion.update_former import Attention, AttnBlock, CrossAttnBlock, VirtualTrackTransformer


def small(**kw) -> VirtualTrackTransformer:
    torch.manual_seed(0)
    return VirtualTrackTransformer(**{"in_dim": 6, "hidden": 16, "heads": 2, "time_depth": 2, "space_depth": 1,
                                      "num_virtual_tracks": 3, **kw}).eval()


def test_parameter_names_and_shapes_match_the_released_checkpoints():
    state = small().state_dict()
    assert state["virual_tracks"].shape == (1, 3, 1, 16)  # (sic): the released name
    assert state["input_transform.weight"].shape == (16, 6)
    assert state["time_blocks.1.attn.to_kv.weight"].shape == (32, 16)  # keys and values in one Linear
    assert state["time_blocks.0.mlp.fc1.weight"].shape == (64, 16)  # mlp_ratio 4
    assert "space_virtual2point_blocks.0.norm_context.weight" in state  # the affine context norm
    assert not any(k.startswith("time_blocks.0.norm1.") for k in state)  # the other LayerNorms have no parameters
    assert {k.split(".")[0] for k in state} == {"virual_tracks", "input_transform", "time_blocks",
                                                "space_virtual_blocks", "space_point2virtual_blocks",
                                                "space_virtual2point_blocks"}


def test_attention_is_scaled_dot_product_with_keys_first():
    torch.manual_seed(1)
    attn = Attention(8, heads=2)
    x, ctx = torch.randn(1, 3, 8), torch.randn(1, 5, 8)
    q = attn.to_q(x).view(1, 3, 2, 4).transpose(1, 2)
    k, v = (t.view(1, 5, 2, 4).transpose(1, 2) for t in attn.to_kv(ctx).chunk(2, dim=-1))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(4), dim=-1)
    expected = attn.to_out((weights @ v).transpose(1, 2).reshape(1, 3, 8))
    assert torch.allclose(attn(x, ctx), expected, atol=1e-6)
    assert torch.equal(attn(x), attn(x, x))  # self-attention when no context is given


def test_blocks_are_residual_and_keep_the_shape():
    torch.manual_seed(2)
    block, cross = AttnBlock(8, 2), CrossAttnBlock(8, 2)
    x, ctx = torch.randn(2, 4, 8), torch.randn(2, 6, 8)
    with torch.no_grad():
        for module in (block.attn.to_out, block.mlp.fc2, cross.cross_attn.to_out, cross.mlp.fc2):
            module.weight.zero_()
            module.bias.zero_()
    assert torch.equal(block(x), x)  # zero branches: the identity
    assert torch.equal(cross(x, ctx), x)


def test_trunk_shape_and_point_permutation_equivariance():
    net = small()
    tokens = torch.randn(2, 5, 4, 6)  # (B, N points, T frames, in_dim)
    with torch.no_grad():
        out = net.trunk(tokens)
        perm = torch.tensor([3, 0, 4, 1, 2])
        permuted = net.trunk(tokens[:, perm])
    assert out.shape == (2, 5, 4, 16)  # virtual tracks dropped
    assert torch.allclose(permuted, out[:, perm], rtol=1e-5, atol=1e-5)


def test_points_interact_only_through_space_layers():
    tokens = torch.randn(1, 4, 3, 6)
    changed = tokens.clone()
    changed[:, 0] += 1.0  # another input for point 0 only
    with torch.no_grad():
        net = small()
        assert not torch.allclose(net.trunk(changed)[:, 1], net.trunk(tokens)[:, 1])  # mixed through virtual tracks
        block = net.space_point2virtual_blocks[0]  # the only way information reaches a point from others
        for module in (block.cross_attn.to_out, block.mlp.fc2):
            module.weight.zero_()
            module.bias.zero_()
        assert torch.equal(net.trunk(changed)[:, 1:], net.trunk(tokens)[:, 1:])  # own frames only


def test_bad_configurations_are_refused():
    with pytest.raises(ConfigError, match="multiple of"):
        VirtualTrackTransformer(6, hidden=16, heads=2, time_depth=3, space_depth=2)
    with pytest.raises(ConfigError, match="multiple of"):
        VirtualTrackTransformer(6, hidden=16, heads=2, time_depth=2, space_depth=0)
    with pytest.raises(ConfigError, match="num_virtual_tracks"):
        VirtualTrackTransformer(6, hidden=16, heads=2, time_depth=2, space_depth=1, num_virtual_tracks=0)
    with pytest.raises(ConfigError, match="divisible by heads"):
        VirtualTrackTransformer(6, hidden=15, heads=2, time_depth=2, space_depth=1)
