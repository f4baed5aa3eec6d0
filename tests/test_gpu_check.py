"""benchmarks/gpu_check.py in its CPU mode (--device cpu --tiny): every item of both models runs through the
same code as on a GPU, the JSON holds each item's seconds and memory, the rollout time is marked as
extrapolated, and the ratios are computed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
ITEMS = ("build", "critic_build", "encode", "sft_step", "rollout_2_steps", "rollout_3_steps", "rollout", "decode", "rewards",
         "shift_step", "refresh_step", "refresh_recompute")


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_mode_runs_every_item_and_writes_the_json(tmp_path):
    threads = torch.get_num_threads()
    out = tmp_path / "check.json"
    try:
        report = load_script().main(["--device", "cpu", "--tiny", "--repeats", "0", "--item-timeout", "60",
                                     "--json", str(out)])
    finally:
        torch.set_num_threads(threads)
    written = json.loads(out.read_text())
    assert written["models"].keys() == report["models"].keys() == {"svd", "wan"}
    assert "extrapolated to 25" in written["note"]
    for key, model in written["models"].items():
        items = model["items"]
        assert tuple(items) == ITEMS, (key, list(items))
        bad = {k: v.get("error") for k, v in items.items() if v["status"] != "ok"}
        assert not bad, (key, bad)
        assert all(v["seconds"] > 0 for v in items.values())
        assert items["rollout"]["extrapolated"] and items["rollout"]["seconds"] > items["rollout_3_steps"]["seconds"]
        assert all(v["peak_rss_bytes"] > 0 for k, v in items.items() if k != "rollout")
        assert model["plan_device_bytes"] > 0
        measured, predicted = model["ratios"]["measured"], model["ratios"]["predicted"]
        assert measured["ratio_per_step"] > 1 and predicted["ratio_per_step"] > 1
        assert set(measured["split_per_buffer_s"]) == {"rollouts", "decode", "rewards", "training", "refresh"}


def test_an_item_error_is_recorded_and_the_script_goes_on(tmp_path):
    script = load_script()
    check = script.Check(script.argparse.Namespace(json=str(tmp_path / "c.json"), tiny=True, budget=60,
                                                   item_timeout=5, repeats=1), torch.device("cpu"))
    model = {"items": {}}
    check.report["models"]["m"] = model

    def broken():
        raise RuntimeError("CUDA out of memory (simulated)")

    assert check.item(model, "broken", broken) is None
    assert check.item(model, "fine", lambda: 3) == 3
    written = json.loads((tmp_path / "c.json").read_text())["models"]["m"]["items"]
    assert written["broken"]["status"] == "error" and "out of memory" in written["broken"]["error"]
    assert written["fine"]["status"] == "ok"
