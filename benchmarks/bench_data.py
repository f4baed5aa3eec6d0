"""Real-data costs: SFT step with vs without ``data.cache``, Wan without its text encoder, manifests at 100 k entries.

Three parts, each printed side by side (every measurement in its own child process, so peaks are its own):

1. ``cache``: SFT on the tiny SVD and tiny Wan2.2-TI2V presets, one buffer per step (every step loads new clips,
   as an epoch over a large dataset does), with and without ``data.cache``; time per step (the buffer collection
   plus the generator step) and the ratio.
2. ``text-encoder``: peak RSS of a cached Wan SFT step with ``load_text_encoder`` true vs false, and the text
   encoder's parameter bytes; at full size the UMT5-XXL encoder's bytes from the shipped config (meta device).
3. ``manifest``: ``load_manifest`` + the dataset + rank 0's shard of the first chunk (8 ranks) for 1 k and 100 k
   entries: time and peak Python allocation (tracemalloc).

4. ``startup``: a one-step toy ``sft`` (no ``data.cache``) on a manifest of 1 k vs 100 k entries (hard links to two
   tiny .npy clips, so 100 k entries cost no disk): wall time of the run (start-up + the step), the part spent
   opening the clips, and peak RSS of the process (``resource.getrusage``). ``--src DIR`` runs the children on
   another source tree (e.g. the code before a change, from ``git archive``) for before/after figures.

``--full-size-flops`` also counts the FLOPs of SVD-XT's VAE encoder (24 frames) and one UNet forward + backward at
24×320×576 with ``torch.utils.flop_counter`` on meta tensors (nothing is computed), for the VAE's share of a step.

    HF_HUB_OFFLINE=1 python benchmarks/bench_data.py [--steps 4] [--parts cache,text-encoder,manifest,startup]
        [--full-size-flops] [--src DIR]

Wall-clock figures depend on whatever else the machine runs: compare numbers from the same run only.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = [ROOT / "src"]  # the source tree the children import (--src)
TOY = {"num_frames": 4, "size": 16, "block_out_channels": [16, 16], "layers_per_block": 1, "num_mid_blocks": 1,
       "num_inference_steps": 2, "mid_attention": False}


def _child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                         env={"PYTHONPATH": str(SRC[0]), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                              "OMP_NUM_THREADS": "1"})
    if out.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _sft_setup(tmp: Path, family: str) -> list[str]:
    from shiftvdm.backbone.tiny import save_tiny_svd, save_tiny_wan, tiny_video_shape
    from shiftvdm.data.synthetic import write_synthetic_dataset

    if family == "svd":
        model, (f, h, w), extra = save_tiny_svd(tmp / "model", num_frames=4), (4, 32, 32), ["backbone.name=svd"]
    else:
        model, (f, h, w) = save_tiny_wan(tmp / "model", "ti2v"), tiny_video_shape("ti2v")
        extra = ["backbone.name=wan", "data.prompt=a sprite"]
    write_synthetic_dataset(tmp / "data", 8, f, h, seed=2, format="npy", num_sprites=1, overwrite=True)
    return [*extra, "backbone.options.dtype=float32", f"backbone.options.num_frames={f}",
            f"backbone.options.height={h}", f"backbone.options.width={w}", f"data.num_frames={f}", f"data.height={h}",
            f"data.width={w}", "data.fps=null", f"backbone.pretrained={model}", f"data.train={tmp / 'data'}"]


def child_sft(family: str, cached: bool, steps: int, text_encoder: bool) -> dict:
    import torch

    from shiftvdm.recipes.data import main as data_main
    from shiftvdm.recipes.train import merge_train_config, run_training

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        tmp = Path(tmp)
        shared = _sft_setup(tmp, family)
        run = ["lora.rank=4", "lora.alpha=4", "optim.warmup_steps=0", "rollout.batch_size=2", "rollout.buffer_size=2",
               "rollout.passes_per_buffer=1", f"run.max_steps={steps}", "run.checkpoint_every=0", "run.progress=false",
               "run.mixed_precision='no'", "run.num_samples=1", f"run.out_dir={tmp / 'run'}"]
        if cached:
            model = next(o for o in shared if o.startswith("backbone.pretrained=")).split("=", 1)[1]
            keep = [o for o in shared if not o.startswith(("backbone.pretrained=", "data.train="))]
            data_main(["encode", "--model", model, "--data", str(tmp / "data"), "--out", str(tmp / "cache"), *keep])
            run.append(f"data.cache={tmp / 'cache'}")  # the recipe then leaves Wan's text encoder out
            if family == "wan" and text_encoder:
                run.append("backbone.options.load_text_encoder=true")  # kept although every clip is cached
        cfg, _ = merge_train_config("sft", None, [*shared, *run])
        t0 = time.perf_counter()
        result = run_training(cfg)
        wall = time.perf_counter() - t0
    timers = result.timers
    per_step = (timers.get("buffer", 0.0) + timers.get("generator", 0.0)) / result.steps
    return {"per_step_s": per_step, "buffer_s": timers.get("buffer", 0.0) / result.steps,
            "wall_s": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child_manifest(entries: int, how: str) -> dict:
    """``how``: ``load`` (load_manifest: every entry parsed and resolved) or ``stream`` (stream_manifest, plus the
    cached run's start-up check that every clip has a record: one stat each)."""
    import tracemalloc

    from shiftvdm.data.dataset import VideoClipDataset
    from shiftvdm.data.manifest import load_manifest, stream_manifest
    from shiftvdm.train.config import TrainConfig
    from shiftvdm.train.latent_cache import CachedClips
    from shiftvdm.train.shift import chunk_indices

    with tempfile.TemporaryDirectory(prefix="bench_data_manifest_") as tmp:
        path = Path(tmp) / "train.jsonl"
        with open(path, "w") as fh:
            for i in range(entries):
                fh.write(json.dumps({"path": f"clips/seq{i // 50:05d}_s{i % 50 * 24:05d}.mp4", "source": f"seq{i // 50}",
                                     "prompt": f"caption number {i}", "fps": 24.0, "start": i % 50 * 24}) + "\n")
        tracemalloc.start()
        t0 = time.perf_counter()
        manifest = (load_manifest if how == "load" else stream_manifest)(path)
        dataset = VideoClipDataset(manifest, 24, 320, 576, fps=None)
        shard = chunk_indices(len(dataset), TrainConfig(), 0, 0, 0, 8)
        if how == "stream":
            missing = CachedClips(Path(tmp) / "cache", dataset, manifest.root).missing()
            assert len(missing) == entries
        seconds = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    return {"seconds": seconds, "peak_mb": peak / 2**20, "shard": len(shard)}


def write_startup_data(root: Path, entries: list[int]) -> dict[int, Path]:
    """``train-N.jsonl`` for each N in ``entries``: N hard links to two tiny sprite clips (4 × 16 × 16, .npy)."""
    import os

    from shiftvdm.data.synthetic import write_synthetic_dataset

    write_synthetic_dataset(root / "src", 2, 4, 16, seed=1, format="npy", num_sprites=1, sprite_size=(3.0, 4.0),
                            speed=(1.5, 2.5), background="flat", overwrite=True)
    sources = sorted((root / "src" / "clips").glob("*.npy"))
    (root / "c").mkdir()
    for i in range(max(entries)):
        os.link(sources[i % 2], root / "c" / f"c{i:06d}.npy")
    out = {}
    for n in entries:
        out[n] = root / f"train-{n}.jsonl"
        out[n].write_text("".join(json.dumps({"path": f"c/c{i:06d}.npy", "fps": 8}) + "\n" for i in range(n)))
    return out


def child_startup(manifest: str) -> dict:
    """One toy SFT step on ``manifest``: wall time of ``run_training``, of opening the clips, and peak RSS."""
    import torch

    import shiftvdm.recipes.train as train_recipe

    torch.set_num_threads(1)
    opened: list[float] = []
    open_clips = train_recipe.open_training_clips

    def timed_open(*args):
        t0 = time.perf_counter()
        clips = open_clips(*args)
        opened.append(time.perf_counter() - t0)
        return clips

    train_recipe.open_training_clips = timed_open
    with tempfile.TemporaryDirectory(prefix="bench_data_startup_") as tmp:
        overrides = ["backbone.name=toy", *[f"backbone.options.{k}={v}" for k, v in TOY.items()],
                     f"data.train={manifest}", "data.num_frames=4", "data.height=16", "data.width=16", "lora.rank=2",
                     "rollout.buffer_size=2", "rollout.batch_size=2", "rollout.passes_per_buffer=1",
                     "run.num_samples=2", "run.max_steps=1", "run.checkpoint_every=0", "run.progress=false",
                     "optim.warmup_steps=0", f"run.out_dir={Path(tmp) / 'run'}"]
        cfg, _ = train_recipe.merge_train_config("sft", None, overrides)
        t0 = time.perf_counter()
        result = train_recipe.run_training(cfg)
        wall = time.perf_counter() - t0
    assert result.steps == 1
    return {"wall_s": wall, "open_s": opened[0], "step_s": result.timers.get("generator", 0.0),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child_text_encoder_bytes() -> dict:
    from shiftvdm.backbone.full_size import build_on_meta, parameter_count

    parts = build_on_meta("wan22_ti2v_5b")
    n = parameter_count(parts["text_encoder"])
    return {"params": n, "bf16_gb": 2 * n / 1e9}


def child_flops(frames: int, height: int, width: int) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from shiftvdm.backbone.full_size import build_on_meta

    parts = build_on_meta("svd_xt")
    vae, unet = parts["vae"], parts["unet"]
    h, w = height // 8, width // 8
    with torch.device("meta"):
        pixels = torch.empty(frames, 3, height, width)
        with FlopCounterMode(display=False) as counter:
            vae.encoder(pixels)
        vae_flops = counter.get_total_flops()
        sample = torch.empty(1, frames, 8, h, w, requires_grad=False)
        with FlopCounterMode(display=False) as counter:
            out = unet(sample, torch.empty(1), encoder_hidden_states=torch.empty(1, 1, 1024),
                       added_time_ids=torch.empty(1, 3), return_dict=False)[0]
        unet_forward = counter.get_total_flops()
    del out
    return {"vae_encode_tflops": vae_flops / 1e12, "unet_forward_tflops": unet_forward / 1e12}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="SFT steps per run (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="alternated runs per setting, medians (default 3)")
    parser.add_argument("--parts", default="cache,text-encoder,manifest,startup", help="comma-separated parts to run")
    parser.add_argument("--src", default=None, help="source tree the children import (default: this checkout's src)")
    parser.add_argument("--full-size-flops", action="store_true", help="also count SVD-XT's FLOPs at 24x320x576")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.src:
        SRC[0] = Path(args.src).resolve()
    if args.child:
        kind, *rest = args.child
        if kind == "sft":
            result = child_sft(rest[0], rest[1] == "1", int(rest[2]), rest[3] == "1")
        elif kind == "manifest":
            result = child_manifest(int(rest[0]), rest[1])
        elif kind == "startup":
            result = child_startup(rest[0])
        elif kind == "text-encoder-bytes":
            result = child_text_encoder_bytes()
        else:
            result = child_flops(24, 320, 576)
        print(json.dumps(result))
        return
    parts = args.parts.split(",")
    figures: dict = {}
    if "cache" in parts:
        print(f"SFT time per step (one new buffer of 2 clips each step, {args.steps} steps, 1 thread, median of "
              f"{args.repeats})")
        print(f"{'backbone':<10}{'no cache s':>12}{'cache s':>10}{'ratio':>8}{'  of which buffer: no cache / cache'}")
        for family in ("svd", "wan"):
            runs: dict[str, list[dict]] = {"plain": [], "cached": []}
            for _ in range(args.repeats):  # alternated, medians: a shared machine's load drifts
                runs["plain"].append(_child(["sft", family, "0", str(args.steps), "1"]))
                runs["cached"].append(_child(["sft", family, "1", str(args.steps), "0"]))
            plain, cached = ({k: statistics.median(r[k] for r in runs[name]) for k in runs[name][0]}
                             for name in ("plain", "cached"))
            figures[f"cache/{family}"] = {"plain": plain, "cached": cached, "runs": runs}
            print(f"{'tiny ' + family:<10}{plain['per_step_s']:>12.3f}{cached['per_step_s']:>10.3f}"
                  f"{cached['per_step_s'] / plain['per_step_s']:>8.2f}   {plain['buffer_s']:.3f} / {cached['buffer_s']:.3f}")
    if "text-encoder" in parts:
        loaded = _child(["sft", "wan", "1", "1", "1"])
        dropped = _child(["sft", "wan", "1", "1", "0"])
        full = _child(["text-encoder-bytes"])
        figures["text_encoder"] = {"loaded": loaded, "dropped": dropped, "full_size": full}
        print("cached tiny Wan SFT step, peak RSS: text encoder loaded "
              f"{loaded['peak_rss_mb']:.0f} MB, not loaded {dropped['peak_rss_mb']:.0f} MB "
              f"(ratio {dropped['peak_rss_mb'] / loaded['peak_rss_mb']:.3f})")
        print(f"full size: the UMT5-XXL encoder of Wan2.2-TI2V-5B has {full['params'] / 1e9:.2f} B parameters = "
              f"{full['bf16_gb']:.1f} GB in bf16 per rank, not held with a cache")
    if "manifest" in parts:
        print("manifest start-up: parse + dataset + rank 0's shard of 8 (stream: + every clip's cache record stat-ed)")
        print(f"{'entries':>8}{'how':>8}{'seconds':>10}{'peak MB':>10}")
        for how in ("load", "stream"):
            for n in (1000, 100000):
                m = _child(["manifest", str(n), how])
                figures[f"manifest/{how}/{n}"] = m
                print(f"{n:>8}{how:>8}{m['seconds']:>10.3f}{m['peak_mb']:>10.1f}")
            a, b = figures[f"manifest/{how}/1000"], figures[f"manifest/{how}/100000"]
            print(f"{how}: 100k / 1k time x{b['seconds'] / a['seconds']:.1f}, peak memory x{b['peak_mb'] / a['peak_mb']:.1f}")
    if "startup" in parts:
        print(f"one-step toy sft without data.cache, manifest of 1 k vs 100 k entries ({SRC[0]}; median of "
              f"{args.repeats}, alternated)")
        print(f"{'entries':>8}{'process s':>11}{'run s':>9}{'open clips s':>14}{'step s':>9}{'peak RSS MB':>13}")
        with tempfile.TemporaryDirectory(prefix="bench_data_startup_") as tmp:
            manifests = write_startup_data(Path(tmp), [1000, 100000])
            runs: dict[int, list[dict]] = {n: [] for n in manifests}
            for _ in range(args.repeats):
                for n, manifest in manifests.items():
                    t0 = time.perf_counter()
                    runs[n].append(_child(["startup", str(manifest)]))
                    runs[n][-1]["process_s"] = time.perf_counter() - t0  # with Python's start and the imports
        med = {n: {k: statistics.median(r[k] for r in runs[n]) for k in runs[n][0]} for n in runs}
        figures["startup"] = {"median": {str(n): m for n, m in med.items()}, "runs": {str(n): r for n, r in runs.items()},
                              "src": str(SRC[0])}
        for n, m in med.items():
            print(f"{n:>8}{m['process_s']:>11.2f}{m['wall_s']:>9.2f}{m['open_s']:>14.3f}{m['step_s']:>9.2f}{m['peak_rss_mb']:>13.0f}")
        a, b = med[1000], med[100000]
        print(f"100k / 1k: run time x{b['wall_s'] / a['wall_s']:.2f}, process x{b['process_s'] / a['process_s']:.2f} "
              f"(target <= 3), peak RSS "
              f"x{b['peak_rss_mb'] / a['peak_rss_mb']:.2f} (target <= 1.5)")
    if args.full_size_flops:
        flops = _child(["flops"])
        figures["flops"] = flops
        step = 3 * flops["unet_forward_tflops"]  # forward + backward ≈ 3 forwards
        vae = flops["vae_encode_tflops"]
        print(f"SVD-XT at 24x320x576: VAE encode of a clip {vae:.2f} TFLOP, UNet forward {flops['unet_forward_tflops']:.2f}"
              f" TFLOP (step ≈ 3x = {step:.2f}); the encode is {vae / (vae + step):.0%} of an SFT step's FLOPs")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
