"""FVD with Inception-I3D (issue 30 item 1): key layout and strict loading of the released formats, golden
parity with the official pytorch-i3d on seeded weights through VideoGPT's preprocessing, the TorchScript
archive refused, and the distance itself (a set against itself is 0; it grows with a known corruption).

The fixture ``tests/fixtures/i3d/i3d_golden.npz`` came from a throwaway script: ``seeded_i3d_state_dict(7)``
saved with ``torch.save``, loaded into piergiaj/pytorch-i3d's ``InceptionI3d(400)`` by its own
``load_state_dict``, fed VideoGPT's ``preprocess`` (common_metrics_on_video_quality fvd/videogpt/fvd.py) of the
two stored uint8 clips (10×48×64, 17×70×45); the logits averaged over time as VideoGPT does. The official code
is not in this repository.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from shiftvdm.errors import CheckpointError, DataError
from shiftvdm.eval.fvd import I3DFeatureStream, fvd
from shiftvdm.eval.i3d import (
    InceptionI3d,
    load_i3d,
    preprocess_videogpt,
    read_i3d_state_dict,
    seeded_i3d_state_dict,
)
from shiftvdm.motion.weights import identify_network

GOLDEN = Path(__file__).parents[1] / "fixtures" / "i3d" / "i3d_golden.npz"


@pytest.fixture(scope="module")
def seeded_weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("i3d") / "i3d_pretrained_400.pt"
    torch.save(seeded_i3d_state_dict(7), path)
    return path


def test_key_layout_is_pytorch_i3d():
    keys = InceptionI3d.expected_keys()
    # the official state dict's keys and shapes, listed from piergiaj/pytorch-i3d's InceptionI3d(400)
    rows = [line.split("\t") for line in (GOLDEN.parent / "pytorch_i3d_keys.tsv").read_text().splitlines()]
    assert {k: tuple(int(d) for d in s.strip("()").split(",") if d.strip()) for k, s in rows} == keys
    # names and shapes from piergiaj/pytorch-i3d pytorch_i3d.py (Unit3D conv3d/bn, InceptionModule b0..b3b)
    assert keys["Conv3d_1a_7x7.conv3d.weight"] == (64, 3, 7, 7, 7)
    assert keys["Conv3d_2c_3x3.conv3d.weight"] == (192, 64, 3, 3, 3)
    assert keys["Mixed_3b.b1b.conv3d.weight"] == (128, 96, 3, 3, 3)
    assert keys["Mixed_5c.b3b.bn.running_var"] == (128,)
    assert keys["logits.conv3d.weight"] == (400, 1024, 1, 1, 1) and keys["logits.conv3d.bias"] == (400,)
    assert not any(k.startswith(("logits.bn", "Mixed_3b.b3a")) for k in keys)
    assert sum(int(np.prod(s)) for k, s in keys.items() if not k.endswith("num_batches_tracked")
               and "running" not in k) == 12_697_264
    assert identify_network(set(keys)) == "Inception-I3D"


def test_golden_parity_with_official_pytorch_i3d(seeded_weights):
    golden = np.load(GOLDEN)
    model = load_i3d(seeded_weights)
    for name in ("landscape", "portrait"):
        video = golden[f"{name}_video"]
        x = preprocess_videogpt(video)
        assert x.shape == (3, len(video), 224, 224) and -1.0 <= x.min() and x.max() <= 1.0
        assert float(x.mean()) == pytest.approx(float(golden[f"{name}_input_mean"]), abs=1e-6)
        with torch.no_grad():
            ours = model(x[None])[0].numpy()
        expected = golden[f"{name}_logits"]
        assert expected.std() > 3.0  # calibrated: logits at a trained network's scale, not near-constant
        np.testing.assert_allclose(ours, expected, atol=2e-4 * np.abs(expected).max(), rtol=0)


def test_old_state_dict_without_step_counters_loads_and_wrong_files_are_refused(seeded_weights, tmp_path):
    state = torch.load(seeded_weights, weights_only=True)
    old = tmp_path / "rgb_imagenet.pt"  # pytorch-i3d's file predates BatchNorm's num_batches_tracked
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, old)
    assert set(read_i3d_state_dict(old)) == set(state)
    load_i3d(old)
    cut = tmp_path / "cut.pt"
    torch.save({k: v for k, v in state.items() if not k.startswith("logits.")}, cut)
    with pytest.raises(CheckpointError, match=r"cut.pt: not a Inception-I3D .*missing 2 keys.*logits.conv3d"):
        load_i3d(cut)
    script = tmp_path / "i3d_torchscript.pt"
    with zipfile.ZipFile(script, "w") as archive:  # the layout of a TorchScript archive
        archive.writestr("i3d/code/__torch__/model.py", "def forward(self, x): ...")
        archive.writestr("i3d/constants.pkl", b"")
    with pytest.raises(CheckpointError, match="TorchScript archive.*i3d_pretrained_400.pt or rgb_imagenet.pt"):
        read_i3d_state_dict(script)
    with pytest.raises(CheckpointError, match="not found"):
        load_i3d(tmp_path / "absent.pt")


def test_preprocessing_and_minimum_frames():
    video = np.zeros((9, 30, 40, 3), np.uint8)
    stream = I3DFeatureStream(InceptionI3d().eval())
    with pytest.raises(DataError, match="clip: FVD needs at least 10 frames, got 9"):
        stream.add(video)
    with pytest.raises(DataError, match="uint8"):
        preprocess_videogpt(video.astype(np.float32))
    white = preprocess_videogpt(np.full((10, 30, 40, 3), 255, np.uint8))
    assert white.shape == (3, 10, 224, 224) and torch.allclose(white, torch.ones(()), atol=1e-6)  # 255 -> 1


def test_fvd_matches_the_reference_formula_is_zero_on_itself_and_grows_with_corruption():
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(8, 8))
    a, b = rng.normal(size=(50, 8)) @ mixing, rng.normal(size=(40, 8)) @ mixing + 0.3
    mu_a, mu_b, cov_a, cov_b = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real  # StyleGAN-V's frechet_distance
    reference = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))
    assert fvd(a, b) == pytest.approx(reference, rel=1e-9)
    assert fvd(a, a) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(DataError, match="at least 2 reference clips"):
        fvd(a, b[:1])


def test_eval_suite_fvd_cli_compares_models_against_one_reference(seeded_weights, tmp_path, capsys):
    from shiftvdm.cli import main as cli_main
    from shiftvdm.data.video_io import write_video

    rng = np.random.default_rng(2)
    folders = {name: tmp_path / name for name in ("real", "noise25", "noise60")}
    for folder in folders.values():
        folder.mkdir()
    for i in range(2):
        clip = np.clip(rng.normal(128, 30, (10, 28, 28, 3)), 0, 255).astype(np.uint8)
        write_video(folders["real"] / f"c{i}.npy", clip, fps=8)
        for noise in (25, 60):  # a known corruption, at two strengths
            noisy = np.clip(clip + rng.normal(0, noise, clip.shape), 0, 255).astype(np.uint8)
            write_video(folders[f"noise{noise}"] / f"c{i}.npy", noisy, fps=8)
    real = folders["real"]
    out_json = tmp_path / "fvd.json"
    code = cli_main(["eval", str(real), "--compare", str(folders["noise25"]), str(folders["noise60"]),
                     "--reference", str(real), "--suite", "fvd",
                     "--weights", str(seeded_weights.parent), "--batch-size", "2", "--device", "cpu",
                     "--json", str(out_json)])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0] == "| dimension | real | noise25 | noise60 |"
    assert "variant i3d-videogpt (i3d_pretrained_400.pt" in out
    assert "fvd: from 2 generated and 2 reference clips, fewer than the 400 I3D features" in out  # marked, not refused
    models = json.loads(out_json.read_text())["models"]
    fvds = [models[name]["aggregate"]["fvd"] for name in folders]
    assert fvds[0] == pytest.approx(0.0, abs=1e-6)  # the set against itself
    assert 1.0 < fvds[1] < fvds[2]  # growing with the corruption
    assert models["noise60"]["counts"]["fvd"] == "2/2 clips"
