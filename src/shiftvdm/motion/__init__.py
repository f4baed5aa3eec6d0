"""Motion estimators (optical flow, point tracks) behind one interface, and the features built on them.

Weight-free defaults: OpenCV DIS flow ("dis") and pyramidal Lucas–Kanade tracks ("lk"). Neural
options ("raft", "cotracker3") load only from a local checkpoint path.
"""

from shiftvdm.motion.base import (
    FLOW_ESTIMATORS,
    TRACKERS,
    FlowEstimator,
    PointTracker,
    Tracks,
    flow_with_confidence,
    get_flow_estimator,
    get_tracker,
    grid_queries,
    random_queries,
    to_gray,
    video_flow,
)

__all__ = [
    "FLOW_ESTIMATORS",
    "TRACKERS",
    "FlowEstimator",
    "PointTracker",
    "Tracks",
    "flow_with_confidence",
    "get_flow_estimator",
    "get_tracker",
    "grid_queries",
    "random_queries",
    "to_gray",
    "video_flow",
]
