"""Bad inputs through the CLI, as a user runs it (issue 15's corpus, by class): each case asserts the exit
code, that no traceback escapes, that the message names the bad input, and that nothing was written or
damaged. Cases run in-process (``shiftvdm.cli.main``); the kill -9 case spawns one subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from shiftvdm.backbone.tiny import save_tiny_svd
from shiftvdm.backbone.toy import ToyBackbone, ToyConfig
from shiftvdm.cli import main as cli
from shiftvdm.data.synthetic import write_synthetic_dataset

TOY = {"num_frames": 4, "size": 16, "block_out_channels": [8, 8], "layers_per_block": 1, "num_mid_blocks": 1,
       "num_inference_steps": 2, "mid_attention": False, "norm_num_groups": 4}


def _toy_options() -> list[str]:
    out = []
    for k, v in TOY.items():
        out.append(f"backbone.options.{k}={json.dumps(v) if isinstance(v, list) else str(v).lower() if isinstance(v, bool) else v}")
    return out


def sft_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["sft", "backbone.name=toy", *_toy_options(), f"data.train={data}", "data.num_frames=4", "data.height=16",
            "data.width=16", "lora.rank=2", "lora.alpha=2", "rollout.buffer_size=4", "rollout.batch_size=2",
            "run.progress=false", "run.checkpoint_every=0", "run.max_steps=1", "optim.warmup_steps=0",
            f"run.out_dir={out}", *extra]


def toy_world(root: Path, clips: int = 2, *, lora: bool = False) -> dict[str, Path]:
    """A dataset of ``clips`` one-sprite clips and a saved toy model (and, with ``lora``, its LoRA file)."""
    ds = root / "ds"
    write_synthetic_dataset(ds, clips, 4, 16, seed=1, format="npy", num_sprites=1, sprite_size=(3.0, 4.0),
                            speed=(1.5, 2.5), background="flat", overwrite=True)
    torch.manual_seed(0)
    toy = ToyBackbone(ToyConfig(**TOY))
    toy.save_pretrained(root / "toy")
    world = {"root": root, "ds": ds, "toy": root / "toy"}
    if lora:
        toy.add_lora(2, 2.0)
        toy.save_lora(root / "lora.safetensors")
        world["lora"] = root / "lora.safetensors"
    return world


def make_world(root: Path) -> dict[str, Path]:
    """A small dataset, a toy model and its LoRA, a tiny SVD folder, an image, a read-only folder."""
    ds = root / "ds"
    write_synthetic_dataset(ds, 4, 4, 16, seed=1, format="npy", num_sprites=1, sprite_size=(3.0, 4.0),
                            speed=(1.5, 2.5), background="flat", overwrite=True)
    torch.manual_seed(0)
    toy = ToyBackbone(ToyConfig(**TOY))
    toy.save_pretrained(root / "toy")
    toy.add_lora(2, 2.0)
    toy.save_lora(root / "toy_lora.safetensors")
    svd = save_tiny_svd(root / "svd", seed=1, num_frames=4, sample_size=16)
    from PIL import Image

    Image.fromarray(np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "img.png")
    (root / "afile").write_text("not a folder\n")
    ro = root / "ro"
    ro.mkdir()
    readonly = subprocess.run(["chattr", "+i", str(ro)], capture_output=True).returncode == 0 if os.geteuid() == 0 \
        else (os.chmod(ro, 0o555) or True)
    w = {"root": root, "ds": ds, "toy": root / "toy", "toy_lora": root / "toy_lora.safetensors", "svd": svd,
         "img": root / "img.png", "afile": root / "afile", "ro": ro if readonly else None}
    return w


def release_world(w: dict[str, Path]) -> None:
    ro = w["root"] / "ro"
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(ro)], capture_output=True)
    os.chmod(ro, 0o755)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    w = make_world(tmp_path_factory.mktemp("bad"))
    yield w
    release_world(w)


def tree_digest(path: Path) -> dict[str, str]:
    """Every file under ``path`` (or the file itself) -> SHA-256 of its bytes."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@dataclass
class Case:
    cid: str
    argv: list[str]
    rc: int
    names: list[str]  # substrings the error must contain (the input at fault)
    absent: list[str] = field(default_factory=list)  # paths that must not exist afterwards
    keep: list[str] = field(default_factory=list)  # paths whose bytes must not change


def _npy(path: Path, array: np.ndarray) -> Path:
    np.save(path, array, allow_pickle=False)
    return path


def _poison(path: Path) -> None:
    """A few bytes of the first float tensor's data set to NaN, same file size (what a damaged disk or copy does)."""
    from safetensors.torch import save_file

    tensors = load_file(str(path))
    name = next(k for k, t in tensors.items() if t.is_floating_point())
    tensors[name].view(-1)[:4] = float("nan")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    save_file(tensors, str(path), metadata=metadata)


def build_case(cid: str, w: dict[str, Path], tmp: Path) -> Case:
    """The inputs of one case, built in ``tmp``; the corpus id it stands for is in the name."""
    ds, toy, svd, img = str(w["ds"]), str(w["toy"]), str(w["svd"]), str(w["img"])
    good = sorted(w["ds"].glob("clips/*.npy"))
    rng = np.random.default_rng(0)

    def bad_set(name: str, array: np.ndarray | None = None, raw: bytes | None = None) -> Path:
        d = tmp / "set"
        d.mkdir(exist_ok=True)
        for g in good[:2]:
            shutil.copy(g, d / g.name)
        target = d / name
        if array is not None:
            _npy(target, array)
        elif raw is not None:
            target.write_bytes(raw)
        return d

    floats = rng.random((4, 16, 16, 3)).astype(np.float32)
    if cid == "V-check-float255_npy":
        return Case(cid, ["data", "check", str(bad_set("f255.npy", floats * 255))], 1, ["f255.npy", "[0, 1]"])
    if cid == "V-check-negfloat_npy":
        return Case(cid, ["data", "check", str(bad_set("neg.npy", floats * 2 - 1))], 1, ["neg.npy", "[0, 1]"])
    if cid == "V-eval-float255_npy":
        return Case(cid, ["eval", "--strict", str(bad_set("f255.npy", floats * 255)), "--metrics", "flicker"], 1,
                    ["f255.npy"])
    if cid == "V-check-mp4_as_npy":
        head = b"\x00\x00\x00\x20ftypisom" + bytes(200)
        return Case(cid, ["data", "check", str(bad_set("v.npy", raw=head))], 1, ["v.npy", "MP4", "real extension"])
    if cid == "V-check-loop_a_mp4":
        d = bad_set("x.npy", floats)
        os.symlink(d / "b.mp4", d / "a.mp4")
        os.symlink(d / "a.mp4", d / "b.mp4")
        return Case(cid, ["data", "check", str(d)], 1, ["a.mp4", "symbolic link loop"])
    if cid == "V-check-folder-lists-dirs":
        d = bad_set("x.npy", floats)
        (d / "dir.mp4").mkdir()
        return Case(cid, ["data", "check", str(d)], 1, ["dir.mp4", "is a folder"])
    if cid.startswith("M-"):
        d = tmp / "m"
        d.mkdir()
        for g in good[:2]:
            shutil.copy(g, d / g.name)
        names = [g.name for g in good[:2]]
        if cid == "M-check-nonutf8-jsonl":
            (d / "manifest.jsonl").write_bytes(b'{"path": "%s"}\n{"path": "\xff\xfe.npy"}\n' % names[0].encode())
            return Case(cid, ["data", "check", str(d / "manifest.jsonl")], 1, ["manifest.jsonl line 2", "UTF-8"])
        if cid == "M-check-nonutf8-csv":
            (d / "manifest.csv").write_bytes(b"path\n\xff.npy\n")
            return Case(cid, ["data", "check", str(d / "manifest.csv")], 1, ["manifest.csv line 2", "UTF-8"])
        if cid == "M-train-nonutf8":
            (d / "manifest.jsonl").write_bytes(b'{"path": "\xff.npy"}\n')
            return Case(cid, sft_args(d / "manifest.jsonl", tmp / "run"), 1, ["manifest.jsonl", "UTF-8"],
                        absent=[str(tmp / "run")])
        if cid == "M-eval-nonutf8":
            (d / "manifest.jsonl").write_bytes(b'{"path": "\xff.npy"}\n')
            return Case(cid, ["eval", str(d / "manifest.jsonl")], 1, ["manifest.jsonl", "UTF-8"])
        if cid == "M-check-csv-bom":
            (d / "manifest.csv").write_bytes(("\ufeffpath,fps\n" + "".join(f"{n},8\n" for n in names)).encode())
            return Case(cid, ["data", "check", str(d / "manifest.csv")], 0, [])
        if cid == "M-check-deep-json":
            (d / "manifest.json").write_text("[" * 20000 + "]" * 20000)
            return Case(cid, ["data", "check", str(d / "manifest.json")], 1, ["manifest.json", "nested too deeply"])
        if cid in ("M-check-duplicates", "M-train-duplicates"):
            (d / "manifest.jsonl").write_text("".join(json.dumps({"path": names[0]}) + "\n" for _ in range(3)))
            argv = (["data", "check", str(d / "manifest.jsonl")] if cid == "M-check-duplicates"
                    else sft_args(d / "manifest.jsonl", tmp / "run"))
            return Case(cid, argv, 1, [names[0], "duplicate"], absent=[str(tmp / "run")])
        if cid in ("M-eval-escape-root", "M-eval-abs-etc"):
            other = tmp / "other"
            other.mkdir()
            shutil.copy(good[2], other / "x.npy")
            target = "../other/x.npy" if cid == "M-eval-escape-root" else "/etc/passwd"
            (d / "manifest.jsonl").write_text(json.dumps({"path": target}) + "\n" + json.dumps({"path": names[0]}) + "\n")
            return Case(cid, ["eval", "--strict", str(d / "manifest.jsonl"), "--metrics", "flicker"], 1,
                        ["outside the dataset root"])
        if cid == "M-generate-missing-clip":
            (d / "manifest.jsonl").write_text(json.dumps({"path": names[0]}) + "\n" + json.dumps({"path": "nope.npy"}) + "\n")
            return Case(cid, ["generate", "--model", toy, "--data", str(d / "manifest.jsonl"), "--out",
                              str(tmp / "gen"), "--per-clip", "1", "--no-progress", "--format", "npy"], 1,
                        ["nope.npy", "missing", "nothing was written"], absent=[str(tmp / "gen")])
        if cid == "M-trainreward-one-real":
            (d / "real.jsonl").write_text(json.dumps({"path": names[0]}) + "\n")
            (d / "fake.jsonl").write_text(json.dumps({"path": names[1], "source": names[0]}) + "\n")
            return Case(cid, ["train-critic", "--real", str(d / "real.jsonl"), "--fake", str(d / "fake.jsonl"),
                              "--out", str(tmp / "rw"), "progress=false"], 1, ["at least 2 real clips"],
                        absent=[str(tmp / "rw")])
    if cid.startswith("C-"):
        overrides = {"C-lr-nan": ("optim.lr=nan", "optim.lr"), "C-lr-neg": ("optim.lr=-0.001", "optim.lr"),
                     "C-lr-zero": ("optim.lr=0", "optim.lr"), "C-betas-range": ("optim.betas=[1.5,0.9]", "optim.betas[0]"),
                     "C-wd-neg": ("optim.weight_decay=-1", "optim.weight_decay"),
                     "C-lora-rank-zero": ("lora.rank=0", "lora.rank"), "C-steps-zero": ("run.max_steps=0", "run.max_steps"),
                     "C-steps-neg": ("run.max_steps=-3", "run.max_steps"), "C-ema-2": ("optim.ema_decay=2", "optim.ema_decay"),
                     "C-gradnorm-nan": ("optim.max_grad_norm=nan", "optim.max_grad_norm"),
                     "C-ckpt-every-neg": ("run.checkpoint_every=-1", "run.checkpoint_every"),
                     "C-keep-zero": ("run.keep_checkpoints=0", "run.keep_checkpoints"),
                     "C-nonfinite-neg": ("run.max_nonfinite_steps=-1", "run.max_nonfinite_steps"),
                     "C-frames-zero": ("data.num_frames=0", "data.num_frames"),
                     "C-height-neg": ("data.height=-16", "data.height"), "C-fps-zero": ("data.fps=0", "data.fps"),
                     "C-eps-zero": ("optim.eps=0", "optim.eps"), "C-lr-inf": ("optim.lr=inf", "optim.lr")}
        if cid in overrides:
            override, name = overrides[cid]
            return Case(cid, sft_args(w["ds"], tmp / "run", override), 2, [name], absent=[str(tmp / "run")])
        if cid == "C-yaml-dup-keys":
            (tmp / "dup.yaml").write_text("optim:\n  lr: 1.0e-4\noptim:\n  lr: 2.0e-4\n")
            return Case(cid, ["sft", "--config", str(tmp / "dup.yaml")], 2, ["dup.yaml", "duplicate key 'optim'", "line 3"])
        if cid == "C-yaml-base-list":
            (tmp / "bl.yaml").write_text("base: [a.yaml, b.yaml]\n")
            return Case(cid, ["sft", "--config", str(tmp / "bl.yaml")], 2, ["bl.yaml", "base:"])
        if cid == "C-yaml-billion-laughs-field":
            levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
            for prev, cur in zip("abcdefg", "bcdefgh"):
                levels.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
            (tmp / "laughs.yaml").write_text("\n".join(levels) + "\nlora:\n  targets: *h\n")
            return Case(cid, ["sft", "--config", str(tmp / "laughs.yaml")], 2, ["laughs.yaml", "alias"])
        if cid == "C-out-dir-is-file":
            return Case(cid, sft_args(w["ds"], w["afile"]), 2, [str(w["afile"]), "not a folder"], keep=[str(w["afile"])])
        if cid == "C-out-parent-file":
            return Case(cid, sft_args(w["ds"], w["afile"] / "run"), 2, ["afile", "is a file, not a folder"])
    if cid == "L-train-out-readonly":
        return Case(cid, sft_args(w["ds"], w["ro"] / "run"), 2, ["ro/run", "cannot write"])
    if cid.startswith(("L-sample", "D-sample")):
        base = ["sample", "--model", svd, "--image", img, "--steps", "1"]
        if cid == "L-sample-out-is-dir":
            (tmp / "d.npy").mkdir()
            return Case(cid, [*base, "--out", str(tmp / "d.npy")], 2, ["d.npy", "is a folder"])
        if cid == "L-sample-out-readonly":
            return Case(cid, [*base, "--out", str(w["ro"] / "o.npy")], 2, ["o.npy", "cannot write"])
        if cid == "L-sample-out-parent-is-file":
            return Case(cid, [*base, "--out", str(w["afile"] / "o.npy")], 2, ["afile", "not a folder"])
        if cid == "L-sample-height-odd":
            return Case(cid, [*base, "--height", "17", "--width", "32", "--out", str(tmp / "o.npy")], 2,
                        ["--height 17", "divisible"], absent=[str(tmp / "o.npy")])
        if cid == "L-sample-guidance-nan":
            return Case(cid, [*base, "--guidance", "nan,nan", "--out", str(tmp / "o.npy")], 2, ["--guidance", "nan"],
                        absent=[str(tmp / "o.npy")])
        if cid == "L-sample-image-dir":
            return Case(cid, ["sample", "--model", svd, "--image", str(tmp), "--out", str(tmp / "o.npy")], 1,
                        [str(tmp), "is a folder"])
        if cid == "D-sample-out-over-input-image":
            copy = tmp / "img.npy"
            shutil.copy(img, copy)
            return Case(cid, ["sample", "--model", svd, "--image", str(copy), "--out", str(copy)], 2,
                        ["img.npy", "also the input --image"], keep=[str(copy)])
    if cid == "L-export-out-readonly":
        return Case(cid, ["export", "--model", svd, "--lora", str(w["toy_lora"]), "--out", str(w["ro"] / "fused")], 2,
                    ["fused", "cannot write"])
    if cid.startswith(("L-generate", "D-generate", "W-generate")):
        base = ["generate", "--model", toy, "--data", ds, "--per-clip", "1", "--no-progress", "--format", "npy"]
        if cid == "L-generate-out-is-file":
            return Case(cid, [*base, "--out", str(w["afile"])], 2, ["afile", "not a folder"], keep=[str(w["afile"])])
        if cid == "L-generate-out-readonly":
            return Case(cid, [*base, "--out", str(w["ro"] / "gen")], 2, ["gen", "cannot write"])
        if cid == "L-generate-steps-0":
            return Case(cid, [*base, "--out", str(tmp / "gen"), "--steps", "0"], 2, ["--steps"], absent=[str(tmp / "gen")])
        if cid == "L-generate-max-clips-neg":
            return Case(cid, [*base, "--out", str(tmp / "gen"), "--max-clips", "-1"], 2, ["--max-clips"],
                        absent=[str(tmp / "gen")])
        if cid == "D-generate-into-other-dataset":
            other = tmp / "other"
            shutil.copytree(w["ds"], other)
            return Case(cid, [*base, "--out", str(other)], 2, ["other", "not an earlier `shiftvdm generate` output"],
                        keep=[str(other)])
        if cid == "D-generate-out-is-data":
            copy = tmp / "dscopy"
            shutil.copytree(w["ds"], copy)
            return Case(cid, [*base[:4], str(copy), *base[5:], "--out", str(copy)], 2, ["holds the input --data"],
                        keep=[str(copy)])
        if cid == "W-generate-lora-svd-on-toy":
            from shiftvdm.backbone.svd import SVDBackbone

            b = SVDBackbone.from_pretrained(svd)
            b.add_lora(2, 2)
            b.save_lora(tmp / "svd_lora.safetensors")
            return Case(cid, [*base, "--lora", str(tmp / "svd_lora.safetensors"), "--out", str(tmp / "gen")], 1,
                        ["svd_lora.safetensors"], absent=[str(tmp / "gen")])
    if cid.startswith("L-eval"):
        if cid == "L-eval-json-readonly":
            return Case(cid, ["eval", ds, "--json", str(w["ro"] / "m.json")], 2, ["m.json", "cannot write"])
        if cid == "L-eval-json-is-dir":
            return Case(cid, ["eval", ds, "--json", str(tmp)], 2, [str(tmp), "is a folder"])
        if cid == "L-eval-json-over-input":
            copy = tmp / "dscopy"
            shutil.copytree(w["ds"], copy)
            return Case(cid, ["eval", str(copy), "--json", str(copy / "manifest.jsonl")], 2,
                        ["videos", "would change the dataset"], keep=[str(copy)])
        if cid == "L-eval-reference-missing":
            return Case(cid, ["eval", ds, "--reference", str(tmp / "nope"), "--metrics", "flicker"], 1,
                        ["nope", "--reference"])
        if cid == "L-eval-sprite-threshold-nan":
            return Case(cid, ["eval", ds, "--sprites", "--sprite-threshold", "nan"], 2, ["--sprite-threshold"])
    if cid == "L-synth-out-is-file":
        return Case(cid, ["data", "synth", "--out", str(w["afile"]), "--clips", "1", "--frames", "2", "--size", "16", "--sprite-size", "3,4"], 2,
                    ["afile", "not a folder"], keep=[str(w["afile"])])
    if cid == "L-synth-readonly":
        return Case(cid, ["data", "synth", "--out", str(w["ro"] / "s"), "--clips", "1", "--frames", "2", "--size", "16", "--sprite-size", "3,4"],
                    2, ["cannot write"])
    if cid in ("L-trainreward-out-is-file", "D-trainreward-out-is-dataset"):
        copy = tmp / "dscopy"
        shutil.copytree(w["ds"], copy)
        out = str(w["afile"]) if cid == "L-trainreward-out-is-file" else str(copy)
        return Case(cid, ["train-critic", "--real", str(copy), "--fake", str(copy), "--out", out,
                          "max_steps=2", "progress=false"], 2, ["--out"], keep=[out])
    if cid.startswith("I-"):  # issue 26 class 3: damaged (non-finite) weights are caught where they are loaded
        nan_toy, nan_lora = tmp / "nan_toy", tmp / "nan_lora.safetensors"
        shutil.copytree(w["toy"], nan_toy)
        _poison(nan_toy / "diffusion_pytorch_model.safetensors")
        shutil.copy(w["toy_lora"], nan_lora)
        _poison(nan_lora)
        gen = ["generate", "--data", ds, "--out", str(tmp / "gen"), "--per-clip", "1", "--no-progress", "--format",
               "npy"]
        if cid == "I-sample-nan-model":
            return Case(cid, ["sample", "--model", str(nan_toy), "--image", img, "--out", str(tmp / "o.npy")], 1,
                        [str(nan_toy / "diffusion_pytorch_model.safetensors"), "NaN or infinite", "tensor 'denoiser."],
                        absent=[str(tmp / "o.npy")])
        if cid == "I-generate-nan-model":
            return Case(cid, [*gen, "--model", str(nan_toy)], 1, ["nan_toy", "NaN or infinite"],
                        absent=[str(tmp / "gen")])
        if cid == "I-generate-nan-lora":
            return Case(cid, [*gen, "--model", toy, "--lora", str(nan_lora)], 1,
                        [str(nan_lora), "the LoRA weights hold NaN or infinite values", "lora_"], absent=[str(tmp / "gen")])
        if cid == "I-export-nan-lora":
            return Case(cid, ["export", "--model", toy, "--lora", str(nan_lora), "--out", str(tmp / "fused")], 1,
                        [str(nan_lora), "NaN or infinite"], absent=[str(tmp / "fused")])
        if cid == "I-export-nan-model":
            return Case(cid, ["export", "--model", str(nan_toy), "--lora", str(w["toy_lora"]), "--out",
                              str(tmp / "fused")], 1, ["diffusion_pytorch_model.safetensors", "NaN or infinite"],
                        absent=[str(tmp / "fused")])
        if cid == "I-sft-nan-base":
            return Case(cid, sft_args(w["ds"], tmp / "run", f"backbone.pretrained={nan_toy}"), 1,
                        ["nan_toy", "NaN or infinite"], absent=[str(tmp / "run")])
        if cid == "I-sft-nan-init-lora":
            return Case(cid, sft_args(w["ds"], tmp / "run", f"backbone.pretrained={toy}", f"lora.init_from={nan_lora}"),
                        1, [str(nan_lora), "NaN or infinite"], absent=[str(tmp / "run")])
    if cid.startswith("R-"):  # issue 26 class 4: settings that make a run meaningless, refused naming keys and fix
        rules = {"R-sft-both-weights-0": ("sft", "loss.lambda_sft=0", "loss.lambda_sft, loss.lambda_aw",
                                           "set loss.lambda_sft > 0"),
                 "R-sft-asks-rollouts": ("sft", "loss.lambda_aw=0.1", "mode, loss.lambda_aw", "use `shiftvdm shift`"),
                 "R-shift-group-of-1": ("shift", "rollout.group_size=1", "rollout.group_size, advantage.center",
                                        "set rollout.group_size >= 2"),
                 "R-shift-negative-positive-weight": ("shift", "advantage.positive_weight=-1",
                                                      "advantage.positive_weight", "inverts"),
                 "R-shift-std-eps-0": ("shift", "advantage.std_eps=0", "advantage.std_eps", "set advantage.std_eps > 0"),
                 "R-shift-sampler-steps-0": ("shift", "rollout.num_inference_steps=0", "rollout.num_inference_steps",
                                             "0 does not mean the default"),
                 "R-shift-sampler-steps-neg": ("shift", "rollout.num_inference_steps=-2", "rollout.num_inference_steps",
                                               "at least one step"),
                 "R-shift-refresh-0-steps": ("shift", "critic.d_to_g=0", "critic.refresh, critic.d_to_g",
                                             "set critic.d_to_g > 0")}
        mode, override, keys, fix = rules[cid]
        argv = sft_args(w["ds"], tmp / "run", override, "critic.refresh=true")
        return Case(cid, [mode, *argv[1:]], 2, [keys, fix], absent=[str(tmp / "run")])
    if cid.startswith("P-"):  # issue 26 class 6: paths
        if cid == "P-sft-missing-relative-data":
            return Case(cid, sft_args(Path("no_such_clips"), tmp / "run"), 1,
                        [os.path.abspath("no_such_clips"), "not found"], absent=[str(tmp / "run")])
        if cid == "P-sft-missing-relative-base":
            return Case(cid, sft_args(w["ds"], tmp / "run", "backbone.pretrained=no_such_model"), 1,
                        [os.path.abspath("no_such_model"), "not a folder"], absent=[str(tmp / "run")])
        linked = tmp / "linked"
        (linked / "clips").mkdir(parents=True)
        for g in good[:3]:
            os.symlink(g, linked / "clips" / g.name)  # the targets live in another folder
        if cid == "P-check-symlinked-clips":
            return Case(cid, ["data", "check", str(linked / "clips")], 0, ["all 3 clips are good"])
        if cid == "P-eval-symlinked-clips":
            return Case(cid, ["eval", "--strict", str(linked / "clips"), "--metrics", "flicker"], 0, ["flicker"])
        if cid == "P-check-dangling-symlink":
            os.symlink(tmp / "gone.npy", linked / "clips" / "gone.npy")
            return Case(cid, ["data", "check", str(linked / "clips")], 1, ["gone.npy", "does not exist"])
    if cid.startswith("E-"):  # issue 26 class 7: eval edges
        other = tmp / "other"
        other.mkdir()
        if cid == "E-strict-no-ground-truth-match":
            shutil.copy(good[0], other / "unrelated_name.npy")
            return Case(cid, ["eval", "--strict", ds, "--ground-truth", str(other), "--metrics", "appearance"], 1,
                        ["no ground-truth clip matched any of the 4 videos", "--strict"])
        if cid == "E-frechet-one-reference-window":
            shutil.copy(good[0], other / "only.npy")
            return Case(cid, ["eval", ds, "--reference", str(other), "--metrics", "frechet_motion"], 0,
                        ["Fréchet motion distances not computed", "at least 2 samples in each set, got 4 and 1"])
        if cid == "E-mixed-fps":
            for g in good[:2]:
                shutil.copy(g, other / g.name)
            (other / "manifest.jsonl").write_text(json.dumps({"path": good[0].name, "fps": 8}) + "\n"
                                                  + json.dumps({"path": good[1].name, "fps": 24}) + "\n")
            return Case(cid, ["eval", str(other), "--metrics", "flicker"], 0,
                        ["videos of 2 frame rates", "8 fps: " + good[0].name, "24 fps: " + good[1].name])
    if cid in ("L-report-not-demo", "L-report-empty-dir"):
        folder = tmp / "notdemo"
        folder.mkdir()
        if cid == "L-report-not-demo":
            (folder / "summary.json").write_text('{"steps": 1}\n')  # what an sft run holds
        return Case(cid, ["report", str(folder)], 1, [str(folder), "not a demo run folder"],
                    absent=[str(folder / "report.html")])
    if cid.startswith("O-"):  # ownership of outputs (issue 26): --overwrite replaces only what shiftvdm stamped
        return _ownership_case(cid, w, tmp)
    raise KeyError(cid)


def _ownership_case(cid: str, w: dict[str, Path], tmp: Path) -> Case:
    from shiftvdm.utils.outputs import STAMP_FILE, write_stamp

    ds, toy = str(w["ds"]), str(w["toy"])
    mine = tmp / "project"  # a user's folder with the names a run writes
    (mine / "model").mkdir(parents=True)
    (mine / "model" / "weights.bin").write_bytes(b"mine")
    (mine / "config.yaml").write_text("mine: 1\n")
    (mine / "logs").mkdir()
    if cid == "O-sft-overwrite-unstamped":
        return Case(cid, ["sft", "--overwrite", *sft_args(w["ds"], mine)[1:]], 2,
                    ["has no stamp", f"rm -r -- {mine}"], keep=[str(mine)])
    if cid == "O-sft-base-inside-out":
        run = tmp / "run"
        write_stamp(run, "sft", outputs=["base"])
        shutil.copytree(w["toy"], run / "base")
        args = [a for a in sft_args(w["ds"], run)[1:] if not a.startswith("backbone.options")]
        return Case(cid, ["sft", "--overwrite", f"backbone.pretrained={run / 'base'}", *args], 2,
                    ["backbone.pretrained", "holds the input"], keep=[str(run)])
    if cid == "O-synth-overwrite-unstamped":
        copy = tmp / "dscopy"
        shutil.copytree(w["ds"], copy)
        (copy / STAMP_FILE).unlink(missing_ok=True)  # a dataset made before the stamp, or by hand
        return Case(cid, ["data", "synth", "--out", str(copy), "--clips", "1", "--frames", "2", "--size", "16",
                          "--sprite-size", "3,4", "--overwrite"], 2, ["has no stamp", "rm -r --"], keep=[str(copy)])
    if cid == "O-export-overwrite-unstamped":
        return Case(cid, ["export", "--model", toy, "--lora", str(w["toy_lora"]), "--out", str(mine), "--overwrite"],
                    2, ["has no stamp", "rm -r --"], keep=[str(mine)])
    if cid == "O-generate-other-seed":
        out = tmp / "fakes"
        gen = ["generate", "--model", toy, "--data", ds, "--per-clip", "1", "--no-progress", "--format", "npy",
               "--out", str(out)]
        assert cli(gen) == 0
        return Case(cid, [*gen, "--seed", "1"], 2, ["seed: 0 -> 1", "pass --overwrite"], keep=[str(out / "clips")])
    raise KeyError(cid)


CASES = [
    # 1. tracebacks
    "M-check-nonutf8-jsonl", "M-check-nonutf8-csv", "M-train-nonutf8", "M-eval-nonutf8", "M-check-deep-json",
    "C-lr-nan", "C-lr-neg", "C-betas-range", "C-wd-neg", "C-lora-rank-zero", "C-yaml-base-list", "C-out-dir-is-file",
    "C-out-parent-file", "L-train-out-readonly", "L-sample-out-is-dir", "L-sample-out-readonly",
    "L-sample-out-parent-is-file", "L-sample-height-odd", "L-export-out-readonly", "L-generate-out-is-file",
    "L-generate-out-readonly", "L-eval-json-readonly", "L-eval-json-is-dir", "L-synth-out-is-file", "L-synth-readonly",
    "L-trainreward-out-is-file", "W-generate-lora-svd-on-toy",
    # 2. silent acceptance
    "V-check-float255_npy", "V-check-negfloat_npy", "V-eval-float255_npy", "M-check-duplicates", "M-train-duplicates",
    "M-eval-escape-root", "M-eval-abs-etc", "C-lr-zero", "C-steps-zero", "C-steps-neg", "C-ema-2", "C-gradnorm-nan",
    "C-ckpt-every-neg", "C-keep-zero", "C-nonfinite-neg", "C-yaml-dup-keys", "L-sample-guidance-nan",
    "L-generate-steps-0", "L-generate-max-clips-neg", "L-eval-reference-missing", "L-eval-sprite-threshold-nan",
    "D-trainreward-out-is-dataset", "C-eps-zero", "C-lr-inf",
    # 3. earlier outputs damaged / 4. partial outputs
    "D-generate-into-other-dataset", "D-generate-out-is-data", "D-sample-out-over-input-image", "L-eval-json-over-input",
    "M-generate-missing-clip", "M-trainreward-one-real",
    # 6. the hang / 7. unclear
    "C-yaml-billion-laughs-field", "V-check-mp4_as_npy", "V-check-loop_a_mp4", "V-check-folder-lists-dirs",
    "M-check-csv-bom", "C-frames-zero", "C-height-neg", "C-fps-zero", "L-sample-image-dir",
    "L-report-not-demo", "L-report-empty-dir",
    # 8. --overwrite owns only what shiftvdm stamped; derived outputs record their inputs (issue 26 classes 1-2)
    "O-sft-overwrite-unstamped", "O-sft-base-inside-out", "O-synth-overwrite-unstamped",
    "O-export-overwrite-unstamped", "O-generate-other-seed",
    # issue 26, class 3: non-finite (damaged) weights named where they are loaded
    "I-sample-nan-model", "I-generate-nan-model", "I-generate-nan-lora", "I-export-nan-lora", "I-export-nan-model",
    "I-sft-nan-base", "I-sft-nan-init-lora",
    # class 4: meaningless settings, refused naming keys, rule and fix
    "R-sft-both-weights-0", "R-sft-asks-rollouts", "R-shift-group-of-1", "R-shift-negative-positive-weight",
    "R-shift-std-eps-0", "R-shift-sampler-steps-0", "R-shift-sampler-steps-neg", "R-shift-refresh-0-steps",
    # class 6: paths (resolved in errors, symlinked clips inside a dataset folder)
    "P-sft-missing-relative-data", "P-sft-missing-relative-base", "P-check-symlinked-clips", "P-eval-symlinked-clips",
    "P-check-dangling-symlink",
    # class 7: eval edges
    "E-strict-no-ground-truth-match", "E-frechet-one-reference-window", "E-mixed-fps",
]


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """Exit code and stderr+stdout; an exception escaping main is the traceback a user would see."""
    try:
        rc = cli(argv)
    except SystemExit as exc:  # argparse
        rc = int(exc.code or 0)
    captured = capsys.readouterr()
    return rc, captured.err + captured.out


@pytest.mark.parametrize("cid", CASES)
def test_bad_input_is_refused_by_name(cid, world, tmp_path, capsys):
    if cid.split("-")[1] in ("readonly",) or "readonly" in cid:
        if world["ro"] is None:
            pytest.skip("no read-only folder can be made here")
    case = build_case(cid, world, tmp_path)
    before = {p: tree_digest(Path(p)) for p in case.keep}
    rc, text = run_cli(case.argv, capsys)
    assert "Traceback" not in text
    assert rc == case.rc, text
    for name in case.names:
        assert name in text, (name, text)
    for p in case.absent:
        assert not os.path.lexists(p), p
    for p in case.keep:
        assert tree_digest(Path(p)) == before[p], p
    if world["ro"] is not None:
        assert not any(world["ro"].iterdir())


def test_a_run_folder_is_not_reused_without_resume_or_overwrite(world, tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli(sft_args(world["ds"], run), capsys)[0] == 0
    before = tree_digest(run)
    rc, text = run_cli(sft_args(world["ds"], run), capsys)  # D-sft-into-finished-run
    assert rc == 2 and "already holds a run" in text and "--resume" in text and "--overwrite" in text
    assert tree_digest(run) == before
    (run / "notes.txt").write_text("mine\n")
    rc, text = run_cli(["sft", "--overwrite", *sft_args(world["ds"], run)[1:]], capsys)
    assert rc == 0, text
    assert (run / "notes.txt").read_text() == "mine\n"  # only the run's own outputs are replaced
    rows = (run / "logs" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [1]  # not appended to the old run's records


def test_nonfinite_weights_never_reach_a_checkpoint(world, tmp_path, capsys, monkeypatch):
    """An update that writes NaN (here: injected into AdamW's step 3) stops the run naming the last finite
    checkpoint; no checkpoint or final LoRA holds NaN."""
    real_step = torch.optim.AdamW.step
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = float("inf")
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", poisoned)
    run = tmp_path / "run"
    rc, text = run_cli(sft_args(world["ds"], run, "run.max_steps=5", "run.checkpoint_every=1",
                                "run.keep_checkpoints=5"), capsys)
    assert rc == 1 and "Traceback" not in text
    assert "step 3" in text and "NaN/inf after the optimizer step" in text and "step-0000002" in text
    ckpts = sorted((run / "checkpoints").glob("step-*"))
    assert [c.name for c in ckpts] == ["step-0000001", "step-0000002"]
    for c in ckpts:
        state = torch.load(c / "trainer_state.pt", weights_only=True)
        assert all(torch.isfinite(t).all() for t in state["params"].values())
    assert not (run / "lora.safetensors").exists()


def _lora(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "lora.safetensors"))


def test_damaged_newest_checkpoint_falls_back_and_leftovers_are_cleaned(world, tmp_path, capsys):
    ref = tmp_path / "ref"
    args = ("run.checkpoint_every=1", "run.keep_checkpoints=3")
    assert run_cli(sft_args(world["ds"], ref, "run.max_steps=4", *args), capsys)[0] == 0
    run = tmp_path / "run"
    assert run_cli(sft_args(world["ds"], run, "run.max_steps=3", *args), capsys)[0] == 0
    (run / "checkpoints" / "step-0000003" / "trainer_state.pt").write_bytes(b"")  # W-resume-zero-byte-state
    state2 = run / "checkpoints" / "step-0000002" / "trainer_state.pt"
    (run / "checkpoints" / ".step-0000004.x1y2").mkdir()  # what a kill mid-checkpoint leaves
    (run / ".summary.json.abc.tmp").write_bytes(b"")
    rc, text = run_cli(["sft", "--resume", *sft_args(world["ds"], run, "run.max_steps=4", *args)[1:]], capsys)
    assert rc == 0, text
    assert state2.is_file()
    ref_l, run_l = _lora(ref), _lora(run)
    assert all(torch.equal(ref_l[k], run_l[k]) for k in ref_l)  # resumed from step 2: same result
    assert not (run / "checkpoints" / ".step-0000004.x1y2").exists() and not (run / ".summary.json.abc.tmp").exists()
    steps = [json.loads(r)["step"] for r in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # step 3 recomputed, logged once
    mode = (run / "checkpoints" / "step-0000004").stat().st_mode & 0o777
    assert mode == (run / "checkpoints" / "step-0000004" / "trainer_state.pt").stat().st_mode & 0o777 | 0o111 & mode
    assert mode & 0o055  # not mkdtemp's 0700


def test_truncated_checkpoint_of_every_kind_is_refused_or_skipped(tmp_path):
    from shiftvdm.errors import CheckpointError
    from shiftvdm.recipes.train_reward import _checkpoints
    from shiftvdm.utils.checkpoint import read_newest_intact, save_torch, load_torch

    for i in (1, 2):
        save_torch({"step": i}, tmp_path / "checkpoints" / f"step-000000{i}" / "trainer_state.pt")
    (tmp_path / "checkpoints" / "step-0000003.tmp").mkdir()  # W-trainreward-resume-stale-tmp
    dirs = _checkpoints(tmp_path)
    assert [d.name for d in dirs] == ["step-0000001", "step-0000002"]
    blob = (dirs[1] / "trainer_state.pt").read_bytes()
    (dirs[1] / "trainer_state.pt").write_bytes(blob[: len(blob) // 2])
    path, state = read_newest_intact(dirs, lambda p: load_torch(p / "trainer_state.pt"))
    assert path == dirs[0] and state == {"step": 1}
    (dirs[0] / "trainer_state.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no intact checkpoint"):
        read_newest_intact(dirs, lambda p: load_torch(p / "trainer_state.pt"))


def test_kill_minus_9_mid_run_resumes_bit_identically(world, tmp_path):
    """A run killed (SIGKILL) after its first checkpoint resumes to the same LoRA as an uninterrupted run."""
    args = ("run.max_steps=6", "run.checkpoint_every=1", "run.keep_checkpoints=2")
    ref = tmp_path / "ref"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "shiftvdm"]
    assert subprocess.run([*cmd, *sft_args(world["ds"], ref, *args)], env=env, capture_output=True).returncode == 0
    run = tmp_path / "run"
    proc = subprocess.Popen([*cmd, *sft_args(world["ds"], run, *args)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not (run / "checkpoints" / "step-0000002").is_dir():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if proc.returncode == 0:
        pytest.skip("the run finished before the kill")  # cannot fail: too fast to interrupt on this machine
    res = subprocess.run([*cmd, "sft", "--resume", *sft_args(world["ds"], run, *args)[1:]], env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    ref_l, run_l = _lora(ref), _lora(run)
    assert all(torch.equal(ref_l[k], run_l[k]) for k in ref_l)
    steps = [json.loads(r)["step"] for r in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 6
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert not leftovers


def test_a_refused_command_leaves_no_new_folder_but_keeps_checkpoints(tmp_path):
    from shiftvdm.errors import DataError, TrainingError
    from shiftvdm.utils.outputs import new_output_dir

    fresh = tmp_path / "fresh"
    with pytest.raises(DataError), new_output_dir(fresh):
        (fresh / "logs").mkdir(parents=True)
        (fresh / "config.yaml").write_text("x: 1\n")
        raise DataError("a later check failed")
    assert not fresh.exists()  # W-shift-critic-config-raft-evil / W-trainreward-flow-evil: no config.yaml left
    trained = tmp_path / "trained"
    with pytest.raises(TrainingError), new_output_dir(trained):
        (trained / "checkpoints" / "step-0000001").mkdir(parents=True)
        raise TrainingError("stopped after a checkpoint")
    assert (trained / "checkpoints" / "step-0000001").is_dir()  # worth resuming: kept
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(DataError), new_output_dir(existing):
        raise DataError("refused")
    assert existing.is_dir()  # a folder the user had is never removed
    with pytest.raises(KeyError), new_output_dir(tmp_path / "bug"):
        (tmp_path / "bug").mkdir()
        raise KeyError("a bug keeps its traceback and its files")
    assert (tmp_path / "bug").is_dir()


def test_cli_boundary_names_the_path_of_an_os_error_but_lets_a_bug_through(monkeypatch, capsys):
    import shiftvdm.recipes.config_cmd as config_cmd

    def denied(argv, prog):
        raise PermissionError(13, "Permission denied", "/data/clips/a.mp4")

    monkeypatch.setattr(config_cmd, "main", denied)
    rc, text = run_cli(["config", "list"], capsys)
    assert rc == 1 and "/data/clips/a.mp4: Permission denied" in text and "Traceback" not in text

    def bug(argv, prog):
        raise KeyError("target_modules")

    monkeypatch.setattr(config_cmd, "main", bug)
    with pytest.raises(KeyError):  # a programming error keeps its traceback
        cli(["config", "list"])


# ----- issue 26: integrity, meaningless settings, paths, eval edges (cases that need more than one command) -----

def test_a_nan_clip_or_model_is_never_written_and_names_the_model(world, tmp_path, capsys, monkeypatch):
    """A finite model whose sampler produces NaN (here: decode patched) writes no clip; sample and generate fail
    naming the model (class 3)."""
    real_decode = ToyBackbone.decode
    monkeypatch.setattr(ToyBackbone, "decode", lambda self, latents: real_decode(self, latents) * float("nan"))
    out = tmp_path / "o.npy"
    rc, text = run_cli(["sample", "--model", str(world["toy"]), "--image", str(world["img"]), "--out", str(out)],
                       capsys)
    assert rc == 2 and f"--model {world['toy']}" in text and "NaN or infinite" in text and "not written" in text
    assert not out.exists()
    rc, text = run_cli(["generate", "--model", str(world["toy"]), "--data", str(world["ds"]), "--out",
                        str(tmp_path / "gen"), "--per-clip", "1", "--no-progress", "--format", "npy"], capsys)
    assert rc == 2 and f"--model {world['toy']}" in text and "clip_00000" in text
    assert not list((tmp_path / "gen").rglob("*.npy")) if (tmp_path / "gen").exists() else True
    monkeypatch.setattr(ToyBackbone, "fuse_lora", lambda self: [p.data.fill_(float("inf"))
                                                                 for p in self.denoiser.parameters()][:0] or None)
    rc, text = run_cli(["export", "--model", str(world["toy"]), "--lora", str(world["toy_lora"]), "--out",
                        str(tmp_path / "fused")], capsys)
    assert rc == 2 and "the fused model" in text and "NaN or infinite" in text and not (tmp_path / "fused").exists()


def test_a_run_whose_every_step_was_skipped_fails(world, tmp_path, capsys, monkeypatch):
    real_loss = ToyBackbone.denoising_loss
    monkeypatch.setattr(ToyBackbone, "denoising_loss",
                        lambda self, *a, **k: real_loss(self, *a, **k) * float("nan"))
    run = tmp_path / "run"
    rc, text = run_cli(sft_args(world["ds"], run, "run.max_steps=2"), capsys)
    assert rc == 1 and "all 2 steps were skipped" in text and "non-finite real loss" in text
    assert "2 steps (" not in text and not (run / "lora.safetensors").exists()


def test_a_critic_with_nan_weights_is_refused_naming_its_file(tmp_path):
    from safetensors.torch import save_file

    from shiftvdm.errors import CheckpointError
    from shiftvdm.rewards.critic import MotionCritic
    from tests.train.tiny_run import critic_config

    folder = MotionCritic(critic_config()).save(tmp_path / "critic")
    weights = load_file(str(folder / "critic.safetensors"))
    name = sorted(k for k, t in weights.items() if t.is_floating_point())[0]
    weights[name].view(-1)[0] = float("inf")
    save_file(weights, str(folder / "critic.safetensors"))
    with pytest.raises(CheckpointError, match=f"critic.safetensors: the critic weights hold NaN .*'{name}'"):
        MotionCritic.load(folder)


def test_warm_up_longer_than_the_run_and_a_batch_larger_than_the_dataset_are_warnings(world, tmp_path, capsys,
                                                                                       caplog):
    """Both still train (decided in train/config.py RULES): the run goes ahead and the warning names keys and fix."""
    with caplog.at_level("WARNING"):
        rc, text = run_cli(sft_args(world["ds"], tmp_path / "run", "optim.warmup_steps=3", "rollout.batch_size=6",
                                    "rollout.buffer_size=6"), capsys)
    said = text + caplog.text
    assert rc == 0, said
    assert "optim.warmup_steps, run.max_steps: the warm-up is as long as the run" in said
    assert "(4 clips): rollout.batch_size, data.train: a step's batch is larger than the dataset" in said


def test_paths_expand_home_and_a_config_file_reads_them_against_its_folder(world, tmp_path, capsys, monkeypatch):
    """`~` in overrides and YAML; relative YAML paths against the file's folder, whatever the working directory."""
    monkeypatch.setenv("HOME", str(tmp_path))
    os.symlink(world["ds"], tmp_path / "ds")
    rc, text = run_cli(sft_args(Path("~/ds"), Path("~/run")), capsys)
    assert rc == 0, text
    assert (tmp_path / "run" / "lora.safetensors").is_file()
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert f"train: {tmp_path / 'ds'}" in saved  # recorded absolute
    conf = tmp_path / "project" / "configs"
    conf.mkdir(parents=True)
    (conf / "run.yaml").write_text("data:\n  train: ../../ds\nrun:\n  out_dir: ~/run2\n")
    monkeypatch.chdir(world["root"])  # another working directory
    argv = [a for a in sft_args(world["ds"], tmp_path) if not a.startswith(("data.train=", "run.out_dir="))]
    rc, text = run_cli([*argv, "--config", str(conf / "run.yaml")], capsys)
    assert rc == 0, text
    assert (tmp_path / "run2" / "lora.safetensors").is_file()
    rc, text = run_cli(["config", "show", str(conf / "run.yaml"), "--stage", "sft"], capsys)
    assert rc == 0 and f"resolve against {conf / 'run.yaml'}'s folder {conf}" in text
    assert f"train: {tmp_path / 'ds'}" in text  # ../../ds from the file's folder, not from the working directory


def test_a_run_resumes_from_another_working_directory(world, tmp_path, capsys, monkeypatch):
    args = ("run.checkpoint_every=1", "run.keep_checkpoints=3")
    assert run_cli(sft_args(world["ds"], tmp_path / "ref", "run.max_steps=3", *args), capsys)[0] == 0
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "deeper").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a")
    os.symlink(world["ds"], tmp_path / "a" / "data")
    assert run_cli(sft_args(Path("data"), Path("../run"), "run.max_steps=2", *args), capsys)[0] == 0
    monkeypatch.chdir(tmp_path / "b" / "deeper")  # the same files, named from elsewhere (one through a link)
    rc, text = run_cli(["sft", "--resume", *sft_args(Path("../../a/data"), Path("../../run"), "run.max_steps=3",
                                                     *args)[1:]], capsys)
    assert rc == 0, text
    ref, run = _lora(tmp_path / "ref"), _lora(tmp_path / "run")
    assert all(torch.equal(ref[k], run[k]) for k in ref)
    rc, text = run_cli(["sft", "--resume", *sft_args(world["ds"] / "clips", Path("../../run"), "run.max_steps=4",
                                                     *args)[1:]], capsys)
    assert rc == 1 and "data.train" in text  # another dataset path is still a different run


def test_a_non_utf8_clip_name_goes_through_generate_and_eval_json(world, tmp_path, capsys):
    name = os.fsdecode(b"clip_\xff.npy")  # bytes that are not UTF-8, as the file system gives them
    data = tmp_path / "real"
    data.mkdir()
    shutil.copy(sorted(world["ds"].glob("clips/*.npy"))[0], data / name)
    shutil.copy(sorted(world["ds"].glob("clips/*.npy"))[1], data / "plain.npy")
    gen = tmp_path / "gen"
    rc, text = run_cli(["generate", "--model", str(world["toy"]), "--data", str(data), "--out", str(gen),
                        "--per-clip", "1", "--no-progress", "--format", "npy"], capsys)
    assert rc == 0, text
    from shiftvdm.data.manifest import load_manifest

    entries = load_manifest(gen / "manifest.jsonl").entries  # the manifest reads back: the name survives
    assert sorted(e.source for e in entries) == sorted([name, "plain.npy"])
    assert all(e.path.is_file() for e in entries)
    assert os.fsencode(next(e.path.name for e in entries if e.source == name)).startswith(b"clip_\xff")
    out = tmp_path / "m.json"
    rc, text = run_cli(["eval", str(gen), "--metrics", "flicker", "--json", str(out), "--strict"], capsys)
    assert rc == 0, text
    names = [row["name"] for row in json.loads(out.read_text(encoding="utf-8"))["per_video"]]
    assert any(b"clip_\xff" in os.fsencode(n) for n in names), names


def test_every_unmatched_eval_input_is_counted_in_the_json_and_the_table(world, tmp_path, capsys):
    clips = sorted(world["ds"].glob("clips/*.npy"))
    gt, cond = tmp_path / "gt", tmp_path / "cond"
    gt.mkdir()
    cond.mkdir()
    shutil.copy(clips[0], gt / clips[0].name)  # matches the first video
    shutil.copy(clips[1], gt / "stray.npy")  # matches none
    shutil.copy(world["img"], cond / f"{clips[1].stem}.png")
    shutil.copy(world["img"], cond / "nobody.png")
    out = tmp_path / "m.json"
    rc, text = run_cli(["eval", str(world["ds"]), "--ground-truth", str(gt), "--conditioning", str(cond), "--metrics",
                        "appearance", "--json", str(out)], capsys)
    assert rc == 0, text
    unmatched = json.loads(out.read_text())["settings"]["unmatched"]
    assert unmatched == {"videos_without_conditioning": 3, "conditioning_matched_by_no_video": 1,
                         "videos_without_ground_truth": 3, "ground_truth_matched_by_no_video": 1}
    assert "ground truth: 1 input(s) matched by no video: stray.npy" in text
    assert "conditioning: 1 input(s) matched by no video: nobody.png" in text


def test_the_memory_plan_refuses_before_any_model_is_allocated(world, tmp_path, capsys, monkeypatch):
    import functools

    import shiftvdm.recipes.train as train_recipe
    from shiftvdm.backbone import load_backbone
    from shiftvdm.train.memory import memory_plan
    from shiftvdm.utils.finite import module_tensors

    cfg = train_recipe.resolve_train_config("sft", None, sft_args(world["ds"], tmp_path / "x",
                                                                  f"backbone.pretrained={world['toy']}")[1:])
    built = load_backbone(cfg.backbone)  # what the early plan reads from the safetensors headers, exactly
    assert train_recipe.planned_model_sizes(cfg).frozen_bytes == sum(t.numel() * t.element_size()
                                                                     for _, t in module_tensors(built))
    monkeypatch.setattr(train_recipe, "memory_plan", functools.partial(memory_plan, host_capacity=1024))

    def allocated(*args, **kwargs):
        raise AssertionError("the model was built before the memory plan refused")

    monkeypatch.setattr(train_recipe, "build_backbone", allocated)
    rc, text = run_cli(sft_args(world["ds"], tmp_path / "run", f"backbone.pretrained={world['toy']}"), capsys)
    assert rc == 2 and "the memory plan does not fit: host needs" in text
    assert not (tmp_path / "run").exists()


def test_training_clips_of_mixed_frame_rates_or_cropped_aspect_ratios_are_named(world, tmp_path, caplog):
    from shiftvdm.train.clips import open_training_clips
    from shiftvdm.train.config import DataConfig

    clips = sorted(world["ds"].glob("clips/*.npy"))
    for c in clips[:2]:
        shutil.copy(c, tmp_path / c.name)
    _npy(tmp_path / "wide.npy", np.zeros((12, 16, 24, 3), np.uint8))
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps({"path": n, "fps": f}) + "\n" for n, f in
                                                     ((clips[0].name, 8), (clips[1].name, 8), ("wide.npy", 24))))
    with caplog.at_level("WARNING"):  # clips are checked as training reads them: named when first met
        open_training_clips(DataConfig(train=str(tmp_path / "manifest.jsonl"), num_frames=4, height=16,
                                       width=16)).load([0, 1, 2])
    assert "clips of 2 frame rates are read frame for frame" in caplog.text
    assert f"8 fps: {clips[0].name}, {clips[1].name}; 24 fps: wide.npy" in caplog.text
    assert "1 clip(s) have another aspect ratio than 16x16 and are centre-cropped to it: wide.npy (24x16)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):  # data.fps resamples every clip to one rate: nothing to say about rates
        open_training_clips(DataConfig(train=str(tmp_path / "manifest.jsonl"), num_frames=4, height=16, width=24,
                                       fps=8.0)).load([0, 1, 2])
    assert "frame rates" not in caplog.text


def test_the_early_plan_leaves_out_a_text_encoder_that_cached_conditioning_never_loads(tmp_path):
    from dataclasses import replace

    from safetensors.torch import save_file

    import shiftvdm.recipes.train as train_recipe

    model = tmp_path / "wan"  # a Wan-layout folder: only the headers are read
    for part, numel in (("transformer", 1000), ("vae", 100), ("text_encoder", 5000)):
        (model / part).mkdir(parents=True)
        save_file({"w": torch.zeros(numel)}, str(model / part / "diffusion_pytorch_model.safetensors"))
    cfg = train_recipe.resolve_train_config("sft", None, sft_args(tmp_path / "ds", tmp_path / "run",
                                                                  f"backbone.pretrained={model}")[1:])
    assert train_recipe.planned_model_sizes(cfg).frozen_bytes == 4 * 6100
    cached = replace(cfg, data=replace(cfg.data, cache=str(tmp_path / "cache")))
    assert train_recipe.planned_model_sizes(cached).frozen_bytes == 4 * 1100
