"""`shiftvdm data synth` (a synthetic sprite dataset) and `shiftvdm data check` (decode and vet a dataset)."""

from __future__ import annotations

import argparse

from shiftvdm.data.check import check_dataset, format_report
from shiftvdm.data.prepare import PrepareSettings, parse_size, prepare_dataset
from shiftvdm.data.synthetic import write_synthetic_dataset
from shiftvdm.errors import ConfigError, DataError
from shiftvdm.recipes.args import parse_command_line


def _int_pair(text: str) -> tuple[int, int]:
    parts = text.split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN,MAX integers, got {text!r}") from None
    if len(values) == 1:
        return values[0], values[0]
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected N or MIN,MAX integers, got {text!r}")
    return values[0], values[1]


def _float_pair(text: str) -> tuple[float, float]:
    try:
        values = [float(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X or LO,HI numbers, got {text!r}") from None
    if len(values) == 1:
        return values[0], values[0]
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected X or LO,HI numbers, got {text!r}")
    return values[0], values[1]


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Make a synthetic sprite dataset, check a dataset, or "
                                                            "cut a raw dataset into training clips.")
    sub = parser.add_subparsers(dest="action", required=True, metavar="{synth,check,prepare,encode}")

    synth = sub.add_parser("synth", help="write moving-sprite clips with ground-truth trajectories",
                           description="Write moving-sprite clips (mp4 or npy), manifest.jsonl, ground_truth.npz "
                                       "and dataset.json. The same arguments give the same bytes.")
    synth.add_argument("--out", required=True, help="output folder (created; must be new unless --overwrite)")
    synth.add_argument("--clips", type=int, default=64, help="number of clips (default 64)")
    synth.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    synth.add_argument("--size", type=int, default=64, help="frame side in pixels (default 64)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--fps", type=float, default=8.0, help="frame rate recorded in the files (default 8)")
    synth.add_argument("--static-prob", type=float, default=0.0, help="probability a clip is static (default 0)")
    synth.add_argument("--sprites", type=_int_pair, default=(1, 3), help="sprites per clip, N or MIN,MAX (default 1,3)")
    synth.add_argument("--sprite-size", type=_float_pair, default=(6.0, 12.0),
                       help="sprite extent in pixels, X or LO,HI (default 6,12)")
    synth.add_argument("--speed", type=_float_pair, default=(1.0, 3.0), help="px/frame, X or LO,HI (default 1,3)")
    synth.add_argument("--background", choices=("textured", "flat"), default="textured",
                       help="smooth random texture or one flat colour per clip (default textured)")
    synth.add_argument("--shapes", default="disc,square,triangle",
                       help="comma-separated subset of disc,square,triangle (default all)")
    synth.add_argument("--crisp", action="store_true", help="whole-pixel positions and hard edges (no anti-aliasing)")
    synth.add_argument("--format", choices=("mp4", "npy"), default="mp4", help="mp4 (H.264) or npy (lossless)")
    synth.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")

    check = sub.add_parser("check", help="decode every entry and list the bad ones with their reasons",
                           description="Decode every entry; exit 1 listing each bad entry with its reason, "
                                       "exit 0 with a one-line summary when all are good.")
    check.add_argument("manifest", help="manifest (.jsonl, .json, .csv) or folder of videos")
    check.add_argument("--frames", type=int, default=2, help="frames each clip must have (default 2)")
    check.add_argument("--fps", type=float, default=None, help="count frames at this rate (default: each clip's own)")
    check.add_argument("--workers", type=int, default=1, help="clips decoded at a time (default 1)")

    prep = sub.add_parser(
        "prepare", help="cut a raw dataset (DAVIS, frame folders, videos, a manifest) into clips and manifests",
        description="Cut every source (an image-sequence folder or a video) into windows of --frames frames at "
                    "--fps, every --stride frames, resized to cover --size and centre-cropped; write "
                    "OUT/clips/<source>_sNNNNN.mp4, OUT/train.jsonl and (with --val-fraction) OUT/val.jsonl, split "
                    "by source. A rerun with the same settings continues where a stopped one ended.")
    prep.add_argument("src", help="a DAVIS root (JPEGImages/480p or Full-Resolution), a folder of image-sequence "
                                  "folders and/or videos (searched recursively), a video, or a manifest")
    prep.add_argument("--out", required=True, help="output folder (new, or one this command wrote, to continue)")
    prep.add_argument("--frames", type=int, required=True, help="frames per clip (24 for the authors' SVD runs)")
    prep.add_argument("--fps", type=float, default=None,
                      help="frame rate of the clips; sources are resampled to it (default: each source's own)")
    prep.add_argument("--stride", type=int, default=None,
                      help="frames (at --fps) between window starts (default --frames: non-overlapping)")
    prep.add_argument("--source-fps", type=float, default=24.0,
                      help="frame rate of image-sequence folders, which record none (default 24, DAVIS's)")
    prep.add_argument("--size", type=_size, default=None,
                      help="HxW: resize to cover, then centre crop (e.g. 320x576; default: keep the size)")
    prep.add_argument("--format", choices=("mp4", "npy"), default="mp4",
                      help="mp4 (H.264, CRF 12) or npy (lossless float32, 4x larger; default mp4)")
    prep.add_argument("--captions", default=None,
                      help="captions joined by file name: WISA's JSON list of {video_name, captions}, or a "
                           "jsonl/csv with path and prompt")
    prep.add_argument("--val-fraction", type=float, default=0.0,
                      help="fraction of the sources (never of their clips) held out in val.jsonl (default 0)")
    prep.add_argument("--seed", type=int, default=0, help="seed of the train/val split (default 0)")
    prep.add_argument("--workers", type=int, default=1, help="sources prepared at a time (default 1)")
    prep.add_argument("--strict", action="store_true",
                      help="stop at the first unreadable frame or video (default: name it, skip it, go on)")

    enc = sub.add_parser(
        "encode", help="cache the latents and conditioning of every clip for a model (then train with data.cache=)",
        description="Encode every clip of --data with the model's VAE (and its image / text encoders) into --out, "
                    "keyed by the model and the clip settings; train with data.cache=OUT and the same --config and "
                    "overrides. Ranks of `accelerate launch` split the clips; a rerun continues where one stopped.")
    enc.add_argument("--model", required=True, help="diffusers model folder (SVD or Wan), as backbone.pretrained")
    enc.add_argument("--data", required=True, help="manifest or folder of clips, as data.train")
    enc.add_argument("--out", required=True, help="cache folder (new, or a cache of the same settings to continue)")
    enc.add_argument("--config", default=None,
                     help="the training preset or YAML whose backbone and data settings the cache is for")
    enc.add_argument("overrides", nargs="*", help="dotted overrides of that config, e.g. data.num_frames=14")
    return parser


def _encode(args: argparse.Namespace, prog: str) -> int:
    import torch

    from shiftvdm.backbone import detect_backbone, load_backbone
    from shiftvdm.data.dataset import VideoClipDataset
    from shiftvdm.data.manifest import stream_manifest
    from shiftvdm.recipes.train import merge_train_config
    from shiftvdm.train.latent_cache import cache_key, encode_clips, process_share

    overrides = [*args.overrides, f"backbone.pretrained={args.model}", f"data.train={args.data}"]
    if not args.config and not any(o.startswith("backbone.name=") for o in args.overrides):
        overrides.append(f"backbone.name={detect_backbone(args.model)}")
    cfg, _ = merge_train_config("sft", args.config, overrides)
    backbone = load_backbone(cfg.backbone)
    shape = (cfg.data.num_frames, cfg.data.height, cfg.data.width)
    if tuple(backbone.video_shape) != shape:
        raise ConfigError(f"the model makes clips of {backbone.video_shape[0]} frames × {backbone.video_shape[1]}×"
                          f"{backbone.video_shape[2]}, but data.num_frames/height/width are {shape[0]}/{shape[1]}/"
                          f"{shape[2]}; give the training run's --config and overrides")
    if torch.cuda.is_available():
        backbone.to(f"cuda:{torch.cuda.current_device()}")
    manifest = stream_manifest(cfg.data.train)
    dataset = VideoClipDataset(manifest, cfg.data.num_frames, cfg.data.height, cfg.data.width, fps=cfg.data.fps)
    rank, world = process_share()
    counts = encode_clips(backbone, dataset, manifest.root, args.out, cache_key(cfg.backbone, cfg.data),
                          default_prompt=cfg.data.prompt, rank=rank, world=world)
    print(f"{prog} encode: rank {rank}/{world}: {counts['encoded']} clips encoded, {counts['cached']} already "
          f"cached, in {args.out}; train with data.cache={args.out}")
    return 0


def _size(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except DataError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--size: ")) from None


def _prepare(args: argparse.Namespace) -> int:
    settings = PrepareSettings(src=args.src, frames=args.frames, fps=args.fps, stride=args.stride,
                               source_fps=args.source_fps, size=args.size, format=args.format,
                               captions=args.captions, val_fraction=args.val_fraction, seed=args.seed,
                               strict=args.strict)
    summary = prepare_dataset(settings, args.out, workers=args.workers)
    for line in summary.lines():
        print(line)
    print(f"wrote {args.out}/train.jsonl" + (f" and {args.out}/val.jsonl" if args.val_fraction > 0 else ""))
    return 0


def main(argv: list[str], prog: str = "shiftvdm data") -> int:
    args = parse_command_line(_parser(prog), argv)
    if args.action == "synth":
        manifest = write_synthetic_dataset(
            args.out, args.clips, args.frames, args.size, args.seed, fps=args.fps, format=args.format,
            overwrite=args.overwrite, num_sprites=args.sprites, sprite_size=args.sprite_size, speed=args.speed,
            static_prob=args.static_prob, background=args.background,
            shapes=tuple(s.strip() for s in args.shapes.split(",") if s.strip()), antialias=not args.crisp)
        print(f"wrote {args.clips} clips of {args.frames}x{args.size}x{args.size} to {args.out} ({manifest.name}, "
              "ground_truth.npz, dataset.json)")
        return 0

    if args.action == "prepare":
        return _prepare(args)
    if args.action == "encode":
        return _encode(args, prog)
    from shiftvdm.data.manifest import stream_manifest

    report = check_dataset(stream_manifest(args.manifest), num_frames=args.frames, fps=args.fps,
                           workers=args.workers, progress=True)
    if report.ok:
        print(report.summary())
        return 0
    print(format_report(report))
    return 1
