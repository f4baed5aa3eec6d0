"""Motion and appearance evaluation on any clips: ``evaluate_videos`` and the metrics it is made of.

Weight-free by default (OpenCV DIS flow, Lucas–Kanade tracks); each module documents its reference
(VBench, FVMD, EvalCrafter) and where it differs. ``inputs`` resolves what is scored, ``suite`` scores it
frame by frame, ``results`` holds and formats the outcome; ``shiftvdm eval`` is the command-line front end.
"""

from shiftvdm.eval.appearance import (
    clip_fidelity,
    first_frame_fidelity,
    image_statistics,
    image_statistics_frechet,
    psnr,
    ssim,
    video_image_statistics,
)
from shiftvdm.eval.dynamic_degree import DynamicVerdict, dynamic_degree, dynamic_threshold, video_dynamic_degree
from shiftvdm.eval.flicker import temporal_flicker
from shiftvdm.eval.frechet_motion import (
    FrechetMotionResult,
    GaussianFit,
    fit_gaussian,
    frechet_distance,
    frechet_motion_distance,
)
from shiftvdm.eval.motion_score import flow_pair_statistics, motion_score
from shiftvdm.eval.smoothness import motion_smoothness
from shiftvdm.eval.sprites import SpriteMetrics, sprite_motion_metrics
from shiftvdm.eval.inputs import EvalClip, collect_clips
from shiftvdm.eval.results import EvalResult
from shiftvdm.eval.suite import METRIC_GROUPS, ReferenceFeatures, evaluate_videos, prepare_reference

__all__ = [
    "METRIC_GROUPS",
    "DynamicVerdict",
    "EvalClip",
    "EvalResult",
    "FrechetMotionResult",
    "GaussianFit",
    "ReferenceFeatures",
    "SpriteMetrics",
    "clip_fidelity",
    "collect_clips",
    "dynamic_degree",
    "dynamic_threshold",
    "evaluate_videos",
    "first_frame_fidelity",
    "fit_gaussian",
    "flow_pair_statistics",
    "frechet_distance",
    "frechet_motion_distance",
    "image_statistics",
    "image_statistics_frechet",
    "motion_score",
    "motion_smoothness",
    "prepare_reference",
    "psnr",
    "sprite_motion_metrics",
    "ssim",
    "temporal_flicker",
    "video_dynamic_degree",
    "video_image_statistics",
]
