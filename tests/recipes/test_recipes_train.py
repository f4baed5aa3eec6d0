"""`shiftvdm pretrain | sft | shift` from the command line, as a user runs them (files in, files out)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shiftvdm.cli import main as cli
from shiftvdm.data.synthetic import write_synthetic_dataset
from shiftvdm.rewards.critic import CriticConfig, MotionCritic
from shiftvdm.rewards.ic import ICConfig
from shiftvdm.rewards.lc import LCConfig

TOY_OPTIONS = {"num_frames": 4, "size": 16, "block_out_channels": [16, 16], "layers_per_block": 1,
               "num_mid_blocks": 1, "num_inference_steps": 2, "mid_attention": False}


@pytest.fixture(scope="module")
def sprites(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sprites")
    write_synthetic_dataset(out, 8, 4, 16, seed=1, format="npy", num_sprites=1, sprite_size=(3.0, 4.0),
                            speed=(1.5, 2.5), background="flat", overwrite=True)
    return out


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    return [r["loss/real"] for r in rows if "loss/real" in r]


def test_pretrain_then_sft_then_resume(tmp_path, sprites):
    base = tmp_path / "base"
    cfg = write_config(tmp_path / "pre.yaml", {
        "backbone": {"name": "toy", "options": TOY_OPTIONS},
        "data": {"train": str(sprites), "num_frames": 4, "height": 16, "width": 16},
        "optim": {"lr": 2e-3, "warmup_steps": 5, "weight_decay": 0.0},
        "rollout": {"buffer_size": 8, "batch_size": 4},
        "run": {"out_dir": str(base), "max_steps": 40, "checkpoint_every": 0, "progress": False},
    })
    assert cli(["pretrain", "--config", str(cfg)]) == 0
    ls = losses(base)
    assert len(ls) == 40
    assert sum(ls[-8:]) / 8 < 0.7 * sum(ls[:8]) / 8  # a short tiny pre-train lowers the loss
    assert (base / "model" / "config.json").is_file() and (base / "config.yaml").is_file()

    sft = tmp_path / "sft"
    common = ["backbone.name=toy", f"backbone.pretrained={base / 'model'}", f"data.train={sprites}",
              "data.num_frames=4", "data.height=16", "data.width=16", "lora.rank=2", "lora.alpha=2",
              "rollout.buffer_size=8", "rollout.batch_size=4", "run.progress=false", "run.checkpoint_every=2",
              f"run.out_dir={sft}"]
    assert cli(["sft", *common, "run.max_steps=3"]) == 0
    assert cli(["sft", "--resume", *common, "run.max_steps=5"]) == 0
    assert len(losses(sft)) == 5  # steps 1-3 then 4-5 after the resume
    assert (sft / "lora.safetensors").is_file()
    summary = json.loads((sft / "summary.json").read_text())
    assert summary["steps"] == 5


def test_training_checks_the_data_first(tmp_path, sprites, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    manifest = bad / "manifest.jsonl"
    shutil.copy(sorted((sprites / "clips").iterdir())[0], bad / "good.npy")
    (bad / "empty.mp4").write_bytes(b"")
    manifest.write_text("\n".join(json.dumps({"path": p, "fps": 8}) for p in ["good.npy", "missing.mp4", "empty.mp4"]) + "\n")
    args = ["sft", "backbone.name=toy", *[f"backbone.options.{k}={v}" for k, v in TOY_OPTIONS.items()],
            f"data.train={manifest}", "data.num_frames=4", "data.height=16",
            "data.width=16", "run.progress=false", f"run.out_dir={tmp_path / 'run'}", "run.max_steps=1",
            "rollout.batch_size=1", "lora.rank=2"]
    assert cli(args) == 1
    err = capsys.readouterr().err
    assert "2 bad entries" in err and "missing.mp4" in err and "empty.mp4" in err and "--skip-bad" in err
    assert cli(["sft", "--skip-bad", *args[1:]]) == 0


def test_backbone_and_data_shapes_must_agree(tmp_path, sprites, capsys):
    args = ["sft", "backbone.name=toy", f"data.train={sprites}", "data.num_frames=4", "data.height=16",
            "data.width=16", "run.progress=false", f"run.out_dir={tmp_path}", "lora.rank=2"]
    assert cli(args) == 2  # the toy default is 8 frames
    assert "backbone makes clips of 8 frames × 16×16" in capsys.readouterr().err


def test_config_errors_name_the_field(tmp_path, capsys):
    assert cli(["shift", "loss.lamda_aw=0.1"]) == 2
    assert "did you mean `loss.lambda_aw`" in capsys.readouterr().err
    assert cli(["sft", "loss.lambda_aw=0.1", "data.train=x"]) == 2
    assert "use `shiftvdm shift`" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_share_work_and_weights(tmp_path, sprites, pretrained_toy_dir):
    base = pretrained_toy_dir
    critic_dir = tmp_path / "critic"
    MotionCritic(CriticConfig(num_queries=8, ic=ICConfig(encoder="cnn", image_size=(16, 16), cnn_channels=(8, 8)),
                              lc=LCConfig(dim=16, depth=1, heads=2))).save(critic_dir)
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "shift.yaml", {
        "backbone": {"name": "toy", "pretrained": str(base)},
        "data": {"train": str(sprites), "num_frames": 4, "height": 16, "width": 16},
        "lora": {"rank": 2, "alpha": 2},
        "optim": {"lr": 1e-3, "warmup_steps": 0},
        "loss": {"lambda_aw": 0.5},
        "rollout": {"group_size": 2, "buffer_size": 4, "passes_per_buffer": 1, "batch_size": 1,
                    "rollout_batch_size": 2, "num_inference_steps": 2},
        "critic": {"path": str(critic_dir), "d_to_g": 1.0, "train": {"lr": 1e-3}},
        "run": {"out_dir": str(run), "max_steps": 4, "checkpoint_every": 2, "progress": False},
    })
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           "-m", "shiftvdm", "shift", "--config", str(cfg)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shares = [[json.loads(l) for l in (run / "logs" / f"buffers-rank{r}.jsonl").read_text().splitlines()]
              for r in range(2)]
    assert len(shares[0]) == len(shares[1]) == 2  # 4 steps = 2 buffers of 2 steps per process
    for b0, b1 in zip(*shares):
        assert b0["buffer"] == b1["buffer"]
        assert not set(b0["clip_ids"]) & set(b1["clip_ids"])  # no conditioning rolled out twice
    digests = [json.loads((run / "logs" / f"final-rank{r}.json").read_text())["weights_sha256"] for r in range(2)]
    assert digests[0] == digests[1]  # gradients of both models are averaged: identical weights
    assert (run / "critic").is_dir() and (run / "lora.safetensors").is_file()
