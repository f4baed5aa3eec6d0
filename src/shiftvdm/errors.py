"""User-facing errors. The CLI prints their message (no traceback) and exits non-zero.

Every message names the file, field or value at fault and says what was expected.
"""


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


class TrainingError(ShiftvdmError):
    """Training cannot continue (e.g. too many non-finite steps); the last good checkpoint is kept."""
