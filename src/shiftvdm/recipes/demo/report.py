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

from shiftvdm.utils.checkpoint import write_text

logger = logging.getLogger(__name__)

# curves plotted per arm, with their axis labels
# (short titles: the plots are 520 px wide and matplotlib does not wrap)
CURVES: list[tuple[str, str]] = [
    ("reward/fake", "reward of rollouts (EMA discriminator logit)"),
    ("reward/real", "reward of real clips"),
    ("disc/acc_real_ema", "discriminator accuracy, real clips"),
    ("disc/acc_fake_ema", "discriminator accuracy, rollouts"),
    ("loss/real", "denoising loss on real clips"),
    ("eval/static_fraction", "static fraction, held-out (lower = more motion)"),
    ("eval/speed_w1", "speed W1 to held-out real (hacking monitor)"),
    ("eval/lost_fraction", "lost fraction, held-out (sprites fading)"),
]
# what a reader needs to read a curve right
CURVE_NOTES: dict[str, str] = {
    "reward/fake": ("The reward is a logit of a discriminator that keeps learning (adversarial refresh): as it "
                    "gets better at spotting rollouts their reward falls, even while their motion improves. "
                    "Judge motion by the held-out curves, not by this one."),
    "disc/acc_real_ema": "EMA discriminator, measured on each new buffer before it is refreshed.",
    "disc/acc_fake_ema": "EMA discriminator, measured on each new buffer before it is refreshed.",
    "eval/speed_w1": "Distance of sprite speeds to held-out real clips; the reward never sees it.",
}


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


def _as_float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and value == value else None


def separating_columns(models: dict[str, dict[str, Any]], columns: list[str], reference: str | None,
                       rel_tol: float = 1e-3) -> tuple[list[str], list[str]]:
    """Split ``columns`` into (shown, hidden): a column is hidden when every generated model (all rows but
    ``reference``) has the same value to ``rel_tol`` — it cannot tell the models apart."""
    shown, hidden = [], []
    for c in columns:
        values = [_as_float(m.get(c)) for name, m in models.items() if name != reference]
        values = [v for v in values if v is not None]
        if len(values) >= 2 and max(values) - min(values) <= rel_tol * max(1e-9, max(abs(v) for v in values)):
            hidden.append(c)
        else:
            shown.append(c)
    return shown, hidden


def best_models(models: dict[str, dict[str, Any]], column: str, better: str, reference: str | None) -> set[str]:
    """The generated models with the best value of ``column``: "lower", "higher", or "real" (closest to the
    reference row's value)."""
    ref = _as_float(models.get(reference, {}).get(column)) if reference else None
    scored = {}
    for name, m in models.items():
        v = _as_float(m.get(column))
        if name == reference or v is None:
            continue
        if better == "lower":
            scored[name] = v
        elif better == "higher":
            scored[name] = -v
        elif better == "real" and ref is not None:
            scored[name] = abs(v - ref)
    if not scored:
        return set()
    top = min(scored.values())
    return {n for n, v in scored.items() if v <= top + 1e-9}


def metric_table(metrics: dict[str, Any]) -> str:
    """The metric table (short headers, best generated model per column in bold), then a legend saying what
    every column and every model is, and which columns were hidden because they cannot separate the models."""
    models: dict[str, dict[str, Any]] = metrics.get("models", {})
    columns: list[str] = metrics.get("columns") or sorted({k for m in models.values() for k in m})
    described: dict[str, str] = metrics.get("column_help", {})
    labels: dict[str, str] = metrics.get("column_labels", {})
    better: dict[str, str] = metrics.get("column_better", {})
    caveats: dict[str, str] = metrics.get("column_caveats", {})
    reference = metrics.get("reference_model")
    shown, hidden = separating_columns(models, columns, reference)
    head = "".join(f'<th title="{html.escape(described.get(c, c))}">{html.escape(labels.get(c, c))}</th>' for c in shown)
    winners = {c: best_models(models, c, better[c], reference) for c in shown if c in better}
    rows = []
    for name, values in models.items():
        cells = "".join(
            f'<td class="best">{_fmt(values.get(c))}</td>' if name in winners.get(c, ()) else f"<td>{_fmt(values.get(c))}</td>"
            for c in shown)
        rows.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    table = (f'<table class="metrics"><thead><tr><th>model</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')
    arrows = {"lower": "lower is better", "higher": "higher is better", "real": "closest to the real clips is best"}
    legend = []
    for c in shown:
        text = described.get(c, "")
        if c in better:
            text += f" ({arrows[better[c]]})"
        text = text.rstrip(".")
        if c in caveats:
            text += f". Caveat: {caveats[c]}"
        legend.append(f"<dt>{html.escape(labels.get(c, c))}</dt><dd>{html.escape(text.strip())}</dd>")
    parts = [table]
    if winners:
        parts.append('<p class="small">Bold: the best generated model in that column.</p>')
    parts.append(f'<dl class="legend">{"".join(legend)}</dl>')
    if hidden:
        values = "; ".join(f"{labels.get(c, c)} = {_fmt(next(iter(v for n, m in models.items() if n != reference for v in [m.get(c)])))}"
                           for c in hidden)
        reasons = " ".join(caveats[c] for c in hidden if c in caveats)
        parts.append(f'<p class="small">Hidden because every model scores the same, so they cannot separate the '
                     f'models: {html.escape(values)}. {html.escape(reasons)}</p>')
    model_help: dict[str, str] = metrics.get("model_help", {})
    if model_help:
        items = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in model_help.items() if k in models)
        parts.append(f'<h3>The models</h3><dl class="legend">{items}</dl>')
    return "".join(parts)


def motion_trail(clip: np.ndarray) -> np.ndarray:
    """A still that shows a clip's motion: frame 0 with every pixel that changes over the clip tinted by when
    it changed (dark red early → yellow late), so a reader sees the path without playing the GIF."""
    frames = np.clip(np.asarray(clip, dtype=np.float32), 0, 1)  # (T, H, W, 3)
    change = np.abs(frames - frames[:1]).max(axis=-1)  # (T, H, W) deviation from frame 0
    strength = change.max(axis=0)
    when = change.argmax(axis=0) / max(1, len(frames) - 1)  # 0 (first frame) .. 1 (last)
    tint = np.stack([np.ones_like(when), when, np.zeros_like(when)], axis=-1)
    alpha = np.clip((strength - 0.1) / 0.2, 0, 1)[..., None]  # faint changes (noise) stay untinted
    return frames[0] * (1 - alpha) + tint * alpha


def png_data_uri(image: np.ndarray, scale: int = 4) -> str:
    from PIL import Image

    pixels = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    if scale > 1:
        pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _clip_scale(clip: np.ndarray, target_px: int = 56) -> int:
    return max(1, target_px // max(1, int(np.asarray(clip).shape[1])))


def clip_grid(samples_dir: Path, order: list[str], num: int) -> str:
    """Rows = conditioning frames, columns = models; each cell the clip (GIF) and its motion trail (still)."""
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
            if not path.is_file():
                cells.append("<td>–</td>")
                continue
            clip = np.load(path)
            scale = _clip_scale(clip)
            cells.append(f'<td><img src="{gif_data_uri(clip, scale=scale)}" alt="{html.escape(m)} {name}">'
                         f'<img src="{png_data_uri(motion_trail(clip), scale=scale)}" alt="{html.escape(m)} {name} trail"></td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<p class="small">In each cell: the clip (it plays), and its motion trail: frame 0 with every pixel '
            f'that changes tinted by when it changed (dark red = early, yellow = late). A static clip has no trail.</p>'
            f'<table class="clips"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')


def time_limited_runs(metrics: dict[str, Any]) -> set[str]:
    """Runs stopped by a wall-time budget: they ran many more steps, so they are left out of the step axis."""
    return {name for name, info in metrics.get("arms", {}).items() if info.get("stopped_by") == "time_limit"}


def saturated(points: list[tuple[float, float]], level: float = 0.98) -> bool:
    return bool(points) and min(y for _, y in points) >= level


def training_plots(runs_dir: Path, metrics: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """(image, caption) per curve in CURVES, one line per training run that logged it (x = generator step),
    plus wall-time versions of the evaluation curves. A run stopped by a time budget is plotted on the time
    axis only (its thousands of steps would squash the others); a saturated discriminator is said so."""
    metrics = metrics or {}
    logs = {p.parent.parent.name: read_jsonl(p) for p in sorted(runs_dir.glob("*/logs/metrics.jsonl"))}
    by_steps = {k: v for k, v in logs.items() if k not in time_limited_runs(metrics)}
    out = []
    for key, title in CURVES:
        series = {arm: [(r["step"], r[key]) for r in rows if key in r] for arm, rows in by_steps.items()}
        series = {k: v for k, v in series.items() if v}
        if series:
            caption = CURVE_NOTES.get(key, "")
            if key.startswith("disc/acc") and all(saturated(v) for v in series.values()):
                caption = ("The discriminator is saturated: accuracy ≥ 0.98 throughout, so its logits, not its "
                           "accuracy, carry the reward signal. " + caption)
            left_out = sorted(set(logs) - set(by_steps))
            if key.startswith("eval/") and left_out:
                caption += f" {', '.join(left_out)} (stopped by a time budget) is on the time plot only."
            out.append((plot_data_uri(series, title, "generator step"), caption.strip()))
            if key.startswith("eval/"):
                by_time = {arm: [(r["time"], r[key]) for r in rows if key in r] for arm, rows in logs.items()}
                out.append((plot_data_uri({k: v for k, v in by_time.items() if v}, title + " (by time)",
                                          "training wall time (s)"), ""))
    return out


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;max-width:1280px;color:#1d1d1f}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:12px}th,td{border:1px solid #ddd;padding:4px 6px;text-align:center}
table.metrics th:first-child{text-align:left}table.clips td{padding:2px}img{image-rendering:pixelated}
.plots{display:flex;flex-wrap:wrap}.plots figure{margin:4px;width:520px}.plots img{border:1px solid #eee;max-width:100%}
figcaption{font-size:11px;color:#444}.best{font-weight:700;background:#eaf5ea}.small{font-size:12px;color:#333}
dl.legend{font-size:12px;display:grid;grid-template-columns:max-content 1fr;gap:2px 12px}dl.legend dt{font-weight:600}
dl.legend dd{margin:0}table.metrics{max-width:100%}table.metrics th{word-break:break-word}
table.clips td img{display:inline-block;margin:1px}.note{background:#f6f8fa;padding:8px 12px;border-left:3px solid #888}
code{background:#f0f0f0;padding:1px 4px}
"""


# Records on <body> how many images decoded, so a headless browser can check the page renders whole.
# Also records the page's and the viewport's width, so a test can check nothing overflows sideways.
LOAD_CHECK = ("addEventListener('load',()=>{const i=[...document.images];"
              "document.body.dataset.imagesTotal=i.length;"
              "document.body.dataset.imagesLoaded=i.filter(x=>x.complete&&x.naturalWidth>0).length;"
              "document.body.dataset.scrollWidth=document.documentElement.scrollWidth;"
              "document.body.dataset.clientWidth=document.documentElement.clientWidth;});")


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
        parts.append(f'<p class="small">{html.escape(note)}</p>')
    criteria = metrics.get("criteria")
    if criteria:
        mark = {True: "met", False: "not met", None: "not measured"}
        rows = "".join(f"<tr><td>{html.escape(c['rule'])}</td><td>{mark[c['passed']]}</td><td>"
                       + html.escape(", ".join(f"{k} {_fmt(v)}" for k, v in c["values"].items())) + "</td></tr>"
                       for c in criteria)
        parts.append("<h2>Success criteria (fixed before the runs; this run's numbers)</h2>"
                     f"<table><tr><th>criterion</th><th>this run</th><th>values</th></tr>{rows}</table>")
    parts.append("<h2>Clips side by side (same conditioning frame per row)</h2>")
    parts.append(clip_grid(run_dir / "samples", order, grid_clips))
    plots = training_plots(run_dir / "runs", metrics)
    parts.append("<h2>Training curves</h2>")
    parts.append('<div class="plots">' + "".join(
        f'<figure><img src="{p}" alt="training curve"><figcaption>{html.escape(c)}</figcaption></figure>'
        for p, c in plots) + "</div>" if plots else "<p>No training logs yet.</p>")
    stages = metrics.get("stages", {})
    if stages:
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v.get('seconds'))}</td><td>{html.escape(str(v.get('status', '')))}</td></tr>"
                       for k, v in stages.items())
        parts.append(f"<h2>Stages</h2><table><tr><th>stage</th><th>seconds</th><th>status</th></tr>{rows}</table>")
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(metrics.get('title', 'report'))}"
            f"</title><style>{CSS}</style></head><body>{''.join(parts)}<script>{LOAD_CHECK}</script></body></html>")

    out = run_dir / "report.html"
    write_text(out, page)
    return out


# ----------------------------------------------------------------------------------------- comparison verdicts
REFERENCE = "real (held-out)"  # the row of real clips every generated model is compared with

DEMO_COLUMNS = ["sprite_static_fraction", "sprite_speed", "sprite_speed_w1", "sprite_lost_fraction",
                "sprite_mass_ratio", "sprite_area", "dynamic_degree", "motion_score", "frechet_motion_combined",
                "temporal_flicker", "motion_smoothness", "image_stats_frechet"]


def demo_column_info() -> dict[str, dict[str, str]]:
    """Short labels, meanings, directions and caveats of the demo's metric columns (metrics.json fields)."""
    flow_caveat = ("flow-based (OpenCV DIS, not RAFT): on 16-32 px samples DIS reads background speckle as motion, "
                   "so this column may not separate the models; the sprite columns are the demo's motion measure.")
    return {
        "column_labels": {
            "sprite_static_fraction": "static", "sprite_speed": "speed px/f", "sprite_speed_w1": "speed W1",
            "sprite_lost_fraction": "lost", "sprite_mass_ratio": "mass ratio", "sprite_area": "area px",
            "dynamic_degree": "dyn. degree", "motion_score": "motion score", "frechet_motion_combined": "Fréchet motion",
            "temporal_flicker": "flicker", "motion_smoothness": "smoothness", "image_stats_frechet": "image dist.",
        },
        "column_help": {
            "sprite_static_fraction": "share of clips whose sprite moves < 2 px over the clip",
            "sprite_speed": "mean sprite speed in px/frame over clips never lost",
            "sprite_speed_w1": "W1 distance of per-frame sprite speeds to held-out real clips: the hacking monitor, "
                               "never seen by the reward",
            "sprite_lost_fraction": "share of clips where the sprite fades below threshold in some frame",
            "sprite_mass_ratio": "sprite brightness mass in later frames / frame 0 (1 = real)",
            "sprite_area": "sprite pixels per frame",
            "dynamic_degree": "share of dynamic clips by VBench's rule",
            "motion_score": "mean optical-flow magnitude, px/frame",
            "frechet_motion_combined": "FVMD-style Fréchet distance of point-track motion to held-out real clips",
            "temporal_flicker": "VBench temporal flicker, (255 − mean abs frame difference)/255",
            "motion_smoothness": "flow-warp smoothness, (255 − warp error)/255",
            "image_stats_frechet": "Fréchet distance of per-frame image statistics to held-out real clips (appearance)",
        },
        "column_better": {
            "sprite_static_fraction": "real", "sprite_speed": "real", "sprite_speed_w1": "lower",
            "sprite_lost_fraction": "lower", "sprite_mass_ratio": "real", "sprite_area": "real",
            "frechet_motion_combined": "lower", "image_stats_frechet": "lower",
        },
        "column_caveats": {"dynamic_degree": flow_caveat, "motion_score": flow_caveat,
                           "frechet_motion_combined": "LK point tracks on tiny clips; read it with the sprite columns."},
    }


def demo_model_help(steps: int) -> dict[str, str]:
    """What each row of the demo's table is."""
    return {
        REFERENCE: "real target clips never used in training (the reference)",
        "base": "the model pre-trained from scratch on the generic clips",
        "sft": "the base after supervised fine-tuning on the target clips: where every arm starts",
        f"continued_sft@{steps}steps": f"SFT continued for {steps} more generator steps (equal steps to SHIFT)",
        "continued_sft@equal-time": "SFT continued for as long as the SHIFT arm trained (equal time)",
        "shift": f"SHIFT from the SFT model, {steps} generator steps: SFT loss + advantage-weighted loss on its "
                 "own rollouts, discriminators refreshed adversarially",
        "shift_static": "SHIFT with a static reward: the pre-trained discriminators are never refreshed",
        "rwr_sft": "reward-weighted regression + SFT (Lee et al. 2023): raw rewards as weights, static reward model",
    }


def comparison_verdicts(models: dict[str, dict[str, float]], *, shift: str, time_matched: str, steps: int,
                        baselines: list[str], appearance_margin: float,
                        arm_info: dict[str, Any] | None = None) -> list[str]:
    """Summary sentences computed from the measured numbers by fixed rules (never written by hand)."""
    arm_info = arm_info or {}
    out: list[str] = []
    real, sft, shift_row = models.get(REFERENCE), models.get("sft"), models.get(shift)
    key = "sprite_static_fraction"
    if real and sft and "base" in models:
        out.append(f"Motion gap: held-out real clips are static {real[key]:.1%} of the time; the base model "
                   f"{models['base'][key]:.1%}, the SFT model {sft[key]:.1%}.")
    if not (real and sft and shift_row):
        return out + ["The run has not reached the comparison yet."]
    gap0 = sft[key] - real[key]

    def closed(m: dict[str, float]) -> float:
        return (sft[key] - m[key]) / gap0 if abs(gap0) > 1e-9 else float("nan")

    for label, other in ((f"equal generator steps ({steps})", f"{time_matched}@{steps}steps"),
                         ("equal training time", f"{time_matched}@equal-time")):
        if other in models:
            o = models[other]
            better = shift_row[key] < o[key]
            out.append(f"At {label}: SHIFT static fraction {shift_row[key]:.3f} (closes {closed(shift_row):.0%} of the "
                       f"SFT gap) vs continued SFT {o[key]:.3f} ({closed(o):.0%}) — SHIFT is "
                       f"{'ahead' if better else 'not ahead'}.")
    for name in baselines:
        if name in models:
            out.append(f"Baseline {name} at {steps} steps: static fraction {models[name][key]:.3f} "
                       f"({closed(models[name]):.0%} of the gap).")
    nan = float("nan")
    w1, w1_sft = shift_row.get("sprite_speed_w1", nan), sft.get("sprite_speed_w1", nan)
    area, area_real = shift_row.get("sprite_area", nan), real.get("sprite_area", nan)
    lost, lost_sft = shift_row.get("sprite_lost_fraction", nan), sft.get("sprite_lost_fraction", nan)
    problems = []
    if not w1 <= w1_sft * 1.05:
        problems.append("speeds further from the real clips than SFT's")
    if not abs(area - area_real) <= 0.2 * area_real:
        problems.append("sprite size drifted more than 20 % from the real clips'")
    if not lost <= lost_sft + 0.05:
        problems.append("sprites fade more often than SFT's")
    out.append(f"Hacking monitor (never seen by the reward): SHIFT speed-W1 to held-out clips {w1:.3f} vs SFT "
               f"{w1_sft:.3f}; sprite area {area:.1f} px vs real {area_real:.1f}; lost fraction {lost:.3f} vs SFT "
               f"{lost_sft:.3f} — " + ("possible reward hacking or drift: " + "; ".join(problems) + "."
                                       if problems else "no sign of reward hacking."))
    fd, fd_sft = shift_row.get("image_stats_frechet", nan), sft.get("image_stats_frechet", nan)
    ok = fd <= fd_sft * (1 + appearance_margin) + 1e-4
    out.append(f"Appearance: image-statistics distance {fd:.4f} vs SFT {fd_sft:.4f} (allowed margin "
               f"+{appearance_margin:.0%}) — {'within' if ok else 'outside'} the margin.")
    shift_t = arm_info.get(shift, {}).get("seconds")
    shift_cpu = arm_info.get(shift, {}).get("timers", {}).get("cpu")
    other_t = arm_info.get(time_matched, {})
    if shift_t and other_t:
        clock = (f"the same process CPU time ({shift_cpu:.0f} CPU s; other processes' load does not count)"
                 if shift_cpu and other_t.get("timers", {}).get("cpu") else "the same wall time")
        out.append(f"Cost: SHIFT took {shift_t:.0f} s for {steps} steps; continued SFT took {other_t.get('steps')} "
                   f"steps in {clock}, at the same thread count. Discriminator pre-training is a one-off cost "
                   "not counted in either.")
    return out


# Issue 14's success criteria for the collapse scenario, fixed before any run of it (one seed passes a criterion
# or not; the scenario succeeds when every criterion holds in at least 3 of 4 seeds — benchmarks/efficacy.py).
SUCCESS_CRITERIA = (
    ("sft_collapses", "SFT's speed W1 to held-out clips is >= 1.2x the base's (a collapse)"),
    ("shift_restores", "SHIFT's speed W1 is <= 0.7x SFT's and <= 1.1x the base's"),
    ("shift_beats_equal_time_sft", "SHIFT is below continued SFT at equal time on speed W1 and on static fraction"),
    ("shift_keeps_sprites", "SHIFT's lost fraction <= base's + 0.05 and its image distance <= 1.25x SFT's"),
    ("refresh_matters", "the static-reward arm ends with a larger speed W1 than SHIFT"),
    ("clean_base", "the base's image-statistics distance <= 0.01"),
)


def success_criteria(models: dict[str, dict[str, Any]], *, shift: str = "shift",
                     time_matched: str = "continued_sft@equal-time",
                     static_reward: str = "shift_static") -> list[dict[str, Any]]:
    """Each criterion of :data:`SUCCESS_CRITERIA`: ``{"name", "rule", "passed" (bool or None when a model is
    missing), "values"}``, computed from a demo's ``models`` table."""
    def get(model: str, column: str) -> float | None:
        return _as_float(models.get(model, {}).get(column))

    w1, static, lost, img = "sprite_speed_w1", "sprite_static_fraction", "sprite_lost_fraction", "image_stats_frechet"
    v = {
        "base_w1": get("base", w1), "sft_w1": get("sft", w1), "shift_w1": get(shift, w1),
        "time_matched_w1": get(time_matched, w1), "shift_static_fraction": get(shift, static),
        "time_matched_static_fraction": get(time_matched, static), "base_lost": get("base", lost),
        "shift_lost": get(shift, lost), "sft_img": get("sft", img), "shift_img": get(shift, img),
        "static_reward_w1": get(static_reward, w1), "base_img": get("base", img),
    }

    # criterion -> (the values it reads, its test on them)
    rules = {
        "sft_collapses": (("sft_w1", "base_w1"), lambda s, b: s >= 1.2 * b),
        "shift_restores": (("shift_w1", "sft_w1", "base_w1"), lambda x, s, b: x <= 0.7 * s and x <= 1.1 * b),
        "shift_beats_equal_time_sft": (("shift_w1", "time_matched_w1", "shift_static_fraction",
                                        "time_matched_static_fraction"), lambda x, t, xs, ts: x < t and xs < ts),
        "shift_keeps_sprites": (("shift_lost", "base_lost", "shift_img", "sft_img"),
                                lambda lx, lb, ix, isft: lx <= lb + 0.05 and ix <= 1.25 * isft),
        "refresh_matters": (("static_reward_w1", "shift_w1"), lambda s, x: s > x),
        "clean_base": (("base_img",), lambda b: b <= 0.01),
    }

    def passed(names: tuple[str, ...], test) -> bool | None:
        values = [v[n] for n in names]
        return None if any(x is None or x != x for x in values) else bool(test(*values))

    return [{"name": name, "rule": text, "passed": passed(*rules[name]), "values": {k: v[k] for k in rules[name][0]}}
            for name, text in SUCCESS_CRITERIA]
