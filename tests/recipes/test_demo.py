"""`shiftvdm demo` end to end: every stage's outputs, the report's contents, and the page rendering with its
images in headless Chromium (skipped when Chromium is not installed).

The end-to-end run uses the test's own tiny preset (tests/fixtures/demo_test.yaml: the shipped --quick
settings made smaller still); the shipped preset's --quick config is checked for validity without running it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from shiftvdm.cli import main as cli
from shiftvdm.config import config_from_dict, deep_merge
from shiftvdm.eval.suite import evaluate_videos, prepare_reference
from shiftvdm.recipes.demo.config import load_demo_config, train_config

pytestmark = pytest.mark.timeout(900)  # ~30 s on a loaded 2-core machine

TEST_PRESET = Path(__file__).parents[1] / "fixtures" / "demo_test.yaml"  # every stage, in seconds
RUN_ARGS = ["demo", "--config", str(TEST_PRESET)]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "run"
    assert cli([*RUN_ARGS, "--out", str(out)]) == 0
    return out


def test_every_stage_leaves_its_outputs(quick_run):
    stages = json.loads((quick_run / "stages.json").read_text())
    expected = ["data", "pretrain", "sft", "critic", "arm:shift", "arm:shift_static", "arm:rwr_sft",
                "arm:continued_sft", "eval"]
    assert all(stages[s]["status"] == "done" for s in expected), stages.keys()
    runs = quick_run / "runs"
    for name in ("pretrain", "sft", "shift", "shift_static", "rwr_sft", "continued_sft"):
        assert (runs / name / "model" / "config.json").is_file(), name
        assert (runs / name / "logs" / "metrics.jsonl").is_file(), name
        assert not (runs / name / "checkpoints").exists(), name  # finished stages keep their model, not checkpoints
    assert (quick_run / "critic" / "critic" / "critic_config.json").is_file()
    heldout = load_demo_config(str(TEST_PRESET), False, []).data.heldout_clips
    assert len(list((quick_run / "data" / "heldout").glob("*.npy"))) == heldout
    shift_log = [json.loads(l) for l in (runs / "shift" / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert any("reward/fake" in r for r in shift_log) and any("disc/loss" in r for r in shift_log)
    sft_log = [json.loads(l) for l in (runs / "continued_sft" / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert not any("reward/fake" in r or "loss/aw" in r for r in sft_log)  # continued SFT never rolls out
    assert any("eval/static_fraction" in r for r in shift_log)  # training curves of held-out motion


def clips_in(folder: Path) -> np.ndarray:
    return np.stack([np.load(f) for f in sorted(folder.glob("clip_*.npy"))])


def test_metrics_and_report(quick_run):
    metrics = json.loads((quick_run / "metrics.json").read_text())
    models, real = metrics["models"], "real (held-out)"
    assert list(models) == ["real (held-out)", "base", "sft", "continued_sft@6steps", "continued_sft@equal-time",
                            "shift", "shift_static", "rwr_sft"]
    assert all(list(row) == metrics["columns"] for row in models.values())
    # the reference row is the held-out set scored against itself: zero distances, and the target data moves
    assert models[real]["sprite_speed_w1"] == 0.0 and models[real]["sprite_static_fraction"] == 0.0
    assert abs(models[real]["frechet_motion_combined"]) < 1e-6 and abs(models[real]["image_stats_frechet"]) < 1e-6
    # each row is its own model's samples: the shown clips are the held-out ones and each model's own, and
    # scoring a model's saved samples against the held-out clips again gives its row exactly
    heldout = clips_in(quick_run / "data" / "heldout")
    shown = clips_in(quick_run / "samples" / real)
    np.testing.assert_array_equal(shown, heldout[: len(shown)])
    samples = {name: clips_in(quick_run / "samples" / name) for name in models if name != real}
    assert all(s.shape == heldout.shape for s in samples.values())  # one sample per held-out frame
    assert not np.array_equal(samples["base"], samples["sft"])  # SFT changed the model that was sampled
    assert not np.array_equal(samples["sft"], samples["continued_sft@equal-time"])
    reference = prepare_reference(quick_run / "data" / "heldout", sprites=True)
    for name in ("sft", "shift"):
        again = evaluate_videos(quick_run / "samples" / name, reference=reference, sprites=True, fps=8).aggregate
        assert {c: again.get(c) for c in metrics["columns"]} == models[name], name
        assert json.loads((quick_run / "eval" / f"{name}.json").read_text())["aggregate"] == metrics["all_metrics"][name]
    # the verdicts quote the table: the motion-gap line's percentages and the criteria's inputs are the rows'
    gap = next(line for line in metrics["summary"] if line.startswith("Motion gap"))
    for name in (real, "base", "sft"):
        assert f"{100 * models[name]['sprite_static_fraction']:.1f}%" in gap, (name, gap)
    assert any("Hacking monitor" in line for line in metrics["summary"])
    criteria = {c["name"]: c for c in metrics["criteria"]}
    collapse = criteria["sft_collapses"]
    assert collapse["values"] == {"sft_w1": models["sft"]["sprite_speed_w1"], "base_w1": models["base"]["sprite_speed_w1"]}
    assert collapse["passed"] == (collapse["values"]["sft_w1"] >= 1.2 * collapse["values"]["base_w1"])
    assert criteria["shift_restores"]["values"]["shift_w1"] == models["shift"]["sprite_speed_w1"]
    assert all(name in metrics["model_help"] for name in metrics["models"])  # every row is explained
    page = (quick_run / "report.html").read_text()
    for text in ("Metrics on held-out conditioning frames", "Clips side by side", "Training curves",
                 "data:image/gif;base64,", "data:image/png;base64,", "continued_sft@equal-time"):
        assert text in page
    assert "http://" not in page and "https://" not in page  # self-contained, readable offline


def test_report_rebuilds_and_stages_are_reused(quick_run, capsys):
    (quick_run / "report.html").unlink()
    capsys.readouterr()
    assert cli(["report", str(quick_run)]) == 0
    assert (quick_run / "report.html").is_file()
    capsys.readouterr()
    stamp = (quick_run / "stages.json").stat().st_mtime
    assert cli([*RUN_ARGS, "--out", str(quick_run)]) == 0  # every stage reused: only eval output rewritten
    assert capsys.readouterr().out.count(": reused") == 9
    assert json.loads((quick_run / "stages.json").read_text())["pretrain"]["status"] == "done"
    assert (quick_run / "stages.json").stat().st_mtime == stamp


def test_report_renders_in_headless_chromium(quick_run, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (the README's test command installs Debian's chromium)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=10000"]
    url = (quick_run / "report.html").resolve().as_uri()
    dom = subprocess.run([browser, *flags, "--window-size=1280,1800", "--dump-dom", url], capture_output=True,
                         text=True, timeout=120).stdout

    def read(name: str) -> int:
        return int(dom.split(f'data-{name}="')[1].split('"')[0])

    assert read("images-total") >= 20 and read("images-loaded") == read("images-total")  # every GIF and plot decoded
    assert read("scroll-width") <= read("client-width")  # at 1280 px nothing overflows sideways (no hidden columns)
    shot = tmp_path / "report.png"
    subprocess.run([browser, *flags, "--window-size=1280,1800", f"--screenshot={shot}", url], capture_output=True,
                   timeout=120)
    assert shot.is_file() and shot.stat().st_size > 20_000


def test_shipped_quick_preset_loads_and_is_valid():
    """`shiftvdm demo --quick` (not run here): its section is applied and every stage's config validates."""
    from shiftvdm.backbone import backbone_config
    from shiftvdm.recipes.train_reward import TrainRewardConfig

    cfg = load_demo_config(None, True, [])
    assert cfg.quick == {}  # applied, not applied twice
    assert (cfg.data.generic_clips, cfg.data.heldout_clips, cfg.eval.curve_clips) == (1000, 64, 16)
    assert cfg.pretrain["run"]["max_steps"] == 60 and cfg.arms_common["run"]["max_steps"] == 6
    assert cfg.pretrain["optim"]["lr"] == 6.0e-4  # the full preset's settings stay under the quick ones
    backbone_config(cfg.backbone["name"], dict(cfg.backbone["options"]), "demo_cpu backbone.options")
    assert train_config(cfg, Path("x"), cfg.pretrain, mode="pretrain").run.max_steps == 60
    assert train_config(cfg, Path("x"), cfg.sft, mode="sft").run.max_steps == 10
    for name, arm in cfg.arms.items():
        tc = train_config(cfg, Path("x"), cfg.arms_common, arm, mode=arm.get("mode", "shift"))
        assert tc.run.max_steps == 6 and tc.data.num_frames == cfg.data.num_frames, name
    rc = config_from_dict(TrainRewardConfig, deep_merge({"seed": cfg.seed}, cfg.critic_training), "demo critic stage")
    assert rc.max_steps == 20
    small = load_demo_config(str(TEST_PRESET), False, [])
    assert small.data.heldout_clips < cfg.data.heldout_clips and small.data.generic_clips < cfg.data.generic_clips


def test_sft_arm_never_inherits_rollout_settings():
    cfg = load_demo_config(None, True, [])
    tc = train_config(cfg, Path("x"), cfg.arms_common, cfg.arms["continued_sft"], mode="sft")
    assert tc.loss.lambda_aw == 0.0 and not tc.critic.refresh and tc.rollout.passes_per_buffer == 1


def test_thread_choice_follows_the_request_or_the_free_cores(monkeypatch):
    import os

    import shiftvdm.recipes.demo.threads as demo

    assert demo.choose_threads(3) == 3  # an explicit request wins
    busy = demo.busy_cores(0.05)
    if busy is not None:  # Linux: a share of the machine's cores
        assert 0.0 <= busy <= (os.cpu_count() or 1) + 1e-6
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(demo, "busy_cores", lambda seconds=0.5: 1.0)  # another job holds one of two cores
    assert demo.choose_threads(0) == 1
    monkeypatch.setattr(demo, "busy_cores", lambda seconds=0.5: 0.1)
    assert demo.choose_threads(0) == 2


# ----------------------------------------------------------------------------------------- time budget
UNIT = {"train": {4: 1.0, 8: 2.0, 16: 4.0}, "sample_clip_step": 0.1, "feature_clip": 0.5, "reference_clip": 0.25,
        "eval_clip": 1.0}  # hand-chosen unit costs (seconds)


def test_stage_estimate_arithmetic():
    from shiftvdm.recipes.demo.budget import estimate_line, estimate_stage_seconds
    from shiftvdm.recipes.demo.stages import remaining_seconds

    est = estimate_stage_seconds(load_demo_config(str(TEST_PRESET), False, []), UNIT)
    # the test preset: 3 sampler steps, 4 curve clips, 8 held-out clips
    assert est["pretrain"] == pytest.approx(8 * 4.0)  # 8 steps at batch 16
    assert est["sft"] == pytest.approx(4 * 2.0 + 3 * 4 * 3 * 0.1)  # 4 steps at batch 8 + 3 curve evaluations
    assert est["critic"] == pytest.approx(16 * 1 * 3 * 0.1 + 16 * 2 * 0.5)  # 16 fakes, features of 16 real + 16 fakes
    # arm: 6 steps at batch 4, 3 passes over a 4-conditioning buffer -> 2 buffers of 4x4 rollouts, rewards of
    # 4x(1+4) clips; (1+P)=5 backward passes per step; 3 curve evaluations
    arm = 2 * (16 * 3 * 0.1 + 4 * 5 * 0.5) + 6 * 5 * 1.0 + 3 * 4 * 3 * 0.1
    for name in ("arm:shift", "arm:shift_static", "arm:rwr_sft"):
        assert est[name] == pytest.approx(arm), name
    assert est["arm:continued_sft"] == est["arm:shift"]  # runs for SHIFT's wall time
    assert est["eval"] == pytest.approx(8 * 0.25 + 7 * (8 * 3 * 0.1 + 8 * 1.0))  # reference once, 7 models
    line = estimate_line({"pretrain": 90.0, "arm:shift": 30.0}, 2)
    assert line == "[demo] estimate: ~2.0 min (pretrain 90 s, shift 30 s) on 2 threads"
    # what is left is scaled by actual/estimated over the stages run so far
    assert remaining_seconds({"a": 10.0, "b": 20.0, "c": 30.0}, {"a": 20.0}) == pytest.approx(100.0)
    assert remaining_seconds({"a": 10.0}, {}) == pytest.approx(10.0)


def test_stage_prints_remaining_time_and_records_its_threads(tmp_path, capsys):
    import torch

    from shiftvdm.recipes.demo.stages import Stages

    before = torch.get_num_threads()
    try:
        stages = Stages(tmp_path, label="demo")
        stages.estimates = {"one": 1.0, "two": 4.0}
        assert stages.run("one", lambda: {"x": 1}, threads=lambda: 1) == {"x": 1}
        out = capsys.readouterr().out
        assert "[demo] stage one ... (1 threads)" in out
        left = float(out.split("about ")[1].split(" s left")[0])
        assert "; elapsed " in out and left == pytest.approx(4.0 * stages.actual["one"] / 1.0, rel=0.01, abs=1.0)
        assert json.loads((tmp_path / "stages.json").read_text())["one"]["threads"] == 1
    finally:
        torch.set_num_threads(before)


def test_calibration_leaves_the_random_streams_alone():
    import torch

    from shiftvdm.recipes.demo.budget import calibrate

    cfg = load_demo_config(str(TEST_PRESET), False, [])
    state = torch.get_rng_state()
    unit = calibrate(cfg, repeats=1, clips=2)
    assert torch.equal(torch.get_rng_state(), state)
    assert sorted(unit["train"]) == [4, 8, 16]  # every batch size the stages train at
    assert all(v > 0 for v in unit["train"].values())
    assert all(unit[k] > 0 for k in ("sample_clip_step", "feature_clip", "reference_clip", "eval_clip"))


def test_demo_records_threads_per_stage_and_one_count_for_the_arms(quick_run):
    stages = json.loads((quick_run / "stages.json").read_text())
    assert all(isinstance(v["threads"], int) and v["threads"] >= 1 for v in stages.values())
    assert len({v["threads"] for k, v in stages.items() if k.startswith("arm:")}) == 1  # compared at one count
    metrics = json.loads((quick_run / "metrics.json").read_text())
    assert metrics["stages"]["arm:shift"]["threads"] == stages["arm:shift"]["threads"]
