"""Reading a motion network's released weights: data only, strictly, with errors that name the file.

Every neural flow estimator and tracker loads its checkpoint through :func:`read_state_dict` and
:func:`load_strict`, so the rules are the same for all of them:

* a weights file is data, never code: ``.safetensors`` through safetensors, anything else through
  ``torch.load(weights_only=True)``; a folder in the Hugging Face hub layout (``config.json`` +
  ``model.safetensors``) is read as well;
* a state dict nested under ``"model"`` or ``"state_dict"`` is unwrapped, and the ``module.`` prefix of
  an ``nn.DataParallel`` dump is removed;
* loading is strict: a missing or unexpected key or a wrong shape is a :class:`CheckpointError` that
  names the file and the first offending keys, and when the file looks like another known network
  (by its key layout) the error says which one.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors
from torch import Tensor, nn

from shiftvdm.errors import CheckpointError

# How many offending keys an error lists (a wrong network differs in hundreds).
_SHOWN_KEYS = 3

# name -> predicate over the key set: how each network this package knows is recognised by its keys.
# The networks register themselves (see register_signature) so this module imports none of them.
_SIGNATURES: dict[str, Callable[[set[str]], bool]] = {}


def register_signature(name: str, predicate: Callable[[set[str]], bool]) -> None:
    """Make ``name`` recognisable from a state dict's keys (for "this file looks like X" errors)."""
    _SIGNATURES[name] = predicate


def identify_network(keys: set[str] | Mapping[str, Any]) -> str | None:
    """The registered network whose key layout ``keys`` matches, or None."""
    keys = set(keys)
    _import_known_networks()
    for name, predicate in _SIGNATURES.items():
        try:
            if predicate(keys):
                return name
        except Exception:  # a signature must never turn a load error into a crash
            continue
    return None


def _import_known_networks() -> None:
    # Importing a network module registers its signature; import lazily to avoid import cycles.
    import importlib

    for module in ("shiftvdm.motion.raft_flow", "shiftvdm.motion.sea_raft", "shiftvdm.motion.cotracker3"):
        try:
            importlib.import_module(module)
        except ImportError:
            continue


def _unwrap(state: Any, source: str) -> dict[str, Tensor]:
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{source}: expected a state dict (a mapping of names to tensors), "
                              f"got {type(state).__name__}")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{source}: expected a state dict of tensors; entry {str(bad[0])[:80]!r} is not a tensor")
    if all(k.startswith("module.") for k in state):  # saved from nn.DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def read_folder_config(path: str | Path) -> dict[str, Any] | None:
    """``config.json`` of a hub-layout folder, or None when ``path`` is a file or has none."""
    path = Path(path)
    config = path / "config.json"
    if not path.is_dir() or not config.is_file():
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config}: not a readable JSON config ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{config}: expected a JSON object, got {type(data).__name__}")
    return data


def _weights_file(path: Path) -> Path:
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin", "model.pth", "model.pt"):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path}: folder holds no model.safetensors (hub layout: config.json + "
                              "model.safetensors) and no pytorch_model.bin")
    return path


def read_state_dict(path: str | Path, what: str = "checkpoint") -> dict[str, Tensor]:
    """Read a state dict from a local weights file or hub-layout folder, never executing code.

    Args:
        path: ``.safetensors``, ``.pth``/``.pt``/``.bin`` (torch zip or legacy format), or a folder.
        what: what the file should be, for error messages (e.g. "SEA-RAFT checkpoint").

    Raises:
        CheckpointError: missing file, unreadable file, a pickle that needs code, not a state dict.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: {what} not found (a local file is required; nothing is downloaded)")
    file = _weights_file(path)
    source = str(file)
    try:
        if file.suffix == ".safetensors":
            state: Any = load_safetensors(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{source}: refused to load: the file needs code to unpickle, and weights are "
                              f"only read as data (torch.load weights_only=True); re-save it as a plain state "
                              f"dict or as safetensors ({str(exc).splitlines()[0][:160]})") from exc
    except (SafetensorError, zipfile.BadZipFile, EOFError, RuntimeError, OSError, ValueError) as exc:
        raise CheckpointError(f"{source}: not a readable {what} ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:160] if str(exc) else 'truncated or empty'})") from exc
    return _unwrap(state, source)


def key_differences(state: Mapping[str, Tensor], expected: Mapping[str, tuple[int, ...]],
                    shown: int = _SHOWN_KEYS) -> list[str]:
    """How ``state`` differs from the ``expected`` key list and shapes, as phrases for an error (the first
    ``shown`` missing / unexpected / wrong-shape keys); [] when it matches exactly."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k]))
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} keys (first: {', '.join(missing[:shown])})")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} keys (first: {', '.join(unexpected[:shown])})")
    if wrong:
        parts.append("wrong shapes: " + ", ".join(
            f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k])})" for k in wrong[:shown]))
    return parts


def load_strict(module: nn.Module, state: Mapping[str, Tensor], source: str, network: str) -> None:
    """Load ``state`` into ``module`` exactly: every key present, none extra, every shape equal.

    Args:
        module: the freshly built network.
        state: the state dict read from ``source``.
        source: the file it came from (named in errors).
        network: what the module is, e.g. "SEA-RAFT-M" (named in errors).

    Raises:
        CheckpointError: naming the file, the network and the first missing / unexpected / wrong-shape
            keys, and which known network the file looks like when it is another one.
    """
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    parts = key_differences(state, expected)
    if parts:
        looks_like = identify_network(set(state))
        # a same-family file (e.g. SEA-RAFT-S loaded as SEA-RAFT-M) is a variant mismatch, not another network
        hint = (f"; the file looks like a {looks_like} checkpoint"
                if looks_like and not network.startswith(looks_like) else "")
        raise CheckpointError(f"{source}: not a {network} checkpoint: " + "; ".join(parts) + hint)
    module.load_state_dict(dict(state), strict=True)
