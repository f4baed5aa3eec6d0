"""Seconds per clip of each evaluation metric at 16×64×64 and 24×320×576 (CPU, weight-free defaults).

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_eval.py [--repeats 3] [--threads N]``

``--paper`` instead times the paper suite's networks (``shiftvdm eval --suite``) in clips per second at
16×256×256 on ``--device`` (default: cuda when present): FVD's I3D features, dynamic degree and motion score
with RAFT (20 iterations), motion smoothness with AMT-S, and every other per-clip dimension of the registry
whose files are in ``--weights DIR``. I3D, RAFT and AMT-S run on weights drawn from a seed (the speed does not depend on the values), so no download is
needed for those rows.

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


def bench_paper(args: argparse.Namespace) -> None:
    """Clips per second of each network of the paper suite at 16×256×256."""
    import tempfile
    from pathlib import Path

    import torch

    from shiftvdm.eval.amt import seeded_amt_state_dict
    from shiftvdm.eval.fvd import I3DFeatureStream
    from shiftvdm.eval.i3d import InceptionI3d, seeded_i3d_state_dict
    from shiftvdm.eval.paper_dimensions import PAPER_DIMENSIONS
    from shiftvdm.motion.raft_flow import RAFT, seeded_state_dict

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    clips = [texture_clip(16, 256, 256, speed=1 + i, seed=i) for i in range(args.clips)]
    rows: dict[str, float | str] = {}
    i3d = InceptionI3d()
    i3d.load_state_dict(seeded_i3d_state_dict(0))
    i3d = i3d.eval().to(device)

    def features() -> None:
        stream = I3DFeatureStream(i3d, batch_size=args.clips)
        for clip in clips:
            stream.add(clip)
        stream.result()
        if device.type == "cuda":
            torch.cuda.synchronize()

    features()  # warm-up
    rows[f"fvd: I3D features (batch {args.clips})"] = args.clips / timed(features, args.repeats)
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        raft_file = Path(tmp) / "raft-things.pth"
        torch.save(seeded_state_dict(RAFT("large"), 0, prefix="module."), raft_file)
        raft = get_flow_estimator("raft", checkpoint=raft_file, iters=20, device=str(device))
        rows["dynamic degree (RAFT, 20 it., 8 fps)"] = 1 / timed(
            lambda: video_dynamic_degree(clips[0], 8.0, raft), args.repeats)
        rows["motion score (RAFT, 20 it., all pairs)"] = 1 / timed(lambda: motion_score(clips[0], raft), args.repeats)
        # AMT-S on seeded weights too; the other networks need their released files
        amt_file = Path(tmp) / "amt-s.pth"
        torch.save({"state_dict": seeded_amt_state_dict(0)}, amt_file)
        folder = Path(args.weights) if args.weights else None
        for name, spec in PAPER_DIMENSIONS.items():
            files = {f.name: folder / f.name for f in spec.weights} if folder else {}
            if name == "motion_smoothness" and not (files and all(p.is_file() for p in files.values())):
                files = {"amt-s.pth": amt_file}
            if not files or not all(p.is_file() for p in files.values()):
                rows[name] = "needs " + ", ".join(f.name for f in spec.weights) + " in --weights"
                continue
            scorer = spec.build(files, device)
            image = clips[0][0] if spec.needs_image else None
            scorer.score(clips[0], image)  # warm-up
            rows[name] = 1 / timed(lambda: scorer.score(clips[0], image), args.repeats)
    width = max(len(n) for n in rows)
    print(f"{'clips/s at 16x256x256 on ' + str(device):<{width}}")
    for name, value in rows.items():
        print(f"{name:<{width}}  " + (f"{value:10.3f}" if isinstance(value, float) else value))
    print(f"\n(median of {args.repeats} runs; torch threads {torch.get_num_threads()}; seeded I3D/RAFT/AMT-S weights)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="cv2.setNumThreads (default: OpenCV's choice)")
    parser.add_argument("--paper", action="store_true", help="time the paper suite's networks instead")
    parser.add_argument("--device", default=None, help="--paper: cpu or cuda (default: cuda when present)")
    parser.add_argument("--clips", type=int, default=4, help="--paper: clips per I3D batch (default 4)")
    parser.add_argument("--weights", default=None, help="--paper: folder of released weights for the other rows")
    args = parser.parse_args()
    if args.paper:
        bench_paper(args)
        return
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
