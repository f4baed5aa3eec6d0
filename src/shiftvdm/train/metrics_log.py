"""Re-export: the metrics logger moved to utils/metrics_log.py (rewards/ uses it too and sits below train/)."""

from shiftvdm.utils.metrics_log import MetricsLogger

__all__ = ["MetricsLogger"]
