"""What ``evaluate_videos`` returns: ``EvalResult``, its JSON form and its table for people.

Non-finite values become JSON ``null``; the table names each metric, its set-level value, how many clips
(or windows/frames) are behind it and what it measures, then the skipped files and the notes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shiftvdm.utils.checkpoint import write_text
from shiftvdm.utils.jsontext import dumps_utf8

# Display rows: aggregate key -> (label, description). Order is the table's order.
METRIC_ROWS: dict[str, tuple[str, str]] = {
    "dynamic_degree": ("dynamic degree", "fraction of dynamic clips, VBench rule"),
    "motion_score": ("motion score [px/frame]", "mean flow magnitude, native size"),
    "motion_score_256": ("motion score @256 [px/frame]", "same, flow rescaled to a 256-px short side"),
    "motion_smoothness": ("motion smoothness", "VBench (255-MAE)/255; flow-warp stand-in for AMT"),
    "temporal_flicker": ("temporal flicker", "VBench (255-MAE)/255 of consecutive frames"),
    "frechet_motion_velocity": ("Fréchet motion: velocity", "FVMD-style, vs reference"),
    "frechet_motion_acceleration": ("Fréchet motion: acceleration", "FVMD-style (true 2nd difference)"),
    "frechet_motion_combined": ("Fréchet motion: combined", "FVMD-style, velocity + acceleration"),
    "image_stats_frechet": ("Fréchet image statistics", "colour/contrast/sharpness stats vs reference"),
    "first_frame_psnr": ("first frame PSNR [dB]", "vs conditioning image"),
    "first_frame_ssim": ("first frame SSIM", "vs conditioning image"),
    "gt_psnr": ("PSNR vs ground truth [dB]", "per-frame mean, matched clips"),
    "gt_ssim": ("SSIM vs ground truth", "per-frame mean, matched clips"),
}
SPRITE_ROWS: dict[str, str] = {
    "speed": "mean centroid step [px/frame], clips never lost",
    "displacement": "|last - first centroid| [px]",
    "static_fraction": "share of clips displaced < 2 px",
    "lost_fraction": "share of clips losing the sprite in a frame",
    "frames_tracked": "share of frames 1..T-1 with a sprite",
    "mass_speed": "mass-weighted centroid step [px/frame]",
    "mass_displacement": "mass-weighted displacement [px]",
    "mass_ratio": "sprite mass in later frames / frame 0",
    "area": "sprite pixels per frame",
    "max_intensity": "mean per-frame max gray (0-1)",
    "bg_flicker": "mean |gray change| on background (0-1)",
    "speed_w1": "W1 of per-frame speeds vs reference [px/frame]",
}


def json_value(value: Any) -> Any:
    """``value`` with numpy scalars, paths and tuples made JSON types; non-finite floats become None."""
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _format_value(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


@dataclass
class EvalResult:
    """What ``evaluate_videos`` measured.

    Attributes:
        aggregate: metric name -> set-level value (see ``METRIC_ROWS`` for names and meaning).
        per_video: one dict per scored clip: name, path, frames, height, width, fps and its metric values.
        skipped: clips that could not be used: {"set", "name", "reason"}.
        notes: caveats to read the numbers with (estimators used, mismatched sets, small sets...).
        counts: metric name -> number of clips (or windows/frames for Fréchet values) behind the value.
        settings: the options of the run.
    """

    aggregate: dict[str, float]
    per_video: list[dict[str, Any]]
    skipped: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (non-finite values become null)."""
        return json_value({"aggregate": self.aggregate, "per_video": self.per_video, "skipped": self.skipped,
                            "notes": self.notes, "counts": self.counts, "settings": self.settings})

    def to_json(self, indent: int = 2) -> str:
        return dumps_utf8(self.to_dict(), indent=indent, allow_nan=False)  # non-UTF-8 file names escaped

    def save_json(self, path: str | Path) -> Path:
        """Write ``to_json()`` atomically to ``path``."""
        text = self.to_json() + "\n"
        return write_text(Path(path), text)

    def format_table(self) -> str:
        """A readable aligned table: one row per metric with its set-level value, then skipped files and notes."""
        rows = [("metric", "value", "n", "what")]
        for key, (label, what) in METRIC_ROWS.items():
            if key in self.aggregate:
                if key == "dynamic_degree" and self.settings.get("dynamic_vbench_exact"):
                    what = "fraction of dynamic clips, VBench-exact (RAFT, 20 iterations)"
                elif key == "dynamic_degree":
                    what = f"{what} (stand-in: VBench uses RAFT; this run used {str(self.settings.get('flow', '?')).upper()})"
                rows.append((label, _format_value(self.aggregate[key]), self.counts.get(key, ""), what))
        for key, what in SPRITE_ROWS.items():
            full = f"sprite_{key}"
            if full in self.aggregate:
                rows.append((f"sprite {key.replace('_', ' ')}", _format_value(self.aggregate[full]),
                             self.counts.get(full, ""), what))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}".rstrip() for r in rows]
        lines.insert(1, "-" * max(len(line) for line in lines))
        scored = len(self.per_video)
        header = (f"{scored} clip{'s' if scored != 1 else ''} scored"
                  f"{f', {len(self.skipped)} skipped' if self.skipped else ''}"
                  f" (flow: {self.settings.get('flow', '?')}, tracker: {self.settings.get('tracker', '?')})")
        out = [header, *lines]
        if self.skipped:
            out += ["", "skipped:"] + [f"  [{s['set']}] {s['name']}: {s['reason']}" for s in self.skipped]
        if self.notes:
            out += ["", "notes:"] + [f"  - {note}" for note in self.notes]
        return "\n".join(out)
