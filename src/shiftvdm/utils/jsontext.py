"""JSON text that can always be written as UTF-8, for records that hold file names.

A file name that is not valid UTF-8 (bytes from another system's encoding) reaches Python as a str with lone
surrogates (PEP 383, ``os.fsdecode``), which UTF-8 cannot encode. Such a record is written with JSON ``\\udcXX``
escapes instead: ``json.loads`` gives back the same str, and the file system encodes it to the same bytes, so the
name goes end to end. Other records keep their characters as typed (``ensure_ascii=False``).
"""

from __future__ import annotations

import json
from typing import Any


def dumps_utf8(obj: Any, **kwargs: Any) -> str:
    """``json.dumps(obj, ensure_ascii=False, **kwargs)``, or with ASCII escapes when that text is not UTF-8."""
    text = json.dumps(obj, ensure_ascii=False, **kwargs)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(obj, ensure_ascii=True, **kwargs)
    return text


__all__ = ["dumps_utf8"]
