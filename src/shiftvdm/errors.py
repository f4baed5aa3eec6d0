"""User-facing errors. The CLI prints their message (no traceback) and exits non-zero.

Every message names the file, field or value at fault and says what was expected.
"""

from __future__ import annotations

import reprlib
from typing import Any


class ShiftvdmError(Exception):
    """Base class of errors caused by user input (files, configs, arguments)."""

    exit_code = 1


class ConfigError(ShiftvdmError, ValueError):
    """A config file or override is invalid. Carries every problem found, one per line."""

    exit_code = 2


class DataError(ShiftvdmError, ValueError):
    """A video, manifest or dataset entry cannot be used."""


class CheckpointError(ShiftvdmError):
    """A checkpoint or weights file is missing, malformed or incompatible with the run."""


class DamagedCheckpointError(CheckpointError):
    """A checkpoint file is empty or cut short (a crash mid-write on a file system without atomic rename):
    resuming falls back to the previous checkpoint. A file that is intact but unsafe is not this."""


class TrainingError(ShiftvdmError):
    """Training cannot continue (e.g. too many non-finite steps); the last good checkpoint is kept."""


class OutputError(ShiftvdmError):
    """An output path cannot be written (read-only, a folder where a file is due, one of the inputs...)."""

    exit_code = 2


# A bounded repr for messages: a value built from YAML aliases can expand to megabytes (billion laughs),
# and quoting it whole would hang the error path itself.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict = 2, 5, 5, 5
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 80, 80, 40


def quote(value: Any) -> str:
    """``repr(value)`` capped to a few hundred characters, for error messages."""
    text = _REPR.repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


__all__ = ["CheckpointError", "ConfigError", "DamagedCheckpointError", "DataError", "OutputError", "ShiftvdmError", "TrainingError", "quote"]
