"""--overwrite owns only what shiftvdm wrote (the run stamp), inputs are never inside an output, and derived
outputs record what made them (issue 26, classes 1 and 2): a user's folder survives, a stamped run is replaced
file by file, a base model inside the output folder is refused before anything is deleted, `generate` with other
inputs refuses or replaces (no old clips kept), with the same inputs continues, and a --resume with changed base
weights is refused naming them. Runs in-process through ``shiftvdm.cli.main`` on a 16-px toy model.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from test_bad_inputs import run_cli, sft_args, toy_world, tree_digest

from shiftvdm.backbone.toy import ToyBackbone
from shiftvdm.utils.outputs import (
    STAMP_FILE,
    model_identity,
    provenance_differences,
    read_stamp,
    record_outputs,
    write_stamp,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    return toy_world(tmp_path_factory.mktemp("own"))


def _base_args(data: Path, base: Path, out: Path, *extra: str) -> list[str]:
    """sft on the saved toy model (backbone.pretrained) instead of a random one."""
    return ["sft", "backbone.name=toy", f"backbone.pretrained={base}", f"data.train={data}", "data.num_frames=4",
            "data.height=16", "data.width=16", "lora.rank=2", "lora.alpha=2", "rollout.buffer_size=2",
            "rollout.batch_size=2", "run.progress=false", "run.max_steps=1", "optim.warmup_steps=0",
            f"run.out_dir={out}", *extra]


def test_a_users_folder_survives_overwrite(world, tmp_path, capsys):
    mine = tmp_path / "project"
    (mine / "model").mkdir(parents=True)
    (mine / "model" / "weights.bin").write_bytes(b"my weights")
    (mine / "config.yaml").write_text("mine: true\n")
    (mine / "logs").mkdir()
    (mine / "logs" / "notes.txt").write_text("notes\n")
    (mine / "paper.tex").write_text("x\n")
    before = tree_digest(mine)
    rc, text = run_cli(["sft", "--overwrite", *sft_args(world["ds"], mine)[1:]], capsys)
    assert rc == 2 and "Traceback" not in text
    assert "has no stamp" in text and f"rm -r -- {mine}" in text  # the exact command to remove it by hand
    assert tree_digest(mine) == before and sorted(os.listdir(mine)) == ["config.yaml", "logs", "model", "paper.tex"]


def test_a_stamped_run_is_replaced_file_by_file(world, tmp_path, capsys):
    run = tmp_path / "run"
    rc, text = run_cli(sft_args(world["ds"], run), capsys)
    assert rc == 0, text
    stamp = read_stamp(run)
    assert stamp["command"] == "sft" and stamp["kind"] == "run" and stamp["host"] and stamp["created"]
    assert {"config.yaml", "logs", "summary.json", "lora.safetensors", "checkpoints"} <= set(stamp["outputs"])
    before = tree_digest(run)  # a missing input is found before anything is removed
    rc, text = run_cli(["sft", "--overwrite", *sft_args(tmp_path / "no_such_data", run)[1:]], capsys)
    assert rc == 1 and "data.train=" in text and "nothing was removed" in text, text
    assert {k: v for k, v in tree_digest(run).items() if not k.endswith("/.lock")} == \
        {k: v for k, v in before.items() if not k.endswith("/.lock")}
    (run / "my_notes.txt").write_text("keep me\n")  # a user's file inside the run folder
    (run / "logs" / "old.marker").write_text("written into the run's logs/\n")
    rc, text = run_cli(["sft", "--overwrite", *sft_args(world["ds"], run)[1:]], capsys)
    assert rc == 0, text
    assert "--overwrite: removed" in text and "lora.safetensors" in text  # it says what it removes
    assert (run / "my_notes.txt").read_text() == "keep me\n"
    assert not (run / "logs" / "old.marker").exists()  # logs/ was the run's: replaced whole
    assert "my_notes.txt" not in read_stamp(run)["outputs"] and (run / "lora.safetensors").is_file()


def test_a_base_model_inside_the_output_folder_is_refused_before_anything_is_deleted(world, tmp_path, capsys):
    run = tmp_path / "run"
    write_stamp(run, "sft", outputs=["base", "config.yaml"])  # even a stamped run that lists it
    ToyBackbone.from_pretrained(world["toy"]).save_pretrained(run / "base")
    (run / "config.yaml").write_text("x: 1\n")
    before = tree_digest(run)
    rc, text = run_cli(["sft", "--overwrite", *_base_args(world["ds"], run / "base", run)[1:]], capsys)
    assert rc == 2 and "backbone.pretrained" in text and "holds the input" in text, text
    assert tree_digest(run) == before


def test_generate_records_its_inputs(world, tmp_path, capsys):
    out = tmp_path / "fakes"
    gen = ["generate", "--model", str(world["toy"]), "--data", str(world["ds"]), "--out", str(out), "--per-clip", "1",
           "--no-progress", "--format", "npy"]
    assert run_cli([*gen, "--seed", "1"], capsys)[0] == 0
    inputs = read_stamp(out)["inputs"]
    assert inputs["seed"] == 1 and inputs["format"] == "npy" and inputs["model"]["digest"]
    first = tree_digest(out / "clips")
    # the same inputs continue: a missing clip is made again, the others kept, nothing else appears
    names = sorted(first)
    Path(names[1]).unlink()
    assert run_cli([*gen, "--seed", "1"], capsys)[0] == 0
    assert tree_digest(out / "clips") == first
    # another seed: refused naming the field, nothing changed
    rc, text = run_cli([*gen, "--seed", "2"], capsys)
    assert rc == 2 and "seed: 1 -> 2" in text and "--overwrite" in text, text
    assert tree_digest(out / "clips") == first
    # another format with --overwrite: old clips gone, the manifest lists exactly the new ones
    (out / "mine.txt").write_text("a user's file\n")
    gen_gif = [a if a != "npy" else "gif" for a in gen]
    rc, text = run_cli([*gen_gif, "--seed", "2", "--overwrite"], capsys)
    assert rc == 0, text
    gifs = sorted(p.name for p in (out / "clips").iterdir())
    assert gifs == sorted(Path(n).with_suffix(".gif").name for n in names)  # no .npy left
    listed = [json.loads(line)["path"] for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(listed) == [f"clips/{g}" for g in gifs]
    assert (out / "mine.txt").is_file() and read_stamp(out)["inputs"]["seed"] == 2
    # another model: refused naming it
    other = tmp_path / "other_toy"
    shutil.copytree(world["toy"], other)
    weights = next(other.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")  # other weights, same size
    rc, text = run_cli([*[str(other) if a == str(world["toy"]) else a for a in gen_gif], "--seed", "2"], capsys)
    assert rc == 2 and "model: other weights" in text, text


def test_resume_with_changed_base_weights_is_refused_naming_them(world, tmp_path, capsys):
    base = tmp_path / "base"
    ToyBackbone.from_pretrained(world["toy"]).save_pretrained(base)
    run = tmp_path / "run"
    args = _base_args(world["ds"], base, run, "run.checkpoint_every=1", "run.max_steps=1")
    assert run_cli(args, capsys)[0] == 0
    weights = next(base.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF  # same size, a few bits of one weight
    weights.write_bytes(bytes(data))
    before = _digest_but_lock(run)
    rc, text = run_cli([*args[:1], "--resume", *args[1:-1], "run.max_steps=2"], capsys)
    assert rc == 1 and "backbone.pretrained: other weights" in text and weights.name in text, text
    assert _digest_but_lock(run) == before


def _digest_but_lock(folder: Path) -> dict[str, str]:
    return {k: v for k, v in tree_digest(folder).items() if not k.endswith("/.lock")}


def test_identity_and_differences():
    a = {"seed": 1, "model": {"digest": "x", "files": {"a": "1", "b": "2"}}}
    b = {"seed": 2, "model": {"digest": "y", "files": {"a": "1", "c": "3"}}}
    assert provenance_differences(a, b) == ["model: other weights (b (gone), c (new))", "seed: 1 -> 2"]
    assert provenance_differences(a, a) == []


def test_identity_reads_a_sample_of_large_files(tmp_path):
    big = tmp_path / "m" / "w.bin"
    big.parent.mkdir()
    with open(big, "wb") as fh:
        fh.truncate(64 << 20)
    first = model_identity(big.parent)
    with open(big, "r+b") as fh:  # inside a sampled range (the last bytes) -> another identity
        fh.seek((64 << 20) - 10)
        fh.write(b"\x01")
    assert model_identity(big.parent)["digest"] != first["digest"] and first["bytes"] == 64 << 20
    (big.parent / STAMP_FILE).write_text("{}")  # the stamp is not part of a model
    assert "digest" in model_identity(big.parent) and STAMP_FILE not in model_identity(big.parent)["files"]


def test_record_outputs_claims_only_names_inside(tmp_path):
    write_stamp(tmp_path / "f", "generate", outputs=["clips"])
    record_outputs(tmp_path / "f", [tmp_path / "f" / "manifest.jsonl", "clips"])
    assert read_stamp(tmp_path / "f")["outputs"] == ["clips", "manifest.jsonl"]
    with pytest.raises(ValueError):
        record_outputs(tmp_path / "f", [tmp_path / "elsewhere"])
    record_outputs(tmp_path / "nostamp", ["x"])  # a folder without a stamp stays unclaimed
    assert read_stamp(tmp_path / "nostamp") is None
