"""One metrics logger for every training loop (SHIFT/SFT/pre-training and discriminator pre-training):
JSON lines (``logs/metrics.jsonl``), TensorBoard when installed, and a tqdm bar, on the main process only.

It lives in utils/ because both train/ and rewards/ (discriminator pre-training) use it, and rewards/ sits
below train/.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from torch import Tensor

from shiftvdm.utils.atomic import append_text

logger = logging.getLogger(__name__)


class MetricsLogger:
    """Writes scalars per step; silent on every process but the main one (``enabled`` False)."""

    def __init__(self, log_dir: str | Path, enabled: bool = True) -> None:
        self.log_dir, self.enabled = Path(log_dir), enabled
        self.path = self.log_dir / "metrics.jsonl"
        self._writer: Any = None
        self._bar: Any = None

    def open(self, *, total: float | None = None, initial: float = 0, desc: str = "", progress: bool = True,
             unit: str = "step") -> None:
        """Start TensorBoard (optional at run time) and the progress bar."""
        if not self.enabled:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir))
        except Exception as exc:  # tensorboard is optional
            logger.warning("TensorBoard logging off: %s", exc)
        if progress:
            from tqdm.auto import tqdm

            # a seconds bar counts fractional seconds: show whole ones (tqdm prints n as given)
            fmt = ("{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]" if unit == "s" else None)
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, bar_format=fmt)

    def log(self, metrics: dict[str, float], step: int, time: float | None = None) -> None:
        """Append one record (step, time, metrics) and mirror the finite scalars to TensorBoard."""
        if not metrics or not self.enabled:
            return
        record = {"step": step, **({"time": round(time, 4)} if time is not None else {}),
                  **{k: float(v) for k, v in metrics.items()}}
        append_text(self.path, json.dumps(record) + "\n")  # whole records only (utils/atomic.py)
        if self._writer is not None:
            for k, v in metrics.items():
                if math.isfinite(float(v)):
                    self._writer.add_scalar(k, float(v), step)

    def histograms(self, values: dict[str, Tensor], step: int) -> None:
        if self._writer is None:
            return
        for name, t in values.items():
            self._writer.add_histogram(name, t.flatten(), step)

    def advance(self, n: float = 1, **postfix: str) -> None:
        """Move the progress bar (and show e.g. the latest loss)."""
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(refresh=False, **postfix)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()
        self._bar = self._writer = None


__all__ = ["MetricsLogger"]
