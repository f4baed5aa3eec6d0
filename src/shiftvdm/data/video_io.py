"""Reading and writing clips: PyAV decoding/encoding, fps and frame-count resampling, resize + centre crop.

Frames live as uint8 ``(T, H, W, 3)`` RGB arrays on disk and in numpy; models see float32 ``(T, 3, H, W)``
tensors in [-1, 1] (``to_tensor`` / ``to_uint8``). Every failure to read a file is a ``DataError`` whose
message starts with the file name and one of the reasons the dataset checker reports: "missing", "empty",
"unreadable or truncated: ...".
"""

from __future__ import annotations

import errno
import logging
import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from shiftvdm.errors import DataError
from shiftvdm.utils.checkpoint import atomic_write

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mov", ".gif")
# Raw frame arrays (float T×H×W×3 in [0, 1]): what `shiftvdm sample --out x.npy` and `data synth --format npy` write.
ARRAY_EXTENSIONS = (".npy",)
CLIP_EXTENSIONS = VIDEO_EXTENSIONS + ARRAY_EXTENSIONS
WRITE_EXTENSIONS = (".mp4", ".gif", ".npy")
# A .npy clip records no frame rate; this is the rate assumed for it (the synthetic data's default).
DEFAULT_FPS = 8.0
# x264 constant-rate factor of written mp4s: visually lossless, small files (0 would be lossless but unplayable
# in most browsers).
DEFAULT_CRF = 12
# Below this size (either side) mp4s are written 4:4:4: 4:2:0 shares one colour per 2×2 block, which on a
# 16×16 clip shifts a 3×3 sprite's colour by ~30/255 (measured); above it 4:2:0 plays everywhere.
MIN_SIZE_FOR_420 = 128


@dataclass
class VideoFile:
    """A decoded clip.

    Attributes:
        frames: uint8 array (T, H, W, 3), RGB, on a constant frame-rate grid.
        fps: frames per second of ``frames``.
        path: the file it came from.
    """

    frames: np.ndarray
    fps: float
    path: Path


@dataclass
class VideoInfo:
    """What a full decode of a clip found, without keeping its frames (see ``probe_video``)."""

    num_frames: int
    fps: float
    height: int
    width: int
    path: Path


# Float clips hold [0, 1] intensities; this much outside is rounding, more is a clip in other units
# (0..255 or [-1, 1]) that clipping would silently turn white or black.
FLOAT_RANGE_TOLERANCE = 1.0 / 255.0
NPY_MAGIC = b"\x93NUMPY"


def _check_file(path: Path) -> None:
    try:
        info = os.stat(path)  # follows symlinks: a loop or a dangling link fails here, with its own errno
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DataError(f"{path}: unreadable or truncated: symbolic link loop") from exc
        if exc.errno == errno.EACCES:
            raise DataError(f"{path}: unreadable or truncated: permission denied") from exc
        if path.is_symlink():
            raise DataError(f"{path}: missing (symbolic link to {os.readlink(path)}, which does not exist)") from exc
        raise DataError(f"{path}: missing (no such file)") from exc
    if stat.S_ISDIR(info.st_mode):
        raise DataError(f"{path}: unreadable or truncated: is a folder, expected a video file")
    if not os.access(path, os.R_OK):  # a symlinked clip's target included
        raise DataError(f"{path}: unreadable or truncated: permission denied")
    if info.st_size == 0:
        raise DataError(f"{path}: empty (0 bytes)")


def _not_npy_reason(path: Path) -> str | None:
    """Why a file named .npy is not a NumPy array file (None when its first bytes are the .npy magic)."""
    with open(path, "rb") as fh:
        head = fh.read(12)
    if head.startswith(NPY_MAGIC):
        return None
    if head[4:8] == b"ftyp":
        kind = "an MP4/MOV video"
    elif head.startswith((b"GIF87a", b"GIF89a")):
        kind = "a GIF"
    elif head.startswith(b"\x1a\x45\xdf\xa3"):
        kind = "a WebM/Matroska video"
    elif head.startswith(b"RIFF"):
        kind = "an AVI (RIFF) file"
    elif head.startswith(b"\x89PNG"):
        kind = "a PNG image"
    else:
        kind = "not a NumPy .npy file"
        return f"{kind} (it does not start with the .npy header)"
    return f"not a NumPy .npy file: it looks like {kind}; give it its real extension"


def _check_float_range(array: np.ndarray, path: Path) -> None:
    if not np.isfinite(array).all():
        raise DataError(f"{path}: unreadable or truncated: the array holds NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low < -FLOAT_RANGE_TOLERANCE or high > 1.0 + FLOAT_RANGE_TOLERANCE:
        raise DataError(f"{path}: unreadable or truncated: float values must lie in [0, 1], found {low:g}..{high:g} "
                        "(store uint8 0..255, or divide by 255 / map [-1, 1] to [0, 1] first)")


def _load_npy(path: Path, max_frames: int | None, keep: bool) -> tuple[np.ndarray | None, tuple[int, ...]]:
    try:
        reason = _not_npy_reason(path)
    except OSError as exc:
        raise DataError(f"{path}: unreadable or truncated: {exc.strerror or exc}") from exc
    if reason is not None:
        raise DataError(f"{path}: unreadable or truncated: {reason}")
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except Exception as exc:  # numpy raises ValueError/EOFError/OSError for corrupt or cut files
        raise DataError(f"{path}: unreadable or truncated: {exc}") from exc
    if array.ndim != 4 or array.shape[-1] != 3:
        raise DataError(f"{path}: unreadable or truncated: expected a (T, H, W, 3) array, got shape {array.shape}")
    if array.shape[0] == 0:
        raise DataError(f"{path}: empty (no frames)")
    if not (array.dtype == np.uint8 or np.issubdtype(array.dtype, np.floating)):
        raise DataError(f"{path}: unreadable or truncated: expected float values in [0, 1] or uint8, got {array.dtype}")
    shape = array.shape
    if not keep:
        return None, shape
    if max_frames is not None:
        array = array[:max_frames]
    try:
        array = np.array(array)
    except Exception as exc:  # a memory map past the end of a cut file
        raise DataError(f"{path}: unreadable or truncated: {exc}") from exc
    if array.dtype == np.uint8:
        return array, shape
    _check_float_range(array, path)
    return np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8), shape


def _repeat_counts(times: list[float | None], fps: float) -> list[int]:
    """How many constant-rate frame slots each decoded picture covers.

    AVI files mark repeated frames with empty chunks that the decoder skips (tree.avi holds 68 pictures for
    444 frame slots); a player shows the previous picture over the gap, so do we. When the timestamps are not
    increasing (B-frames packed in AVI give decode-order pts) or show no real gaps, every picture is one slot.
    """
    ones = [1] * len(times)
    if len(times) < 2 or any(t is None for t in times):
        return ones
    slots = [round((t - times[0]) * fps) for t in times]
    if any(b <= a for a, b in zip(slots, slots[1:])) or slots[-1] + 1 <= len(times) * 1.05:
        return ones
    return [b - a for a, b in zip(slots, slots[1:])] + [1]


def _decode(path: Path, *, keep: bool, max_frames: int | None = None,
            until_time: float | None = None) -> tuple[list[np.ndarray], list[int], float, int, int, int]:
    """Decode with PyAV. Returns (pictures, repeat counts, fps, height, width, frames declared in the header)."""
    import av

    pictures: list[np.ndarray] = []
    times: list[float | None] = []
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                raise DataError(f"{path}: unreadable or truncated: no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate is not None and float(rate) > 0 else None
            if until_time is not None:
                # timeline frames shown up to `until_time` seconds (1e-6: float ratios one frame short)
                limit = int(math.floor(until_time * (fps or DEFAULT_FPS) + 1e-6)) + 1
                max_frames = limit if max_frames is None else min(max_frames, limit)
            declared = int(stream.frames or 0)
            height = width = 0
            for frame in container.decode(stream):
                if not times:
                    height, width = frame.height, frame.width
                if keep:
                    if (frame.width, frame.height) != (width, height):
                        frame = frame.reformat(width=width, height=height)
                    pictures.append(frame.to_ndarray(format="rgb24"))
                times.append(frame.time)
                if max_frames is not None and len(times) >= max_frames:
                    break
    except DataError:
        raise
    except Exception as exc:  # av.FFmpegError subclasses, or OSError for unreadable files
        raise DataError(f"{path}: unreadable or truncated: {exc}") from exc
    if not times:
        raise DataError(f"{path}: empty (no video frames could be decoded)")
    if fps is None:
        if len(times) > 1 and times[0] is not None and times[-1] is not None and times[-1] > times[0]:
            fps = (len(times) - 1) / (times[-1] - times[0])
        else:
            fps = DEFAULT_FPS
            logger.warning("%s: no frame rate recorded; assuming %g fps", path, fps)
    repeats = _repeat_counts(times, fps)
    if max_frames is None and declared > 0 and sum(repeats) < declared - max(2, 0.05 * declared):
        raise DataError(f"{path}: unreadable or truncated: decoded {sum(repeats)} of the {declared} frames "
                        "its header declares")
    return pictures, repeats, fps, height, width, declared


def read_video(path: str | Path, *, max_frames: int | None = None, until_time: float | None = None,
               fps_hint: float | None = None) -> VideoFile:
    """Decode a video (mp4, avi, webm, mov, gif via PyAV) or a raw .npy clip.

    Args:
        path: the file.
        max_frames: keep at most this many frames (of the constant-rate timeline).
        until_time: only decode the frames shown up to this time in seconds (saves decoding long videos).
        fps_hint: the rate of a file that records none (.npy clips; e.g. a manifest's "fps"); default
            ``DEFAULT_FPS``.

    Returns:
        The frames as uint8 (T, H, W, 3) RGB on a constant-rate timeline, and their fps.

    Raises:
        DataError: naming the file and the reason: missing, empty (0 bytes or no frames), unreadable or
            truncated (decode error, or fewer frames than the header declares when reading to the end).
    """
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() in ARRAY_EXTENSIONS:
        fps = float(fps_hint or DEFAULT_FPS)
        if until_time is not None:
            limit = int(math.floor(until_time * fps + 1e-6)) + 1
            max_frames = limit if max_frames is None else min(max_frames, limit)
        frames, _ = _load_npy(path, max_frames, keep=True)
        return VideoFile(frames=frames, fps=fps, path=path)
    pictures, repeats, fps, _, _, _ = _decode(path, keep=True, max_frames=max_frames, until_time=until_time)
    index = np.repeat(np.arange(len(pictures)), repeats)
    if max_frames is not None:
        index = index[:max_frames]
    if until_time is not None:
        index = index[:int(math.floor(until_time * fps + 1e-6)) + 1]
    return VideoFile(frames=np.stack(pictures)[index], fps=fps, path=path)


def stream_video(path: str | Path, *, max_frames: int | None = None,
                 fps_hint: float | None = None) -> tuple[VideoInfo, Iterator[np.ndarray]]:
    """``read_video``'s frames one at a time, so that a long HD clip is never held whole.

    A first decode keeps no pictures: the constant-rate timeline (repeat counts) and the truncation check
    need every timestamp, so the clip's length, fps and size are known, and a bad file refused, before
    any frame is given out. The iterator decodes again and yields uint8 (H, W, 3) frames equal to
    ``read_video(path, max_frames=max_frames).frames``; a repeated frame is the same array, read-only
    by contract. A .npy clip is read whole (as ``read_video``) and iterated.

    Raises:
        DataError: as ``read_video``.
    """
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() in ARRAY_EXTENSIONS:
        video = read_video(path, max_frames=max_frames, fps_hint=fps_hint)
        num, height, width = video.frames.shape[:3]
        return VideoInfo(num_frames=num, fps=video.fps, height=height, width=width, path=path), iter(video.frames)
    _, repeats, fps, height, width, _ = _decode(path, keep=False, max_frames=max_frames)
    total = sum(repeats) if max_frames is None else min(sum(repeats), max_frames)

    def frames() -> Iterator[np.ndarray]:
        import av

        left = total
        try:
            with av.open(str(path), mode="r") as container:
                stream = container.streams.video[0]
                for frame, count in zip(container.decode(stream), repeats):
                    if (frame.width, frame.height) != (width, height):
                        frame = frame.reformat(width=width, height=height)
                    picture = frame.to_ndarray(format="rgb24")
                    for _ in range(min(count, left)):
                        yield picture
                    left -= min(count, left)
                    if left == 0:
                        return
        except Exception as exc:  # av.FFmpegError subclasses, or OSError when the file changed in between
            raise DataError(f"{path}: unreadable or truncated: {exc}") from exc
        raise DataError(f"{path}: unreadable or truncated: {left} frames fewer on the second decode")

    return VideoInfo(num_frames=total, fps=fps, height=height, width=width, path=path), frames()


def probe_video(path: str | Path, *, fps_hint: float | None = None) -> VideoInfo:
    """Decode a whole clip without keeping its frames: its length on the constant-rate timeline, fps and size.

    ``fps_hint`` is the rate of a file that records none (.npy), as in ``read_video``.

    Raises:
        DataError: as ``read_video`` (missing, empty, unreadable or truncated).
    """
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() in ARRAY_EXTENSIONS:
        _, shape = _load_npy(path, None, keep=True)  # reads the data too: a cut file fails here
        return VideoInfo(num_frames=shape[0], fps=float(fps_hint or DEFAULT_FPS), height=shape[1], width=shape[2],
                         path=path)
    _, repeats, fps, height, width, _ = _decode(path, keep=False)
    return VideoInfo(num_frames=sum(repeats), fps=fps, height=height, width=width, path=path)


def num_resampled_frames(total: int, src_fps: float, target_fps: float | None) -> int:
    """How many frames ``resample_frames`` can take at ``target_fps`` from ``total`` frames at ``src_fps``."""
    if total <= 0:
        return 0
    step = 1.0 if target_fps is None else src_fps / target_fps
    # frame i exists while floor(i * step + 1e-6) <= total - 1, i.e. i * step < total - 1e-6
    return int(math.ceil((total - 1e-6) / step))


def _as_uint8_frames(frames: np.ndarray | torch.Tensor, path: Path) -> np.ndarray:
    array = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3 or array.shape[0] == 0:
        raise DataError(f"{path}: cannot write frames of shape {array.shape}: expected (T, H, W, 3) with T >= 1")
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"{path}: cannot write frames of dtype {array.dtype}: expected uint8 or float in [0, 1]")
    lo, hi = float(array.min()), float(array.max())
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < -0.01 or hi > 1.01:
        raise DataError(f"{path}: cannot write float frames with values in [{lo:.3g}, {hi:.3g}]: expected [0, 1] "
                        "(convert [-1, 1] model outputs with to_uint8)")
    return np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)


def _mp4_pix_fmt(height: int, width: int) -> str:
    # yuv420p (playable everywhere) needs even sizes; x264's 4:4:4 profile takes any size without padding.
    even = height % 2 == 0 and width % 2 == 0
    return "yuv420p" if even and min(height, width) >= MIN_SIZE_FOR_420 else "yuv444p"


def _write_mp4(tmp: Path, frames: np.ndarray, fps: float, crf: int, pix_fmt: str | None) -> None:
    import av

    height, width = frames.shape[1:3]
    pix_fmt = pix_fmt or _mp4_pix_fmt(height, width)
    if pix_fmt == "yuv420p" and (height % 2 or width % 2):
        raise DataError(f"cannot write {height}x{width} frames as yuv420p: H.264 4:2:0 needs even sizes "
                        "(use pix_fmt='yuv444p')")
    rate = Fraction(fps).limit_denominator(100_000)
    # bitexact + one thread: the same frames give the same bytes (no version strings, no thread races).
    with av.open(str(tmp), mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.thread_count = 1
        stream.codec_context.flags |= getattr(av.codec.context.Flags, "bitexact", 0)
        # mbtree off: with it, x264 wrote different bytes for the same small frames from run to run (measured
        # on 5 of 40 32×32 clips; none of 450 without it). psy and adaptive quantisation off: they trade fidelity
        # for perceived sharpness; metrics read these files back (mean error 2.0 -> 1.2 /255 on 32×32 clips).
        stream.options = {"crf": str(int(crf)), "preset": "medium", "threads": "1",
                          "x264-params": "mbtree=0:psy=0:aq-mode=0"}
        stream.codec_context.time_base = 1 / rate
        for index, picture in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
            frame.pts, frame.time_base = index, 1 / rate  # explicit timestamps: x264's rate control reads them
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _write_gif(tmp: Path, frames: np.ndarray, fps: float) -> None:
    from PIL import Image

    # Per-frame adaptive palette without dithering (dithering would add flicker that optical flow measures).
    images = [Image.fromarray(f).quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
              for f in frames]
    duration = max(20, int(round(1000.0 / fps)))  # GIF delays are in 10 ms units; browsers clamp below 20 ms
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], loop=0, duration=duration,
                   optimize=False, disposal=1)


def write_video(path: str | Path, frames: np.ndarray | torch.Tensor, fps: float, *, crf: int = DEFAULT_CRF,
                pix_fmt: str | None = None, atomic: bool = True) -> Path:
    """Write a clip atomically; the format follows the extension.

    Args:
        path: ``.mp4`` (H.264), ``.gif`` (looping, per-frame palette; delays are whole centiseconds, so 8 fps
            is stored as 120 ms frames) or ``.npy`` (float32 (T, H, W, 3) in [0, 1], exact).
        frames: uint8 (T, H, W, 3) RGB, or floats in [0, 1].
        fps: frames per second.
        crf: x264 quality for mp4 (lower is better; 0 is lossless).
        pix_fmt: mp4 pixel format; default yuv420p for even sizes of at least ``MIN_SIZE_FOR_420`` px,
            yuv444p otherwise (tiny or odd-sized clips, kept exact in size and colour).
        atomic: write to a temporary file, fsync and rename (the default). False writes in place, ~4x faster
            for tiny clips; for bulk writes whose completion is marked by another atomic file (a manifest).

    Returns:
        ``path``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITE_EXTENSIONS:
        raise DataError(f"{path}: cannot write a clip with extension {suffix or '(none)'!r}: expected one of "
                        f"{', '.join(WRITE_EXTENSIONS)}")
    if not (fps > 0 and math.isfinite(fps)):
        raise DataError(f"{path}: fps must be a positive number, got {fps}")
    array = _as_uint8_frames(frames, path)
    if suffix == ".npy":
        floats = array.astype(np.float32) / np.float32(255.0)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:  # a file handle: np.save would append ".npy" to the temporary name
                np.save(fh, floats, allow_pickle=False)
    elif suffix == ".gif":
        def write(tmp: Path) -> None:
            _write_gif(tmp, array, fps)
    else:
        def write(tmp: Path) -> None:
            _write_mp4(tmp, array, fps, crf, pix_fmt)
    size = array.size * 4 + 128 if suffix == ".npy" else None  # float32 plus the .npy header
    return atomic_write(path, write, atomic=atomic, size=size)


def save_raw_frames(path: Path, frames: np.ndarray) -> Path:
    """Atomically write float32 (T, H, W, 3) frames in [0, 1] as .npy, unquantised (for exact comparisons)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle, so np.save does not append ".npy" to the temporary name
            np.save(handle, np.ascontiguousarray(frames, dtype=np.float32), allow_pickle=False)

    return atomic_write(path, write)


def resample_frames(frames: np.ndarray, src_fps: float, target_fps: float | None,
                    num_frames: int | None) -> np.ndarray:
    """Pick frames at ``target_fps`` from a clip at ``src_fps`` (nearest earlier frame), then keep ``num_frames``.

    Frame ``i`` of the result is source frame ``floor(i * src_fps / target_fps)``, i.e. the picture on screen at
    time ``i / target_fps``. ``target_fps=None`` keeps the source rate; ``num_frames=None`` keeps every frame.

    Raises:
        DataError: "too few frames: N < M" when the clip holds fewer than ``num_frames`` frames at ``target_fps``.
    """
    total = len(frames)
    if total == 0:
        raise DataError("empty (no frames)")
    if target_fps is None or target_fps == src_fps:
        step = 1.0
    else:
        if not (target_fps > 0 and src_fps > 0):
            raise DataError(f"cannot resample from {src_fps} fps to {target_fps} fps: rates must be positive")
        step = src_fps / target_fps
    available = num_resampled_frames(total, src_fps, target_fps)
    if num_frames is not None:
        if num_frames < 1:
            raise DataError(f"num_frames must be >= 1, got {num_frames}")
        if available < num_frames:
            at = "" if target_fps is None else f" at {target_fps:g} fps"
            raise DataError(f"too few frames: {available} < {num_frames} ({total} frames at {src_fps:g} fps{at})")
        available = num_frames
    index = np.minimum(np.floor(np.arange(available) * step + 1e-6).astype(np.int64), total - 1)
    return frames[index]


def resize_center_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize (T, H, W, C) uint8 frames to cover ``height`` × ``width`` keeping the aspect ratio, then centre crop.

    Bilinear with an antialiasing filter (PIL-style: a downscale averages over the source area, no aliasing).
    """
    if height < 1 or width < 1:
        raise DataError(f"cannot resize to {height}x{width}: sizes must be positive")
    src_h, src_w = frames.shape[1:3]
    if (src_h, src_w) == (height, width):
        return frames
    scale = max(height / src_h, width / src_w)
    new_h, new_w = max(height, round(src_h * scale)), max(width, round(src_w * scale))
    top, left = (new_h - height) // 2, (new_w - width) // 2
    out = np.empty((len(frames), height, width, frames.shape[3]), dtype=frames.dtype)
    for start in range(0, len(frames), 64):  # bounded float memory for long clips
        block = torch.from_numpy(np.ascontiguousarray(frames[start:start + 64])).permute(0, 3, 1, 2).float()
        resized = torch.nn.functional.interpolate(block, size=(new_h, new_w), mode="bilinear",
                                                  align_corners=False, antialias=True)
        cropped = resized[:, :, top:top + height, left:left + width].permute(0, 2, 3, 1)
        if frames.dtype == np.uint8:
            cropped = cropped.round().clamp(0, 255)
        out[start:start + 64] = cropped.numpy().astype(frames.dtype)
    return out


def to_tensor(frames_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float32 in [-1, 1]."""
    video = torch.as_tensor(np.asarray(frames_uint8) if not isinstance(frames_uint8, torch.Tensor) else frames_uint8)
    if video.dtype != torch.uint8:
        raise DataError(f"to_tensor expects uint8 frames, got {video.dtype}")
    return video.movedim(-1, -3).to(torch.float32).div_(127.5).sub_(1.0)


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """(..., 3, H, W) tensor in [-1, 1] -> (..., H, W, 3) uint8 (values outside [-1, 1] are clipped)."""
    pixels = ((video.detach().to(torch.float32).cpu() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    return pixels.movedim(-3, -1).contiguous().numpy()
