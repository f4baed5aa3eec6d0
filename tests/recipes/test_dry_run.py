"""The full-size dry run: real architectures on the meta device (exact counts), and the step path on tiny configs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from shiftvdm.errors import ConfigError
from shiftvdm.recipes import dry_run as dr
from shiftvdm.recipes.dry_run import resolve_dry_run
from support import write_tiny_architectures

GIB = 1024**3


# ------------------------------------------------------------------ the shipped full-size configs (meta device)
@pytest.mark.parametrize("arch, expected, lora_each", [
    # SVD-XT: the ≈1.5 B UNet, the temporal VAE and the OpenCLIP ViT-H/14 image tower.
    ("svd_xt", {"unet": 1_524_623_082, "vae": 97_742_847, "image_encoder": 632_076_800}, 6_639_616),
    ("wan22_ti2v_5b", {"transformer": 4_999_787_712, "vae": 704_688_668, "text_encoder": 6_731_059_200}, 47_185_920),
    ("wan22_i2v_a14b", {"transformer": 14_288_901_184, "transformer_2": 14_288_901_184, "vae": 126_892_531,
                        "text_encoder": 6_731_059_200}, 104_857_600),
])
def test_full_size_architectures_build_on_meta_with_expected_counts(arch, expected, lora_each):
    parts = dr.build_on_meta(arch)
    assert {name: dr.parameter_count(m) for name, m in parts.items()} == expected
    assert all(p.is_meta for m in parts.values() for p in m.parameters())
    denoiser = parts["unet"] if arch == "svd_xt" else parts["transformer"]
    if arch == "svd_xt":
        from shiftvdm.backbone.svd import DEFAULT_LORA_TARGETS as targets
    else:
        targets = ["to_q", "to_k", "to_v", "to_out.0"]
    assert dr.lora_parameter_count(denoiser, 32, targets) == lora_each
    if arch != "svd_xt":  # diffusers keeps these Wan modules in fp32 when loading in bf16; the plan counts them so
        transformer = parts["transformer"]
        fp32_extra = dr.component_bytes(transformer, torch.bfloat16) - 2 * dr.parameter_count(transformer)
        assert fp32_extra > 0


def test_shipped_configs_name_their_source():
    for arch in dr.ARCHITECTURES:
        for file in (dr.ARCHITECTURES_DIR / arch).rglob("*.json"):
            assert "_source" in json.loads(file.read_text()), file
        assert "boundary_ratio" in dr.architecture_config(arch, "model_index") or arch != "wan22_i2v_a14b"
    assert dr.architecture_config("wan22_i2v_a14b", "model_index")["boundary_ratio"] == 0.9
    assert dr.architecture_config("wan22_ti2v_5b", "model_index")["expand_timesteps"] is True


def test_a14b_that_does_not_fit_is_reported_from_meta_only(monkeypatch):
    monkeypatch.setattr(dr, "_mem_available", lambda: 20 * GIB)
    cfg, dry = resolve_dry_run("shift", "wan22_ti2v5b_shift_wisa", ["backbone.options.layout=i2v_a14b"])
    lines: list[str] = []
    report = dr.dry_run(cfg, dry, echo=lines.append)
    assert "no step was run" in report["not_run"] and "steps" not in report
    assert report["lora_parameters"] == 2 * 104_857_600
    plan = dict(report["memory_plan"])
    assert plan["AdamW moments (2 × fp32)"] == 8 * 2 * 104_857_600
    assert plan["frozen transformer"] > 26 * GIB  # 14.3 B parameters in bf16
    assert any("NOT RUN" in line for line in lines)
    assert "of RAM" in report["not_run"] and "20.00 GiB available" in report["not_run"]
    if "full_size_plan" in report:  # train/memory.py's plan at the preset's 49×480×832, text encoder included
        frozen = {name: size for where, name, size in report["full_size_plan"]}["frozen model"]
        assert frozen == sum(size for name, size in report["memory_plan"] if name.startswith("frozen"))


def test_dry_run_options_are_strict():
    with pytest.raises(ConfigError, match="group_size"):
        resolve_dry_run("shift", "svd_shift_davis", ["dry_run.group_sizes=[0]"])
    with pytest.raises(ConfigError):
        resolve_dry_run("shift", "svd_shift_davis", ["dry_run.not_an_option=1"])
    with pytest.raises(ConfigError, match="toy"):
        dr.architecture_for("toy", {})


# ------------------------------------------------------------------ the step path on tiny stand-in configs
@pytest.fixture
def tiny_arch(tmp_path, monkeypatch):
    root = tmp_path / "arch"
    write_tiny_architectures(root)
    monkeypatch.setattr(dr, "ARCHITECTURES_DIR", root)
    monkeypatch.setattr(dr, "_SMALL_SIZE", {"svd_xt": (4, 32, 32), "wan22_ti2v_5b": (9, 64, 64)})
    return root


@pytest.mark.parametrize("preset, extra", [
    ("svd_shift_davis", ["backbone.options.gradient_checkpointing=false"]),
    ("wan22_ti2v5b_shift_wisa", ["backbone.options.max_sequence_length=16"]),
])
def test_dry_run_step_path_on_tiny_configs(tiny_arch, preset, extra):
    cfg, dry = resolve_dry_run("shift", preset, extra + ["dry_run.group_sizes=[1,2]", "dry_run.inference_steps=1"])
    lines: list[str] = []
    report = dr.dry_run(cfg, dry, echo=lines.append)
    # the counts of the meta build are those of the built model, and LoRA is what peft actually added
    assert report["trainable_parameters_built"] == report["lora_parameters"] > 0
    assert [s["group_size"] for s in report["steps"]] == [1, 2]
    for step in report["steps"]:
        m = step["metrics"]
        assert step["steps"] == 1
        assert math.isfinite(m["loss/real"]) and math.isfinite(m["loss/aw"]) and math.isfinite(m["grad_norm"])
        assert step["timers"].get("discriminator", 0) > 0  # the refresh ran after the step
        assert step["peak_rss"] > 0
    plan = dict(report["memory_plan"])
    lora = report["lora_parameters"]
    assert plan["AdamW moments (2 × fp32)"] == 8 * lora
    assert plan["LoRA weights"] == lora * torch.tensor([], dtype=getattr(torch, report["lora_dtype"][-1])).element_size()
    assert any(line.startswith("  peak RSS P=1") for line in lines)


def test_cli_dry_run_flag(tiny_arch, capsys):
    from shiftvdm.cli import main

    code = main(["shift", "--config", "svd_shift_davis", "--dry-run", "dry_run.meta_only=true"])
    out = capsys.readouterr().out
    assert code == 0
    assert "NOT RUN — dry_run.meta_only=true" in out and "LoRA r=32" in out
