"""Dataset manifests: which clips make a dataset, with optional prompt, source clip and metadata.

A manifest is a ``.jsonl`` file (one JSON object per line), a ``.json`` file (a list of objects, or an object
whose ``"clips"`` key holds that list), a ``.csv`` file with a header row, or a plain folder of videos. Each
entry needs ``path`` (relative to the manifest's folder, or absolute); ``source`` and ``prompt`` are optional;
every other key goes to ``meta``. A folder holding a ``manifest.jsonl`` (what ``shiftvdm data synth`` writes)
is read through that manifest; any other folder lists its videos (sorted, not recursive).

Entries whose path resolves outside the dataset root are kept but flagged (``outside_root``) so that
``check_dataset`` reports them instead of silently reading files elsewhere on disk.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shiftvdm.data.video_io import CLIP_EXTENSIONS
from shiftvdm.errors import DataError
from shiftvdm.utils.checkpoint import write_text
from shiftvdm.utils.jsontext import dumps_utf8

logger = logging.getLogger(__name__)

MANIFEST_EXTENSIONS = (".jsonl", ".json", ".csv")
# Names looked up, in order, inside a folder before falling back to listing its videos.
FOLDER_MANIFEST_NAMES = ("manifest.jsonl", "manifest.json", "manifest.csv")


def is_dataset_file(path: str | Path) -> bool:
    """Whether a file of this name inside a clip folder is read as part of its dataset (a folder manifest or a
    clip); ``utils.outputs.check_output_file(dataset_file=...)`` refuses to write one into an input folder."""
    path = Path(path)
    return path.name in FOLDER_MANIFEST_NAMES or path.suffix.lower() in CLIP_EXTENSIONS


@dataclass
class ClipEntry:
    """One clip of a dataset.

    Attributes:
        path: absolute, resolved path of the clip.
        relpath: the path as written in the manifest (for messages).
        source: e.g. the real clip a generated clip came from.
        prompt: optional text prompt.
        meta: every other manifest key.
        outside_root: the path resolves outside the dataset root (a bad entry for ``check_dataset``).
    """

    path: Path
    relpath: str
    source: str | None = None
    prompt: str | None = None
    meta: dict = field(default_factory=dict)
    outside_root: bool = False


@dataclass
class Manifest:
    """A dataset: its root folder (the manifest's folder) and its entries in manifest order."""

    root: Path
    entries: list[ClipEntry]

    def __len__(self) -> int:
        return len(self.entries)


def _entry_from_record(record: Any, root: Path, where: str) -> ClipEntry:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object with a \"path\" key, got {type(record).__name__}")
    if "path" not in record:
        raise DataError(f"{where}: missing required key \"path\" (keys: {', '.join(map(str, record)) or 'none'})")
    relpath = record["path"]
    if not isinstance(relpath, str) or not relpath.strip():
        raise DataError(f"{where}: \"path\" must be a non-empty string, got {relpath!r}")
    for key in ("source", "prompt"):
        value = record.get(key)
        if value is not None and not isinstance(value, str):
            raise DataError(f"{where}: \"{key}\" must be a string or null, got {value!r}")
    try:
        path = (root / relpath).resolve()
    except (OSError, RuntimeError):  # a symlink loop: keep the name, the check reports the loop
        path = Path(os.path.abspath(root / relpath))
    if not path.exists() and os.path.islink(root / relpath):  # a dangling link: the check names it and its target
        path = Path(os.path.abspath(root / relpath))
    return ClipEntry(
        path=path,
        relpath=relpath,
        source=record.get("source") or None,
        prompt=record.get("prompt") or None,
        meta={k: v for k, v in record.items() if k not in ("path", "source", "prompt")},
        outside_root=_outside_root(root, relpath, path),
    )


def _outside_root(root: Path, relpath: str, resolved: Path) -> bool:
    """Whether a manifest path leaves its dataset folder. A path that walks down from the folder (no ``..``, not
    absolute) stays inside even through symbolic links: a link placed in the dataset folder (a folder of
    symlinked clips) is the dataset's own choice, and its target is checked readable like any clip. A path with
    ``..`` or an absolute one must resolve inside the folder."""
    parts = Path(relpath).parts
    if not Path(relpath).is_absolute() and ".." not in parts:
        return False
    return not resolved.is_relative_to(root)


def _read_text(path: Path) -> str:
    """The manifest's text: UTF-8, a leading byte-order mark dropped (spreadsheet exports write one)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the manifest ({exc.strerror or exc})") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DataError(f"{path} line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                        "save the manifest as UTF-8") from exc


def require_inside_root(entry: ClipEntry) -> None:
    """The one outside-root rule for every reader (check, training, eval, generate, train-critic)."""
    if entry.outside_root:
        raise DataError(f"{entry.path}: path outside the dataset root (listed as {entry.relpath!r}); "
                        "manifests may only name files inside their own folder")


def _refuse_duplicates(path: Path, entries: list[ClipEntry]) -> None:
    first: dict[Path, int] = {}
    repeats: list[str] = []
    for i, entry in enumerate(entries):
        if entry.path in first:
            repeats.append(f"{entry.relpath!r} (entries {first[entry.path] + 1} and {i + 1})")
        else:
            first[entry.path] = i
    if repeats:
        shown = "; ".join(repeats[:5]) + (f"; and {len(repeats) - 5} more" if len(repeats) > 5 else "")
        raise DataError(f"{path}: {len(repeats)} duplicate entries name a clip already listed: {shown}. "
                        "List each clip once")


def _read_jsonl(path: Path, root: Path) -> list[ClipEntry]:
    entries = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        entries.append(_entry_from_record(_json_line(line, path, number), root, f"{path} line {number}"))
    return entries


def _json_line(text: str, path: Path, number: int) -> Any:
    """One JSONL line parsed, or a DataError naming the file and line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} line {number}: invalid JSON ({exc.msg} at column {exc.colno})") from exc
    except RecursionError as exc:
        raise DataError(f"{path} line {number}: JSON nested too deeply; a line is one flat object") from exc


def _read_json(path: Path, root: Path) -> list[ClipEntry]:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from exc
    except RecursionError as exc:
        raise DataError(f"{path}: JSON nested too deeply; expected a list of flat clip objects") from exc
    if isinstance(data, dict):
        if "clips" not in data:
            raise DataError(f"{path}: expected a list of clip objects or an object with a \"clips\" list, "
                            f"got an object with keys {', '.join(data) or 'none'}")
        data = data["clips"]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of clip objects, got {type(data).__name__}")
    return [_entry_from_record(r, root, f"{path} entry {i}") for i, r in enumerate(data)]


def _read_csv(path: Path, root: Path) -> list[ClipEntry]:
    with io.StringIO(_read_text(path), newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "path" not in [f.strip() for f in reader.fieldnames]:
            raise DataError(f"{path} line 1: the header row must have a \"path\" column, got "
                            f"{', '.join(reader.fieldnames or []) or 'an empty file'}")
        entries = []
        for row in reader:
            if None in row:
                raise DataError(f"{path} line {reader.line_num}: more values than header columns")
            record = {k.strip(): (v if v != "" else None) for k, v in row.items()}
            if record.get("path") is None:
                raise DataError(f"{path} line {reader.line_num}: empty \"path\"")
            entries.append(_entry_from_record(record, root, f"{path} line {reader.line_num}"))
    return entries


def _list_folder(folder: Path) -> list[ClipEntry]:
    # every name with a clip extension, files or not: a folder, a dangling link or a link loop named
    # x.mp4 is listed (and reported bad by the check) rather than dropped without a word
    try:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in CLIP_EXTENSIONS)
    except OSError as exc:
        raise DataError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from exc
    if not files:
        raise DataError(f"{folder}: no videos found (looked for {', '.join(CLIP_EXTENSIONS)}, not recursively)")
    return [_entry_from_record({"path": p.name}, folder, str(p)) for p in files]


def load_manifest(path: str | Path) -> Manifest:
    """Load a manifest file (.jsonl/.json/.csv) or a folder of videos.

    Raises:
        DataError: naming the file and line/entry/field when it is missing, malformed or has no entries.
    """
    path = Path(path)
    if not path.exists():
        shown = path if path.is_absolute() else f"{path} (resolved: {path.absolute()})"
        raise DataError(f"{shown}: manifest or video folder not found")
    if path.is_dir():
        root = path.resolve()
        for name in FOLDER_MANIFEST_NAMES:
            if (root / name).is_file():
                logger.info("%s: reading the dataset through %s", path, name)
                return load_manifest(root / name)
        return Manifest(root=root, entries=_list_folder(root))
    suffix = path.suffix.lower()
    root = path.resolve().parent
    if suffix == ".jsonl":
        entries = _read_jsonl(path, root)
    elif suffix == ".json":
        entries = _read_json(path, root)
    elif suffix == ".csv":
        entries = _read_csv(path, root)
    else:
        raise DataError(f"{path}: unknown manifest type {suffix or '(no extension)'!r}: expected "
                        f"{', '.join(MANIFEST_EXTENSIONS)} or a folder of videos")
    if not entries:
        raise DataError(f"{path}: the manifest has no entries")
    _refuse_duplicates(path, entries)
    return Manifest(root=root, entries=entries)


def write_manifest(path: str | Path, entries: list[dict]) -> Path:
    """Atomically write a JSONL manifest, one object per entry (each needs ``"path"``).

    ``Path`` values are written relative to the manifest's folder when they lie inside it.
    """
    path = Path(path)
    root = path.resolve().parent
    lines = []
    for i, entry in enumerate(entries):
        if "path" not in entry:
            raise DataError(f"{path}: entry {i} has no \"path\" key")
        record = dict(entry)
        for key, value in record.items():
            if isinstance(value, Path):
                resolved = value.resolve()
                record[key] = resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else str(value)
        lines.append(dumps_utf8(record, allow_nan=False))  # a non-UTF-8 file name as \udcXX escapes
    text = "\n".join(lines) + ("\n" if lines else "")
    return write_text(path, text)


class LazyEntries(Sequence):
    """A JSONL manifest's entries, each parsed when it is asked for (``stream_manifest``).

    Holds one file offset and line number per entry (16 bytes), so 100 k entries cost ~2 MB and no path is
    resolved or stat-ed until a clip is read; entry ``i`` is that line parsed exactly as ``load_manifest`` would.
    """

    def __init__(self, path: Path, root: Path, offsets: np.ndarray, lines: np.ndarray) -> None:
        self.path, self.root, self.offsets, self.lines = path, root, offsets, lines

    def __len__(self) -> int:
        return len(self.offsets)

    def _entry(self, i: int) -> ClipEntry:
        with open(self.path, "rb") as fh:
            fh.seek(int(self.offsets[i]))
            raw = fh.readline()
        where = f"{self.path} line {int(self.lines[i])}"
        try:
            record = json.loads(raw.decode("utf-8-sig" if i == 0 else "utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:  # the file changed since it was opened
            raise DataError(f"{where}: unreadable now ({exc}); was the manifest rewritten during the run?") from exc
        return _entry_from_record(record, self.root, where)

    def records(self) -> Iterator[dict]:
        """Every entry's raw object, in order, in one sequential read (no path resolved)."""
        with open(self.path, "rb") as fh:
            for raw in fh:  # the lines stream_manifest kept: every non-blank one
                if raw.strip():
                    yield json.loads(raw.decode("utf-8-sig"))

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._entry(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._entry(index)


def stream_manifest(path: str | Path) -> Manifest:
    """``load_manifest`` for large JSONL manifests: one pass checks every line (valid JSON, an object with a
    non-empty string ``path``, no path listed twice — compared as written, normalised, since nothing is resolved)
    and keeps only where each line starts; entries are parsed on access (:class:`LazyEntries`). Other manifest
    kinds (.json, .csv, folders) are read whole by ``load_manifest``.

    Raises:
        DataError: as ``load_manifest``, naming the file and line.
    """
    path = Path(path)
    if path.is_dir() or path.suffix.lower() != ".jsonl":
        return load_manifest(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest or video folder not found")
    root = path.resolve().parent
    offsets: list[int] = []
    lines: list[int] = []
    seen: dict[str, int] = {}
    offset = 0
    try:
        with open(path, "rb") as fh:
            for number, raw in enumerate(fh, start=1):
                start, offset = offset, offset + len(raw)
                try:
                    text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(f"{path} line {number}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the "
                                    "manifest as UTF-8") from exc
                if not text.strip():
                    continue
                record = _json_line(text, path, number)
                if not isinstance(record, dict) or not isinstance(record.get("path"), str) \
                        or not record["path"].strip():
                    _entry_from_record(record, root, f"{path} line {number}")  # raises the exact message
                key = os.path.normpath(record["path"])
                if key in seen:
                    raise DataError(f"{path}: duplicate entries name a clip already listed: {record['path']!r} "
                                    f"(lines {seen[key]} and {number}). List each clip once")
                seen[key] = number
                offsets.append(start)
                lines.append(number)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the manifest ({exc.strerror or exc})") from exc
    if not offsets:
        raise DataError(f"{path}: the manifest has no entries")
    return Manifest(root=root, entries=LazyEntries(path, root, np.asarray(offsets, dtype=np.int64),
                                                   np.asarray(lines, dtype=np.int64)))
