"""Two CPU processes over gloo: ranks agree before every collective, and the engine syncs gradients.

Each launch has a timeout, so a hang (the failure these tests guard against) fails instead of blocking.
Faults (a NaN on one rank, one rank's clock ahead) are injected by tests/train/fault_entry.py, which every rank runs
in place of ``-m shiftvdm``: the production code has no test hook.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from shiftvdm.backbone.toy import ToyBackbone
from shiftvdm.cli import main as cli
from shiftvdm.train.distributed import Distributed
from tiny_run import write_run_inputs

WORKER = Path(__file__).with_name("dist_engine_worker.py")
FAULT_ENTRY = Path(__file__).with_name("fault_entry.py")
TIMEOUT = 420  # seconds per launch: a hang fails the test


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, pretrained_toy_dir) -> dict[str, Path]:
    return write_run_inputs(tmp_path_factory.mktemp("dist"), pretrained_toy_dir)


def write_config(setup: dict[str, Path], run: Path, **run_opts) -> Path:
    cfg = {
        "backbone": {"name": "toy", "pretrained": str(setup["base"])},
        "data": {"train": str(setup["sprites"]), "num_frames": 4, "height": 16, "width": 16},
        "lora": {"rank": 2, "alpha": 2},
        "optim": {"lr": 1e-3, "warmup_steps": 0},
        "loss": {"lambda_aw": 0.5},
        "rollout": {"group_size": 2, "buffer_size": 4, "passes_per_buffer": 1, "batch_size": 1,
                    "rollout_batch_size": 2, "num_inference_steps": 2},
        "critic": {"path": str(setup["critic"]), "d_to_g": 1.0, "train": {"lr": 1e-3}},
        "run": {"out_dir": str(run), "max_steps": 4, "checkpoint_every": 2, "progress": False, **run_opts},
    }
    path = run.parent / f"{run.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def launch(config: Path, *args: str, faults: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``shiftvdm shift`` on 2 processes; ``faults`` (e.g. {"nan": "1:2"}) go to tests/train/fault_entry.py."""
    # accelerate's launcher as a module of this interpreter (an environment with deepspeed may lack the script)
    entry = [str(FAULT_ENTRY), *(f"{k}={v}" for k, v in faults.items())] if faults else ["-m", "shiftvdm"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           *entry, "shift", "--config", str(config), *args]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=TIMEOUT)


def counters(run: Path, rank: int) -> dict:
    last = sorted((run / "checkpoints" / f"rank{rank}").glob("step-*"))[-1]
    return torch.load(last / "trainer_state.pt", weights_only=True)["counters"]


def digests(run: Path) -> list[str]:
    return [json.loads((run / "logs" / f"final-rank{r}.json").read_text())["weights_sha256"] for r in range(2)]


def needs(engine: str) -> None:
    if engine == "deepspeed":
        pytest.importorskip("deepspeed", reason="deepspeed not installed (optional extra shiftvdm[deepspeed]; "
                                                "CPU build: DS_BUILD_OPS=0)")


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["ddp", "fsdp2", "deepspeed"])
def test_nan_on_one_rank_is_skipped_by_both(engine, setup):
    needs(engine)
    run = setup["root"] / f"nan-{engine}"
    proc = launch(write_config(setup, run, distributed=engine), faults={"nan": "1:2"})  # rank 1, step 2
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in range(2):
        c = counters(run, rank)
        assert c["step"] == 4 and c["nonfinite_steps"] == 1  # both finished, both counted the skip
    rows = [json.loads(line) for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    skipped = [r["step"] for r in rows if r.get("skipped") == 1.0]
    assert skipped == [2]  # rank 0's loss was finite; it skipped by agreement
    a, b = digests(run)
    assert a == b  # the skipped step changed neither rank's weights


@pytest.mark.slow
def test_time_limit_stops_both_then_resume_is_exact(setup, capsys):
    ahead = setup["root"] / "ahead"  # rank 1's clock reads 1000 s late: it alone is over the limit
    proc = launch(write_config(setup, ahead, time_limit_s=500.0), faults={"clock": "1:1000"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [counters(ahead, r)["step"] for r in range(2)] == [1, 1]  # both stopped after the same step
    assert json.loads((ahead / "summary.json").read_text())["steps"] == 1

    proc = launch(write_config(setup, ahead, time_limit_s=0.0), "--resume")  # continue to max_steps
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [counters(ahead, r)["step"] for r in range(2)] == [4, 4]

    straight = setup["root"] / "straight"
    proc = launch(write_config(setup, straight))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert digests(ahead) == digests(straight)  # a 2-process stop + resume is bit for bit the straight run

    # the same folder on one process is refused, naming both sizes
    code = cli(["shift", "--resume", "--config", str(write_config(setup, ahead, time_limit_s=0.0))])
    assert code != 0
    assert "written by 2 processes, this run has 1" in capsys.readouterr().err


def test_world_size_change_is_refused(setup, capsys):
    run = setup["root"] / "world"
    (run / "checkpoints" / "rank0" / "step-0000002").mkdir(parents=True)
    (run / "checkpoints" / "rank1" / "step-0000002").mkdir(parents=True)
    for r in range(2):
        (run / "checkpoints" / f"rank{r}" / "step-0000002" / "trainer_state.pt").write_bytes(b"x")
    code = cli(["shift", "--resume", "--config", str(write_config(setup, run))])
    err = capsys.readouterr().err
    assert code != 0
    assert "written by 2 processes, this run has 1" in err


def test_agreement_on_one_process_is_local():
    d = Distributed()
    assert d.any(True) and not d.any(False) and d.max(3.5) == 3.5 and d.broadcast("x") == "x"
    with pytest.raises(ValueError, match="boom"):
        d.together(lambda: (_ for _ in ()).throw(ValueError("boom")), "test")
    assert d.together(lambda: 7, "test") == 7


@pytest.mark.slow
def test_an_error_on_one_rank_stops_both_with_its_message(tmp_path):
    run_worker("agree", 2, tmp_path / "agree")
    r0, r1 = (json.loads((tmp_path / f"agree.rank{r}.json").read_text()) for r in range(2))
    assert r1["caught"] == "DataError: clip 3: cannot decode (test)"  # the failing rank: its own error
    assert r0["caught"].startswith("TrainingError: loading clips failed on process 1 of 2")
    assert "clip 3: cannot decode (test)" in r0["caught"]
    assert r0["seen"] == r1["seen"] == [True, True] and r0["slowest"] == r1["slowest"] == 20.0
    assert r0["raised"] == r1["raised"] == "process 0: features are NaN (test)"


def run_worker(kind: str, nproc: int, out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "DS_BUILD_OPS": "0"}
    if nproc == 1:
        cmd = [sys.executable, str(WORKER), kind, str(out)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_port", str(free_port()), str(WORKER), kind, str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("engine") / "single.pt"
    run_worker("none", 1, out)
    return torch.load(out, weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ddp", "fsdp2"])
def test_two_processes_equal_one_at_twice_the_batch(kind, one_process, tmp_path):
    run_worker(kind, 2, tmp_path / "two.pt")
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    assert set(two) == set(one_process)
    for name in one_process:
        torch.testing.assert_close(two[name], one_process[name], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_deepspeed_zero2_equals_one_process(one_process, tmp_path):
    pytest.importorskip("deepspeed", reason="deepspeed not installed (sdist with DS_BUILD_OPS=0 DS_ACCELERATOR=cpu)")
    run_worker("deepspeed", 2, tmp_path / "ds.pt")
    ds = torch.load(tmp_path / "ds.pt", weights_only=True)
    for name in one_process:
        torch.testing.assert_close(ds[name], one_process[name], rtol=1e-5, atol=1e-6)


def lora_tensors(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "lora.safetensors"))


@pytest.fixture(scope="module")
def ddp_straight(setup) -> Path:
    """A straight 2-process DDP run of the toy preset: the reference the FSDP2 runs are compared with."""
    run = setup["root"] / "ddp_ref"
    proc = launch(write_config(setup, run))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["fsdp2", "deepspeed"])
def test_engine_in_the_trainer_equals_ddp_and_its_lora_loads(engine, setup, ddp_straight):
    # the same data split and random streams as the DDP run; only the engine differs (FSDP2 shards the whole
    # denoiser and reduce-scatters; ZeRO-2 partitions gradients and optimizer states): equal to float
    # tolerance, not bit for bit (another reduction order)
    needs(engine)
    run = setup["root"] / engine
    proc = launch(write_config(setup, run, distributed=engine))
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = digests(run)
    assert a == b  # the digest is of the whole weights: the same on both ranks
    got, ddp = lora_tensors(run), lora_tensors(ddp_straight)
    assert set(got) == set(ddp) and all(got[k].shape == ddp[k].shape for k in ddp)  # whole weights, not shards
    for k in ddp:
        torch.testing.assert_close(got[k], ddp[k], rtol=1e-4, atol=2e-6)
    last = [sorted((run / "checkpoints" / f"rank{r}").glob("step-*"))[-1] for r in range(2)]
    states = [torch.load(p / "trainer_state.pt", weights_only=True) for p in last]  # plain tensors only
    full = ToyBackbone.from_pretrained(setup["base"])
    full.load_lora(run / "lora.safetensors")  # the final LoRA loads into a fresh backbone
    loaded = [p.detach() for p in full.trainable_parameters()]
    assert len(loaded) == len(states[0]["params"])
    for i, p in enumerate(loaded):
        saved = [s["params"][str(i)] for s in states]
        # FSDP2 checkpoints keep each rank's Shard(0) half; under ZeRO-2 every rank holds the whole weights
        whole = torch.cat(saved) if engine == "fsdp2" else saved[0]
        assert torch.equal(whole, p), i  # the loaded LoRA is exactly the trained weights


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["fsdp2", "deepspeed"])
def test_engine_stop_and_resume_is_exact(engine, setup):
    needs(engine)
    straight = setup["root"] / f"{engine}_straight"
    proc = launch(write_config(setup, straight, distributed=engine))
    assert proc.returncode == 0, proc.stderr[-3000:]
    stopped = setup["root"] / f"{engine}_stopped"  # rank 1's clock is ahead: both stop after step 1, mid-buffer
    proc = launch(write_config(setup, stopped, distributed=engine, time_limit_s=500.0),
                  faults={"clock": "1:1000"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [counters(stopped, r)["step"] for r in range(2)] == [1, 1]
    proc = launch(write_config(setup, stopped, distributed=engine, time_limit_s=0.0), "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [counters(stopped, r)["step"] for r in range(2)] == [4, 4]
    assert digests(stopped) == digests(straight)  # bit for bit the straight run
    a, b = lora_tensors(stopped), lora_tensors(straight)
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_deepspeed_without_the_package_is_refused_with_the_install_line(monkeypatch):
    import builtins
    from types import SimpleNamespace

    from shiftvdm.errors import TrainingError
    from shiftvdm.train.engine import make_engine

    real_import = builtins.__import__

    def no_deepspeed(name, *args, **kwargs):
        if name == "deepspeed" or name.startswith("deepspeed."):
            raise ImportError("No module named 'deepspeed'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_deepspeed)
    two = SimpleNamespace(rank=0, world=2, device=torch.device("cpu"))  # the refusal comes before any collective
    with pytest.raises(TrainingError, match=r"run.distributed=deepspeed needs the deepspeed package.*shiftvdm\[deepspeed\]"):
        make_engine(torch.nn.Linear(2, 2), two, "deepspeed")
    with pytest.raises(TrainingError, match="expected ddp, fsdp2 or deepspeed"):
        make_engine(torch.nn.Linear(2, 2), two, "zero3")


def test_gathered_weights_reach_the_state_dict_of_every_part():
    # what FSDP2 export relies on: whole values replace the shards in state_dict(), also when a backbone saves
    # one part (Wan2.2-A14B saves each expert's LoRA from the expert itself); outside, nothing is changed
    from shiftvdm.train.distributed import full_state_dicts

    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Sequential(torch.nn.Linear(3, 2)))
    whole = {"0.weight": torch.full((3, 2), 7.0), "1.0.bias": torch.full((2,), 5.0)}
    with full_state_dicts(net, whole):
        assert torch.equal(net.state_dict()["0.weight"], whole["0.weight"])
        assert torch.equal(net.state_dict()["1.0.bias"], whole["1.0.bias"])
        assert torch.equal(net[1].state_dict()["0.bias"], whole["1.0.bias"])  # a part saved on its own
        assert torch.equal(net[1][0].state_dict()["bias"], whole["1.0.bias"])
        assert torch.equal(net.state_dict()["0.bias"], net[0].bias.detach())  # others untouched
    assert not torch.equal(net.state_dict()["0.weight"], whole["0.weight"])  # hooks removed on exit


@pytest.mark.slow
def test_two_process_resume_without_the_buffer_is_exact(setup, ddp_straight):
    # run.checkpoint_buffer=false on 2 processes: each rank re-rolls its own buffer share from the checkpointed
    # weights and RNG, and the run continues bit for bit (the straight run: ddp_straight, same settings otherwise)
    stopped = setup["root"] / "nobuffer"
    proc = launch(write_config(setup, stopped, time_limit_s=500.0, checkpoint_buffer=False),
                  faults={"clock": "1:1000"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for r in range(2):
        last = sorted((stopped / "checkpoints" / f"rank{r}").glob("step-*"))[-1]
        state = torch.load(last / "trainer_state.pt", weights_only=True)
        assert state["counters"]["step"] == 1 and state["buffer"] is None and state["buffer_origin"] is not None
    proc = launch(write_config(setup, stopped, time_limit_s=0.0, checkpoint_buffer=False), "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert digests(stopped) == digests(ddp_straight)
