"""`shiftvdm eval`: motion and appearance metrics on a folder (or manifest) of videos.

Prints one row per metric with its set-level value, lists the files that could not be used and why,
and writes every per-clip value to ``--json``. Exit status: 0 when scored (even with skipped files),
1 when no video is usable, when ``--strict`` finds an unusable file, or on a bad reference set.
On a terminal, a progress bar over the clips goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path

from tqdm.contrib.logging import logging_redirect_tqdm

from shiftvdm.data.manifest import is_dataset_file
from shiftvdm.errors import ConfigError, DataError
from shiftvdm.eval.paper import (
    evaluate_paper,
    i3d_features,
    model_names,
    paper_report,
    paper_table,
    prepare_suite,
)
from shiftvdm.eval.suite import (
    DEFAULT_METRICS,
    METRIC_GROUPS,
    MIN_FRAMES,
    evaluate_videos,
)
from shiftvdm.motion.base import (
    FLOW_ESTIMATORS,
    TRACKERS,
    get_flow_estimator,
    get_tracker,
)
from shiftvdm.recipes.args import parse_command_line
from shiftvdm.utils.checkpoint import write_text
from shiftvdm.utils.outputs import check_output_file

logger = logging.getLogger(__name__)

EPILOG = """\
examples:
  shiftvdm eval samples/ --json metrics.json
  shiftvdm eval samples/ --reference real/ --ground-truth real/ --json metrics.json
  shiftvdm eval samples/manifest.jsonl --flow farneback --metrics dynamic_degree,motion_score
  shiftvdm eval shiftvdm-demo/samples/shift --reference shiftvdm-demo/data/heldout --sprites   # a demo run's folders

  shiftvdm eval samples/ --flow raft --flow-checkpoint raft-things.pth --metrics dynamic_degree,motion_score

  shiftvdm eval base/ --compare sft/ shift/ --reference real/ --images images/ --suite paper --weights weights/ \
      --json table.json --markdown table.md        # the paper's table, one column per model
  shiftvdm eval samples/ --reference real/ --suite fvd,dynamic_degree --weights weights/

VBench's dynamic degree uses RAFT (raft-things.pth, 20 iterations): with --flow raft and that file the
dynamic degree is VBench-exact and the output says so. By default this command uses no downloaded
weights (DIS flow, Lucas-Kanade tracks) and says next to the numbers that they are stand-ins. Motion
score and smoothness use whichever --flow is chosen (dis, farneback, raft, sea-raft when installed).

--suite paper computes the paper's table from the released networks in --weights (files under their
released names; a missing one is refused with where to get it): the VBench-I2V dimensions, Appearance /
Motion / Overall, Motion Score (RAFT) and FVD (I3D). See docs/evaluation.md for the files of each column.
"""

# VBench's dynamic degree runs RAFT with 20 refinement iterations
RAFT_EVAL_ITERS = 20


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0], epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", help="folder of videos (.mp4/.avi/.webm/.mov/.gif/.npy) or a manifest")
    parser.add_argument("--reference", help="real clips (folder or manifest) for the Fréchet distances")
    parser.add_argument("--ground-truth", dest="ground_truth",
                        help="clips compared frame by frame (PSNR/SSIM), matched by manifest source or file name")
    parser.add_argument("--conditioning", "--images", dest="conditioning",
                        help="conditioning images (or videos: first frame), matched by file name; default: "
                             "the manifest's 'conditioning'/'image' field when present")
    parser.add_argument("--flow", default="dis", choices=sorted(FLOW_ESTIMATORS),
                        help="optical flow estimator (default: dis; raft needs --flow-checkpoint)")
    parser.add_argument("--flow-checkpoint", dest="flow_checkpoint",
                        help="local weights file of a neural flow estimator (e.g. --flow raft)")
    parser.add_argument("--flow-iters", dest="flow_iters", type=int, default=None,
                        help=f"refinement iterations of a neural flow estimator (default: {RAFT_EVAL_ITERS} for "
                             "raft, as VBench; the estimator's own default otherwise)")
    parser.add_argument("--flow-chunk-size", dest="flow_chunk_size", type=int, default=None,
                        help="frame pairs per forward pass of a neural flow estimator (memory vs speed)")
    parser.add_argument("--device", default=None,
                        help="device of a neural flow estimator, e.g. cuda, cuda:1, cpu (default: cuda if present)")
    parser.add_argument("--tracker", default="lk", choices=sorted(TRACKERS), help="point tracker (default: lk)")
    parser.add_argument("--tracker-checkpoint", dest="tracker_checkpoint",
                        help="local weights file of a neural point tracker (e.g. --tracker cotracker3 with scaled_offline.pth)")
    parser.add_argument("--fps", type=float, default=None,
                        help="frame rate to assume for every clip (default: each file's own; 8 for .npy)")
    parser.add_argument("--max-frames", dest="max_frames", type=int, default=None,
                        help="read at most this many frames of each clip")
    parser.add_argument("--min-frames", dest="min_frames", type=int, default=MIN_FRAMES,
                        help=f"clips with fewer frames are skipped as too short (default: {MIN_FRAMES})")
    parser.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                        help=f"comma-separated metric groups among {','.join(METRIC_GROUPS)} "
                             "(default: all but sprites)")
    parser.add_argument("--sprites", action="store_true",
                        help="also track bright sprites (synthetic data): speed, displacement, static/lost fractions")
    parser.add_argument("--sprite-threshold", dest="sprite_threshold", type=float, default=0.4,
                        help="gray level (0-1) above which a pixel belongs to a sprite (default: 0.4)")
    parser.add_argument("--strict", action="store_true",
                        help="fail (exit 1) if any file is unreadable, empty or too short instead of skipping it")
    parser.add_argument("--json", dest="json_path", help="write aggregate and per-video values to this JSON file")
    paper = parser.add_argument_group("the paper's table (--suite)")
    paper.add_argument("--suite", help="'paper' (every dimension of the paper's table) or a comma list of its "
                                       "dimensions, e.g. fvd,dynamic_degree; replaces --metrics")
    paper.add_argument("--weights", help="folder with the released weight files of the suite's networks")
    paper.add_argument("--compare", nargs="+", metavar="VIDEOS", default=[],
                       help="more models' clip folders, scored like VIDEOS and shown side by side")
    paper.add_argument("--markdown", dest="markdown_path", help="write the table as Markdown to this file")
    paper.add_argument("--batch-size", dest="batch_size", type=int, default=8,
                       help="clips per I3D forward pass (default 8)")
    return parser


def check_inputs(args: argparse.Namespace) -> None:
    """Every path given exists (even when the chosen metrics do not read it) and --json can be written."""
    if not 0.0 <= args.sprite_threshold <= 1.0:  # False for NaN too
        raise ConfigError(f"--sprite-threshold must be a gray level in [0, 1], got {args.sprite_threshold}")
    named = {"videos": args.videos, "--reference": args.reference, "--ground-truth": args.ground_truth,
             "--conditioning": args.conditioning,
             **{f"--compare {i + 1}": v for i, v in enumerate(getattr(args, "compare", []))}}
    for flag, value in named.items():
        if value is not None and not Path(value).exists():
            raise DataError(f"{value}: {flag} not found (a folder of videos or a manifest)")
    for flag, value in (("--json", args.json_path), ("--markdown", getattr(args, "markdown_path", None))):
        if value:
            check_output_file(value, flag, inputs=[(k, v) for k, v in named.items()], dataset_file=is_dataset_file)


def _flow_options(args: argparse.Namespace) -> dict:
    """Keyword options of the chosen flow estimator; the weight-free ones take none of the neural options."""
    neural = args.flow_checkpoint is not None or args.flow not in {"dis", "farneback"}
    given = [name for name in ("flow_iters", "flow_chunk_size") if getattr(args, name) is not None]
    if not neural:
        if given:
            raise ConfigError(f"--{given[0].replace('_', '-')} applies to a neural flow estimator "
                              f"(--flow raft/sea-raft with --flow-checkpoint), not to --flow {args.flow}")
        return {}
    for name in given:
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    options: dict = {"checkpoint": args.flow_checkpoint} if args.flow_checkpoint else {}
    iters = args.flow_iters if args.flow_iters is not None else (RAFT_EVAL_ITERS if args.flow == "raft" else None)
    if iters is not None:
        options["iters"] = iters
    if args.flow_chunk_size is not None:
        options["chunk_size"] = args.flow_chunk_size
    if args.device:
        options["device"] = args.device
    return options


def _refuse_classic_options(args: argparse.Namespace) -> None:
    """Options of the classic metrics that --suite would silently ignore, and --suite's own in their absence."""
    if args.suite is None:
        for flag, value in (("--weights", args.weights), ("--compare", args.compare),
                            ("--markdown", args.markdown_path)):
            if value:
                raise ConfigError(f"{flag} belongs to --suite (e.g. --suite paper); give --suite or leave it out")
        return
    given = [flag for flag, value in (("--metrics", args.metrics != ",".join(DEFAULT_METRICS)),
                                      ("--sprites", args.sprites), ("--ground-truth", args.ground_truth),
                                      ("--flow", args.flow != "dis"), ("--flow-checkpoint", args.flow_checkpoint),
                                      ("--tracker", args.tracker != "lk"),
                                      ("--tracker-checkpoint", args.tracker_checkpoint)) if value]
    if given:
        raise ConfigError(f"{given[0]}: not used by --suite (the suite's networks come from --weights); leave it out")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")


def run_suite(args: argparse.Namespace, progress: bool) -> int:
    """--suite: the paper's table for VIDEOS (and each --compare folder), one column per model."""
    suite = prepare_suite(args.suite, args.weights, device=args.device, reference=args.reference is not None)
    options = dict(fps=args.fps, max_frames=args.max_frames, min_frames=args.min_frames, strict=args.strict,
                   progress=progress)
    reference = None
    if suite.i3d is not None:
        reference = i3d_features(args.reference, suite, batch_size=args.batch_size, max_frames=args.max_frames,
                                 progress=progress)
    folders = [args.videos, *args.compare]
    results = {name: evaluate_paper(folder, suite, reference_features=reference, images=args.conditioning,
                                    batch_size=args.batch_size, **options)
               for name, folder in zip(model_names(folders), folders)}
    print(paper_report(results))
    if args.json_path:
        data = (next(iter(results.values())).to_dict() if len(results) == 1
                else {"models": {name: r.to_dict() for name, r in results.items()}})
        text = json.dumps(data, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
        path = write_text(Path(args.json_path), text)
        print(f"\nper-video values: {path}")
    if args.markdown_path:
        table = paper_table(results) + "\n"
        path = write_text(Path(args.markdown_path), table)
        print(f"table: {path}")
    return 0


def main(argv: list[str], prog: str = "shiftvdm eval") -> int:
    args = parse_command_line(build_parser(prog), argv)
    _refuse_classic_options(args)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = sorted(set(metrics) - set(METRIC_GROUPS))
    if unknown:
        raise ConfigError(f"--metrics: unknown group(s) {', '.join(unknown)}; "
                          f"expected some of {', '.join(METRIC_GROUPS)}")
    if args.fps is not None and not args.fps > 0:
        raise ConfigError(f"--fps must be positive, got {args.fps}")
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames must be at least 1, got {args.max_frames}")
    if args.min_frames < 2:
        raise ConfigError(f"--min-frames must be at least 2, got {args.min_frames}")
    check_inputs(args)
    if args.suite is not None:
        progress = sys.stderr.isatty()
        with logging_redirect_tqdm() if progress else contextlib.nullcontext():
            return run_suite(args, progress)
    # built here so that a neural estimator gets its local checkpoint; the defaults need none
    try:
        flow = get_flow_estimator(args.flow, **_flow_options(args))
        tracker = get_tracker(args.tracker,
                              **({"checkpoint": args.tracker_checkpoint} if args.tracker_checkpoint else {}))
    except ImportError as exc:  # an optional estimator whose module or dependency is not installed
        raise ConfigError(f"--flow {args.flow} / --tracker {args.tracker}: not available here ({exc})") from exc
    # a bar over the clips on a terminal only (stdout, the table, is unchanged); log lines print above it
    progress = sys.stderr.isatty()
    with logging_redirect_tqdm() if progress else contextlib.nullcontext():
        result = evaluate_videos(
            args.videos, reference=args.reference, ground_truth=args.ground_truth, conditioning=args.conditioning,
            flow=flow, tracker=tracker, fps=args.fps, strict=args.strict, metrics=metrics,
            sprites=args.sprites, sprite_threshold=args.sprite_threshold, max_frames=args.max_frames,
            min_frames=args.min_frames, progress=progress)
    print(result.format_table())
    if args.json_path:
        path = result.save_json(args.json_path)
        print(f"\nper-video values: {path}")
    return 0
