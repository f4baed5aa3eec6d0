"""VBench's appearance dimensions (issue 30 items 3-4): the released DINO / OpenAI CLIP / LAION formats
loaded strictly, golden parity with the official code (facebookresearch/dino ``vision_transformer.py``, OpenAI
``clip/model.py``, VBench's torchvision transforms and per-video rules, run in a throwaway environment on
weights drawn here from a seed; outputs in tests/fixtures/vbench), and each rule on hand-built clips."""

from __future__ import annotations

import io
import math
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from shiftvdm.errors import CheckpointError, DataError
from shiftvdm.eval.musiq import (
    MUSIQ_SPAQ,
    Musiq,
    MusiqShape,
    load_musiq,
    musiq_frame_scores,
    musiq_official_keys,
    seeded_musiq_state,
)
from shiftvdm.eval.vbench_dimensions import (
    VBENCH_DIMENSIONS,
    AestheticScorer,
    ConsistencyScorer,
    I2VSubjectScorer,
    ImagingQualityScorer,
    clip_frames,
    consistency_score,
    dino_frames,
    dino_internet_frames,
    dino_internet_image,
    frames_to_tensor,
    i2v_score,
    shorter_side_size,
)
from shiftvdm.eval.vbench_networks import (
    CLIP_VITB32,
    CLIP_VITL14,
    DINO_VITB16,
    ClipImageTower,
    DinoViT,
    VitShape,
    aesthetic_head,
    convert_dino_state,
    convert_openai_visual,
    dino_official_keys,
    load_clip_image_tower,
    load_dino,
    openai_visual_keys,
    read_torchscript_tensors,
    seeded_aesthetic_state,
    seeded_clip_visual_state,
    seeded_dino_state,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "vbench"
# the reduced shapes the golden outputs were made with (same official code paths, fewer / narrower blocks)
DINO_SMALL = VitShape(width=128, layers=2, patch=16, grid=14)
CLIP_B_SMALL = VitShape(width=128, layers=2, patch=32, grid=7, output_dim=32)
CLIP_L_SMALL = VitShape(width=128, layers=2, patch=14, grid=16, output_dim=768)
ARCHIVE_VISUAL = VitShape(width=64, layers=1, patch=8, grid=4, output_dim=16)
SEEDS = {"dino": 11, "clip_b": 12, "clip_l": 13, "aesthetic": 14, "archive": 15}


def official_keys(name: str) -> list[tuple[str, tuple[int, ...]]]:
    rows = [line.split("\t") for line in (FIXTURES / name).read_text().splitlines() if line.strip()]
    return [(row[0], tuple(int(d) for d in row[1].strip("()").split(",") if d.strip())) for row in rows]


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(FIXTURES / "dino_clip_golden.npz", allow_pickle=False))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("vbench_weights")
    paths = {"dino": root / "dino.pth", "clip_b": root / "clip_b.pth", "clip_l": root / "clip_l.pth",
             "aesthetic": root / "aesthetic.pth"}
    torch.save(seeded_dino_state(DINO_SMALL, SEEDS["dino"]), paths["dino"])
    torch.save(seeded_clip_visual_state(CLIP_B_SMALL, SEEDS["clip_b"]), paths["clip_b"])
    torch.save(seeded_clip_visual_state(CLIP_L_SMALL, SEEDS["clip_l"]), paths["clip_l"])
    torch.save(seeded_aesthetic_state(SEEDS["aesthetic"]), paths["aesthetic"])
    return paths


@pytest.fixture(scope="module")
def dino(files):
    model = load_dino(files["dino"], expect=None)
    return lambda pixels: model(pixels).detach()


# ----- released formats: key lists and strict loading ---------------------------------------------------


def _meta_state(keys):
    return {k: torch.empty(shape, device="meta") for k, shape in keys}


def test_full_size_key_lists_equal_the_official_models_and_convert_onto_ours():
    dino_keys = official_keys("dino_vitb16_keys.tsv")
    assert list(dino_official_keys(DINO_VITB16).items()) == dino_keys
    for shape, listing in ((CLIP_VITB32, "clip_vitb32_visual_keys.tsv"), (CLIP_VITL14, "clip_vitl14_visual_keys.tsv")):
        assert list(openai_visual_keys(shape).items()) == official_keys(listing)
    with torch.device("meta"):  # full-size networks without weights: every converted key lands, with its shape
        targets = [(DinoViT(DINO_VITB16), convert_dino_state(_meta_state(dino_keys)))]
        for shape, listing in ((CLIP_VITB32, "clip_vitb32_visual_keys.tsv"),
                               (CLIP_VITL14, "clip_vitl14_visual_keys.tsv")):
            targets.append((ClipImageTower(shape), convert_openai_visual(_meta_state(official_keys(listing)))))
    for module, converted in targets:
        ours = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        assert {k: tuple(v.shape) for k, v in converted.items()} == ours
    assert sum(math.prod(s) for _, s in dino_keys) == 85_798_656


def test_strict_loading_names_the_file_and_the_fault(tmp_path, files):
    state = seeded_dino_state(DINO_SMALL, 0)
    for name, broken, expected in (
            ("missing.pth", {k: v for k, v in state.items() if k != "blocks.1.mlp.fc2.bias"}, "missing 1 keys"),
            ("extra.pth", {**state, "head.weight": torch.zeros(3, 128)}, "unexpected 1 keys (first: head.weight)"),
            ("shape.pth", {**state, "norm.bias": torch.zeros(7)}, "norm.bias (7,) (expected (128,))")):
        torch.save(broken, tmp_path / name)
        with pytest.raises(CheckpointError, match=re.escape(expected)) as info:
            load_dino(tmp_path / name, expect=None)
        assert name in str(info.value)
    with pytest.raises(CheckpointError, match=r"not a DINO ViT-B/16 checkpoint: it holds a ViT of width 128"):
        load_dino(files["dino"])  # VBench's dimension needs the released ViT-B/16, not another shape
    with pytest.raises(CheckpointError, match="no 'cls_token' key"):
        load_dino(files["clip_b"], expect=None)
    with pytest.raises(CheckpointError, match=r"expected width 768, 12 blocks, patch 32, 224 px"):
        load_clip_image_tower(files["clip_b"], CLIP_VITB32, "CLIP ViT-B/32")
    with pytest.raises(CheckpointError, match="not found"):
        load_clip_image_tower(tmp_path / "ViT-B-32.pt", CLIP_VITB32, "CLIP ViT-B/32")
    torch.save({"weight": torch.zeros(1, 512), "bias": torch.zeros(1)}, tmp_path / "head.pth")
    with pytest.raises(CheckpointError, match=r"weight \(1, 512\) \(expected \(1, 768\)\)"):
        aesthetic_head(tmp_path / "head.pth")


def test_openai_torchscript_archive_is_read_as_tensors_without_running_it(tmp_path, golden):
    # an official CLIP traced and saved by torch.jit (fp16, as OpenAI's archives), its image tower seeded here
    archive = FIXTURES / "clip_tiny_torchscript.pt"
    state = read_torchscript_tensors(archive)
    assert len(state) == int(golden["archive_keys"])  # every parameter of the official model, text tower too
    drawn = seeded_clip_visual_state(ARCHIVE_VISUAL, SEEDS["archive"])
    for key, value in drawn.items():
        assert state[key].dtype == torch.float16 and torch.equal(state[key], value.half()), key
    tower = load_clip_image_tower(archive, None, "CLIP")
    torch.save({k: v.half().float() for k, v in drawn.items()}, tmp_path / "plain.pth")
    plain = load_clip_image_tower(tmp_path / "plain.pth", None, "CLIP")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(tower(x), plain(x))
    with pytest.raises(CheckpointError, match=r"expected width 768.*patch 32"):
        load_clip_image_tower(archive, CLIP_VITB32, "CLIP ViT-B/32")


class _Payload:  # a pickle that would call a function on load
    def __reduce__(self):
        return (print, ("this must never run",))


def test_an_archive_that_refers_to_code_is_refused_with_the_conversion_command(tmp_path, capsys):
    path = tmp_path / "ViT-B-32.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ViT-B-32/data.pkl", pickle.dumps({"visual": _Payload()}, protocol=2))
        archive.writestr("ViT-B-32/code/__torch__/model.py", "")
        archive.writestr("ViT-B-32/constants.pkl", pickle.dumps(()))
    with pytest.raises(CheckpointError, match=r"refused.*(builtins|__builtin__)\.print.*clip\.load\('ViT-B-32\.pt'"):
        load_clip_image_tower(path, CLIP_VITB32, "CLIP ViT-B/32")
    assert "must never run" not in capsys.readouterr().out
    buffer = io.BytesIO()
    torch.save({"visual.conv1.weight": torch.zeros(2)}, buffer)
    (tmp_path / "torn.pt").write_bytes(buffer.getvalue()[:40])
    with pytest.raises(CheckpointError, match="torn.pt"):
        load_clip_image_tower(tmp_path / "torn.pt", CLIP_VITB32, "CLIP ViT-B/32")


def test_a_transformers_clip_folder_gives_the_same_tower(tmp_path, files):
    from safetensors.torch import save_file

    reference = load_clip_image_tower(files["clip_b"], None, "CLIP")
    folder = tmp_path / "clip-vit"
    folder.mkdir()
    tensors = {k[len("clip."):]: v.contiguous() for k, v in reference.state_dict().items()}
    tensors["text_model.embeddings.token_embedding.weight"] = torch.zeros(4, 8)  # the text tower is ignored
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text('{"projection_dim": 32, "vision_config": {"hidden_size": 128, '
                                        '"num_hidden_layers": 2, "patch_size": 32, "image_size": 224, '
                                        '"num_attention_heads": 2}}')
    tower = load_clip_image_tower(folder, None, "CLIP")
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(tower(x), reference(x))


# ----- golden parity with the official code -----------------------------------------------------------


def test_preprocessing_equals_vbench_torchvision_transforms(golden):
    frames, image = golden["frames"], golden["image"]
    assert tuple(dino_frames(frames).shape) == tuple(golden["dino_pixels_shape"])  # 48x80 -> 224x373, no crop
    for ours, name in ((dino_frames(frames), "dino_pixels"), (clip_frames(frames), "clip_pixels"),
                       (dino_internet_frames(frames), "i2v_pixels"), (dino_internet_image(image), "i2v_image_pixels")):
        np.testing.assert_allclose(ours[:, :, ::8, ::8].numpy(), golden[name], rtol=0, atol=1e-6)
    assert shorter_side_size(320, 576, 224) == (224, 403) and shorter_side_size(576, 320, 224) == (403, 224)


def test_dino_and_clip_features_and_scores_equal_the_official_code(golden, files, dino):
    frames, image = golden["frames"], golden["image"]
    # features: max |Δ| 2.4e-6 (DINO, scale 3.8), 1.1e-6 (CLIP B, scale 3.3), 1.2e-6 (CLIP L, scale 3.3)
    np.testing.assert_allclose(dino(dino_frames(frames)).numpy(), golden["dino_features"], rtol=0, atol=2e-5)
    square = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)[:1]
    np.testing.assert_allclose(dino(torch.from_numpy(square)).numpy(), golden["dino_square"], rtol=0, atol=2e-5)
    clip_b = load_clip_image_tower(files["clip_b"], None, "CLIP")
    clip_l = load_clip_image_tower(files["clip_l"], None, "CLIP")
    embed_b, embed_l = (lambda x: clip_b(x).detach()), (lambda x: clip_l(x).detach())
    np.testing.assert_allclose(embed_b(clip_frames(frames)).numpy(), golden["clipb_features"], rtol=0, atol=2e-5)
    np.testing.assert_allclose(embed_l(clip_frames(frames)).numpy(), golden["clipl_features"], rtol=0, atol=2e-5)
    scores = {"subject_consistency": ConsistencyScorer(dino, dino_frames).score(frames),
              "i2v_subject": I2VSubjectScorer(dino).score(frames, image),
              "background_consistency": ConsistencyScorer(embed_b, clip_frames).score(frames),
              "aesthetic_quality": AestheticScorer(embed_l, aesthetic_head(files["aesthetic"])).score(frames)}
    for name, value in scores.items():  # realistic values (0.94, 0.91, 0.97, 0.49), equal to 1e-6
        assert value == pytest.approx(float(golden[name]), abs=1e-6), name
        assert 0.3 < value < 0.99


# ----- the rules on hand-built inputs ------------------------------------------------------------------


def test_consistency_rule_on_known_features():
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    assert consistency_score(torch.stack([a] * 5)) == pytest.approx(1.0)
    # one cut A A | B B: pairs (1: 1, 1), (2: 0, 0), (3: 1, 0) -> (1 + 0 + 0.5) / 3
    assert consistency_score(torch.stack([a, a, b, b])) == pytest.approx(0.5)
    # a smooth turn by θ per frame: (cos θ + cos iθ) / 2 averaged, and negative cosines clamp to 0
    theta = 0.2
    turn = torch.stack([torch.tensor([math.cos(i * theta), math.sin(i * theta), 0.0]) for i in range(5)])
    expected = np.mean([(math.cos(theta) + math.cos(i * theta)) / 2 for i in range(1, 5)])
    assert consistency_score(turn) == pytest.approx(expected, abs=1e-6)
    assert consistency_score(torch.stack([a, -a])) == 0.0
    with pytest.raises(DataError, match="at least 2 frames"):
        consistency_score(a[None])


def test_i2v_rule_on_known_features():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert i2v_score(a, torch.stack([a] * 4)) == pytest.approx(1.0)
    assert i2v_score(b, torch.stack([a] * 4)) == pytest.approx(0.6)  # unrelated image: only smoothness counts
    # the image matches frame 0 only; one cut after it: 0.4·1 + 0.3·mean(0, 1) + 0.3·0
    assert i2v_score(a, torch.stack([a, b, b])) == pytest.approx(0.4 + 0.15)


def _scene(seed: int, height: int = 64, width: int = 160) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width]).reshape(2, 1, 1)
    base = np.stack([np.sin(6 * xx + rng.uniform(0, 6)) * 90 + 128, np.cos(5 * yy + rng.uniform(0, 6)) * 90 + 128,
                     (xx + yy) * 100 + rng.uniform(0, 50)], -1)
    for _ in range(6):  # a few solid shapes
        y, x = rng.integers(0, height - 16), rng.integers(0, width - 24)
        base[y:y + 16, x:x + 24] = rng.uniform(0, 255, 3)
    return np.clip(base, 0, 255).astype(np.uint8)


def test_static_cut_and_pan_clips_through_the_network(dino):
    scene, other = _scene(1), _scene(2)
    static = np.stack([scene[:, :96]] * 4)
    pan = np.stack([scene[:, 8 * i: 8 * i + 96] for i in range(4)])  # the camera moves 8 px a frame
    cut = np.stack([scene[:, :96]] * 2 + [other[:, :96]] * 2)
    subject = ConsistencyScorer(dino, dino_frames)
    values = {name: subject.score(clip) for name, clip in (("static", static), ("pan", pan), ("cut", cut))}
    assert values["static"] == pytest.approx(1.0, abs=1e-5)
    assert values["cut"] < values["pan"] < values["static"]
    i2v = I2VSubjectScorer(dino)
    assert i2v.score(static, scene[:, :96]) == pytest.approx(1.0, abs=1e-5)
    assert i2v.score(static, other[:, :96]) < i2v.score(pan, scene[:, :96]) < 1.0
    with pytest.raises(DataError, match="conditioning image"):
        i2v.score(static, None)
    with pytest.raises(DataError, match=r"uint8 frames of shape \(T, H, W, 3\)"):
        subject.score(static.astype(np.float32), None)


def test_dimension_specs_name_their_released_files(files, tmp_path):
    assert set(VBENCH_DIMENSIONS) >= {"subject_consistency", "background_consistency", "aesthetic_quality",
                                      "imaging_quality", "i2v_subject"}
    names = {d: [w.name for w in spec.weights] for d, spec in VBENCH_DIMENSIONS.items()}
    assert names["subject_consistency"] == names["i2v_subject"] == ["dino_vitbase16_pretrain.pth"]
    assert names["background_consistency"] == ["ViT-B-32.pt"]
    assert names["aesthetic_quality"] == ["ViT-L-14.pt", "sa_0_4_vit_l_14_linear.pth"]
    assert names["imaging_quality"] == ["musiq_spaq_ckpt-358bb6af.pth"]
    assert [d for d, spec in VBENCH_DIMENSIONS.items() if spec.needs_image] == ["i2v_subject", "i2v_background"]
    assert all(spec.name == d and all(w.source for w in spec.weights) for d, spec in VBENCH_DIMENSIONS.items())
    # built from a file of the wrong size, the dimension refuses it by name
    with pytest.raises(CheckpointError, match="dino.pth: not a DINO ViT-B/16"):
        VBENCH_DIMENSIONS["subject_consistency"].build({"dino_vitbase16_pretrain.pth": files["dino"]},
                                                       torch.device("cpu"))


# ----- MUSIQ (imaging_quality) --------------------------------------------------------------------------

MUSIQ_SMALL = MusiqShape(hidden=64, mlp=128, heads=2, layers=2)


def musiq_frames() -> np.ndarray:
    """The golden run's frames: integer formulas (exact everywhere), 3 frames 64x576, finer texture each frame."""
    yy, xx = np.mgrid[0:64, 0:576].astype(np.int64)
    frames = [np.stack([(xx * (t + 1) * 7 + yy * 3) % 256,
                        ((xx // (8 - 2 * t)) + (yy // (8 - 2 * t))) % 2 * 160 + 40,
                        (xx * yy // (40 + 10 * t)) % 256], -1) for t in range(3)]
    return np.stack(frames).astype(np.uint8)


def test_musiq_key_list_equals_pyiqa_and_loads_strictly(tmp_path):
    assert list(musiq_official_keys(MUSIQ_SPAQ).items()) == official_keys("musiq_keys.tsv")
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in Musiq(MUSIQ_SPAQ).state_dict().items()}
    assert ours == dict(official_keys("musiq_keys.tsv"))
    assert sum(math.prod(s) for _, s in official_keys("musiq_keys.tsv")) == 27_125_825
    state = seeded_musiq_state(MUSIQ_SMALL, 0)
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "dp.pth")  # a DataParallel dump
    load_musiq(tmp_path / "dp.pth", MUSIQ_SMALL)
    torch.save({**state, "head.weight": torch.zeros(10, 64), "head.bias": torch.zeros(10)}, tmp_path / "ava.pth")
    with pytest.raises(CheckpointError, match="10 outputs.*musiq_spaq_ckpt-358bb6af.pth"):
        load_musiq(tmp_path / "ava.pth", MUSIQ_SMALL)
    del state["transformer_encoder.cls"]
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match="cut.pth: not a MUSIQ checkpoint: missing 1 keys"):
        load_musiq(tmp_path / "cut.pth", MUSIQ_SMALL)


def test_musiq_scores_equal_pyiqa_through_vbench_preprocessing(tmp_path):
    golden = dict(np.load(FIXTURES / "musiq_golden.npz"))
    frames = musiq_frames()
    assert int(frames.astype(np.int64).sum()) == int(golden["frames_sum"])
    torch.save(seeded_musiq_state(MUSIQ_SMALL, 21), tmp_path / "musiq.pth")
    model = load_musiq(tmp_path / "musiq.pth", MUSIQ_SMALL)
    cpu = torch.device("cpu")
    # 64x576 -> VBench's resize to 56x512, then scales 224 / 384 / original; max |Δ| 0 at scores ~65-77
    # (two of the three frames: MUSIQ runs 225 patches through its CNN root per frame)
    np.testing.assert_allclose(musiq_frame_scores(model, frames_to_tensor(frames[:2]), cpu),
                               golden["frame_scores"][:2], rtol=0, atol=1e-3)
    # 64x300: no resize; the dimension's value is the mean frame score / 100 (VBench's imaging_quality)
    value = ImagingQualityScorer(model, cpu).score(frames[1:, :, :300], None)
    assert value == pytest.approx(float(np.mean(golden["small_frame_scores"][1:])) / 100, abs=1e-5)
    assert float(golden["imaging_quality"]) == pytest.approx(float(np.mean(golden["frame_scores"])) / 100)
