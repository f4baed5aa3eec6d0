"""A self-contained HTML report of a comparison run: clips side by side, the metric table, training curves.

Everything is embedded (GIFs and PNG plots as data URIs), so ``report.html`` reads offline and can be
mailed as one file. The inputs are plain files a run leaves behind, so an interrupted run gets a report
of whatever finished:

    RUN_DIR/metrics.json                 {"models": {name: {metric: value}}, "columns": [...], "notes": [...], ...}
    RUN_DIR/samples/<model>/*.npy        generated clips, float (T, H, W, 3) in [0, 1], same names per model
    RUN_DIR/runs/<arm>/logs/metrics.jsonl  training logs (one JSON object per line, with "step" and "time")
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# curves plotted per arm, with their axis labels
CURVES: list[tuple[str, str]] = [
    ("reward/fake", "mean reward of rollouts (EMA discriminator logit)"),
    ("reward/real", "mean reward of real clips"),
    ("disc/acc_real_ema", "discriminator accuracy on real clips (EMA, before refresh)"),
    ("disc/acc_fake_ema", "discriminator accuracy on rollouts (EMA, before refresh)"),
    ("loss/real", "denoising loss on real clips"),
    ("eval/static_fraction", "static fraction of held-out samples (lower = more motion)"),
    ("eval/speed_w1", "speed-histogram W1 to held-out real clips (hacking monitor, lower is better)"),
    ("eval/lost_fraction", "sprite lost fraction of held-out samples"),
]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl; when a resumed run logged a step twice, the later row wins."""
    if not path.is_file():
        return []
    by_step: dict[tuple[int, frozenset], dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        by_step[(int(row.get("step", 0)), frozenset(k for k in row if k not in ("step", "time")))] = row
    return sorted(by_step.values(), key=lambda r: r.get("step", 0))


def gif_data_uri(clip: np.ndarray, scale: int = 4, fps: float = 4.0) -> str:
    """A looping GIF (nearest-neighbour upscaled so tiny clips are visible) as a data URI."""
    from PIL import Image

    frames = np.clip(np.asarray(clip, dtype=np.float32), 0, 1)
    frames = (frames * 255 + 0.5).astype(np.uint8)
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return "data:image/gif;base64," + base64.b64encode(buf.getvalue()).decode()


def plot_data_uri(series: dict[str, list[tuple[float, float]]], title: str, xlabel: str) -> str:
    """One line plot (one line per arm) as a PNG data URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.2), dpi=100)
    for name, points in series.items():
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="." if len(xs) < 40 else None, label=name, linewidth=1.4)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value != value:
            return "nan"
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
    return html.escape(str(value))


def metric_table(metrics: dict[str, Any]) -> str:
    models: dict[str, dict[str, Any]] = metrics.get("models", {})
    columns: list[str] = metrics.get("columns") or sorted({k for m in models.values() for k in m})
    described: dict[str, str] = metrics.get("column_help", {})
    head = "".join(f'<th title="{html.escape(described.get(c, c))}">{html.escape(c)}</th>' for c in columns)
    rows = []
    for name, values in models.items():
        cells = "".join(f"<td>{_fmt(values.get(c))}</td>" for c in columns)
        rows.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    return f'<table class="metrics"><thead><tr><th>model</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def clip_grid(samples_dir: Path, order: list[str], num: int) -> str:
    """Rows = conditioning frames, columns = models, each cell a GIF of the same clip name."""
    present = [m for m in order if (samples_dir / m).is_dir()]
    if not present:
        return "<p>No sample clips were written yet.</p>"
    names = sorted(p.name for p in (samples_dir / present[0]).glob("*.npy"))[:num]
    head = "".join(f"<th>{html.escape(m)}</th>" for m in present)
    rows = []
    for name in names:
        cells = []
        for m in present:
            path = samples_dir / m / name
            cells.append(f'<td><img src="{gif_data_uri(np.load(path))}" alt="{html.escape(m)} {name}"></td>'
                         if path.is_file() else "<td>–</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table class="clips"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def training_plots(runs_dir: Path) -> list[str]:
    """One plot per curve in CURVES, with a line per training run that logged it (x = generator step),
    plus wall-time versions of the evaluation curves."""
    logs = {p.parent.parent.name: read_jsonl(p) for p in sorted(runs_dir.glob("*/logs/metrics.jsonl"))}
    out = []
    for key, title in CURVES:
        series = {arm: [(r["step"], r[key]) for r in rows if key in r] for arm, rows in logs.items()}
        series = {k: v for k, v in series.items() if v}
        if series:
            out.append(plot_data_uri(series, title, "generator step"))
            if key.startswith("eval/"):
                by_time = {arm: [(r["time"], r[key]) for r in rows if key in r] for arm, rows in logs.items()}
                out.append(plot_data_uri({k: v for k, v in by_time.items() if v}, title + " — by training time",
                                         "training wall time (s)"))
    return out


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;max-width:1280px;color:#1d1d1f}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:12px}th,td{border:1px solid #ddd;padding:4px 6px;text-align:center}
table.metrics th:first-child{text-align:left}table.clips td{padding:2px}img{image-rendering:pixelated}
.plots img{margin:4px;border:1px solid #eee}.note{background:#f6f8fa;padding:8px 12px;border-left:3px solid #888}
code{background:#f0f0f0;padding:1px 4px}
"""


# Records on <body> how many images decoded, so a headless browser can check the page renders whole.
LOAD_CHECK = ("addEventListener('load',()=>{const i=[...document.images];"
              "document.body.dataset.imagesTotal=i.length;"
              "document.body.dataset.imagesLoaded=i.filter(x=>x.complete&&x.naturalWidth>0).length;});")


def build_report(run_dir: str | Path, *, grid_clips: int = 8) -> Path:
    """Write RUN_DIR/report.html from the files of a finished or interrupted run; returns its path."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    order = metrics.get("clip_columns") or list(metrics.get("models", {}))
    parts = [f"<h1>{html.escape(metrics.get('title', 'shiftvdm report'))}</h1>"]
    for note in metrics.get("summary", []):
        parts.append(f'<p class="note">{html.escape(note)}</p>')
    parts.append("<h2>Metrics on held-out conditioning frames</h2>")
    parts.append(metric_table(metrics) if metrics.get("models") else "<p>No evaluation yet.</p>")
    for note in metrics.get("notes", []):
        parts.append(f"<p>{html.escape(note)}</p>")
    parts.append("<h2>Clips side by side (same conditioning frame per row)</h2>")
    parts.append(clip_grid(run_dir / "samples", order, grid_clips))
    plots = training_plots(run_dir / "runs")
    parts.append("<h2>Training curves</h2>")
    parts.append('<div class="plots">' + "".join(f'<img src="{p}" alt="training curve">' for p in plots) + "</div>"
                 if plots else "<p>No training logs yet.</p>")
    stages = metrics.get("stages", {})
    if stages:
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v.get('seconds'))}</td><td>{html.escape(str(v.get('status', '')))}</td></tr>"
                       for k, v in stages.items())
        parts.append(f"<h2>Stages</h2><table><tr><th>stage</th><th>seconds</th><th>status</th></tr>{rows}</table>")
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(metrics.get('title', 'report'))}"
            f"</title><style>{CSS}</style></head><body>{''.join(parts)}<script>{LOAD_CHECK}</script></body></html>")
    from shiftvdm.utils.checkpoint import atomic_write

    out = run_dir / "report.html"
    atomic_write(out, lambda p: p.write_text(page))
    return out
