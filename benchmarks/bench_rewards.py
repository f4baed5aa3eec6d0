"""Reward throughput of the weight-free MotionCritic, split into flow (IC maps), tracks (LC features)
and discriminators (IC + LC forward of the EMA copies).

    python benchmarks/bench_rewards.py [--clips 8] [--threads 1] [--sizes 8x16x16 8x32x32 24x320x576] [--ab 5]
    python benchmarks/bench_rewards.py --features neural --clips 1 --sizes 8x16x16 24x320x576 [--queries 1024]

``--features neural`` times the paper's features with the authors' critic preset (critic_svd_davis: SEA-RAFT-M
flow with its mixture confidence at ic_size, CoTracker3 offline update tokens, ViT-B/16 + TrackFormer heads)
on random-init SEA-RAFT-M / CoTracker3 weights drawn here (the timing does not depend on the values; no
released file is needed). Demo sizes keep the IC maps at the clip size (SEA-RAFT upsamples to 128 px).

Clips are synthetic moving sprites. Demo sizes use the default CriticConfig (256 queries, IC ViT on
4-px patches of the full-size maps); 24×320×576 computes the IC maps at 160×288 with 16-px patches
(the reference's WISA "ds2" working size) because 4-px patches of 320×576 maps would make 11 520
tokens per pair. Numbers are wall-clock on whatever else the machine is running: rerun on a quiet
machine before quoting them.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from shiftvdm.data.synthetic import make_sprite_clips
from shiftvdm.data.video_io import to_tensor
from shiftvdm.rewards import CriticConfig, ICConfig, MotionCritic


def critic_for(frames: int, height: int, width: int) -> MotionCritic:
    cfg = CriticConfig()
    if max(height, width) > 128:
        cfg = dataclasses.replace(cfg, ic_size=(height // 2, width // 2),
                                  ic=dataclasses.replace(ICConfig(), patch_size=16, image_size=(height // 2, width // 2)))
    else:
        cfg = dataclasses.replace(cfg, ic=dataclasses.replace(ICConfig(), image_size=(height, width)))
    return MotionCritic(cfg).eval()


def neural_critic_for(frames: int, height: int, width: int, folder: Path, queries: int) -> MotionCritic:
    """The authors' critic preset over random-init SEA-RAFT-M and CoTracker3 offline written to ``folder``."""
    from shiftvdm.config import load_config
    from shiftvdm.motion.cotracker3 import CoTracker3
    from shiftvdm.motion.sea_raft import VARIANTS, seeded_state_dict
    from shiftvdm.recipes.train_reward import TrainRewardConfig

    flow_path, track_path = folder / "sea_raft_m.pth", folder / "cotracker3.pth"
    if not flow_path.is_file():
        torch.save(seeded_state_dict(VARIANTS["M"], seed=0), flow_path)
        torch.manual_seed(0)
        torch.save(CoTracker3().state_dict(), track_path)
    cfg = load_config(TrainRewardConfig, "critic_svd_davis", [f"critic.flow_checkpoint={flow_path}",
                                                              f"critic.tracker_checkpoint={track_path}"]).critic
    ic_size = (height, width) if max(height, width) <= 128 else cfg.ic_size
    cfg = dataclasses.replace(cfg, ic_size=ic_size, num_queries=min(queries, height * width),
                              ic=dataclasses.replace(cfg.ic, image_size=ic_size))
    return MotionCritic(cfg).eval()


def bench(frames: int, height: int, width: int, num_clips: int, neural_folder: Path | None = None,
          queries: int = 1024) -> dict[str, float]:
    size = max(height, width)
    clips = make_sprite_clips(num_clips, frames, size, seed=0, sprite_size=(size / 8, size / 4),
                              speed=(size / 32, size / 12)).videos[:, :, :height, :width]
    videos = to_tensor(clips)
    critic = (neural_critic_for(frames, height, width, neural_folder, queries) if neural_folder is not None
              else critic_for(frames, height, width))
    critic.reward(videos[:1])  # warm-up (lazy extractor construction, allocator)
    flow = tracks = disc = 0.0
    for i in range(num_clips):
        feats = critic.features(videos[i:i + 1])
        flow += critic.last_timings["flow"]
        tracks += critic.last_timings["tracks"]
        start = time.perf_counter()
        critic.reward(feats)
        disc += time.perf_counter() - start
    total = flow + tracks + disc
    return {"flow_s": flow / num_clips, "tracks_s": tracks / num_clips, "disc_s": disc / num_clips,
            "clips_per_s": num_clips / total}


def per_group_numpy(critic: MotionCritic, real: torch.Tensor, fakes: torch.Tensor, queries) -> list[torch.Tensor]:
    """The scoring before batching: numpy features clip by clip, one reward call per real clip and per group."""
    import numpy as np

    from shiftvdm.motion.features import ic_features, track_features
    from shiftvdm.rewards.critic import MotionFeatures

    cfg = critic.config
    flow, tracker = critic._get_extractors()
    out = []
    for i in range(len(real)):
        for videos in (real[i:i + 1], fakes[i]):
            clips = critic.videos_to_uint8(videos)
            ic = np.stack([ic_features(c, flow, cfg.ic_size, cfg.residual_mode, cfg.include_flow,
                                       cfg.confidence_scale_px) for c in clips])
            lc = np.stack([track_features(c, tracker(c, queries[i]), cfg.corr_scales, cfg.corr_radius,
                                          cfg.patch_radius) for c in clips])
            out.append(critic.reward(MotionFeatures(torch.from_numpy(ic), torch.from_numpy(lc))).r)
    return out


def demo_buffer_ab(repeats: int, workers: int = 1) -> None:
    """Reward time of one demo-preset buffer (8 conditionings × (1 + 8) clips): per group vs batched, interleaved."""
    import numpy as np

    from shiftvdm.config import config_from_dict, load_config
    from shiftvdm.recipes.demo.config import DemoConfig

    demo = load_config(DemoConfig, "demo_cpu")
    critic = MotionCritic(config_from_dict(CriticConfig, {**demo.critic_training.get("critic", {}), "workers": workers})).eval()
    d, r = demo.data, demo.arms_common["rollout"]
    n, group = int(r["buffer_size"]), int(r["group_size"])
    clips = to_tensor(make_sprite_clips(n * (1 + group), d.num_frames, d.size, seed=1).videos)
    real, fakes = clips[:n], clips[n:].reshape(n, group, *clips.shape[1:])
    queries = np.stack([critic.sample_queries(d.size, d.size, torch.Generator().manual_seed(i)) for i in range(n)])
    critic.score_groups(real[:1], fakes[:1], queries[:1])  # warm-up
    old = new = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        per_group_numpy(critic, real, fakes, queries)
        old += time.perf_counter() - start
        start = time.perf_counter()
        critic.score_groups(real, fakes, queries, keep_features=True)
        new += time.perf_counter() - start
    print(f"demo buffer ({n} conditionings x (1 + {group}) clips), mean of {repeats} interleaved runs: "
          f"per group (before) {old / repeats:.3f} s, batched score_groups (after) {new / repeats:.3f} s, "
          f"ratio {old / new:.2f} (critic.workers={workers})")


def demo_buffer_split(repeats: int, size: int, queries: int, workers: int = 1, sampling: str | None = None) -> None:
    """One demo-preset buffer (8 conditionings x (1 + 8) clips) at ``size``x``size`` with ``queries`` LC
    queries, scored by ``score_groups`` ``repeats`` times: total and its flow / tracks / rest split (median).

    Run it against two trees (PYTHONPATH=<tree>/src) back to back to compare versions of the features.
    """
    import numpy as np

    from shiftvdm.config import config_from_dict, load_config
    from shiftvdm.recipes.demo.config import DemoConfig

    demo = load_config(DemoConfig, "demo_cpu")
    critic_cfg = {**demo.critic_training.get("critic", {}), "workers": workers, "num_queries": queries}
    critic_cfg["ic"] = {**critic_cfg.get("ic", {}), "image_size": [size, size]}
    if sampling:
        critic_cfg["query_sampling"] = sampling
    critic = MotionCritic(config_from_dict(CriticConfig, critic_cfg)).eval()
    d, r = demo.data, demo.arms_common["rollout"]
    n, group = int(r["buffer_size"]), int(r["group_size"])
    unit = size / 16
    clips = to_tensor(make_sprite_clips(n * (1 + group), d.num_frames, size, seed=1, num_sprites=1,
                                        sprite_size=max(5.0, 3.0 * unit), speed=(1.5 * unit, 2.5 * unit),
                                        background="flat", shapes=("square",), antialias=False).videos)
    real, fakes = clips[:n], clips[n:].reshape(n, group, *clips.shape[1:])
    q = np.stack([critic.sample_queries(size, size, torch.Generator().manual_seed(i)) for i in range(n)])
    critic.score_groups(real[:1], fakes[:1], q[:1])  # warm-up
    rows = []
    for _ in range(repeats):
        start = time.perf_counter()
        critic.score_groups(real, fakes, q, keep_features=True)
        total = time.perf_counter() - start
        flow, tracks = critic.last_timings["flow"], critic.last_timings["tracks"]
        rows.append((total, flow, tracks, total - flow - tracks))
    med = [float(np.median([row[k] for row in rows])) for k in range(4)]
    print(f"demo buffer {n} x (1 + {group}) clips, {size}x{size}x{d.num_frames}, {critic.config.num_queries} queries "
          f"({critic.config.query_sampling}), workers {workers}: median of {repeats}: total {med[0]:.3f} s, "
          f"flow {med[1]:.3f} s, tracks {med[2]:.3f} s, discriminators and the rest {med[3]:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8, help="clips per size")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (OpenCV uses its own pool)")
    parser.add_argument("--sizes", nargs="+", default=["8x16x16", "8x32x32", "24x320x576"], help="FxHxW")
    parser.add_argument("--ab", type=int, default=0, help="also time one demo buffer per group vs batched, N times")
    parser.add_argument("--workers", type=int, default=1, help="critic.workers for the batched side of --ab")
    parser.add_argument("--features", choices=["opencv", "neural"], default="opencv",
                        help="DIS/LK (default) or SEA-RAFT-M/CoTracker3 with the authors' critic preset")
    parser.add_argument("--queries", type=int, default=1024, help="LC query points per clip (neural features; "
                        "--buffer: the demo critic's, 1024 -> 256)")
    parser.add_argument("--buffer", type=int, default=0, help="time one demo buffer scored by score_groups N times "
                        "(flow / tracks / rest) at --buffer-size, then stop")
    parser.add_argument("--buffer-size", type=int, default=16, help="frame side of --buffer clips (16 or 32)")
    parser.add_argument("--sampling", choices=["uniform", "pixels"], default=None,
                        help="--buffer: query sampling (default: the demo preset's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.buffer:
        demo_buffer_split(args.buffer, args.buffer_size, min(args.queries, 256), args.workers, args.sampling)
        return
    if args.ab:
        demo_buffer_ab(args.ab, args.workers)
    neural = Path(tempfile.mkdtemp(prefix="bench-rewards-")) if args.features == "neural" else None
    what = ("flow = SEA-RAFT-M + IC maps; tracks = CoTracker3 tokens" if neural else
            "flow = DIS fwd+bwd + IC maps; tracks = LK + LC features")
    print(f"torch threads {args.threads}; features {args.features}; per clip seconds ({what}; "
          "disc = IC+LC EMA forward)")
    print(f"{'clip F×H×W':>14} {'flow s':>9} {'tracks s':>9} {'disc s':>9} {'clips/s':>9}")
    for spec in args.sizes:
        frames, height, width = (int(v) for v in spec.lower().split("x"))
        n = args.clips if height * width <= 64 * 64 else max(2, args.clips // 4)
        r = bench(frames, height, width, n if neural is None else args.clips, neural, args.queries)
        print(f"{spec:>14} {r['flow_s']:9.4f} {r['tracks_s']:9.4f} {r['disc_s']:9.4f} {r['clips_per_s']:9.2f}")


if __name__ == "__main__":
    main()
