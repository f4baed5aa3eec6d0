"""`shiftvdm sample`: one clip from one image with an SVD model folder (optionally plus a LoRA).

With ``--sampler euler`` the frames are those of ``StableVideoDiffusionPipeline`` called with
``generator=torch.Generator("cpu").manual_seed(SEED)`` and the same steps, guidance, fps, motion bucket and
noise augmentation (``--seed`` seeds that CPU generator directly, for this parity). ``--sampler
euler-ancestral`` is the stochastic EDM sampler used for rollouts.

Example:
    shiftvdm sample --model runs/tiny/model --image first.png --out clip.mp4 --steps 25 --seed 0
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import numpy as np
import torch

from shiftvdm.errors import ConfigError, DataError
from shiftvdm.utils.checkpoint import atomic_write

logger = logging.getLogger(__name__)

OUT_EXTENSIONS = (".mp4", ".gif", ".npy")


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Sample a clip from an image with an SVD model.")
    parser.add_argument("--model", required=True, help="model folder (diffusers SVD layout or shiftvdm pixel-space)")
    parser.add_argument("--lora", help="LoRA .safetensors written by shiftvdm (sft/shift/save_lora)")
    parser.add_argument("--image", required=True, help="conditioning image (first frame)")
    parser.add_argument("--out", required=True,
                        help="output: .mp4, .gif or .npy (raw float32 T×H×W×3 in [0, 1], not quantised)")
    parser.add_argument("--steps", type=int, default=25, help="denoising steps (default 25)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the CPU torch.Generator (default 0)")
    parser.add_argument("--sampler", choices=("euler", "euler-ancestral"), default="euler",
                        help="euler: deterministic, = StableVideoDiffusionPipeline; euler-ancestral: stochastic")
    parser.add_argument("--guidance", default="1.0,3.0", help="MIN,MAX guidance over the frames (default 1.0,3.0)")
    parser.add_argument("--frames", type=int, help="frames (default: the model's num_frames)")
    parser.add_argument("--fps", type=int, default=7, help="fps conditioning (the UNet gets fps-1) and output rate")
    parser.add_argument("--motion-bucket", type=int, default=127, help="motion bucket id (default 127)")
    parser.add_argument("--noise-aug", type=float, default=0.02, help="conditioning-frame noise σ (default 0.02)")
    parser.add_argument("--height", type=int, help="height in pixels (default: the model's)")
    parser.add_argument("--width", type=int, help="width in pixels (default: the model's)")
    parser.add_argument("--decode-chunk-size", type=int, default=8, help="frames per VAE decode call (default 8)")
    parser.add_argument("--eta", type=float, default=1.0, help="ancestral noise of euler-ancestral (default 1.0)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    return parser


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


def load_image(path: str | Path, height: int, width: int) -> torch.Tensor:
    """An image file -> (1, 3, height, width) float32 in [-1, 1].

    An image of another size is scaled to cover height×width (Lanczos, as diffusers resizes) and centre-cropped;
    the pipeline would stretch it instead. The arithmetic (uint8 / 255, then 2x − 1, NCHW view of NHWC memory)
    is the pipeline's own, so the tensor is bit-identical to what ``StableVideoDiffusionPipeline`` feeds its VAE.
    """
    import PIL.Image

    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected an image file")
    if not path.is_file():
        raise DataError(f"{path}: missing (no such image file)")
    try:
        with PIL.Image.open(path) as handle:
            image = handle.convert("RGB")
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable image ({exc})") from exc
    if image.size != (width, height):
        scale = max(width / image.width, height / image.height)
        size = (max(width, math.ceil(image.width * scale)), max(height, math.ceil(image.height * scale)))
        image = image.resize(size, PIL.Image.Resampling.LANCZOS)
        left, top = (image.width - width) // 2, (image.height - height) // 2
        image = image.crop((left, top, left + width, top + height))
        logger.info("%s: resized and centre-cropped to %dx%d", path, width, height)
    array = np.array(image)[None].astype(np.float32) / 255.0  # (1, H, W, 3)
    return torch.from_numpy(array.transpose(0, 3, 1, 2)) * 2.0 - 1.0


def save_raw_frames(path: Path, frames: np.ndarray) -> Path:
    """Atomically write float32 (T, H, W, 3) frames in [0, 1] as .npy, unquantised (for exact comparisons)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle, so np.save does not append ".npy" to the temporary name
            np.save(handle, np.ascontiguousarray(frames, dtype=np.float32), allow_pickle=False)

    return atomic_write(path, write)


def main(argv: list[str], prog: str = "shiftvdm sample") -> int:
    args = build_parser(prog).parse_args(argv)
    out = Path(args.out)
    if out.suffix.lower() not in OUT_EXTENSIONS:
        raise ConfigError(f"--out {out}: unsupported extension {out.suffix!r}, expected one of "
                          f"{', '.join(OUT_EXTENSIONS)}")
    if Path(args.image).is_dir():
        raise DataError(f"{args.image}: is a folder, expected an image file")
    if not Path(args.image).is_file():
        raise DataError(f"{args.image}: missing (no such image file)")
    if args.lora is not None and not Path(args.lora).is_file():
        raise DataError(f"{args.lora}: missing (no such LoRA file)")
    min_guidance, max_guidance = parse_guidance(args.guidance)
    from shiftvdm.utils.outputs import check_output_file

    check_output_file(out, "--out", inputs=[("--image", args.image), ("--lora", args.lora), ("--model", args.model)])

    from shiftvdm.backbone.svd import SVDBackbone, SVDConfig
    from shiftvdm.data.video_io import write_video

    config = SVDConfig(pretrained_path=args.model, dtype=args.dtype, num_frames=args.frames, height=args.height,
                       width=args.width, fps=args.fps, motion_bucket_id=args.motion_bucket,
                       noise_aug_strength=args.noise_aug, num_inference_steps=args.steps,
                       min_guidance_scale=min_guidance, max_guidance_scale=max_guidance,
                       decode_chunk_size=args.decode_chunk_size, sampler_eta=args.eta)
    backbone = SVDBackbone.from_pretrained(args.model, config).to(args.device)
    if args.lora:
        backbone.load_lora(args.lora)
    num_frames, height, width = backbone.video_shape
    factor = backbone.spatial_factor
    if height % factor or width % factor:
        raise ConfigError(f"--height {height} / --width {width}: this model needs both divisible by {factor}")
    image = load_image(args.image, height, width)
    cond = backbone.encode_condition(image.to(args.device))
    generator = torch.Generator("cpu").manual_seed(args.seed)
    latents = backbone.sample(cond, 1, generator, stochastic=args.sampler == "euler-ancestral")
    with torch.no_grad():
        video = backbone.decode(latents[:, 0])[0]  # (F, 3, H, W) in [-1, 1]
    frames = (video * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()  # the pipeline's postprocess
    if out.suffix.lower() == ".npy":
        save_raw_frames(out, frames)
    else:
        write_video(out, frames, fps=args.fps)
    print(f"wrote {out}: {num_frames} frames of {height}x{width}, {args.sampler}, {args.steps} steps, "
          f"seed {args.seed}")
    return 0
