"""`shiftvdm generate`: K generated clips per real clip, conditioned on its first frame (the critic's fakes).

    shiftvdm generate --model PATH [--lora PATH] --data REAL --out DIR --per-clip K
                      [--steps N --seed S --frames T --height H --width W --fps F --format mp4|npy|gif]

Writes ``DIR/clips/<real clip>_<k>.<ext>`` and ``DIR/manifest.jsonl``, one line per fake with
``source`` = the real clip's manifest path (what `shiftvdm train-critic` pairs and splits by), the
sample index ``k`` and the seed. Each real clip's K samples come from their own generator,
``generator_for(seed, "generate", clip index)``, so a rerun skips finished clips and gives the same
result as an uninterrupted run. ``--clips-per-call N`` samples N real clips' fakes in one sampler call
(faster for small models; the noise then comes from one generator per group of N clips,
``generator_for(seed, "generate", "group", N, first index)``, so the fakes depend on N and a rerun must use
the same N to skip the same groups). Real and fake clips should be stored in the same format: the
discriminators see raw intensity gradients, and a codec difference is a shortcut for them
(shift-reference-rewards.md §8.14); use ``--format npy`` for exact frames.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path

import torch

from shiftvdm.backbone import detect_backbone, load_backbone_from_path
from shiftvdm.data.check import CheckReport, check_entry, mixed_clip_warnings
from shiftvdm.data.dataset import VideoClipDataset, entry_fps_hint
from shiftvdm.data.manifest import ClipEntry, load_manifest, write_manifest
from shiftvdm.data.video_io import read_video, to_tensor, to_uint8, write_video
from shiftvdm.errors import ConfigError, DataError, OutputError
from shiftvdm.recipes.args import parse_command_line
from shiftvdm.utils.atomic import sweep_stale
from shiftvdm.utils.finite import check_output_finite
from shiftvdm.utils.outputs import (
    check_continuable,
    check_output_dir,
    continue_or_replace,
    model_identity,
    read_stamp,
    removal_command,
)
from shiftvdm.utils.outputs import entries as folder_entries
from shiftvdm.utils.run_lock import run_lock
from shiftvdm.utils.seeding import generator_for

logger = logging.getLogger(__name__)

DEFAULT_FPS = 8.0


def fake_name(entry: ClipEntry, k: int) -> str:
    """File stem of the k-th fake of a real clip: its manifest path without extension, '/' -> '__'."""
    stem = Path(entry.relpath.replace("\\", "/")).with_suffix("").as_posix().lstrip("./")
    return f"{stem.replace('/', '__')}_{k}"


def _backbone_options(model: Path, frames: int | None, height: int | None, width: int | None) -> dict:
    options: dict = {}
    if frames is not None:
        options["num_frames"] = frames
    if height is None and width is None:
        return options
    if detect_backbone(model) == "toy":  # the toy model is square: one `size`
        if height is not None and width is not None and height != width:
            raise ConfigError(f"the toy backbone makes square clips; got --height {height} --width {width}")
        options["size"] = height if height is not None else width
    else:
        if height is not None:
            options["height"] = height
        if width is not None:
            options["width"] = width
    return options


def _clip_fps(entry: ClipEntry, fps: float | None) -> float:
    if fps is not None:
        return fps
    hint = entry_fps_hint(entry)
    if hint is not None:
        return hint
    try:
        return float(read_video(entry.path, max_frames=1).fps)
    except DataError:
        return DEFAULT_FPS


GENERATE_OUTPUTS = ("clips", "manifest.jsonl")


def check_generate_out(out: Path, inputs: list) -> None:
    """--out is new, empty, or an earlier `generate` output (stamped; whether its inputs allow a rerun is
    ``check_continuable``'s). Reads only."""
    check_output_dir(out, "--out", inputs=inputs)
    if not out.is_dir() or not folder_entries(out):
        return
    stamp = read_stamp(out)
    if stamp is not None:
        if stamp.get("command") != "generate":  # made by another command: refused, with or without --overwrite
            raise OutputError(f"--out {out}: holds outputs of `shiftvdm {stamp.get('command')}`, not an earlier "
                              "`shiftvdm generate` output; choose a new folder so that no dataset is overwritten")
        return
    foreign = sorted(p.name for p in out.iterdir() if p.name not in ("clips", "manifest.jsonl", ".lock"))
    manifest = out / "manifest.jsonl"
    if not foreign and manifest.is_file():
        try:  # generate's records name their real clip and sample index
            ours = all(e.source is not None and "sample" in e.meta for e in load_manifest(manifest).entries)
        except DataError:
            ours = False
        if not ours:
            foreign = ["manifest.jsonl (not written by `shiftvdm generate`)"]
    if foreign:
        raise OutputError(f"--out {out}: holds files that are not an earlier `shiftvdm generate` output "
                          f"({', '.join(foreign[:5])}); choose a new folder so that no dataset is overwritten")
    raise OutputError(f"--out {out}: holds clips from an older shiftvdm that recorded no inputs (model, seed, steps, "
                      f"size, format), so they cannot be continued or replaced safely; remove them by hand "
                      f"(`{removal_command(out, [p for p in GENERATE_OUTPUTS if (out / p).exists()])}`) "
                      "or choose a new folder")


def generate_provenance(model: Path, lora: str | Path | None, entries_: list[ClipEntry], *, per_clip: int,
                        steps: int | None, seed: int, frames: int | None, height: int | None, width: int | None,
                        fps: float | None, fmt: str, deterministic: bool, clips_per_call: int) -> dict:
    """What the fakes depend on (recorded in the folder's stamp): the model's and LoRA's identities, the real
    clips (names and sizes), seed, steps, size, format and grouping. ``--max-clips`` is left out: it only says
    how many of the real clips to do now."""
    listing = hashlib.sha256(json.dumps([[e.relpath, e.path.stat().st_size if e.path.exists() else None]
                                         for e in entries_]).encode()).hexdigest()
    return {"model": model_identity(model), "lora": model_identity(lora) if lora is not None else None,
            "real_clips": listing, "per_clip": per_clip, "steps": steps, "seed": seed,
            "size": [frames, height, width], "fps": fps, "format": fmt, "deterministic": deterministic,
            "clips_per_call": clips_per_call}


def prepare_generate_out(out: Path, provenance: dict, *, overwrite: bool) -> None:
    """Under the folder's lock: continue an earlier output made from the same inputs, replace it (``overwrite``:
    its clips and manifest go, other files stay), or refuse naming the inputs that differ; stamp a new one."""
    sweep_stale(out)
    sweep_stale(out / "clips")
    if continue_or_replace(out, "generate", provenance, overwrite=overwrite, outputs=GENERATE_OUTPUTS) == "continue":
        logger.info("%s: continuing an earlier `generate` with the same inputs", out)


def generate(model: str | Path, data: str | Path, out: str | Path, per_clip: int, *, lora: str | Path | None = None,
             steps: int | None = None, seed: int = 0, frames: int | None = None, height: int | None = None,
             width: int | None = None, fps: float | None = None, fmt: str = "mp4", deterministic: bool = False,
             device: str | None = None, max_clips: int = 0, progress: bool = True, clips_per_call: int = 1,
             overwrite: bool = False) -> Path:
    """Generate ``per_clip`` fakes for every real clip of ``data``; returns the manifest path."""
    if per_clip < 1:
        raise ConfigError(f"--per-clip must be >= 1, got {per_clip}")
    if clips_per_call < 1:
        raise ConfigError(f"--clips-per-call must be >= 1, got {clips_per_call}")
    if fmt not in ("mp4", "npy", "gif"):
        raise ConfigError(f"--format must be mp4, npy or gif, got {fmt!r}")
    if steps is not None and steps < 1:
        raise ConfigError(f"--steps must be >= 1 (or omitted for the model's default), got {steps}")
    if max_clips < 0:
        raise ConfigError(f"--max-clips must be >= 0 (0 = all), got {max_clips}")
    if fps is not None and not fps > 0:
        raise ConfigError(f"--fps must be positive, got {fps}")
    out = Path(out)
    check_generate_out(out, [("--data", data), ("--model", model), ("--lora", lora)])
    model = Path(model)
    all_entries = load_manifest(data).entries
    provenance = generate_provenance(model, lora, all_entries, per_clip=per_clip, steps=steps, seed=seed,
                                     frames=frames, height=height, width=width, fps=fps, fmt=fmt,
                                     deterministic=deterministic, clips_per_call=clips_per_call)
    # refused before the model is loaded (prepare_generate_out checks again under the lock)
    check_continuable(out, provenance, overwrite=overwrite, holds="clips generated")
    backbone = load_backbone_from_path(model, **_backbone_options(model, frames, height, width))
    if lora is not None:
        backbone.load_lora(lora)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    backbone.to(device)
    num_frames, clip_h, clip_w = backbone.video_shape
    entries = all_entries[:max_clips] if max_clips else all_entries
    infos: dict = {}
    bad = [(e, check_entry(e, num_frames, infos=infos)) for e in entries]  # decode all first: no clip is written for a bad set
    bad = [(e, reason) for e, reason in bad if reason is not None]
    if bad:
        listed = "\n  ".join(f"{e.relpath}: {reason}" for e, reason in bad[:20])
        raise DataError(f"{data}: {len(bad)} of {len(entries)} real clips cannot be used ({num_frames} frames "
                        f"needed); nothing was written:\n  {listed}")
    for warning in mixed_clip_warnings(CheckReport(root=Path(data), infos=infos), clip_h, clip_w, fps=1.0):
        logger.warning("%s (their first frames condition the model)", warning)  # fps: each fake keeps its clip's
    dataset = VideoClipDataset(entries, num_frames, clip_h, clip_w)
    with run_lock(out, what="--out"):  # one job per folder; a killed one's temporary files swept under it
        prepare_generate_out(out, provenance, overwrite=overwrite)
        made_by = f"--model {model}" + (f" with --lora {lora}" if lora else "")
        return _generate_into(out, backbone, dataset, entries, per_clip, seed, fmt, fps, device, steps,
                              deterministic, clips_per_call, progress, made_by)


def _generate_into(out: Path, backbone, dataset: VideoClipDataset, entries: list[ClipEntry], per_clip: int,
                   seed: int, fmt: str, fps: float | None, device: str, steps: int | None, deterministic: bool,
                   clips_per_call: int, progress: bool, made_by: str) -> Path:
    (out / "clips").mkdir(parents=True, exist_ok=True)
    records = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(entries), desc="generate", dynamic_ncols=True)
    skipped = 0
    for first in range(0, len(entries), clips_per_call):
        group = list(range(first, min(first + clips_per_call, len(entries))))
        paths = {i: [out / "clips" / f"{fake_name(entries[i], k)}.{fmt}" for k in range(per_clip)] for i in group}
        clip_fps = {i: _clip_fps(entries[i], fps) for i in group}
        if all(p.is_file() for i in group for p in paths[i]):
            skipped += len(group)
        else:
            gen = (generator_for(seed, "generate", first) if clips_per_call == 1
                   else generator_for(seed, "generate", "group", clips_per_call, first))
            fakes = _sample_group(backbone, dataset, entries, group, per_clip, gen, device, steps,
                                  deterministic)  # (N, K, F, 3, H, W)
            check_output_finite(fakes, made_by, f"the fakes of {', '.join(entries[i].relpath for i in group)}")
            for n, i in enumerate(group):
                for k, path in enumerate(paths[i]):
                    write_video(path, to_uint8(fakes[n, k]), clip_fps[i])
        for i in group:
            for k, path in enumerate(paths[i]):
                record = {"path": f"clips/{path.name}", "source": entries[i].relpath, "sample": k, "seed": seed,
                          "fps": clip_fps[i]}
                if entries[i].prompt is not None:
                    record["prompt"] = entries[i].prompt
                records.append(record)
        if bar is not None:
            bar.update(len(group))
    if bar is not None:
        bar.close()
    if skipped:
        logger.info("%d real clips already had all %d fakes in %s (kept)", skipped, per_clip, out / "clips")
    manifest = write_manifest(out / "manifest.jsonl", records)
    listed = {Path(r["path"]).name for r in records}
    stale = [p for p in (out / "clips").iterdir() if p.name not in listed and not p.name.startswith(".")]
    for p in stale:  # clips/ is this command's (the stamp says so): files the manifest does not list go
        p.unlink()
    if stale:
        logger.info("removed %d clips of %s that the new manifest does not list", len(stale), out / "clips")
    return manifest


def _sample_group(backbone, dataset: VideoClipDataset, all_entries: list[ClipEntry], indices: list[int], per_clip: int,
                  generator: torch.Generator, device: str, steps: int | None, deterministic: bool) -> torch.Tensor:
    """``per_clip`` samples for each clip ``indices`` of the dataset in one sampler call: (N, K, F, 3, H, W)."""
    entries = [all_entries[i] for i in indices]
    with_prompt = [e.prompt is not None for e in entries]
    if any(with_prompt) and not all(with_prompt):
        missing = [e.relpath for e, has in zip(entries, with_prompt) if not has]
        raise DataError(f"clips {', '.join(missing[:5])} have no prompt while others in the same sampler call do; "
                        "give every clip a prompt, or use --clips-per-call 1")
    prompts = [e.prompt for e in entries] if all(with_prompt) else None
    first_frames = torch.stack([to_tensor(dataset.frames(i))[0] for i in indices])  # (N, 3, H, W) in [-1, 1]
    with torch.no_grad():
        cond = backbone.encode_condition(first_frames.to(device), prompts)
        latents = backbone.sample(cond, per_clip, generator, stochastic=not deterministic, num_inference_steps=steps)
        fakes = backbone.decode(latents.flatten(0, 1))  # (N*K, F, 3, H, W)
    return fakes.unflatten(0, (len(indices), per_clip))


def main(argv: list[str], prog: str = "shiftvdm generate") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Generate K clips per real clip from its first frame.")
    parser.add_argument("--model", required=True, help="model folder (diffusers layout, or a shiftvdm toy model)")
    parser.add_argument("--lora", default=None, help="LoRA weights (.safetensors) to load on the model")
    parser.add_argument("--data", required=True, help="manifest or folder of real clips")
    parser.add_argument("--out", required=True, help="output folder (clips/ and manifest.jsonl)")
    parser.add_argument("--per-clip", type=int, required=True, help="K, generated clips per real clip")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's)")
    parser.add_argument("--seed", type=int, default=0, help="seed (each real clip gets its own stream)")
    parser.add_argument("--frames", type=int, default=None, help="frames per clip (default: the model's)")
    parser.add_argument("--height", type=int, default=None, help="clip height (default: the model's)")
    parser.add_argument("--width", type=int, default=None, help="clip width (default: the model's)")
    parser.add_argument("--fps", type=float, default=None, help="frame rate written (default: the real clip's)")
    parser.add_argument("--format", default="mp4", choices=["mp4", "npy", "gif"], help="output file format")
    parser.add_argument("--deterministic", action="store_true", help="deterministic sampler instead of the rollout one")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--max-clips", type=int, default=0, help="only the first N real clips (0 = all)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier output made from other inputs (default: refuse; the same inputs "
                             "continue it)")
    parser.add_argument("--clips-per-call", type=int, default=1,
                        help="real clips sampled together in one call (faster for small models; fakes depend on it)")
    args = parse_command_line(parser, argv)
    manifest = generate(args.model, args.data, args.out, args.per_clip, lora=args.lora, steps=args.steps,
                        seed=args.seed, frames=args.frames, height=args.height, width=args.width, fps=args.fps,
                        fmt=args.format, deterministic=args.deterministic, device=args.device,
                        max_clips=args.max_clips, progress=not args.no_progress, clips_per_call=args.clips_per_call,
                        overwrite=args.overwrite)
    print(f"wrote {manifest} ({sum(1 for _ in open(manifest))} generated clips)")
    return 0


__all__ = ["fake_name", "generate", "main"]
