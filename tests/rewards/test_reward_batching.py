"""Batched rewards: a whole buffer scored in one call equals scoring clip by clip (issue 14 item 5)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from shiftvdm.data.synthetic import make_sprite_clips
from shiftvdm.data.video_io import to_tensor
from shiftvdm.errors import DataError
from shiftvdm.motion.features import (
    ic_features,
    mixture_confidence,
    remap_bilinear,
    rms_normalize_flow,
    track_features,
)
from shiftvdm.rewards import CriticConfig, ICConfig, LCConfig, MotionCritic
from shiftvdm.rewards.critic import MotionFeatures


def small_critic(**changes) -> MotionCritic:
    cfg = CriticConfig(num_queries=12, ic=ICConfig(dim=16, depth=1, heads=2, image_size=(16, 16)),
                       lc=LCConfig(dim=16, depth=1, heads=2), use_ema=False)
    return MotionCritic(dataclasses.replace(cfg, **changes)).eval()


@pytest.fixture(scope="module")
def groups() -> tuple[torch.Tensor, torch.Tensor]:
    """3 conditionings: real clips (3, 5, 3, 16, 16) and P = 2 fakes each (3, 2, 5, 3, 16, 16)."""
    clips = to_tensor(make_sprite_clips(9, 5, 16, seed=4, sprite_size=(3.0, 6.0)).videos)
    return clips[:3], clips[3:].reshape(3, 2, *clips.shape[1:])


def test_remap_matches_opencv_on_one_and_two_channels():
    import cv2

    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 17, (16, 16)).astype(np.float32)
    y = rng.uniform(-2, 17, (16, 16)).astype(np.float32)
    for channels, fixed in ((1, False), (2, True)):  # OpenCV rounds to 1/32 px on multi-channel images
        img = rng.random((16, 16, channels), dtype=np.float32)
        ref = cv2.remap(img.squeeze(-1) if channels == 1 else img, x, y, cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE).reshape(16, 16, channels)
        ours = remap_bilinear(torch.from_numpy(img).permute(2, 0, 1)[None], torch.from_numpy(x).reshape(1, -1),
                              torch.from_numpy(y).reshape(1, -1), fixed_point=fixed)
        np.testing.assert_allclose(ours[0].T.reshape(16, 16, channels).numpy(), ref, atol=1e-5)


@pytest.mark.parametrize("mode", ["physical", "reference"])
def test_batched_torch_features_equal_the_numpy_path(groups, mode):
    critic = small_critic(residual_mode=mode, include_flow=True)
    real = groups[0]
    queries = critic.sample_queries(16, 16, torch.Generator().manual_seed(1))
    feats = critic.features(real, queries)
    clips = critic.videos_to_uint8(real)
    flow, tracker = critic._get_extractors()
    ic = np.stack([ic_features(c, flow, None, mode, True) for c in clips])
    lc = np.stack([track_features(c, tracker(c, queries)) for c in clips])
    scale = np.abs(ic).max()
    np.testing.assert_allclose(feats.ic.numpy(), ic, atol=1e-5 * max(scale, 1.0))  # confidence: exp of median-scaled errors
    np.testing.assert_allclose(feats.lc.numpy(), lc, atol=1e-5)


def test_score_groups_equals_scoring_each_clip_alone(groups):
    critic = small_critic()
    real, fakes = groups
    queries = np.stack([critic.sample_queries(16, 16, torch.Generator().manual_seed(i)) for i in range(3)])
    batched = critic.score_groups(real, fakes, queries)
    for i in range(3):  # the old path: one conditioning at a time, its real clip and fakes in separate calls
        r_real = critic.reward(critic.features(real[i:i + 1], queries[i]))
        r_fake = critic.reward(critic.features(fakes[i], queries[i]))
        for key, out, idx in (("r_real", r_real.r, i), ("r_ic_real", r_real.r_ic, i), ("r_lc_real", r_real.r_lc, i)):
            torch.testing.assert_close(batched.rewards[key][idx], out[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(batched.rewards["r_fake"][i], r_fake.r, rtol=0, atol=1e-5)
        torch.testing.assert_close(batched.rewards["r_lc_fake"][i], r_fake.r_lc, rtol=0, atol=1e-5)
    assert batched.rewards["r_fake"].shape == (3, 2) and batched.rewards["r_real"].shape == (3,)
    assert len(batched.features_real) == 3 and len(batched.features_fake) == 6
    # fakes are conditioning-major: fake (i, p) is item i * P + p, scored with conditioning i's queries
    torch.testing.assert_close(batched.features_fake.lc[2 * 1 + 1], critic.features(fakes[1, 1:], queries[1]).lc[0],
                               rtol=0, atol=1e-6)


def test_score_batch_size_and_kept_features_do_not_change_rewards(groups):
    real, fakes = groups
    queries = np.stack([small_critic().sample_queries(16, 16, torch.Generator().manual_seed(i)) for i in range(3)])
    whole = small_critic().score_groups(real, fakes, queries)
    chunked = small_critic(score_batch_size=2).score_groups(real, fakes, queries, keep_features=False)
    for key in whole.rewards:
        torch.testing.assert_close(chunked.rewards[key], whole.rewards[key], rtol=0, atol=1e-6)
    assert chunked.features_real is None and chunked.features_fake is None
    with pytest.raises(DataError, match=r"queries must be \(3, Q, 2\)"):
        small_critic().score_groups(real, fakes, queries[0])


def test_half_precision_features_score_what_is_stored(groups):
    real, fakes = groups
    critic = small_critic(feature_dtype="float16")
    out = critic.score_groups(real, fakes, None)
    assert out.features_real.ic.dtype == torch.float16
    torch.testing.assert_close(critic.reward(out.features_fake).r, out.rewards["r_fake"].flatten(), rtol=0, atol=1e-6)


def test_mixture_confidence_by_hand():
    # one pair, 2 pixels: logits (0, 0) -> π = (½, ½); raw log b (1, 5) and (20, -3) -> clamped (1, 0), (10, -3)
    info = torch.tensor([[[[0.0, 0.0]], [[0.0, 0.0]], [[1.0, 20.0]], [[5.0, -3.0]]]])  # (1, 4, 1, 2)
    # small component: var_min 0 and max 0 force its log b to 0, so b = 1 for both pixels
    unc = torch.tensor([0.5 * math.e + 0.5, 0.5 * math.exp(10.0) + 0.5])
    median = unc.mean()  # numpy median of two values
    expected = torch.exp(-unc / median).clamp(1e-6, 1.0)
    torch.testing.assert_close(mixture_confidence(info)[0, 0], expected.float(), rtol=1e-6, atol=0)
    with pytest.raises(DataError, match="4, H, W"):
        mixture_confidence(torch.zeros(1, 3, 2, 2))


def test_rms_normalised_flow_by_hand():
    flow = torch.tensor([[[[3.0, 4.0], [0.0, 0.0]]]])  # |f|² = 25, 0 -> RMS = sqrt(12.5)
    out = rms_normalize_flow(flow)
    torch.testing.assert_close(out, flow / (math.sqrt(12.5) + 1e-6))
    assert math.isclose(float(out.pow(2).sum(-1).mean().sqrt()), 1.0, rel_tol=1e-5)


def test_opencv_worker_threads_do_not_change_features(groups):
    real, fakes = groups
    one, two = small_critic(), small_critic(workers=2)
    a, b = one.features(fakes.flatten(0, 1)), two.features(fakes.flatten(0, 1))
    assert torch.equal(a.ic, b.ic) and torch.equal(a.lc, b.lc)


def _gathered_correlation(blurred, points, scales=(1, 2), corr_radius=1, patch_radius=2):
    """The former appearance_correlation_torch: every shifted patch gathered and normalised on its own."""
    from shiftvdm.motion.features import _normalise_patches_torch

    batch, frames, num = points.shape[:3]
    r = torch.arange(-patch_radius, patch_radius + 1, dtype=torch.float32)
    py, px = torch.meshgrid(r, r, indexing="ij")
    patch = torch.stack([px.reshape(-1), py.reshape(-1)], dim=1)
    out = []
    for scale, image in zip(scales, blurred):
        height, width = image.shape[-2:]
        flat = image.reshape(batch * frames, 1, height, width)
        ref_taps = points[:, :1, :, None, :] + patch * scale  # (B, 1, N, P, 2)
        ref = remap_bilinear(image[:, 0:1].reshape(batch, 1, height, width), ref_taps[..., 0].reshape(batch, -1),
                             ref_taps[..., 1].reshape(batch, -1)).view(batch, num, -1)
        ref, ref_ok = _normalise_patches_torch(ref)
        maps = []
        for sy in range(-corr_radius, corr_radius + 1):
            for sx in range(-corr_radius, corr_radius + 1):
                taps = points[:, :, :, None, :] + (patch + torch.tensor([sx, sy], dtype=torch.float32)) * scale
                cur = remap_bilinear(flat, taps[..., 0].reshape(batch * frames, -1),
                                     taps[..., 1].reshape(batch * frames, -1)).view(batch, frames, num, -1)
                cur, cur_ok = _normalise_patches_torch(cur)
                corr = torch.einsum("bnp,btnp->bnt", ref, cur)
                ok = ref_ok[:, :, None] & cur_ok.transpose(1, 2)
                maps.append(torch.where(ok, corr.clamp(-1, 1), torch.zeros_like(corr)))
        out.append(torch.stack(maps, dim=-1))
    return torch.cat(out, dim=-1)


def test_windowed_correlation_equals_gathered_patches_on_flat_and_faint_texture():
    """The box-sum correlation (no (K, P) gather) equals normalising each shifted patch, incl. the flat test."""
    from shiftvdm.motion.features import appearance_correlation_torch

    gen = torch.Generator().manual_seed(0)
    img = torch.rand(3, 4, 24, 24, generator=gen)
    img[:, :, :10] = 0.5  # flat band: correlation 0 there
    img[:, :, 10:14, :8] = 0.5 + 1e-3 * torch.rand(3, 4, 4, 8, generator=gen)  # faint texture, just above flat
    img[:, :, 14:, 12:] = 0.9  # flat patches next to a strong edge (the cancellation case)
    points = torch.rand(3, 4, 40, 2, generator=gen) * 23
    points[:, :, :10] = torch.tensor([18.0, 20.0]) + torch.rand(3, 4, 10, 2, generator=gen)
    blurred = [img, img.flip(-1)]
    ours = appearance_correlation_torch(blurred, points)
    ref = _gathered_correlation(blurred, points)
    assert ours.shape == ref.shape == (3, 40, 4, 18)
    assert torch.equal(ours == 0, ref == 0)  # the same patches count as flat
    assert (ref == 0).any() and (ref != 0).any()
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


def _spread_heads(critic: MotionCritic) -> MotionCritic:
    """Re-draw both output heads at std 0.2: the default init (std 0.001) gives every clip a logit ~1e-7 for LC,
    so equal rewards would not show equal features."""
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer in (critic.ic.head, critic.lc.head[0], critic.lc.head[3]):
            layer.weight.copy_(0.2 * torch.randn(layer.weight.shape, generator=gen))
    return critic


def test_score_groups_equals_per_clip_numpy_features_with_pixel_queries(groups):
    """The whole buffer in one call equals the numpy features of each clip scored alone (pixel queries, as the
    demo's redesign samples them), features and rewards, so batching changes no reward."""
    critic = _spread_heads(small_critic(query_sampling="pixels", num_queries=48))
    real, fakes = groups
    queries = np.stack([critic.sample_queries(16, 16, torch.Generator().manual_seed(10 + i)) for i in range(3)])
    batched = critic.score_groups(real, fakes, queries)
    flow, tracker = critic._get_extractors()
    cfg = critic.config
    for i in range(3):
        for p in range(-1, 2):  # -1: the real clip, then its fakes
            video = real[i:i + 1] if p < 0 else fakes[i, p:p + 1]
            stored = batched.features_real.index([i]) if p < 0 else batched.features_fake.index([2 * i + p])
            alone = critic.features(video, queries[i])  # the same clip through the same code, on its own
            torch.testing.assert_close(stored.ic, alone.ic, rtol=0, atol=1e-6)
            torch.testing.assert_close(stored.lc, alone.lc, rtol=0, atol=1e-6)
            clip = critic.videos_to_uint8(video)[0]  # and the per-clip numpy features
            ic = ic_features(clip, flow, cfg.ic_size, cfg.residual_mode, cfg.include_flow, cfg.confidence_scale_px)
            lc = track_features(clip, tracker(clip, queries[i]), cfg.corr_scales, cfg.corr_radius, cfg.patch_radius)
            np.testing.assert_allclose(stored.ic[0, :, 0].numpy(), ic[:, 0], atol=1e-5)
            # confidence: the forward-backward remap rounds x + flow to 1/32 px, where float32 and cv2 can
            # land on either side of a step (seen: 1e-4 relative on one pixel of 2048)
            np.testing.assert_allclose(stored.ic[0, :, 1].numpy(), ic[:, 1], rtol=1e-3, atol=1e-5)
            np.testing.assert_allclose(stored.lc[0].numpy(), lc, atol=1e-5)
            alone = critic.reward(MotionFeatures(torch.from_numpy(ic)[None], torch.from_numpy(lc)[None]))
            for key in ("r", "r_ic", "r_lc"):
                got = batched.rewards[f"{key}_real"][i] if p < 0 else batched.rewards[f"{key}_fake"][i, p]
                torch.testing.assert_close(got, getattr(alone, key)[0], rtol=0, atol=1e-4)
    spread = batched.rewards["r_lc_fake"]
    assert float(spread.max() - spread.min()) > 1e-2  # the heads separate clips: the comparison has teeth
