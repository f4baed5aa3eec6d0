"""Evaluation metrics on clips of known motion written by the tests (see issue 4, "What must be shown")."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from shiftvdm.errors import DataError
from shiftvdm.eval import (
    GaussianFit,
    evaluate_videos,
    fit_gaussian,
    frechet_distance,
    motion_score,
    motion_smoothness,
    prepare_reference,
    psnr,
    sprite_motion_metrics,
    ssim,
    temporal_flicker,
    video_dynamic_degree,
)
from shiftvdm.eval.appearance import image_statistics_frechet, video_image_statistics
from shiftvdm.eval.dynamic_degree import dynamic_threshold, judge_dynamic, required_pairs, sampling_interval
from shiftvdm.eval.frechet_motion import (
    cube_histograms,
    frechet_motion_from_chunks,
    track_chunks,
    velocity_acceleration,
    window_starts,
)
from shiftvdm.motion import get_flow_estimator, get_tracker
from conftest import real_videos_dir

REAL_VIDEOS = real_videos_dir()


# ---------------------------------------------------------------------------------------------
# clips with known motion
# ---------------------------------------------------------------------------------------------

def texture(size: int, seed: int) -> np.ndarray:
    """A natural-looking (1/f-like) colour texture: octaves of bicubic-upsampled noise, uint8 (size, size, 3)."""
    rng = np.random.default_rng(seed)
    image = np.zeros((size, size, 3))
    cells = 4
    while cells <= size // 2:
        noise = rng.standard_normal((cells, cells, 3))
        image += cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC) / np.sqrt(cells)
        cells *= 2
    image = (image - image.min()) / (image.max() - image.min())
    return (image * 255).astype(np.uint8)


def translating_clip(speed: float, *, frames: int = 16, size: int = 64, direction=(1.0, 0.0),
                     seed: int = 0) -> np.ndarray:
    """The texture moving by ``speed`` px/frame along ``direction`` (sub-pixel shifts by bilinear warp)."""
    margin = int(np.ceil(abs(speed) * frames)) + 8
    big = texture(size + 2 * margin, seed)
    out = []
    for t in range(frames):
        # output(x) = big(x + margin - speed·t·d): the content moves by +speed·d per frame
        shift = np.float32([[1, 0, margin - speed * t * direction[0]], [0, 1, margin - speed * t * direction[1]]])
        out.append(cv2.warpAffine(big, shift, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP))
    return np.stack(out)


def static_clip(frames: int = 16, size: int = 64, seed: int = 0) -> np.ndarray:
    return np.repeat(texture(size, seed)[None], frames, axis=0)


class ConstantFlow:
    """An oracle estimator: every pixel moves by ``magnitude`` px along x."""

    name = "constant"

    def __init__(self, magnitude: float) -> None:
        self.magnitude = magnitude

    def __call__(self, frames_a: np.ndarray, frames_b: np.ndarray) -> np.ndarray:
        flow = np.zeros(frames_a.shape[:3] + (2,), dtype=np.float32)
        flow[..., 0] = self.magnitude
        return flow


@pytest.fixture(scope="module")
def dis():
    return get_flow_estimator("dis")


@pytest.fixture(scope="module")
def lk():
    return get_tracker("lk")


# ---------------------------------------------------------------------------------------------
# motion score and dynamic degree
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("speed", [1.0, 2.0, 3.5])
def test_motion_score_recovers_translation_speed(dis, speed):
    scores = motion_score(translating_clip(speed, direction=(0.6, 0.8)), dis)
    assert scores["motion_score"] == pytest.approx(speed, rel=0.05)
    # 64-px frames: the 256-px reference resolution multiplies by 4
    assert scores["motion_score_256"] == pytest.approx(4 * scores["motion_score"])


def test_vbench_rule_constants():
    assert dynamic_threshold(64, 64) == pytest.approx(1.5)
    assert dynamic_threshold(320, 576) == pytest.approx(7.5)
    assert dynamic_threshold(256, 256) == pytest.approx(6.0)  # VBench HEAD: no max(1, 8/fps) factor
    assert [sampling_interval(f) for f in (8, 10, 15, 24, 30, 60)] == [1, 1, 2, 3, 4, 8]
    assert [required_pairs(n) for n in (16, 8, 10, 3, 2)] == [4, 2, 2, 1, 0]  # round half to even, as VBench
    assert judge_dynamic([2.0, 2.0, 0.5], threshold=1.9, num_required=2)
    assert not judge_dynamic([2.0, 1.9, 0.5], threshold=1.9, num_required=2)  # strictly above


def test_dynamic_exactly_when_flow_crosses_threshold():
    clip = static_clip(frames=16, size=64)
    threshold = dynamic_threshold(64, 64)
    below = video_dynamic_degree(clip, 8.0, ConstantFlow(threshold - 0.01))
    above = video_dynamic_degree(clip, 8.0, ConstantFlow(threshold + 0.01))
    assert not below.is_dynamic and above.is_dynamic
    assert above.required_pairs == 4 and above.num_sampled_frames == 16


@pytest.mark.parametrize("fps, speeds", [(8.0, (2.7, 3.3)), (24.0, (0.9, 1.1))])
def test_dynamic_degree_of_translating_texture(dis, fps, speeds):
    # 128-px frames: threshold 3 px per sampled pair; at 24 fps every 3rd frame is kept, so 0.9/1.1 px per
    # frame become 2.7/3.3 px per pair
    slow, fast = (translating_clip(s, size=128, direction=(0.8, -0.6)) for s in speeds)
    verdict_slow = video_dynamic_degree(slow, fps, dis)
    verdict_fast = video_dynamic_degree(fast, fps, dis)
    assert verdict_slow.threshold == pytest.approx(3.0)
    assert verdict_slow.interval == sampling_interval(fps)
    assert not verdict_slow.is_dynamic
    assert verdict_fast.is_dynamic


# ---------------------------------------------------------------------------------------------
# flicker and smoothness
# ---------------------------------------------------------------------------------------------

def test_static_clips_are_not_dynamic_and_do_not_flicker(dis):
    clips = [static_clip(seed=s) for s in range(2)]
    result = evaluate_videos(clips, metrics=["dynamic_degree", "motion_score", "flicker", "smoothness"], flow=dis)
    assert result.aggregate["dynamic_degree"] == 0.0
    assert result.aggregate["temporal_flicker"] == 1.0
    assert result.aggregate["motion_score"] < 0.01
    assert result.aggregate["motion_smoothness"] > 0.999


def test_flickering_static_clip_scores_lower():
    clip = static_clip()
    clip = np.clip(clip, 10, 240)
    flicker = clip.copy()
    flicker[1::2] += 8  # every other frame 8 levels brighter
    assert temporal_flicker(clip) == 1.0
    assert temporal_flicker(flicker) == pytest.approx((255.0 - 8.0) / 255.0)


def test_smoothness_penalises_jerky_motion(dis):
    smooth = translating_clip(2.0, frames=9)
    base = translating_clip(4.0, frames=2)
    jerky = np.stack([base[t % 2] for t in range(9)])  # jumps 4 px back and forth every frame
    assert motion_smoothness(smooth, dis) > 0.99
    assert motion_smoothness(jerky, dis) < motion_smoothness(smooth, dis) - 0.01


# ---------------------------------------------------------------------------------------------
# Fréchet motion distance
# ---------------------------------------------------------------------------------------------

DIRECTIONS = [(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.6, 0.8), (-0.6, 0.8), (0.8, -0.6)]


def clip_set(speeds, seed):
    return [translating_clip(k, direction=d, seed=seed + i) for i, (k, d) in enumerate(zip(speeds, DIRECTIONS))]


def test_frechet_motion_zero_against_itself_and_larger_for_other_speeds(lk):
    slow = clip_set([1.0, 1.5, 2.0, 2.5, 1.0, 1.5], seed=0)
    slow_other_texture = clip_set([1.0, 1.5, 2.0, 2.5, 1.0, 1.5], seed=100)
    fast = clip_set([4.0, 5.0, 6.0, 4.5, 5.5, 6.0], seed=200)
    chunks = {name: [track_chunks(v, lk) for v in clips]
              for name, clips in (("slow", slow), ("other", slow_other_texture), ("fast", fast))}
    lengths = [16] * 6

    def distance(a, b):
        return frechet_motion_from_chunks(chunks[a], chunks[b], lengths, lengths)

    itself, same_speeds, other_speeds = distance("slow", "slow"), distance("slow", "other"), distance("slow", "fast")
    assert itself.window == 16 and itself.num_windows == (6, 6) and itself.dim == 4 * 4 * 4 * 8
    for field in ("velocity", "acceleration", "combined"):
        assert getattr(itself, field) <= 1e-6 * getattr(other_speeds, field)
    assert other_speeds.velocity > 5 * same_speeds.velocity
    assert other_speeds.combined > 5 * same_speeds.combined
    assert any("regularised" in note for note in itself.notes)  # 6 windows for 1024-d features


def test_frechet_motion_short_clips_are_one_window(lk):
    short = [translating_clip(2.0, frames=8, seed=s) for s in range(3)]
    long = [translating_clip(2.0, frames=20, seed=10)]
    result = frechet_motion_from_chunks([track_chunks(v, lk) for v in short], [track_chunks(v, lk) for v in long],
                                        [8] * 3, [20])
    assert result.window == 8
    # 8-frame windows: one per short clip; the 20-frame clip is one 16-frame chunk -> windows at 0 and 7
    assert result.num_windows == (3, 2)
    assert result.dim == 2 * 4 * 4 * 8
    assert any("8 frames" in note for note in result.notes)
    assert window_starts(795, 16)[:3] == [0, 15, 30] and window_starts(795, 16)[-1] + 16 <= 795


def test_velocity_is_first_and_acceleration_true_second_difference():
    t = np.arange(6, dtype=np.float32)
    points = np.stack([t**2, np.zeros_like(t)], axis=-1)[:, None, :]  # x = t², one point
    velocity, acceleration = velocity_acceleration(points)
    np.testing.assert_allclose(velocity[:, 0, 0], [0, 1, 3, 5, 7, 9])
    np.testing.assert_allclose(acceleration[:, 0, 0], [0, 0, 2, 2, 2, 2])


def test_cube_histograms_use_fvmd_angle_bins_and_log_magnitude_weights():
    vectors = np.zeros((16, 400, 2), dtype=np.float32)
    vectors[..., 0] = 3.0  # |v| = 3 -> ceil(log2(4)) / 8 = 0.25; atan2(3, 0) = π/2 -> bin 6
    hist = cube_histograms(vectors).reshape(4 * 4 * 4, 8)
    np.testing.assert_allclose(hist[:, 6], 100 * 0.25)  # 4 frames × 5×5 points per cube
    assert hist[:, [0, 1, 2, 3, 4, 5, 7]].sum() == 0
    assert cube_histograms(np.zeros((16, 400, 2))).sum() == 0  # zero motion weighs nothing


def test_frechet_distance_closed_form():
    a = GaussianFit(mean=np.array([0.0, 1.0]), cov=np.diag([4.0, 9.0]), num_samples=10)
    b = GaussianFit(mean=np.array([3.0, 1.0]), cov=np.diag([1.0, 9.0]), num_samples=10)
    # commuting covariances: |Δμ|² + Σ (√λa − √λb)² = 9 + (2 − 1)² + 0
    assert frechet_distance(a, b) == pytest.approx(10.0, rel=1e-5)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_in_sample_span_matches_full_computation():
    rng = np.random.default_rng(0)
    fit_a, fit_b = fit_gaussian(rng.random((5, 40))), fit_gaussian(1.5 * rng.random((7, 40)))
    assert fit_a.factor is not None  # 12 samples < 40 dimensions: the sample-span path
    full = frechet_distance(GaussianFit(fit_a.mean, fit_a.cov, 5), GaussianFit(fit_b.mean, fit_b.cov, 7))
    assert frechet_distance(fit_a, fit_b) == pytest.approx(full, rel=1e-9)
    assert frechet_distance(fit_a, fit_a) == pytest.approx(0.0, abs=1e-9)


# ---------------------------------------------------------------------------------------------
# appearance
# ---------------------------------------------------------------------------------------------

def test_psnr_and_ssim_known_values():
    image = texture(32, 1)
    shifted = np.clip(image.astype(np.int16), 10, 240).astype(np.uint8)
    assert psnr(shifted, shifted + 5) == pytest.approx(10 * math.log10(255**2 / 25.0))
    assert psnr(image, image) == 100.0
    assert ssim(image, image) == pytest.approx(1.0)
    # constant images: only the luminance term is left, (2ab + C1) / (a² + b² + C1)
    c1 = (0.01 * 255) ** 2
    flat_a, flat_b = np.full((20, 20, 3), 100, np.uint8), np.full((20, 20, 3), 150, np.uint8)
    assert ssim(flat_a, flat_b) == pytest.approx((2 * 100 * 150 + c1) / (100**2 + 150**2 + c1))
    noisy = np.clip(image + np.random.default_rng(0).normal(0, 20, image.shape), 0, 255).astype(np.uint8)
    assert 0.2 < ssim(image, noisy) < 0.95
    assert ssim(image, noisy) == pytest.approx(ssim(noisy, image))


def test_image_statistics_frechet_separates_brightness():
    clips = [static_clip(frames=4, seed=s) for s in range(4)]
    darker = [(c // 2).astype(np.uint8) for c in clips]
    stats = np.concatenate([video_image_statistics(c) for c in clips])
    stats_dark = np.concatenate([video_image_statistics(c) for c in darker])
    assert image_statistics_frechet(stats, stats) == pytest.approx(0.0, abs=1e-9)
    assert image_statistics_frechet(stats, stats_dark) > 0.01


def test_evaluate_videos_appearance_against_conditioning_and_ground_truth(dis, lk):
    clips = [translating_clip(2.0, seed=s) for s in range(3)]
    conditioning = [c[0] for c in clips]
    noisy_gt = [np.clip(c.astype(np.int16) + 6, 0, 255).astype(np.uint8) for c in clips]
    reference = [translating_clip(5.0, seed=9), translating_clip(5.0, seed=10)]  # a distance needs 2 windows a set
    result = evaluate_videos(clips, reference=reference, ground_truth=noisy_gt, conditioning=conditioning, flow=dis,
                             tracker=lk)
    agg = result.aggregate
    assert agg["first_frame_psnr"] == 100.0 and agg["first_frame_ssim"] == pytest.approx(1.0)
    assert 30 < agg["gt_psnr"] < 40 and agg["gt_ssim"] < 1.0
    assert {"frechet_motion_velocity", "frechet_motion_acceleration", "frechet_motion_combined",
            "image_stats_frechet"} <= set(agg)
    assert len(result.per_video) == 3 and all(r["gt_frames"] == 16 for r in result.per_video)
    data = json.loads(result.to_json())
    assert data["aggregate"]["dynamic_degree"] == agg["dynamic_degree"]
    table = result.format_table()
    assert "dynamic degree" in table and "this run used DIS" in table and "Fréchet motion: combined" in table


# ---------------------------------------------------------------------------------------------
# sprites
# ---------------------------------------------------------------------------------------------

def sprite_clip(start, velocity, frames=8, size=16, color=(220, 200, 180), background=30, lost_frame=None,
                fade=1.0):
    clip = np.full((frames, size, size, 3), background, np.uint8)
    for t in range(frames):
        if t == lost_frame:
            continue
        x, y = int(round(start[0] + velocity[0] * t)), int(round(start[1] + velocity[1] * t))
        level = np.array(color) if t == 0 else background + (np.array(color) - background) * fade
        clip[t, y - 1:y + 2, x - 1:x + 2] = level.astype(np.uint8)
    return clip


def test_sprite_metrics_on_known_trajectories():
    clips = np.stack([
        sprite_clip((3, 3), (1, 1)),  # speed √2, displacement 7√2
        sprite_clip((3, 8), (1.5, 0)),  # rendered at x = 3, 4, 6, 8, 9, 10, 12, 14 (Python rounding)
        sprite_clip((8, 8), (0, 0)),  # static
        sprite_clip((4, 4), (1, 0), lost_frame=3),  # lost in one frame
    ])
    m = sprite_motion_metrics(clips)
    np.testing.assert_allclose(m.per_clip["speed"][:3], [math.sqrt(2), 11 / 7, 0.0])
    np.testing.assert_allclose(m.per_clip["displacement"], [7 * math.sqrt(2), 11.0, 0.0, 7.0])
    assert math.isnan(m.per_clip["speed"][3])  # undefined with a lost frame
    assert m.aggregate["lost_fraction"] == 0.25
    assert m.aggregate["static_fraction"] == 0.25
    assert m.aggregate["frames_tracked"] == pytest.approx((7 * 3 + 6) / 28)
    assert m.aggregate["area"] == pytest.approx((9 * 8 * 3 + 9 * 7) / 32)
    assert m.aggregate["mass_ratio"] == pytest.approx((1 + 1 + 1 + 6 / 7) / 4)
    assert m.aggregate["bg_flicker"] == 0.0
    assert np.isnan(m.centroids[3, 3]).all() and m.lost[3, 3]

    faded = sprite_motion_metrics(sprite_clip((5, 5), (1, 0), fade=0.5)[None])
    assert faded.aggregate["mass_ratio"] < 0.6  # the sprite lost about half its contrast
    assert faded.aggregate["speed"] == pytest.approx(1.0)

    with_ref = sprite_motion_metrics(clips[:1], reference=clips[:1])
    assert with_ref.aggregate["speed_w1"] == 0.0
    by_colour = sprite_motion_metrics(clips[:1], sprite_colors=np.array([220, 200, 180]))
    assert by_colour.per_clip["speed"][0] == pytest.approx(math.sqrt(2))


def test_prepared_reference_gives_the_same_result_and_rejects_mismatches(lk, tmp_path):
    clips = np.stack([sprite_clip((3, 3), (1, 1)), sprite_clip((8, 8), (0, 0))])
    reference = np.stack([sprite_clip((4, 4), (1, 0)), sprite_clip((5, 9), (0.5, 0.5)), sprite_clip((9, 9), (-1, 0))])
    direct = evaluate_videos(clips, reference=reference, tracker=lk, sprites=True)
    prepared = prepare_reference(reference, tracker=lk, sprites=True)
    again = evaluate_videos(clips, reference=prepared, tracker=lk, sprites=True)
    assert again.aggregate == direct.aggregate
    assert again.settings["num_reference"] == 3
    assert direct.aggregate["sprite_speed_w1"] > 0 and "image_stats_frechet" in direct.aggregate

    with pytest.raises(DataError, match="lacks point tracks"):
        evaluate_videos(clips, reference=prepare_reference(reference, metrics=["appearance"]), tracker=lk)
    with pytest.raises(DataError, match="lacks frames for the sprite metrics"):
        evaluate_videos(clips, reference=prepare_reference(reference, tracker=lk), tracker=lk, sprites=True)
    with pytest.raises(DataError, match="max_frames=None but this evaluation uses 6"):
        evaluate_videos(clips, reference=prepared, tracker=lk, sprites=True, max_frames=6)
    with pytest.raises(DataError, match="no usable reference video among the 1 given"):
        prepare_reference([reference[0, :2]])


def test_sprite_metrics_reject_bad_input():
    with pytest.raises(DataError, match="uint8 clips"):
        sprite_motion_metrics(np.zeros((2, 8, 16, 16, 3), np.float32))


# ---------------------------------------------------------------------------------------------
# real clips
# ---------------------------------------------------------------------------------------------

@pytest.mark.skipif(not REAL_VIDEOS.is_dir(), reason=f"real clips not found at {REAL_VIDEOS}")
def test_real_videos_are_scored(dis, lk):
    result = evaluate_videos(REAL_VIDEOS, reference=REAL_VIDEOS, flow=dis, tracker=lk, max_frames=20)
    names = sorted(r["name"] for r in result.per_video)
    assert names == sorted(p.name for p in REAL_VIDEOS.iterdir() if p.suffix in (".avi", ".mp4"))
    assert not result.skipped
    for key in ("dynamic_degree", "motion_score", "motion_smoothness", "temporal_flicker"):
        assert math.isfinite(result.aggregate[key])
    assert 0.9 < result.aggregate["temporal_flicker"] <= 1.0
    assert result.aggregate["frechet_motion_combined"] == pytest.approx(0.0, abs=1e-3)


# ---------------------------------------------------------------------------------------------
# streaming: frames are read once and dropped; files and arrays give the same numbers
# ---------------------------------------------------------------------------------------------

def test_streams_match_whole_clip_batches(dis):
    """Frame-by-frame streams reproduce the per-pair values of an explicit batched computation."""
    from shiftvdm.eval.flicker import FlickerStream
    from shiftvdm.eval.motion_score import FlowPairStream, flow_magnitude
    from shiftvdm.eval.smoothness import SmoothnessStream, interpolate_midframe

    clip = translating_clip(2.0, frames=21, size=48, seed=3)
    pairs, smooth, flicker = FlowPairStream(dis, batch_size=3), SmoothnessStream(dis, batch_size=2), FlickerStream()
    for frame in clip:
        for stream in (pairs, smooth, flicker):
            stream.add(frame)
    flow = dis(clip[:-1], clip[1:])
    np.testing.assert_allclose(pairs.result().mean_magnitude, flow_magnitude(flow).mean(axis=(1, 2)), rtol=1e-6)
    assert pairs.result().mean_magnitude.shape == (20,)
    middles = range(1, 20, 2)
    expected = [np.abs(interpolate_midframe(clip[t - 1], clip[t + 1], dis(clip[t - 1:t], clip[t + 1:t + 2])[0],
                                            dis(clip[t + 1:t + 2], clip[t - 1:t])[0]).astype(np.int16)
                       - clip[t].astype(np.int16)).mean() for t in middles]
    np.testing.assert_allclose(smooth.errors(), expected, rtol=1e-9)
    np.testing.assert_allclose(flicker.maes(), np.abs(np.diff(clip.astype(np.int16), axis=0)).mean(axis=(1, 2, 3)))


def test_file_and_array_inputs_score_identically(dis, lk, tmp_path):
    from shiftvdm.data.video_io import read_video, write_video

    folder = tmp_path / "clips"
    folder.mkdir()
    for i, speed in enumerate((1.0, 2.5)):
        write_video(folder / f"c{i}.mp4", translating_clip(speed, frames=20, size=48, seed=i), fps=24)
    arrays = [read_video(p).frames for p in sorted(folder.iterdir())]
    kwargs = dict(flow=dis, tracker=lk, reference=arrays, fps=24.0, max_frames=18)
    from_files = evaluate_videos(folder, **kwargs)
    from_arrays = evaluate_videos(arrays, **kwargs)
    assert from_files.aggregate == from_arrays.aggregate
    keys = [k for k in from_files.per_video[0] if k not in ("name", "path")]
    assert [[r[k] for k in keys] for r in from_files.per_video] == [[r[k] for k in keys] for r in from_arrays.per_video]
    assert from_files.per_video[0]["frames"] == 18


def test_evaluation_holds_a_few_frames_not_the_clip(dis, tmp_path):
    """A 240-frame clip (6.6 MB decoded) is scored holding well under one copy of it (measured: 2.5 MB)."""
    import tracemalloc

    from shiftvdm.data.video_io import write_video

    folder = tmp_path / "long"
    folder.mkdir()
    clip = translating_clip(1.5, frames=240, size=96, seed=5)
    write_video(folder / "long.mp4", clip, fps=8)
    del clip
    tracemalloc.start()
    try:
        result = evaluate_videos(folder, flow=dis, metrics=["dynamic_degree", "motion_score", "smoothness",
                                                            "flicker", "appearance"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.per_video[0]["frames"] == 240
    assert peak < 0.6 * 240 * 96 * 96 * 3, f"peak {peak / 1e6:.1f} MB"


def test_progress_bar_goes_to_stderr_only(dis, capsys):
    evaluate_videos([static_clip(frames=6, size=32)] * 2, flow=dis, metrics=["flicker"], progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    assert "videos:" in err and "0/2 [" in err and "clip/s" in err
    evaluate_videos([static_clip(frames=6, size=32)] * 2, flow=dis, metrics=["flicker"])
    assert capsys.readouterr() == ("", "")


def test_eval_clip_is_not_the_trainers_clip_source():
    import shiftvdm.eval.inputs as inputs
    from shiftvdm.eval import EvalClip, collect_clips

    assert not hasattr(inputs, "ClipSource")
    clips = collect_clips(np.zeros((2, 4, 8, 8, 3), np.uint8))
    assert [type(c) for c in clips] == [EvalClip, EvalClip] and clips[1].name == "videos_001"


@pytest.mark.skipif(not REAL_VIDEOS.is_dir(), reason=f"real clips not found at {REAL_VIDEOS}")
def test_stream_video_equals_read_video_with_repeated_frames():
    from shiftvdm.data.video_io import read_video, stream_video

    path = REAL_VIDEOS / "tree.avi"  # 68 pictures on 444 frame slots
    for max_frames in (None, 40):
        whole = read_video(path, max_frames=max_frames)
        info, frames = stream_video(path, max_frames=max_frames)
        frames = list(frames)
        assert info.num_frames == len(whole.frames) == len(frames) and info.fps == whole.fps
        assert all(np.array_equal(a, b) for a, b in zip(whole.frames, frames))
