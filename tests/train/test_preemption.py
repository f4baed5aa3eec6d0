"""Preemption (SIGTERM / SIGUSR1): stop at a safe point with a checkpoint, exit 75, resume bit for bit.

In-process runs send the signal from inside the run at a chosen point (deterministic, and fast: no new
interpreter); the subprocess runs send real signals from outside, as a scheduler does, and check the exit code,
the message and that there is no traceback; the 2-process run (slow) signals one rank only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from shiftvdm.cli import main as cli
from shiftvdm.data.synthetic import write_synthetic_dataset
from shiftvdm.train import hooks as hooks_mod
from shiftvdm.utils import preemption
from tiny_run import write_run_inputs

FAULT_ENTRY = Path(__file__).with_name("fault_entry.py")
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def setup(tmp_path_factory, pretrained_toy_dir) -> dict[str, Path]:
    return write_run_inputs(tmp_path_factory.mktemp("preempt"), pretrained_toy_dir)


def write_config(setup: dict[str, Path], stage: str, run: Path, **run_opts) -> Path:
    """A tiny run of ``stage``: 4 steps per buffer (shift: 2 rollout batches per buffer), 8 steps."""
    cfg: dict = {
        "backbone": {"name": "toy", "pretrained": str(setup["base"])},
        "data": {"train": str(setup["sprites"]), "num_frames": 4, "height": 16, "width": 16},
        "optim": {"lr": 1e-3, "warmup_steps": 0},
        "rollout": {"buffer_size": 4, "passes_per_buffer": 1, "batch_size": 1},
        "run": {"out_dir": str(run), "max_steps": 8, "checkpoint_every": 0, "progress": False, **run_opts},
    }
    if stage != "pretrain":
        cfg["lora"] = {"rank": 2, "alpha": 2}
    if stage == "shift":
        cfg["loss"] = {"lambda_aw": 0.5}
        cfg["rollout"].update(group_size=2, rollout_batch_size=2, num_inference_steps=2)
        cfg["critic"] = {"path": str(setup["critic"]), "d_to_g": 1.0, "train": {"lr": 1e-3}}
    path = run.parent / f"{run.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def digest(run: Path) -> str:
    return json.loads((run / "logs" / "final-rank0.json").read_text())["weights_sha256"]


def checkpoint_step(run: Path, rank: int | None = None) -> dict:
    root = run / "checkpoints" / (f"rank{rank}" if rank is not None else "")
    last = sorted(root.glob("step-*"))[-1]
    return torch.load(last / "trainer_state.pt", weights_only=True)["counters"]


_straight: dict[str, str] = {}


def straight_digest(setup, stage: str) -> str:
    """The uninterrupted run's final weights (once per stage)."""
    if stage not in _straight:
        run = setup["root"] / f"straight-{stage}"
        assert cli([stage, "--config", str(write_config(setup, stage, run))]) == 0
        _straight[stage] = digest(run)
    return _straight[stage]


def signal_at(monkeypatch, where: str, at: int, sig: signal.Signals) -> None:
    """Send ``sig`` to this process after generator step ``at`` (where="step") or inside the ``at``-th rollout
    sampler call (where="rollout"; the buffer is then left half rolled out)."""
    if where == "step":
        real = hooks_mod.RunHooks.after_step

        def after_step(self, metrics):
            real(self, metrics)
            if self.state.counters.step == at:
                os.kill(os.getpid(), sig)

        monkeypatch.setattr(hooks_mod.RunHooks, "after_step", after_step)
    else:
        from shiftvdm.backbone.toy import ToyBackbone

        real_sample, calls = ToyBackbone.sample, [0]

        def sample(self, *args, **kwargs):
            calls[0] += 1
            if calls[0] == at:
                os.kill(os.getpid(), sig)
            return real_sample(self, *args, **kwargs)

        monkeypatch.setattr(ToyBackbone, "sample", sample)


@pytest.mark.parametrize("stage,sig", [("sft", signal.SIGTERM), ("sft", signal.SIGUSR1),
                                       ("shift", signal.SIGTERM), ("shift", signal.SIGUSR1),
                                       ("pretrain", signal.SIGTERM), ("pretrain", signal.SIGUSR1)],
                         ids=lambda v: v.name if isinstance(v, signal.Signals) else v)
def test_signal_mid_run_stops_at_a_checkpoint_and_resume_is_exact(setup, stage, sig, monkeypatch, capsys):
    run = setup["root"] / f"{stage}-{sig.name}"
    cfg = write_config(setup, stage, run)
    signal_at(monkeypatch, "step", 3, sig)
    before = signal.getsignal(signal.SIGTERM)
    assert cli([stage, "--config", str(cfg)]) == preemption.EXIT_CODE == 75
    assert signal.getsignal(signal.SIGTERM) is before  # handlers given back
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if "preempted at step" in x]
    assert line and "preempted at step 3; checkpoint " in line[0] and f"--config {cfg} --resume`" in line[0]
    assert "Traceback" not in err
    assert checkpoint_step(run)["step"] == 3
    marker = preemption.read_marker(run)
    assert marker["step"] == 3 and marker["signal"] == sig.name and marker["exit_code"] == 75
    assert Path(marker["checkpoint"]).name == "step-0000003" and marker["resume"].endswith("--resume")
    assert not (run / "summary.json").exists()  # not a finished run

    monkeypatch.undo()
    assert cli([stage, "--config", str(cfg), "--resume"]) == 0
    assert not (run / preemption.MARKER).exists()  # the resume handled it
    assert digest(run) == straight_digest(setup, stage)


@pytest.mark.parametrize("checkpoint_buffer,every", [(True, 0), (False, 0), (True, 4)])
def test_signal_during_rollouts_drops_the_half_buffer_and_resume_rolls_it_again(setup, checkpoint_buffer, every,
                                                                                 monkeypatch):
    """Sampler call 3 is the first rollout batch of the second buffer (2 batches per buffer): the run stops
    before the second batch, at step 4, without that buffer; the resume rolls it out again. With a periodic
    checkpoint at step 4 (taken before the critic's refresh) that one is kept as the resume point, not
    rewritten; the resume refreshes the critic again."""
    opts = {"checkpoint_buffer": checkpoint_buffer, "checkpoint_every": every}
    run = setup["root"] / f"rollout-{checkpoint_buffer}-{every}"
    cfg = write_config(setup, "shift", run, **opts)
    signal_at(monkeypatch, "rollout", 3, signal.SIGUSR1)
    assert cli(["shift", "--config", str(cfg)]) == 75
    c = checkpoint_step(run)
    state = torch.load(sorted((run / "checkpoints").glob("step-*"))[-1] / "trainer_state.pt", weights_only=True)
    if every:  # the periodic checkpoint of step 4: inside the used-up first buffer
        assert (c["step"], c["chunks_done"], c["batch_index"], c["d_steps"]) == (4, 0, 4, 0)
    else:  # after the refresh, before the second buffer
        assert (c["step"], c["chunks_done"], c["pass_index"], c["batch_index"]) == (4, 1, 0, 0)
        assert state["buffer"] is None
    monkeypatch.undo()
    if not checkpoint_buffer:  # a resume inside the re-rolled buffer's collection, preempted again at once
        signal_at(monkeypatch, "rollout", 2, signal.SIGTERM)
        assert cli(["shift", "--config", str(cfg), "--resume"]) == 75
        assert checkpoint_step(run)["step"] == 4
        monkeypatch.undo()
    assert cli(["shift", "--config", str(cfg), "--resume"]) == 0
    assert digest(run) == straight_digest(setup, "shift")


def test_a_signal_before_the_first_step_checkpoints_step_0(setup, monkeypatch):
    run = setup["root"] / "early"
    cfg = write_config(setup, "sft", run)
    preemption_requested = preemption.requested
    monkeypatch.setattr(preemption, "requested", lambda: True)
    assert cli(["sft", "--config", str(cfg)]) == 75
    assert checkpoint_step(run)["step"] == 0
    monkeypatch.setattr(preemption, "requested", preemption_requested)
    assert cli(["sft", "--config", str(cfg), "--resume"]) == 0
    assert digest(run) == straight_digest(setup, "sft")


# ----- real signals from outside, as a scheduler sends them -------------------------------------------------------

def start(args: list[str], log: Path, faults: dict[str, str] | None = None) -> subprocess.Popen:
    entry = [str(FAULT_ENTRY), *(f"{k}={v}" for k, v in faults.items())] if faults else ["-m", "shiftvdm"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, *entry, *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(log, "w"))


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"exited early with {proc.returncode}"
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_sigterm_from_outside_exits_75_with_a_checkpoint_and_no_traceback(setup, tmp_path):
    run = setup["root"] / "outside"
    cfg = write_config(setup, "sft", run, max_steps=100000)
    log = tmp_path / "err.log"
    proc = start(["sft", "--config", str(cfg)], log)
    metrics = run / "logs" / "metrics.jsonl"
    wait_for(lambda: metrics.is_file() and '"loss/real"' in metrics.read_text(), proc)  # a step is done
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 75
    seconds = time.monotonic() - t0
    err = log.read_text()
    assert "Traceback" not in err, err[-3000:]
    assert "SIGTERM received" in err and "preempted at step" in err
    marker = preemption.read_marker(run)
    assert Path(marker["checkpoint"]).is_dir() and checkpoint_step(run)["step"] == marker["step"] >= 1
    assert seconds < 30
    print(f"signal-to-exit (sft, tiny toy): {seconds:.2f} s; {err.splitlines()[-1]}")


def test_a_second_signal_exits_at_once_and_the_next_start_sweeps_the_temp(setup, tmp_path):
    run = setup["root"] / "second"
    cfg = write_config(setup, "sft", run, max_steps=6, checkpoint_every=2)
    log = tmp_path / "err.log"
    # SIGUSR1 after step 3, then the checkpoint writes take 60 s: a second signal comes during the write
    proc = start(["sft", "--config", str(cfg)], log, faults={"sigusr1": "0:3", "slowsave": "0:60"})
    wait_for(lambda: "writing" in log.read_text(), proc)  # inside the (slow) checkpoint write
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 128 + signal.SIGTERM
    assert time.monotonic() - t0 < 5
    err = log.read_text()
    assert "second signal (SIGTERM): exiting at once" in err and "Traceback" not in err
    assert list((run / "checkpoints").glob(".step-0000003.*"))  # the cut write's temp folder
    assert [p.name for p in (run / "checkpoints").glob("step-*")] == ["step-0000002"]
    assert not (run / preemption.MARKER).exists()
    assert cli(["sft", "--config", str(cfg), "--resume"]) == 0  # the next start sweeps it and finishes
    assert not list((run / "checkpoints").glob(".step-*"))


def test_a_signal_while_the_command_starts_is_kept_and_ends_in_a_checkpoint(setup, monkeypatch, capfd):
    """Slurm's --signal=USR1@T can come up to a minute early, while the job is still importing torch: Python's
    default action would kill the process before it writes the marker (the requeue script would see a failure).
    The command keeps the signal from its first line on and acts on it at the run's first safe point. Here the
    signal comes while the recipe reads its config; the handler in place before the command stands for
    Python's default (a signal reaching it is the death the command must prevent)."""
    from shiftvdm.recipes import train as train_recipe

    run = setup["root"] / "at-start"
    cfg = write_config(setup, "sft", run)
    reached_default = []
    before = signal.signal(signal.SIGUSR1, lambda *_: reached_default.append(True))
    real_resolve = train_recipe.resolve_train_config

    def resolve(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGUSR1)
        return real_resolve(*args, **kwargs)

    monkeypatch.setattr(train_recipe, "resolve_train_config", resolve)
    try:
        code = cli(["sft", "--config", str(cfg)])
    finally:
        signal.signal(signal.SIGUSR1, before)
    err = capfd.readouterr().err
    assert not reached_default and code == 75, err[-3000:]
    assert "SIGUSR1 received" in err and "preempted at step 0" in err
    assert preemption.read_marker(run)["step"] == 0 and checkpoint_step(run)["step"] == 0


@pytest.mark.slow
def test_two_ranks_stop_at_the_same_step_when_one_is_signalled(setup):
    """Rank 1 alone gets SIGTERM after step 2: both ranks checkpoint step 2 (agreed in the step's all-reduce), the
    marker is written, and the launcher's exit code is torchrun's (1: a worker exited non-zero)."""
    from test_distributed import launch

    run = setup["root"] / "two"
    cfg = write_config(setup, "shift", run)
    proc = launch(cfg, faults={"sigterm": "1:2"})
    assert proc.returncode == 1, proc.stderr[-3000:]  # torchrun: a worker exited non-zero (ChildFailedError)
    assert [checkpoint_step(run, r)["step"] for r in range(2)] == [2, 2]
    marker = preemption.read_marker(run)
    assert marker["step"] == 2 and marker["exit_code"] == 75
    assert "preempted at step 2" in proc.stderr


@pytest.mark.slow
def test_fsdp2_ranks_agree_on_a_signal_that_one_of_them_gets_between_rollout_batches(setup):
    """Under FSDP2 every rollout forward all-gathers: rank 1 alone gets SIGTERM before its second rollout batch,
    and both ranks drop the buffer there (no rank waits in a collective the other left), checkpoint step 0 and
    stop with the marker."""
    from test_distributed import launch, needs

    needs("fsdp2")
    run = setup["root"] / "fsdp2_rollouts"
    cfg = write_config(setup, "shift", run, distributed="fsdp2")
    text = yaml.safe_load(cfg.read_text())
    text["rollout"]["rollout_batch_size"] = 1  # 2 rollout batches per rank and buffer
    cfg.write_text(yaml.safe_dump(text))
    proc = launch(cfg, faults={"rollterm": "1:2"})
    assert proc.returncode == 1, proc.stderr[-3000:]  # a worker exited 75: the launcher's own code
    assert [checkpoint_step(run, r)["step"] for r in range(2)] == [0, 0]
    assert preemption.read_marker(run)["step"] == 0 and "preempted at step 0" in proc.stderr


def test_train_critic_stops_at_a_checkpoint_and_resumes_exactly(tmp_path, monkeypatch, capsys):
    from safetensors.torch import load_file

    from shiftvdm.data.manifest import write_manifest
    from shiftvdm.data.synthetic import make_sprite_clips
    from shiftvdm.data.video_io import write_video
    from shiftvdm.rewards.critic_training import CriticTrainer

    real = write_synthetic_dataset(tmp_path / "real", 8, 6, 24, 3, format="npy", num_sprites=1)
    clips = make_sprite_clips(8, 6, 24, 3, num_sprites=1)
    (tmp_path / "fake").mkdir()
    for i, video in enumerate(clips.videos):
        frozen = video.copy()
        frozen[3:] = frozen[2]
        write_video(tmp_path / "fake" / f"f{i}.npy", frozen, 8.0)
    write_manifest(tmp_path / "fake" / "manifest.jsonl",
                   [{"path": f"f{i}.npy", "source": f"clips/clip_{i:05d}.npy"} for i in range(8)])
    overrides = ["critic.num_queries=8", "critic.ic.dim=16", "critic.ic.depth=1", "critic.ic.heads=2",
                 "critic.ic.patch_size=4", "critic.ic.image_size=[24,24]", "critic.lc.dim=16", "critic.lc.depth=1",
                 "critic.lc.heads=2", "batch_size=4", "data.val_fraction=0.25", "progress=false", "max_steps=6",
                 "val_every=2", "checkpoint_every=100"]

    def args(out: Path) -> list[str]:
        return ["train-critic", "--real", str(real), "--fake", str(tmp_path / "fake" / "manifest.jsonl"),
                "--out", str(out), *overrides]

    assert cli(args(tmp_path / "straight")) == 0
    real_step, calls = CriticTrainer.step, [0]

    def step(self, *a, **k):
        out = real_step(self, *a, **k)
        calls[0] += 1
        if calls[0] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(CriticTrainer, "step", step)
    run = tmp_path / "preempted"
    assert cli(args(run)) == 75
    err = capsys.readouterr().err
    assert "preempted at step 3; checkpoint " in err and "Traceback" not in err
    assert preemption.read_marker(run)["step"] == 3 and (run / "checkpoints" / "step-0000003").is_dir()
    assert not (run / "critic").exists()
    monkeypatch.undo()
    assert cli([*args(run), "--resume"]) == 0
    a = load_file(str(tmp_path / "straight" / "critic" / "critic.safetensors"))
    b = load_file(str(run / "critic" / "critic.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_that_stopped_before_its_first_checkpoint_is_run_again_with_resume(setup, monkeypatch, capsys):
    """A job that died before its first checkpoint (here a crash after step 2, checkpoint_every=0) leaves
    config.yaml and logs but nothing to resume from: a plain rerun is refused saying to pass --resume; --resume
    runs it again from step 0, its logs replaced, and ends where an uninterrupted run ends."""
    run = setup["root"] / "crashed-early"
    cfg = write_config(setup, "sft", run)
    real = hooks_mod.RunHooks.after_step

    def after_step(self, metrics):
        real(self, metrics)
        if self.state.counters.step == 2:
            raise RuntimeError("node failure")

    monkeypatch.setattr(hooks_mod.RunHooks, "after_step", after_step)
    with pytest.raises(RuntimeError, match="node failure"):
        cli(["sft", "--config", str(cfg)])
    monkeypatch.undo()
    assert (run / "config.yaml").is_file() and not list(run.rglob("step-*"))
    capsys.readouterr()
    assert cli(["sft", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "holds a run that stopped before its first checkpoint (config.yaml, logs): there is nothing to " \
           "continue; pass --resume (or --overwrite) to run it again from step 0" in err
    assert cli(["sft", "--config", str(cfg), "--resume"]) == 0
    assert digest(run) == straight_digest(setup, "sft")
    steps = [json.loads(line).get("step") for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [s for s in steps if s is not None] == list(range(1, 9))  # each step once: the first attempt's rows gone


def torchrun(config: Path, *args: str) -> subprocess.Popen:
    """``shiftvdm shift`` on 2 gloo ranks under torchrun, told to forward SIGUSR1 as the sbatch template does."""
    from test_distributed import free_port

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", f"--master-port={free_port()}",
           "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1", "-m", "shiftvdm", "shift", "--config",
           str(config), *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigusr1_to_torchrun_stops_both_ranks_at_one_step_and_the_resume_is_exact(setup):
    """SIGUSR1 to the launcher (Slurm's --signal=USR1@T reaches torchrun; torchrun forwards it): both ranks
    checkpoint the same step, the marker is written, torchrun exits 1 (it re-raises the signal as a
    SignalException: the ranks' 75 does not reach its exit status, the marker tells), and the resume ends with
    the weights of an uninterrupted 2-rank run, bit for bit. The uninterrupted run goes alongside."""
    straight_run, run = setup["root"] / "torchrun-straight", setup["root"] / "torchrun-usr1"
    straight = torchrun(write_config(setup, "shift", straight_run))
    cfg = write_config(setup, "shift", run)
    proc = torchrun(cfg)
    metrics = run / "logs" / "metrics.jsonl"
    wait_for(lambda: metrics.is_file() and '"loss/real"' in metrics.read_text(), proc)  # a step is done
    proc.send_signal(signal.SIGUSR1)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 1, err[-3000:]
    assert "SignalException" in err and "second signal" not in err
    steps = [checkpoint_step(run, r)["step"] for r in range(2)]
    marker = preemption.read_marker(run)
    assert steps[0] == steps[1] == marker["step"] and 1 <= marker["step"] < 8, (steps, marker)
    assert marker["signal"] == "SIGUSR1" and f"preempted at step {marker['step']}; checkpoint " in err

    resumed = torchrun(cfg, "--resume")
    err = resumed.communicate(timeout=120)[1]
    assert resumed.returncode == 0, err[-3000:]
    assert straight.wait(120) == 0
    final = [json.loads((r / "logs" / f"final-rank{k}.json").read_text()) for r in (straight_run, run) for k in (0, 1)]
    assert len({f["weights_sha256"] for f in final}) == 1 and {f["steps"] for f in final} == {8}
