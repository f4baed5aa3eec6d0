"""Seconds per clip of each evaluation metric at 16×64×64 and 24×320×576 (CPU, weight-free defaults).

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_eval.py [--repeats 3] [--threads N]``

Clips are a colour texture translating 2 px/frame (so flow and tracking do real work). Each figure is the
median over ``--repeats`` runs of one clip (set-level steps are divided by the number of clips). Timings on
a shared machine are noisy; compare rows of one run rather than runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np

from shiftvdm.eval import evaluate_videos
from shiftvdm.eval.appearance import clip_fidelity, first_frame_fidelity, video_image_statistics
from shiftvdm.eval.dynamic_degree import video_dynamic_degree
from shiftvdm.eval.flicker import temporal_flicker
from shiftvdm.eval.frechet_motion import fit_gaussian, frechet_distance, motion_features, track_chunks
from shiftvdm.eval.motion_score import motion_score
from shiftvdm.eval.smoothness import motion_smoothness
from shiftvdm.eval.sprites import sprite_motion_metrics
from shiftvdm.motion import get_flow_estimator, get_tracker

SHAPES = [(16, 64, 64), (24, 320, 576)]


def texture_clip(frames: int, height: int, width: int, speed: float = 2.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    margin = int(speed * frames) + 8
    size = (width + 2 * margin, height + 2 * margin)
    image = np.zeros((size[1], size[0], 3))
    cells = 4
    while cells <= min(size) // 2:
        noise = rng.standard_normal((cells, cells, 3))
        image += cv2.resize(noise, size, interpolation=cv2.INTER_CUBIC) / np.sqrt(cells)
        cells *= 2
    image = ((image - image.min()) / (image.max() - image.min()) * 255).astype(np.uint8)
    out = []
    for t in range(frames):
        shift = np.float32([[1, 0, margin - speed * t * 0.8], [0, 1, margin - speed * t * 0.6]])
        out.append(cv2.warpAffine(image, shift, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP))
    return np.stack(out)


def timed(fn, repeats: int, per: int = 1) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) / per)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="cv2.setNumThreads (default: OpenCV's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        cv2.setNumThreads(args.threads)
    flow, tracker = get_flow_estimator("dis"), get_tracker("lk")
    results: dict[str, dict[str, float]] = {}
    for frames, height, width in SHAPES:
        label = f"{frames}x{height}x{width}"
        clip = texture_clip(frames, height, width)
        other = texture_clip(frames, height, width, speed=3.0, seed=1)
        num_set = 4
        clip_set = [texture_clip(frames, height, width, speed=1 + i, seed=i) for i in range(num_set)]
        chunks = [track_chunks(v, tracker) for v in clip_set]
        row = {
            "motion score (DIS)": timed(lambda: motion_score(clip, flow), args.repeats),
            "dynamic degree (DIS, 8 fps)": timed(lambda: video_dynamic_degree(clip, 8.0, flow), args.repeats),
            "motion smoothness (DIS warp)": timed(lambda: motion_smoothness(clip, flow), args.repeats),
            "temporal flicker": timed(lambda: temporal_flicker(clip), args.repeats),
            "Fréchet motion: LK tracks": timed(lambda: track_chunks(clip, tracker), args.repeats),
            "Fréchet motion: features+distance": timed(
                lambda: [frechet_distance(fit_gaussian(a), fit_gaussian(b)) for a, b in
                         zip(motion_features(chunks, min(16, frames)), motion_features(chunks, min(16, frames)))],
                args.repeats, per=2 * num_set),
            "image statistics (Fréchet input)": timed(lambda: video_image_statistics(clip), args.repeats),
            "first-frame PSNR+SSIM": timed(lambda: first_frame_fidelity(clip, other[0]), args.repeats),
            "ground-truth PSNR+SSIM (all frames)": timed(lambda: clip_fidelity(clip, other), args.repeats),
        }
        if height <= 64:
            batch = np.stack([clip] * 16)
            row["sprite metrics"] = timed(lambda: sprite_motion_metrics(batch), args.repeats, per=16)
        row["evaluate_videos, all (with reference)"] = timed(
            lambda: evaluate_videos(clip_set, reference=clip_set[::-1], flow=flow, tracker=tracker),
            max(1, args.repeats // 2), per=num_set)
        results[label] = row

    names = list(next(iter(results.values())).keys())
    width = max(len(n) for n in names)
    print(f"{'seconds per clip':<{width}}  " + "  ".join(f"{label:>12}" for label in results))
    for name in names:
        cells = [results[label].get(name) for label in results]
        print(f"{name:<{width}}  " + "  ".join(f"{c:12.4f}" if c is not None else f"{'-':>12}" for c in cells))
    print(f"\n(median of {args.repeats} runs; cv2 threads {cv2.getNumThreads()}; shared CPU, timings are noisy)")


if __name__ == "__main__":
    main()
