"""Dataset check: decode every entry of a manifest and list each bad one with its reason.

Reasons: "missing", "empty", "unreadable or truncated: ...", "too few frames: N < M" and "path outside the
dataset root". ``shiftvdm data check`` prints the report; training runs ``check_entry`` on each clip the first
time it reads it (train/clips.py), and with ``--skip-bad`` replaces a bad one by the next good clip.
"""

from __future__ import annotations

import concurrent.futures
import logging
from dataclasses import dataclass, field
from pathlib import Path

from shiftvdm.data.dataset import entry_fps_hint
from shiftvdm.data.manifest import ClipEntry, Manifest, load_manifest
from shiftvdm.data.video_io import VideoInfo, num_resampled_frames, probe_video
from shiftvdm.errors import DataError

logger = logging.getLogger(__name__)


@dataclass
class CheckReport:
    """Outcome of ``check_dataset``: good entries, and bad entries with their reasons, in manifest order."""

    root: Path
    good: list[ClipEntry] = field(default_factory=list)
    bad: list[tuple[ClipEntry, str]] = field(default_factory=list)
    num_frames: int = 2
    fps: float | None = None
    infos: dict[str, VideoInfo] = field(default_factory=dict)  # relpath -> what the decode of a good entry found

    @property
    def ok(self) -> bool:
        return not self.bad

    def summary(self) -> str:
        """One line: how many clips are good out of how many."""
        total = len(self.good) + len(self.bad)
        need = f"{self.num_frames} frames" + (f" at {self.fps:g} fps" if self.fps is not None else "")
        if self.ok:
            return f"{self.root}: all {total} clips are good (each decodes and has at least {need})"
        return f"{self.root}: {len(self.bad)} of {total} clips are bad, {len(self.good)} good (needing {need})"


def check_entry(entry: ClipEntry, num_frames: int = 2, fps: float | None = None,
                infos: dict[str, VideoInfo] | None = None) -> str | None:
    """Decode one entry fully; return the reason it is bad, or None when it is good (its VideoInfo then goes to
    ``infos`` under its relpath, when given)."""
    if entry.outside_root:
        return "path outside the dataset root"
    try:
        info = probe_video(entry.path, fps_hint=entry_fps_hint(entry))
    except DataError as exc:
        message = str(exc)
        prefix = f"{entry.path}: "
        return message[len(prefix):] if message.startswith(prefix) else message
    available = num_resampled_frames(info.num_frames, info.fps, fps)
    if available < num_frames:
        at = f" at {fps:g} fps" if fps is not None else ""
        return f"too few frames: {available} < {num_frames}{at}"
    if infos is not None:
        infos[entry.relpath] = info
    return None


def _names(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def mixed_clip_warnings(report: CheckReport, height: int, width: int, fps: float | None) -> list[str]:
    """What a training set of these clips changes without a word: clips of different frame rates read frame for
    frame (``fps`` None keeps each file's frames), and clips whose aspect ratio differs from ``height``×``width``
    by more than 1 %, which the resize-to-cover and centre crop cut. Each warning names the clips."""
    warnings: list[str] = []
    if fps is None:
        rates: dict[float, list[str]] = {}
        for name, info in report.infos.items():
            rates.setdefault(round(float(info.fps), 3), []).append(name)
        if len(rates) > 1:
            listed = "; ".join(f"{rate:g} fps: {_names(names)}" for rate, names in sorted(rates.items()))
            warnings.append(f"{report.root}: clips of {len(rates)} frame rates are read frame for frame (a frame is "
                            f"not the same time step in each; set data.fps to resample them): {listed}")
    target = width / height
    cropped = [f"{name} ({info.width}x{info.height})" for name, info in report.infos.items()
               if abs(info.width / info.height - target) > 0.01 * target]
    if cropped:
        warnings.append(f"{report.root}: {len(cropped)} clip(s) have another aspect ratio than {width}x{height} and "
                        f"are centre-cropped to it: {_names(cropped)}")
    return warnings


def check_dataset(manifest_or_dir: Manifest | str | Path, num_frames: int = 2,
                  fps: float | None = None, *, workers: int = 1, progress: bool = False) -> CheckReport:
    """Decode every entry of a manifest (file or folder) and sort the entries into good and bad.

    Args:
        manifest_or_dir: a ``Manifest``, a manifest file (.jsonl/.json/.csv) or a folder of videos.
        num_frames: frames each clip must provide (at ``fps`` when given, else at its own rate).
        fps: the target frame rate of training, or None.
        workers: entries decoded at a time (threads: PyAV decodes outside the GIL); the report keeps manifest order.
        progress: show a progress bar (on a terminal).

    Raises:
        DataError: when the manifest itself cannot be read (the entries' problems go into the report).
    """
    if num_frames < 1:
        raise DataError(f"num_frames must be >= 1, got {num_frames}")
    if fps is not None and not fps > 0:
        raise DataError(f"fps must be positive, got {fps}")
    manifest = manifest_or_dir if isinstance(manifest_or_dir, Manifest) else load_manifest(manifest_or_dir)
    report = CheckReport(root=manifest.root, num_frames=num_frames, fps=fps)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(manifest.entries), desc="check", unit="clip", disable=not progress or None)
    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        reasons = []
        for reason in pool.map(lambda e: check_entry(e, num_frames, fps, report.infos), manifest.entries):
            reasons.append(reason)
            bar.update(1)
    bar.close()
    for entry, reason in zip(manifest.entries, reasons):
        if reason is None:
            report.good.append(entry)
        else:
            report.bad.append((entry, reason))
    logger.info("%s", report.summary())
    return report


def format_report(report: CheckReport) -> str:
    """Every bad entry on its own line (``path: reason``), then the one-line summary."""
    lines = [f"  {entry.relpath}: {reason}" for entry, reason in report.bad]
    if lines:
        lines.insert(0, "bad entries:")
    lines.append(report.summary())
    return "\n".join(lines)
