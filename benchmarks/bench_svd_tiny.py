"""Tiny SVD presets on CPU: training-step time (fwd + bwd + AdamW), sampling time and peak memory.

Each preset runs in its own child process so that its peak RSS is its own. Run:

    HF_HUB_OFFLINE=1 python benchmarks/bench_svd_tiny.py [--batch 8 --frames 8 --size 32 --steps 5 --sample-steps 4]

Figures are wall-clock on whatever else the machine is doing at the time: on a shared box, read them as upper
bounds and compare presets measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

PRESETS = {
    # name: (pixel_space, extra tiny_svd_components kwargs)
    "latent": (False, {}),
    "pixel-f2": (True, {"patch_size": 2}),
    "pixel-f4": (True, {"patch_size": 4}),
}


def run_one(name: str, batch: int, frames: int, size: int, steps: int, sample_steps: int, threads: int) -> dict:
    import torch

    from shiftvdm.backbone.svd import SVDBackbone, SVDConfig
    from shiftvdm.backbone.tiny import tiny_svd_components
    from shiftvdm.utils.seeding import generator_for

    torch.set_num_threads(threads)
    pixel_space, kwargs = PRESETS[name]
    backbone = SVDBackbone(**tiny_svd_components(seed=0, pixel_space=pixel_space, num_frames=frames, **kwargs),
                           config=SVDConfig(num_frames=frames, num_inference_steps=sample_steps))
    gen = generator_for(0, "bench", name)
    video = torch.rand(batch, frames, 3, size, size, generator=gen) * 2 - 1
    latents = backbone.encode_video(video)
    cond = backbone.encode_condition(video[:, 0])
    params = backbone.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    step_times = []
    for _ in range(steps + 1):  # the first step (kernel set-up) is not counted
        start = time.perf_counter()
        loss = backbone.denoising_loss(latents, cond, backbone.draw_noise(latents, gen)).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_times.append(time.perf_counter() - start)
    one = cond.index(slice(0, 1))
    start = time.perf_counter()
    sampled = backbone.sample(one, 2, gen, stochastic=True)
    pixels = backbone.decode(sampled[0])
    sample_time = time.perf_counter() - start
    return {
        "preset": name,
        "unet_params_M": round(sum(p.numel() for p in backbone.unet.parameters()) / 1e6, 3),
        "latent_shape": list(latents.shape[1:]),
        "train_step_s_median": round(statistics.median(step_times[1:]), 3),
        "train_step_s_min": round(min(step_times[1:]), 3),
        "first_step_s": round(step_times[0], 3),
        "sample_2_clips_s": round(sample_time, 3),
        "decoded_shape": list(pixels.shape),
        "peak_rss_GB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8, help="clips per training step (default 8)")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip (default 8)")
    parser.add_argument("--size", type=int, default=32, help="clip side in pixels (default 32)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps (default 5)")
    parser.add_argument("--sample-steps", type=int, default=4, help="sampler steps (default 4)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--presets", default=",".join(PRESETS), help=f"comma list of {sorted(PRESETS)}")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child mode: run one preset, print JSON
    args = parser.parse_args()
    common = dict(batch=args.batch, frames=args.frames, size=args.size, steps=args.steps,
                  sample_steps=args.sample_steps, threads=args.threads)
    if args.one:
        print(json.dumps(run_one(args.one, **common)))
        return 0
    print(f"tiny SVD on CPU: B={args.batch}, F={args.frames}, {args.size}x{args.size} px, {args.threads} threads, "
          f"sampler {args.sample_steps} steps (CFG, 2 clips + decode)")
    for name in args.presets.split(","):
        cmd = [sys.executable, __file__, "--one", name] + [f"--{k.replace('_', '-')}={v}" for k, v in common.items()]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{name}: failed\n{done.stderr[-2000:]}")
            continue
        print(json.dumps(json.loads(done.stdout.strip().splitlines()[-1])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
