"""Motion estimators and features: accuracy on known motion, determinism, and bad-input behaviour."""

from __future__ import annotations


import cv2
import numpy as np
import pytest

from shiftvdm.data.synthetic import make_sprite_clips
from shiftvdm.errors import ConfigError, DataError
from shiftvdm.motion import (
    FLOW_ESTIMATORS,
    TRACKERS,
    Tracks,
    flow_with_confidence,
    get_flow_estimator,
    get_tracker,
    grid_queries,
    random_queries,
    video_flow,
)
from shiftvdm.motion.base import upsample_factor
from shiftvdm.motion.features import (
    appearance_correlation,
    brightness_constancy_residual,
    gray_float,
    ic_features,
    track_feature_dim,
    track_features,
)
from conftest import real_videos_dir



@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    """A 96×128 RGB crop of a real video frame, or a smooth random texture when the videos are absent."""
    path = real_videos_dir() / "tree.avi"
    if path.is_file():
        cap = cv2.VideoCapture(str(path))
        ok, frame = cap.read()
        cap.release()
        if ok:
            return np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)[60:156, 80:208])
    rng = np.random.default_rng(0)
    noise = rng.uniform(0, 255, size=(96, 128, 3)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 2.0) * 3 - 255, 0, 255).astype(np.uint8)


def _translate(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Content moved by (+dx, +dy) px (bicubic, reflected border)."""
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, matrix, (image.shape[1], image.shape[0]), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT)


def _interior_median(flow: np.ndarray) -> np.ndarray:
    h, w = flow.shape[:2]
    return np.median(flow[h // 4:h - h // 4, w // 4:w - w // 4].reshape(-1, 2), axis=0)


# ----- flow ------------------------------------------------------------------------------------

def test_dis_recovers_subpixel_translation_of_real_texture(texture):
    dx, dy = 0.37, -0.62
    flow = get_flow_estimator("dis")(texture[None], _translate(texture, dx, dy)[None])
    assert flow.shape == (1, 96, 128, 2) and flow.dtype == np.float32
    np.testing.assert_allclose(_interior_median(flow[0]), [dx, dy], atol=0.1)


@pytest.mark.parametrize("size,shift", [(32, (2.6, 1.4)), (16, (1.5, -1.0)), (8, (0.5, 0.3))])
def test_dis_on_tiny_frames_reports_original_pixels(texture, size, shift):
    # 8×8 is below what DIS accepts natively: it only works through the internal upsampling.
    small = cv2.resize(texture, (size, size), interpolation=cv2.INTER_AREA)
    flow = get_flow_estimator("dis")(small[None], _translate(small, *shift)[None])
    assert flow.shape == (1, size, size, 2)
    # 0.1 px from 16 px up; an 8×8 frame holds too little texture for that, but the units must still be right
    np.testing.assert_allclose(_interior_median(flow[0]), shift, atol=0.1 if size >= 16 else 0.2)


def test_upsampling_rule():
    assert upsample_factor(16, 16, 64) == 4
    assert upsample_factor(32, 48, 64) == 2
    assert upsample_factor(24, 40, 64) == 3
    assert upsample_factor(64, 64, 64) == 1
    assert upsample_factor(320, 576, 64) == 1
    assert upsample_factor(8, 8, 0) == 1


def test_farneback_recovers_translation(texture):
    flow = get_flow_estimator("farneback")(texture[None], _translate(texture, 1.3, 0.6)[None])
    np.testing.assert_allclose(_interior_median(flow[0]), [1.3, 0.6], atol=0.1)


def test_flow_confidence_is_median_scaled_and_flags_inconsistency(texture):
    frames_b = _translate(texture, 1.0, 0.5)
    frames_b[30:60, 40:80] = 255 - frames_b[30:60, 40:80]  # an unexplainable patch
    flow, conf = flow_with_confidence(texture[None], frames_b[None], get_flow_estimator("dis"))
    assert conf.shape == (1, 96, 128) and conf.dtype == np.float32
    assert conf.min() > 0 and conf.max() <= 1
    assert np.median(conf) == pytest.approx(np.exp(-1), abs=0.01)  # exp(-e / median(e))
    assert conf[0, 35:55, 45:75].mean() < conf[0, 70:90, 10:30].mean()


def test_video_flow_shapes_and_constant_frames():
    video = np.full((5, 20, 24, 3), 90, np.uint8)
    flow = video_flow(video, get_flow_estimator("dis"))
    assert flow.shape == (4, 20, 24, 2)
    assert np.all(np.isfinite(flow)) and np.abs(flow).max() < 1e-3
    _, conf = flow_with_confidence(video[:-1], video[1:], get_flow_estimator("dis"))
    assert np.all(conf == 1.0)  # zero error everywhere: fully consistent, never NaN


def test_flow_bad_inputs():
    est = get_flow_estimator("dis")
    with pytest.raises(DataError, match="at least 2"):
        video_flow(np.zeros((1, 16, 16, 3), np.uint8), est)
    with pytest.raises(DataError, match="differ in shape"):
        est(np.zeros((1, 16, 16, 3), np.uint8), np.zeros((1, 16, 20, 3), np.uint8))
    with pytest.raises(DataError, match="uint8"):
        est(np.zeros((1, 16, 16, 3), np.float32), np.zeros((1, 16, 16, 3), np.float32))
    with pytest.raises(ConfigError, match="unknown flow estimator"):
        get_flow_estimator("tvl1")
    with pytest.raises(ConfigError, match="bad options"):
        get_flow_estimator("dis", colour=True)
    with pytest.raises(ConfigError, match="preset"):
        get_flow_estimator("dis", preset="slow")
    assert set(FLOW_ESTIMATORS) == {"dis", "farneback", "raft", "sea-raft"} and set(TRACKERS) == {"lk", "cotracker3"}


# ----- tracks ----------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [32, 64])
def test_lk_follows_sprite_trajectories(size):
    clips = make_sprite_clips(12, 8, size, seed=3, num_sprites=1, sprite_size=(8.0, 12.0), speed=(1.0, 2.5))
    tracker = get_tracker("lk")
    errors, visible_fraction = [], []
    for video, traj in zip(clips.videos, clips.trajectories):
        gt = traj[0]  # (T, 2) the single sprite's centre
        tracks = tracker(video, gt[:1])
        assert tracks.points.shape == (8, 1, 2) and tracks.visible.shape == (8, 1)
        vis = tracks.visible[:, 0]
        errors.append(np.linalg.norm(tracks.points[vis, 0] - gt[vis], axis=1))
        visible_fraction.append(vis.mean())
    assert np.median(np.concatenate(errors)) < 0.5
    assert np.mean(visible_fraction) > 0.8


def test_lk_tracks_are_deterministic_and_in_range():
    clips = make_sprite_clips(1, 6, 24, seed=5)
    queries = random_queries(40, 24, 24, np.random.default_rng(1), margin=1)
    a = get_tracker("lk")(clips.videos[0], queries)
    b = get_tracker("lk")(clips.videos[0], queries)
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.visible, b.visible)
    assert a.points.min() >= 0 and a.points.max() <= 23
    assert np.all((a.confidence >= 0) & (a.confidence <= 1))
    np.testing.assert_allclose(a.points[0], queries)
    assert not np.any(a.visible[1:] & ~a.visible[:-1])  # a lost point stays lost



def test_lk_round_trip_on_forward_successes_only_matches_all_points():
    """The backward pass runs only where the forward pass succeeded; per step, the visibility and
    confidence must equal those of a round trip of every point (flat backgrounds fail forward often)."""
    clips = make_sprite_clips(3, 6, 16, seed=2, num_sprites=1, sprite_size=5.0, background="flat")
    tracker = get_tracker("lk")
    queries = random_queries(64, 16, 16, np.random.default_rng(0), margin=1)
    failed_forward = 0
    for video in clips.videos:
        tracks = tracker(video, queries)
        gray = np.stack([cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (64, 64), interpolation=cv2.INTER_CUBIC)
                         for f in video])
        for t in range(len(video) - 1):
            current = (tracks.points[t] * 4 + 1.5).astype(np.float32)
            forward, ok_fw = tracker._lk(gray[t], gray[t + 1], current)
            backward, ok_bw = tracker._lk(gray[t + 1], gray[t], forward)
            fb_error = np.linalg.norm(backward - current, axis=1) / 4
            ok = ok_fw & ok_bw
            failed_forward += int((~ok_fw).sum())
            expected_conf = np.where(ok, np.exp(-np.where(ok, fb_error, 0.0) / tracker.confidence_scale_px), 0.0)
            np.testing.assert_array_equal(tracks.confidence[t + 1], expected_conf.astype(np.float32))
            inside = np.all((forward - 1.5) / 4 >= 0, axis=1) & np.all((forward - 1.5) / 4 <= 15, axis=1)
            expected_alive = tracks.visible[t] & ok & (inside | ~ok_fw) & (fb_error <= tracker.fb_threshold_px)
            np.testing.assert_array_equal(tracks.visible[t + 1], expected_alive)
    assert failed_forward > 0  # the skipped backward passes were exercised

def test_tracker_bad_inputs():
    video = np.zeros((4, 16, 16, 3), np.uint8)
    tracker = get_tracker("lk")
    with pytest.raises(DataError, match="outside"):
        tracker(video, np.array([[20.0, 3.0]]))
    with pytest.raises(DataError, match="NaN"):
        tracker(video, np.array([[np.nan, 3.0]]))
    with pytest.raises(DataError, match=r"\(N, 2\)"):
        tracker(video, np.zeros((3, 3)))
    with pytest.raises(DataError):
        Tracks(points=np.zeros((4, 2, 2)), visible=np.zeros((4, 3), bool), confidence=np.zeros((4, 2)))


def test_query_helpers():
    a = random_queries(100, 20, 30, np.random.default_rng(7), margin=2)
    b = random_queries(100, 20, 30, np.random.default_rng(7), margin=2)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (100, 2) and a.dtype == np.float32
    assert a[:, 0].min() >= 2 and a[:, 0].max() <= 27 and a[:, 1].min() >= 2 and a[:, 1].max() <= 17
    grid = grid_queries(4, 20, 30, margin=1.0)
    assert grid.shape == (16, 2)
    assert grid[:, 0].min() == 1.0 and grid[:, 0].max() == 28.0 and grid[:, 1].max() == 18.0
    with pytest.raises(ConfigError):
        random_queries(5, 4, 4, np.random.default_rng(0), margin=3)


# ----- features --------------------------------------------------------------------------------

def test_physical_residual_is_zero_for_exact_motion_and_reference_is_not():
    # A linear ramp I = a·x moved by u: I_t = −a·u and I_x = a, so I_x·u + I_t = 0 exactly.
    a, u = 0.01, 0.5
    xs = np.arange(40, dtype=np.float32)
    gray_a = np.tile(a * xs, (1, 20, 1))
    gray_b = np.tile(a * (xs - u), (1, 20, 1))
    flow = np.zeros((1, 20, 40, 2), np.float32)
    flow[..., 0] = u
    physical = brightness_constancy_residual(gray_a, gray_b, flow, "physical")
    np.testing.assert_allclose(physical, 0.0, atol=1e-6)
    # Reference: 0-255 grey, un-halved I_x = 2a·255, unit-RMS flow = 1 -> 255·a·(2 − u) inside.
    reference = brightness_constancy_residual(gray_a, gray_b, flow, "reference")
    np.testing.assert_allclose(reference[0, 1:-1, 1:-1], 255 * a * (2 - u), rtol=1e-4)
    assert np.all(reference[0, 0] == 0) and np.all(reference[0, :, -1] == 0)
    with pytest.raises(ConfigError):
        brightness_constancy_residual(gray_a, gray_b, flow, "halved")


def test_ic_features_shapes_constant_frames_and_short_clips():
    est = get_flow_estimator("dis")
    clip = make_sprite_clips(1, 5, 24, seed=2).videos[0]
    maps = ic_features(clip, est)
    assert maps.shape == (4, 2, 24, 24) and maps.dtype == np.float32
    assert ic_features(clip, est, size=(16, 20), include_flow=True).shape == (4, 4, 16, 20)
    constant = np.full((4, 16, 16, 3), 128, np.uint8)
    maps = ic_features(constant, est)
    assert np.all(maps[:, 0] == 0) and np.all(maps[:, 1] == 1)
    with pytest.raises(DataError, match="at least 2"):
        ic_features(clip[:1], est)


def test_ic_features_fill_non_finite_flow():
    class HalfNaNFlow:
        name = "half-nan"

        def __call__(self, frames_a, frames_b):
            flow = np.zeros(frames_a.shape[:3] + (2,), np.float32)
            flow[:, :4] = np.nan
            return flow

    maps = ic_features(np.zeros((3, 12, 12, 3), np.uint8), HalfNaNFlow())
    assert np.all(np.isfinite(maps))
    assert np.all(maps[:, 1, :4] == 0) and np.all(maps[:, 1, 4:] == 1)


def test_track_features_same_queries_same_features():
    clip = make_sprite_clips(1, 6, 32, seed=8).videos[0]
    queries = random_queries(32, 32, 32, np.random.default_rng(0), margin=1)
    tracker = get_tracker("lk")
    first = track_features(clip, tracker(clip, queries))
    second = track_features(clip, tracker(clip, queries.copy()))
    np.testing.assert_array_equal(first, second)
    assert first.shape == (32, 6, track_feature_dim()) and track_feature_dim() == 25
    other = track_features(clip, tracker(clip, random_queries(32, 32, 32, np.random.default_rng(1), margin=1)))
    assert not np.array_equal(first, other)
    # layout: velocity 0 and displacement 0 at frame 0; visibility 1 at frame 0
    assert np.all(first[:, 0, 0:5] == 0) and np.all(first[:, 0, 5] == 1)


def test_track_features_velocity_units_and_correlation():
    clips = make_sprite_clips(1, 5, 64, seed=4, num_sprites=1, speed=2.0, sprite_size=10.0)
    video, gt = clips.videos[0], clips.trajectories[0, 0]  # (T, 2)
    tracks = Tracks(points=gt[:, None, :].copy(), visible=np.ones((5, 1), bool), confidence=np.ones((5, 1), np.float32))
    feats = track_features(video, tracks)
    unit = 64 / 32
    np.testing.assert_allclose(feats[0, 1:, 2], np.linalg.norm(np.diff(gt, axis=0), axis=1) / unit, rtol=1e-5)
    # A point on the sprite's edge, carried along with it, keeps correlating with its frame-0 patch
    # (centre of the 3x3 map, scale 1); held still while the sprite moves away, it decorrelates.
    edge = gt + np.array([clips.radii[0, 0], 0.0], np.float32)
    moving = Tracks(points=edge[:, None, :], visible=np.ones((5, 1), bool), confidence=np.ones((5, 1), np.float32))
    still = Tracks(points=np.repeat(edge[:1, None, :], 5, axis=0), visible=np.ones((5, 1), bool),
                   confidence=np.ones((5, 1), np.float32))
    corr_moving = track_features(video, moving)[0, :, 7 + 4]
    corr_still = track_features(video, still)[0, :, 7 + 4]
    assert corr_moving.min() > 0.9
    assert corr_still[-1] < corr_moving[-1] - 0.3


def test_track_features_non_finite_tracks_and_flat_patches():
    video = np.full((4, 16, 16, 3), 60, np.uint8)
    points = np.full((4, 2, 2), 8.0, np.float32)
    points[2, 1] = np.nan
    tracks = Tracks(points=points, visible=np.ones((4, 2), bool), confidence=np.full((4, 2), np.nan, np.float32))
    feats = track_features(video, tracks)
    assert np.all(np.isfinite(feats))
    assert feats[1, 2, 5] == 0 and feats[0, 2, 5] == 1  # the NaN point is marked invisible
    assert np.all(feats[..., 6] == 0)  # NaN confidence -> 0
    assert np.all(feats[..., 7:] == 0)  # flat patches correlate 0 (documented)
    with pytest.raises(DataError, match="frames"):
        track_features(video[:3], tracks)


def test_appearance_correlation_range():
    gray = gray_float(make_sprite_clips(1, 3, 32, seed=1).videos[0])
    pts = np.repeat(np.array([[[10.0, 12.0], [20.0, 5.0]]], np.float32), 3, axis=0)
    corr = appearance_correlation(gray, pts, scales=(1, 2, 4), corr_radius=2)
    assert corr.shape == (2, 3, 3 * 25)
    assert np.all(corr <= 1) and np.all(corr >= -1)


# ----- neural options: local checkpoints only ----------------------------------------------------

def test_raft_loads_local_checkpoint_and_reports_bad_ones(tmp_path):
    import torch
    from safetensors.torch import save_file

    from shiftvdm.errors import CheckpointError
    from shiftvdm.motion.raft_flow import RAFTSmall

    torch.manual_seed(0)
    state = RAFTSmall().state_dict()
    assert state["update_block.encoder.convc1.weight"].shape == (96, 196, 1, 1)
    assert RAFTSmall.expected_keys()["fnet.conv1.weight"] == (32, 3, 7, 7)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "raft.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "raft.pth")
    frames = make_sprite_clips(1, 3, 20, seed=0).videos[0]
    flows = [get_flow_estimator("raft", checkpoint=str(tmp_path / name), iters=1, device="cpu")(frames[:-1], frames[1:])
             for name in ("raft.safetensors", "raft.pth")]
    assert flows[0].shape == (2, 20, 20, 2) and flows[0].dtype == np.float32 and np.all(np.isfinite(flows[0]))
    np.testing.assert_allclose(flows[0], flows[1])  # both formats hold the same weights
    with pytest.raises(ConfigError, match="checkpoint"):
        get_flow_estimator("raft")
    with pytest.raises(CheckpointError, match="not found"):
        get_flow_estimator("raft", checkpoint=str(tmp_path / "missing.pth"))
    broken = dict(state)
    broken.pop("fnet.conv2.bias")
    broken["fnet.conv2.weight"] = torch.zeros(64, 96, 1, 1)
    save_file({k: v.contiguous() for k, v in broken.items()}, str(tmp_path / "broken.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing 1 keys.*fnet.conv2.bias.*wrong shapes: fnet.conv2.weight"):
        get_flow_estimator("raft", checkpoint=str(tmp_path / "broken.safetensors"))
