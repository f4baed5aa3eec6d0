"""`shiftvdm export`: fuse a LoRA into its base model and write a self-contained model folder (any backbone).

The family is read from the folder. SVD (latent): the folder is what ``StableVideoDiffusionPipeline.save_pretrained``
writes, so plain ``StableVideoDiffusionPipeline.from_pretrained(OUT)`` loads and samples it — the supported way to
take an SVD LoRA to diffusers (in diffusers 0.42.1 the SVD pipeline has no ``load_lora_weights``); a pixel-space
SVD model is written in shiftvdm's layout. Wan: ``WanImageToVideoPipeline.save_pretrained``'s layout (A14B: both
experts fused, from ``LORA`` and its ``.transformer_2`` file). Toy: the ``ToyVideoUNet`` folder
(``ToyVideoUNet.from_pretrained(OUT)``) plus its ``toy_backbone.json``.

The folder is written next to OUT under a temporary name and renamed into place when complete, so an
interrupted export never leaves a half-written OUT, and an existing OUT is kept unless ``--overwrite``.

Example:
    shiftvdm export --model models/svd --lora runs/shift/lora/step_1000.safetensors --out models/svd_shift
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from shiftvdm.backbone import detect_backbone, load_backbone_from_path
from shiftvdm.errors import ConfigError, DataError
from shiftvdm.recipes.args import parse_command_line
from shiftvdm.utils.atomic import staged_dir, staging_path, sweep_staging
from shiftvdm.utils.outputs import check_creatable, check_output_dir, check_replaceable, model_identity, write_stamp
from shiftvdm.utils.outputs import entries as folder_entries
from shiftvdm.utils.finite import check_output_finite

logger = logging.getLogger(__name__)


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Fuse a LoRA and write a diffusers-format model folder.")
    parser.add_argument("--model", required=True, help="base model folder")
    parser.add_argument("--lora", required=True, help="LoRA .safetensors written by shiftvdm")
    parser.add_argument("--out", required=True, help="output folder (must not exist or be empty, unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT folder")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="dtype of the written weights (default float32)")
    return parser


def main(argv: list[str], prog: str = "shiftvdm export") -> int:
    args = parse_command_line(build_parser(prog), argv)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise ConfigError(f"--out {out}: folder exists and is not empty (choose another folder or pass --overwrite)")
    if not Path(args.lora).is_file():
        raise DataError(f"{args.lora}: missing (no such LoRA file)")

    check_output_dir(out, "--out", inputs=[("--model", args.model), ("--lora", args.lora)])
    replaced = check_replaceable(out, "export") if args.overwrite else []  # only a folder export made
    check_creatable(staging_path(out), "--out")  # the staging folder beside OUT

    name = detect_backbone(args.model)
    backbone = load_backbone_from_path(args.model, dtype=args.dtype)  # the base in the written dtype
    backbone.load_lora(args.lora)  # float32, merged into that base by fuse_lora
    backbone.fuse_lora()
    check_output_finite(backbone, f"--model {args.model} + --lora {args.lora}", f"the fused model {out}")

    # built beside OUT and swapped in when complete: a full disk or a kill keeps the previous OUT; files in it
    # that an earlier export did not write (its stamp) move over to the new folder
    sweep_staging(out)  # what a killed export left beside OUT
    carry = sorted(folder_entries(out) - set(replaced)) if out.is_dir() else []
    provenance = {"model": model_identity(args.model), "lora": model_identity(args.lora), "dtype": args.dtype}
    with staged_dir(out, carry=carry) as staging:
        backbone.save_pretrained(staging)
        write_stamp(staging, "export", inputs=provenance, outputs=folder_entries(staging))
    print(f"wrote {out} ({name} backbone, {args.dtype}) = {args.model} + LoRA {args.lora} (fused)")
    return 0
