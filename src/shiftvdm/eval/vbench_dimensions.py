"""VBench's appearance dimensions, per clip, from the users' local copies of the released networks.

Each rule follows the VBench code (Vchitect/VBench@45e79ec1; facts carried over, not the code):

* subject_consistency (vbench/subject_consistency.py): DINO ViT-B/16 CLS feature of every frame after
  ``dino_transform(224)`` (vbench/utils.py: shorter side to 224, bilinear, no antialias, no crop, /255,
  ImageNet mean/std); for frames i >= 1, (max(0, cos(f_i-1, f_i)) + max(0, cos(f_0, f_i))) / 2, averaged
  over the T - 1 frames (VBench's per-video value; its total divides the sum by all frames of all videos,
  the same as the mean of per-clip values when clips have equal length).
* background_consistency (vbench/background_consistency.py): the same rule on OpenAI CLIP ViT-B/32
  ``encode_image`` after ``clip_transform(224)`` (shorter side 224 bicubic without antialias, centre crop 224,
  /255, CLIP mean/std).
* aesthetic_quality (vbench/aesthetic_quality.py): CLIP ViT-L/14 embedding, L2-normalised, through LAION's
  linear head; the frame scores / 10, averaged over the clip.
* i2v_subject (vbench2_beta_i2v/i2v_subject.py, VBench++): DINO features after ``dino_transform_internet``
  (shorter side 256 bicubic with antialias, centre crop 224) of the frames, and of the conditioning image
  through the same steps on a PIL image; 0.4·max_i max(0, cos(image, f_i)) + 0.3·mean and 0.3·min over
  i >= 1 of max(0, cos(f_i-1, f_i)).
* i2v_background (vbench2_beta_i2v/i2v_background.py ``i2v_background``, VBench++): the same rule on DreamSim
  ensemble embeddings (``dreamsim.embed``, see eval/dreamsim.py), after ``dreamsim_transform(224)`` on the frames
  (a square 224x224 bicubic resize, antialiased, /255; no normalisation: DreamSim normalises per branch) and
  ``dreamsim_transform_Image(224)`` on the conditioning image (PIL bicubic to 224x224, ``ToTensor``). Written
  in 2024-03/07 against dreamsim 0.1.3 (the only release then; VBench pins none); the weights read here are
  dreamsim >= 0.2.0's ``ensemble_lora`` checkpoint (``pip install dreamsim`` today), whose embedding gives the
  same cosines (eval/dreamsim.py).

VBench loads frames as float tensors in 0..255 and resizes those (no rounding to uint8 in between); the
frames here take the same path. Networks run in fp32 and batched over the clip's frames (VBench runs DINO
one frame at a time, and OpenAI CLIP in fp16 when on a GPU; both give the same values to float rounding).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from shiftvdm.errors import DataError
from shiftvdm.eval.dimensions import DimensionSpec, WeightFile
from shiftvdm.eval.dreamsim import load_dreamsim
from shiftvdm.eval.musiq import Musiq, load_musiq, musiq_frame_scores
from shiftvdm.eval.vbench_networks import (
    CLIP_VITB32,
    CLIP_VITL14,
    aesthetic_head,
    load_clip_image_tower,
    load_dino,
)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)

DINO_FILE = WeightFile(
    "dino_vitbase16_pretrain.pth",
    "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth "
    "(facebookresearch/dino; VBench keeps it in ~/.cache/vbench/dino_model/)")
CLIP_B32_FILE = WeightFile(
    "ViT-B-32.pt",
    "https://openaipublic.azureedge.net/clip/models/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/"
    "ViT-B-32.pt (OpenAI CLIP; VBench keeps it in ~/.cache/vbench/clip_model/); a transformers CLIP folder "
    "(openai/clip-vit-base-patch32) under this name is read as well")
CLIP_L14_FILE = WeightFile(
    "ViT-L-14.pt",
    "https://openaipublic.azureedge.net/clip/models/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/"
    "ViT-L-14.pt (OpenAI CLIP; VBench keeps it in ~/.cache/vbench/clip_model/); a transformers CLIP folder "
    "(openai/clip-vit-large-patch14) under this name is read as well")
AESTHETIC_FILE = WeightFile(
    "sa_0_4_vit_l_14_linear.pth",
    "https://github.com/LAION-AI/aesthetic-predictor/raw/main/sa_0_4_vit_l_14_linear.pth (LAION aesthetic "
    "predictor; VBench keeps it in ~/.cache/vbench/aesthetic_model/emb_reader/)")
_DREAMSIM_ZIP = ("https://github.com/ssundaram21/dreamsim/releases/download/v0.2.0-checkpoints/"
                 "dreamsim_ensemble_checkpoint.zip (DreamSim's ensemble checkpoint, unzipped; `pip install dreamsim` "
                 "puts it in ./models/)")
DREAMSIM_CLIP_FILE = WeightFile("clip_vitb16_pretrain.pth.tar", _DREAMSIM_ZIP)
DREAMSIM_OPEN_CLIP_FILE = WeightFile("open_clip_vitb16_pretrain.pth.tar", _DREAMSIM_ZIP)
DREAMSIM_LORA_FILE = WeightFile("ensemble_lora/adapter_model.bin", _DREAMSIM_ZIP + "; its adapter_config.json "
                                "beside it")
MUSIQ_FILE = WeightFile(
    "musiq_spaq_ckpt-358bb6af.pth",
    "https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights/musiq_spaq_ckpt-358bb6af.pth "
    "(pyiqa MUSIQ trained on SPAQ; VBench keeps it in ~/.cache/vbench/pyiqa_model/)")


# ----- preprocessing, as torchvision does it on VBench's float frames ---------------------------------------


def frames_to_tensor(frames: np.ndarray, what: str = "frames") -> Tensor:
    """uint8 (T, H, W, 3) -> float32 (T, 3, H, W) in 0..255, as VBench's ``load_video`` returns them."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise DataError(f"{what}: expected uint8 frames of shape (T, H, W, 3), got "
                        f"{getattr(frames, 'dtype', type(frames).__name__)} {getattr(frames, 'shape', '')}")
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()


def shorter_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """torchvision ``Resize(size)``'s output (H, W): the shorter side to ``size``, the longer truncated."""
    if width <= height:
        return int(size * height / width), size
    return size, int(size * width / height)


def resize(x: Tensor, size: tuple[int, int], mode: str, antialias: bool) -> Tensor:
    """torchvision's tensor resize (align_corners False; unchanged when already at ``size``)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=antialias)


def center_crop(x: Tensor, size: int) -> Tensor:
    """torchvision ``CenterCrop(size)`` on an image at least ``size`` on each side (offsets rounded)."""
    height, width = x.shape[-2:]
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return x[..., top:top + size, left:left + size]


def normalize(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def dino_frames(frames: np.ndarray) -> Tensor:
    """VBench ``dino_transform(224)``: shorter side 224 (bilinear, no antialias), /255, ImageNet mean/std."""
    x = frames_to_tensor(frames)
    x = resize(x, shorter_side_size(*x.shape[-2:], 224), "bilinear", antialias=False)
    return normalize(x / 255.0, IMAGENET_MEAN, IMAGENET_STD)


def clip_frames(frames: np.ndarray) -> Tensor:
    """VBench ``clip_transform(224)``: shorter side 224 (bicubic, no antialias), centre crop, CLIP mean/std."""
    x = frames_to_tensor(frames)
    x = resize(x, shorter_side_size(*x.shape[-2:], 224), "bicubic", antialias=False)
    return normalize(center_crop(x, 224) / 255.0, CLIP_MEAN, CLIP_STD)


def dino_internet_frames(frames: np.ndarray) -> Tensor:
    """VBench++ ``dino_transform_internet()``: shorter side 256 (bicubic; torchvision >= 0.17 antialiases by
    default), centre crop 224, /255, ImageNet mean/std."""
    x = frames_to_tensor(frames)
    x = resize(x, shorter_side_size(*x.shape[-2:], 256), "bicubic", antialias=True)
    return normalize(center_crop(x, 224) / 255.0, IMAGENET_MEAN, IMAGENET_STD)


def dino_internet_image(image: np.ndarray) -> Tensor:
    """VBench++ ``dino_transform_Image_internet()`` on the conditioning image, read as a PIL image: PIL's
    bicubic resize of the shorter side to 256, centre crop 224, ``ToTensor`` (/255), ImageNet mean/std."""
    _check_image(image)
    height, width = shorter_side_size(image.shape[0], image.shape[1], 256)
    pil = Image.fromarray(image)
    if (height, width) != image.shape[:2]:
        pil = pil.resize((width, height), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)[None].float()
    return normalize(center_crop(x, 224) / 255.0, IMAGENET_MEAN, IMAGENET_STD)


def dreamsim_frames(frames: np.ndarray) -> Tensor:
    """VBench++ ``dreamsim_transform(224)``: the frames resized to 224x224 (bicubic; torchvision >= 0.17
    antialiases tensors by default), /255, in [0, 1] (DreamSim normalises per branch)."""
    return resize(frames_to_tensor(frames), (224, 224), "bicubic", antialias=True) / 255.0


def dreamsim_image(image: np.ndarray) -> Tensor:
    """VBench++ ``dreamsim_transform_Image(224)`` on the conditioning image read as a PIL image: PIL's bicubic
    resize to 224x224, ``ToTensor`` (/255)."""
    _check_image(image)
    pil = Image.fromarray(image)
    if image.shape[:2] != (224, 224):
        pil = pil.resize((224, 224), Image.BICUBIC)
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)[None].float() / 255.0


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise DataError(f"conditioning image: expected uint8 (H, W, 3), got "
                        f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}")


# ----- VBench's rules on features ------------------------------------------------------------------------


def consistency_score(features: Tensor) -> float:
    """VBench subject / background consistency of one clip from its (T, D) frame features."""
    if features.shape[0] < 2:
        raise DataError(f"a consistency dimension needs at least 2 frames, got {features.shape[0]}")
    f = F.normalize(features.float(), dim=-1, p=2)
    to_previous = F.cosine_similarity(f[:-1], f[1:]).clamp(min=0.0)
    to_first = F.cosine_similarity(f[:1].expand_as(f[1:]), f[1:]).clamp(min=0.0)
    return float(((to_previous.double() + to_first.double()) / 2).mean())


def i2v_score(image_feature: Tensor, features: Tensor) -> float:
    """VBench++ i2v_subject / i2v_background: 0.4·max(conformity to the image) + 0.3·mean + 0.3·min of the
    consecutive-frame similarities (each cosine clamped at 0)."""
    if features.shape[0] < 2:
        raise DataError(f"an i2v dimension needs at least 2 frames, got {features.shape[0]}")
    f = F.normalize(features.float(), dim=-1, p=2)
    g = F.normalize(image_feature.float().reshape(1, -1), dim=-1, p=2)
    conformity = F.cosine_similarity(g.expand_as(f), f).clamp(min=0.0).double()
    consecutive = F.cosine_similarity(f[:-1], f[1:]).clamp(min=0.0).double()
    return float(0.4 * conformity.max() + 0.3 * consecutive.mean() + 0.3 * consecutive.min())


# ----- scorers ---------------------------------------------------------------------------------------------


class _Embedder:
    """A frozen network on a device, run over a clip's frames in batches (fp32, no grad)."""

    def __init__(self, network: nn.Module, device: torch.device, batch: int = 32) -> None:
        self.network = network.to(device).eval().requires_grad_(False)
        self.device, self.batch = device, batch

    @torch.inference_mode()
    def __call__(self, pixels: Tensor) -> Tensor:
        return torch.cat([self.network(pixels[i:i + self.batch].to(self.device)).float().cpu()
                          for i in range(0, pixels.shape[0], self.batch)])


class ConsistencyScorer:
    """subject_consistency (DINO) or background_consistency (CLIP ViT-B/32)."""

    def __init__(self, embed: Callable[[Tensor], Tensor], preprocess: Callable[[np.ndarray], Tensor]) -> None:
        self.embed, self.preprocess = embed, preprocess

    def score(self, frames: np.ndarray, image: np.ndarray | None = None) -> float:
        return consistency_score(self.embed(self.preprocess(frames)))


class I2VSubjectScorer:
    """i2v_subject: DINO features of the frames against the conditioning image's (VBench++)."""

    def __init__(self, embed: Callable[[Tensor], Tensor]) -> None:
        self.embed = embed

    def score(self, frames: np.ndarray, image: np.ndarray | None) -> float:
        if image is None:
            raise DataError("i2v_subject needs the clip's conditioning image (--images)")
        return i2v_score(self.embed(dino_internet_image(image))[0], self.embed(dino_internet_frames(frames)))


class I2VBackgroundScorer:
    """i2v_background: DreamSim embeddings of the frames against the conditioning image's (VBench++)."""

    def __init__(self, embed: Callable[[Tensor], Tensor]) -> None:
        self.embed = embed

    def score(self, frames: np.ndarray, image: np.ndarray | None) -> float:
        if image is None:
            raise DataError("i2v_background needs the clip's conditioning image (--images)")
        return i2v_score(self.embed(dreamsim_image(image))[0], self.embed(dreamsim_frames(frames)))


class AestheticScorer:
    """aesthetic_quality: LAION's head on L2-normalised CLIP ViT-L/14 embeddings, / 10, mean over frames."""

    def __init__(self, embed: Callable[[Tensor], Tensor], head: nn.Linear) -> None:
        self.embed, self.head = embed, head.float().eval()

    @torch.inference_mode()
    def score(self, frames: np.ndarray, image: np.ndarray | None = None) -> float:
        features = F.normalize(self.embed(clip_frames(frames)), dim=-1, p=2)
        return float((self.head(features).squeeze(-1) / 10).double().mean())


class ImagingQualityScorer:
    """imaging_quality: MUSIQ-SPAQ per frame (VBench's 'longer' preprocessing), mean / 100."""

    def __init__(self, model: Musiq, device: torch.device) -> None:
        self.model, self.device = model.to(device).eval().requires_grad_(False), device

    def score(self, frames: np.ndarray, image: np.ndarray | None = None) -> float:
        scores = musiq_frame_scores(self.model, frames_to_tensor(frames), self.device)
        return float(np.mean(scores) / 100.0)


# subject consistency and i2v_subject read the same DINO file: one network (343 MB) serves both while a suite
# holds them, and goes with the suite
_DINO_LOADED: weakref.WeakValueDictionary[tuple[str, str], _Embedder] = weakref.WeakValueDictionary()


def _dino(paths: Mapping[str, Path], device: torch.device) -> _Embedder:
    key = (str(Path(paths[DINO_FILE.name]).resolve()), str(device))
    embedder = _DINO_LOADED.get(key)
    if embedder is None:
        embedder = _DINO_LOADED[key] = _Embedder(load_dino(paths[DINO_FILE.name]), device)
    return embedder


def _build_subject(paths: Mapping[str, Path], device: torch.device) -> ConsistencyScorer:
    return ConsistencyScorer(_dino(paths, device), dino_frames)


def _build_background(paths: Mapping[str, Path], device: torch.device) -> ConsistencyScorer:
    tower = load_clip_image_tower(paths[CLIP_B32_FILE.name], CLIP_VITB32, "CLIP ViT-B/32")
    return ConsistencyScorer(_Embedder(tower, device), clip_frames)


def _build_i2v_subject(paths: Mapping[str, Path], device: torch.device) -> I2VSubjectScorer:
    return I2VSubjectScorer(_dino(paths, device))


def _build_i2v_background(paths: Mapping[str, Path], device: torch.device) -> I2VBackgroundScorer:
    model = load_dreamsim(paths[DINO_FILE.name], paths[DREAMSIM_CLIP_FILE.name],
                          paths[DREAMSIM_OPEN_CLIP_FILE.name], paths[DREAMSIM_LORA_FILE.name])
    return I2VBackgroundScorer(_Embedder(model, device))


def _build_aesthetic(paths: Mapping[str, Path], device: torch.device) -> AestheticScorer:
    tower = load_clip_image_tower(paths[CLIP_L14_FILE.name], CLIP_VITL14, "CLIP ViT-L/14")
    return AestheticScorer(_Embedder(tower, device), aesthetic_head(paths[AESTHETIC_FILE.name]))


def _build_imaging(paths: Mapping[str, Path], device: torch.device) -> ImagingQualityScorer:
    return ImagingQualityScorer(load_musiq(paths[MUSIQ_FILE.name]), device)


VBENCH_DIMENSIONS: dict[str, DimensionSpec] = {
    "subject_consistency": DimensionSpec("subject_consistency", (DINO_FILE,), False, _build_subject),
    "background_consistency": DimensionSpec("background_consistency", (CLIP_B32_FILE,), False, _build_background),
    "aesthetic_quality": DimensionSpec("aesthetic_quality", (CLIP_L14_FILE, AESTHETIC_FILE), False, _build_aesthetic),
    "imaging_quality": DimensionSpec("imaging_quality", (MUSIQ_FILE,), False, _build_imaging),
    "i2v_subject": DimensionSpec("i2v_subject", (DINO_FILE,), True, _build_i2v_subject),
    "i2v_background": DimensionSpec("i2v_background", (DINO_FILE, DREAMSIM_CLIP_FILE, DREAMSIM_OPEN_CLIP_FILE,
                                                        DREAMSIM_LORA_FILE), True, _build_i2v_background),
}

__all__ = ["AestheticScorer", "ConsistencyScorer", "I2VBackgroundScorer", "I2VSubjectScorer", "ImagingQualityScorer",
           "VBENCH_DIMENSIONS", "clip_frames", "consistency_score", "dino_frames", "dino_internet_frames",
           "dino_internet_image", "dreamsim_frames", "dreamsim_image", "i2v_score"]
