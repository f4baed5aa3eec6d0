"""`shiftvdm sample`: one clip from one image with a model folder of any backbone (SVD, Wan, toy), plus a LoRA.

The family is read from the folder (model_index.json / config.json). Each flag is a setting of the backbone's
config; a flag the family does not have (``--motion-bucket`` for Wan, ``--guidance`` for toy...) is an error
naming it, never silently dropped. Flags left out keep the backbone's defaults.

SVD: with ``--sampler euler`` the frames are those of ``StableVideoDiffusionPipeline`` called with
``generator=torch.Generator("cpu").manual_seed(SEED)`` and the same steps, guidance, fps, motion bucket and
noise augmentation (``--seed`` seeds that CPU generator directly, for this parity). ``--sampler
euler-ancestral`` is the stochastic rollout sampler of each backbone (SVD/toy: EDM Euler-ancestral; Wan: its
``sampler`` setting, the flow SDE by default).

With ``--images DIR`` it writes a validation set in the layout VBench-I2V reads: ``--per-image`` clips (5, as
VBench-I2V's protocol) for every image of the folder, named ``<image stem>-<index>.mp4`` (VBench's
``$prompt-$index.mp4``; the VBench-I2V images are named by their caption), clip ``index`` sampled with seed
``--seed + index``, every clip's image and seed recorded in ``vbench_samples.json``. Wan gets the image stem
(the caption) as its prompt unless ``--prompt`` is given.

Example:
    shiftvdm sample --model runs/tiny/model --image first.png --out clip.mp4 --steps 25 --seed 0
    shiftvdm sample --model runs/tiny/model --images vbench_i2v/crop/1-1 --out samples/shift
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import torch

from shiftvdm.backbone import detect_backbone, load_backbone_from_path
from shiftvdm.data.images import load_image
from shiftvdm.data.manifest import is_dataset_file
from shiftvdm.data.video_io import save_raw_frames, write_video
from shiftvdm.errors import ConfigError, DataError, OutputError
from shiftvdm.eval.inputs import IMAGE_EXTENSIONS
from shiftvdm.recipes.args import parse_command_line
from shiftvdm.utils.checkpoint import write_text
from shiftvdm.utils.finite import check_output_finite
from shiftvdm.utils.outputs import check_output_dir, check_output_file

logger = logging.getLogger(__name__)

OUT_EXTENSIONS = (".mp4", ".gif", ".npy")
DEFAULT_OUTPUT_FPS = 16  # frame rate of written clips for backbones without an fps setting (Wan2.x renders 16 fps)
VBENCH_PER_IMAGE = 5  # VBench-I2V samples 5 videos per image-prompt pair
VBENCH_CRF = 10  # VBench's sampling pseudo-code writes H.264 at crf 10
VBENCH_RECORD = "vbench_samples.json"


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Sample a clip from an image with a model folder.")
    parser.add_argument("--model", required=True, help="model folder (diffusers SVD/Wan layout, or shiftvdm's)")
    parser.add_argument("--lora", help="LoRA .safetensors written by shiftvdm (sft/shift/save_lora)")
    parser.add_argument("--image", help="conditioning image (first frame)")
    parser.add_argument("--images", help="folder of conditioning images: write a VBench-I2V set into the --out "
                                         "folder (<image stem>-<index>.mp4)")
    parser.add_argument("--per-image", dest="per_image", type=int, default=VBENCH_PER_IMAGE,
                        help=f"with --images: clips per image, seeds --seed, --seed+1, ... (default "
                             f"{VBENCH_PER_IMAGE}, as VBench-I2V)")
    parser.add_argument("--prompt", help="text prompt (Wan; default the empty prompt)")
    parser.add_argument("--out", required=True,
                        help="output: .mp4, .gif or .npy (raw float32 T×H×W×3 in [0, 1], not quantised); with "
                             "--images a folder")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the backbone's, 25 for SVD/Wan)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the CPU torch.Generator (default 0)")
    parser.add_argument("--sampler", choices=("euler", "euler-ancestral"), default="euler",
                        help="euler: deterministic (SVD: = StableVideoDiffusionPipeline); euler-ancestral: the "
                             "stochastic rollout sampler")
    parser.add_argument("--guidance", help="SVD: MIN,MAX guidance over the frames (default 1.0,3.0); Wan: one scale")
    parser.add_argument("--frames", type=int, help="frames (default: the model's)")
    parser.add_argument("--fps", type=int, help="SVD: fps conditioning (the UNet gets fps-1); output frame rate")
    parser.add_argument("--motion-bucket", type=int, help="SVD: motion bucket id (default 127)")
    parser.add_argument("--noise-aug", type=float, help="SVD: conditioning-frame noise σ (default 0.02)")
    parser.add_argument("--height", type=int, help="height in pixels (default: the model's)")
    parser.add_argument("--width", type=int, help="width in pixels (default: the model's)")
    parser.add_argument("--decode-chunk-size", type=int, help="SVD: frames per VAE decode call (default 8)")
    parser.add_argument("--eta", type=float, help="SVD/toy: ancestral noise of euler-ancestral (default 1.0 / 0.5)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                        help="base weights (default: the backbone's; LoRA weights stay float32)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available, as generate)")
    return parser


# flag -> {backbone: option of its config}; a flag given for a backbone not listed is refused with its name.
FLAG_OPTIONS: dict[str, dict[str, str]] = {
    "steps": {"svd": "num_inference_steps", "wan": "num_inference_steps", "toy": "num_inference_steps"},
    "frames": {"svd": "num_frames", "wan": "num_frames"},
    "height": {"svd": "height", "wan": "height"},
    "width": {"svd": "width", "wan": "width"},
    "fps": {"svd": "fps"},
    "motion_bucket": {"svd": "motion_bucket_id"},
    "noise_aug": {"svd": "noise_aug_strength"},
    "decode_chunk_size": {"svd": "decode_chunk_size"},
    "eta": {"svd": "sampler_eta", "toy": "eta"},
    "dtype": {"svd": "dtype", "wan": "dtype", "toy": "dtype"},
}


def backbone_options(name: str, args: argparse.Namespace) -> dict:
    """The backbone options the given flags set (flags left out set nothing)."""
    options = {}
    for flag, by_backbone in FLAG_OPTIONS.items():
        value = getattr(args, flag)
        if value is None:
            continue
        if name not in by_backbone:
            raise ConfigError(f"--{flag.replace('_', '-')}: not a setting of the {name} backbone "
                              f"(only of {', '.join(by_backbone)})")
        options[by_backbone[name]] = value
    if args.guidance is not None:
        low, high = parse_guidance(args.guidance)
        if name == "svd":
            options.update(min_guidance_scale=low, max_guidance_scale=high)
        elif name == "wan" and low == high:
            options["guidance_scale"] = high
        else:
            what = "one scale (Wan has no per-frame ramp)" if name == "wan" else "not a setting of the toy backbone"
            raise ConfigError(f"--guidance {args.guidance!r}: {what}")
    if args.prompt is not None and name != "wan":
        raise ConfigError(f"--prompt: the {name} backbone is image-to-video only (no text conditioning)")
    return options


def parse_guidance(text: str) -> tuple[float, float]:
    """'MIN,MAX' (or one number for both) -> (min, max)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(math.isfinite(v) for v in values) or min(values) < 0:
        raise ConfigError(f"--guidance: expected MIN,MAX (two non-negative numbers, e.g. 1.0,3.0), got {text!r}")
    return values[0], values[1]


def _check_common(args: argparse.Namespace) -> None:
    if args.lora is not None and not Path(args.lora).is_file():
        raise DataError(f"{args.lora}: missing (no such LoRA file)")
    if args.guidance is not None:
        parse_guidance(args.guidance)


def _load(args: argparse.Namespace):
    """The backbone with the flags' options and the LoRA, on the device; (family name, backbone)."""
    name = detect_backbone(args.model)
    backbone = load_backbone_from_path(args.model, **backbone_options(name, args))
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    backbone.to(args.device)
    if args.lora:
        backbone.load_lora(args.lora)
    _, height, width = backbone.video_shape
    factor = getattr(backbone, "spatial_factor", 1)
    if height % factor or width % factor:
        raise ConfigError(f"--height {height} / --width {width}: this model needs both divisible by {factor}")
    return name, backbone


def _sample(backbone, args: argparse.Namespace, image_path: str | Path, prompt: str | None, seed: int):
    """One clip, float32 (F, H, W, 3) in [0, 1], from the image and the seed of a CPU generator."""
    _, height, width = backbone.video_shape
    image = load_image(image_path, height, width)
    cond = backbone.encode_condition(image.to(args.device), [prompt] if prompt is not None else None)
    generator = torch.Generator("cpu").manual_seed(seed)
    latents = backbone.sample(cond, 1, generator, stochastic=args.sampler == "euler-ancestral")
    with torch.no_grad():
        video = backbone.decode(latents[:, 0])[0]  # (F, 3, H, W) in [-1, 1]
    model = f"--model {args.model}" + (f" with --lora {args.lora}" if args.lora else "")
    check_output_finite(video, model, f"the clip of seed {seed}")  # clamp would hide NaN as black frames
    return (video * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()  # the pipeline's postprocess


def vbench_targets(images: Path, per_image: int) -> list[tuple[Path, int, str]]:
    """(image, index, clip file name) of a VBench-I2V set: ``<image stem>-<index>.mp4``, images sorted by name."""
    files = sorted(p for p in images.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"--images {images}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the folder")
    stems = [p.stem for p in files]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise DataError(f"--images {images}: several images share the name {twice[0]!r} (VBench names clips by "
                        "image stem): keep one")
    return [(p, i, f"{p.stem}-{i}.mp4") for p in files for i in range(per_image)]


def sample_vbench_set(args: argparse.Namespace) -> int:
    """--images: every image's --per-image clips in the VBench-I2V layout, with their seeds recorded."""
    images, out = Path(args.images), Path(args.out)
    if not images.is_dir():
        raise DataError(f"--images {images}: not a folder of images")
    if args.image is not None:
        raise ConfigError("--image and --images: give one (--images writes a folder of clips)")
    if args.per_image < 1:
        raise ConfigError(f"--per-image must be at least 1, got {args.per_image}")
    _check_common(args)
    targets = vbench_targets(images, args.per_image)
    check_output_dir(out, "--out", inputs=[("--images", images), ("--model", args.model)])
    existing = [name for _, _, name in targets if (out / name).exists()]
    if existing:
        raise OutputError(f"--out {out}: {existing[0]} exists ({len(existing)} of the set's clips do); "
                          "choose an empty folder (nothing is overwritten)")
    name, backbone = _load(args)
    fps = args.fps or getattr(backbone.config, "fps", DEFAULT_OUTPUT_FPS)
    out.mkdir(parents=True, exist_ok=True)
    record = []
    for image, index, clip_name in targets:
        prompt = (args.prompt if args.prompt is not None else image.stem) if name == "wan" else None
        seed = args.seed + index
        write_video(out / clip_name, _sample(backbone, args, image, prompt, seed), fps=fps, crf=VBENCH_CRF)
        record.append({"video": clip_name, "image": image.name, "index": index, "seed": seed, "prompt": prompt})
        logger.info("wrote %s", out / clip_name)
    text = json.dumps({"model": str(args.model), "lora": args.lora, "sampler": args.sampler,
                       "steps": backbone.config.num_inference_steps, "videos": record}, indent=2) + "\n"
    write_text(out / VBENCH_RECORD, text)
    num_frames, height, width = backbone.video_shape
    print(f"wrote {len(record)} clips ({args.per_image} per image, seeds {args.seed}..{args.seed + args.per_image - 1}) "
          f"to {out} in the VBench-I2V layout: {name} backbone, {num_frames} frames of {height}x{width}; "
          f"seeds in {out / VBENCH_RECORD}")
    return 0


def main(argv: list[str], prog: str = "shiftvdm sample") -> int:
    args = parse_command_line(build_parser(prog), argv)
    if args.images is not None:
        return sample_vbench_set(args)
    if args.image is None:
        raise ConfigError("give --image (one clip) or --images (a VBench-I2V set)")
    out = Path(args.out)
    if out.suffix.lower() not in OUT_EXTENSIONS:
        raise ConfigError(f"--out {out}: unsupported extension {out.suffix!r}, expected one of "
                          f"{', '.join(OUT_EXTENSIONS)}")
    if Path(args.image).is_dir():
        raise DataError(f"{args.image}: is a folder, expected an image file (--images takes a folder)")
    if not Path(args.image).is_file():
        raise DataError(f"{args.image}: missing (no such image file)")
    _check_common(args)

    check_output_file(out, "--out", inputs=[("--image", args.image), ("--lora", args.lora), ("--model", args.model)],
                      dataset_file=is_dataset_file)

    name, backbone = _load(args)
    num_frames, height, width = backbone.video_shape
    frames = _sample(backbone, args, args.image, args.prompt, args.seed)
    if out.suffix.lower() == ".npy":
        save_raw_frames(out, frames)
    else:
        write_video(out, frames, fps=args.fps or getattr(backbone.config, "fps", DEFAULT_OUTPUT_FPS))
    steps = backbone.config.num_inference_steps
    print(f"wrote {out}: {name} backbone, {num_frames} frames of {height}x{width}, {args.sampler}, {steps} steps, "
          f"seed {args.seed}")
    return 0
