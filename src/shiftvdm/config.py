"""Typed configs: dataclass schemas, YAML files, dotted command-line overrides.

Merge order: dataclass defaults, then the YAML file (which may name one ``base:`` file), then
overrides such as ``optim.lr=1e-4``. Loading is strict: an unknown key is an error naming the key
and the closest valid one, a wrong type names the field, the expected type and the value. All
problems are gathered and reported together.

Renamed keys (:data:`RENAMED_KEYS`) keep working for one release: ``config_from_dict`` (which every
reader goes through: YAML files, overrides, the config a checkpoint saved) maps an old key to its new
name with a logged warning naming the new key, and refuses a config that gives both.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from shiftvdm.errors import ConfigError, quote

T = TypeVar("T")
_MISSING = object()
logger = logging.getLogger(__name__)

# Renamed config keys, per schema (the dataclass given to ``config_from_dict``, by module and name):
# (old dotted key, new dotted key), the more specific first. The old key is accepted until RENAMED_UNTIL
# with a warning naming the new one; a config giving both with different values is refused naming both (the
# same value under both names is accepted: e.g. a stage default still written under the old name).
RENAMED_UNTIL = "0.3"
RENAMED_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    # issue 25: one name for the thing that turns clips into rewards, the critic
    "shiftvdm.train.config.TrainConfig": (("discriminator.critic", "critic.path"), ("discriminator", "critic")),
    # the demo's critic pre-training stage (`shiftvdm train-critic` settings), no longer critic.critic.*
    "shiftvdm.recipes.demo.config.DemoConfig": (("critic", "critic_training"),),
}


# Path-valued settings, per schema (keyed as RENAMED_KEYS): ``~`` is expanded wherever they are given; a relative
# path written in a YAML file is read against that file's folder, not the working directory, so a config means the
# same files from anywhere (shipped presets excepted: their example paths, e.g. run.out_dir: runs/tiny-svd, mean the
# working directory); a training run records them absolute (``absolute_path_values``), so ``--resume`` from another
# folder compares the files, not the text. PATH_WORDS are values of a path key that name a built-in, not a file.
PATH_KEYS: dict[str, tuple[str, ...]] = {
    "shiftvdm.train.config.TrainConfig": ("backbone.pretrained", "data.train", "data.cache_dir", "lora.init_from",
                                          "critic.path", "run.out_dir"),
}
PATH_WORDS: dict[str, tuple[str, ...]] = {"backbone.pretrained": ("tiny", "tiny-pixel")}  # backbone.TINY_PRESETS


def _map_path_values(schema: type, data: dict[str, Any], fn: Any) -> dict[str, Any]:
    """``data`` with ``fn(key, value)`` applied to each non-empty text value of a path key of ``schema``."""
    for dotted in PATH_KEYS.get(f"{schema.__module__}.{schema.__qualname__}", ()):
        keys = dotted.split(".")
        found, value, _ = _pop_path(data, keys)
        if not found or not isinstance(value, str) or not value.strip() or value in PATH_WORDS.get(dotted, ()):
            continue
        new = fn(dotted, value)
        if new != value:
            data = dict(data)
            node = data
            for key in keys[:-1]:
                node[key] = dict(node[key])
                node = node[key]
            node[keys[-1]] = new
    return data


def resolve_path_values(schema: type, data: dict[str, Any], folder: str | Path | None = None) -> dict[str, Any]:
    """Path settings of ``schema`` in ``data`` with ``~`` expanded and, when ``folder`` is given, a relative path
    joined to it (the folder of the YAML file that wrote it)."""
    def fix(_: str, value: str) -> str:
        value = os.path.expanduser(value)
        return os.path.normpath(os.path.join(folder, value)) if folder is not None else value

    return _map_path_values(schema, data, fix)


def absolute_path_values(schema: type, data: dict[str, Any], *, real: bool = False) -> dict[str, Any]:
    """Path settings made absolute against the working directory (``real``: symbolic links resolved too, to
    compare two configs by the files they name)."""
    absolute = os.path.realpath if real else os.path.abspath
    return _map_path_values(schema, data, lambda _, value: absolute(os.path.expanduser(value)))


def preset_dir() -> Path:
    """The folder of the YAML presets shipped with the package."""
    return Path(str(resources.files("shiftvdm") / "configs"))


def list_presets() -> list[str]:
    root = preset_dir()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def resolve_config_path(config: str | Path) -> Path:
    """A path to a YAML file, or the name of a shipped preset (``svd_shift_davis``, ``baselines/sft``)."""
    path = Path(config)
    if path.suffix in {".yaml", ".yml"} and path.is_file():
        return path
    candidate = preset_dir() / f"{config}.yaml"
    if candidate.is_file():
        return candidate
    if path.suffix in {".yaml", ".yml"}:
        raise ConfigError(f"{path}: config file not found")
    close = difflib.get_close_matches(str(config), list_presets(), n=1)
    hint = f" Did you mean `{close[0]}`?" if close else ""
    raise ConfigError(f"config `{config}` is neither a YAML file nor a shipped preset.{hint} "
                      f"Presets: {', '.join(list_presets())}")


# A config is a few hundred values; more than this many after expanding YAML aliases is an alias bomb
# ("billion laughs": 9 levels of 9 aliases in 400 bytes expand to 9^9 values).
MAX_YAML_NODES = 100_000


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing duplicate keys (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise ConfigError(f"{self.name}: line {line}: duplicate key {quote(key)} (first given on line "
                                      f"{seen[key]}); give each key once")
                seen[key] = line
            except TypeError:  # an unhashable key: let PyYAML report it
                pass
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, name: str) -> int:
    """Number of nodes after expanding aliases (shared nodes counted at every use), with a limit."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(n: yaml.Node) -> int:
        key = id(n)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ConfigError(f"{name}: a YAML alias refers to itself (recursive structure)")
        active.add(key)
        total = 1
        if isinstance(n, yaml.SequenceNode):
            total += sum(size(c) for c in n.value)
        elif isinstance(n, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in n.value)
        active.discard(key)
        if total > MAX_YAML_NODES:
            raise ConfigError(f"{name}: YAML aliases expand to more than {MAX_YAML_NODES:,} values (an alias "
                              "bomb?); write the values out or use fewer aliases")
        sizes[key] = total
        return total

    return size(node)


def safe_load_yaml(text: str, name: str = "<string>") -> Any:
    """``yaml.safe_load`` refusing duplicate keys and alias bombs (ConfigError naming ``name``)."""
    loader = _StrictLoader(text)
    loader.name = name
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, name)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror or exc})") from exc
    try:
        data = safe_load_yaml(text, str(path))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from exc
    except RecursionError as exc:
        raise ConfigError(f"{path}: the YAML nests too deeply") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config sections, got {type(data).__name__}")
    return data


def config_paths_folder(path: Path) -> Path | None:
    """The folder relative paths of a config file are read against: its own, or None (the working directory)
    for a shipped preset."""
    try:
        Path(path).resolve().relative_to(preset_dir().resolve())
        return None
    except ValueError:
        return Path(path).absolute().parent


def load_yaml_with_base(path: Path, schema: type | None = None) -> dict[str, Any]:
    """Read a YAML config; a ``base:`` key names one other file (path relative to this one, or a preset).

    With ``schema`` (the config's dataclass), each file's renamed keys are mapped to their new names as it
    is read (``apply_renamed_keys``), so a file in new names overrides a base in old names and vice versa, and
    its relative path settings (:data:`PATH_KEYS`) are joined to its folder (``resolve_path_values``).
    """
    data = _read_yaml(path)
    if schema is not None:
        data = resolve_path_values(schema, apply_renamed_keys(schema, data, str(path)), config_paths_folder(path))
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: `base:` must name one YAML file or preset, got {quote(base)}")
    base_path = (path.parent / base) if (path.parent / str(base)).is_file() else resolve_config_path(base)
    base_data = _read_yaml(base_path)
    if schema is not None:
        base_data = resolve_path_values(schema, apply_renamed_keys(schema, base_data, str(base_path)),
                                        config_paths_folder(base_path))
    if "base" in base_data:
        raise ConfigError(f"{base_path}: a base config may not name another base (only one level is allowed)")
    return deep_merge(base_data, data)


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _field_type(schema: type, keys: list[str]) -> Any:
    """The declared type of the dotted field ``keys`` of the dataclass ``schema`` (old names mapped to new), or
    None when the path leaves the dataclasses (a key inside a free-form dict, or an unknown key)."""
    for old, new in RENAMED_KEYS.get(f"{schema.__module__}.{schema.__qualname__}", ()):
        parts = old.split(".")
        if keys[:len(parts)] == parts:
            keys = new.split(".") + keys[len(parts):]
            break
    tp: Any = schema
    for key in keys:
        if not (dataclasses.is_dataclass(tp) and isinstance(tp, type)):
            return None
        hints = get_type_hints(tp)
        if key not in hints:
            return None
        tp = hints[key]
    return tp


def _is_text(tp: Any) -> bool:
    """A ``str`` or ``str | None`` field: its override is the text as typed."""
    if tp is str:
        return True
    return get_origin(tp) in (Union, types.UnionType) and str in get_args(tp) and set(get_args(tp)) <= {str, type(None)}


def parse_overrides(overrides: list[str], schema: type | None = None) -> dict[str, Any]:
    """``["optim.lr=1e-4", "loss.match_noise=false"]`` -> nested dict.

    A value is read by its field's type when ``schema`` is given: a ``str`` field takes the text as typed (so a
    path, prompt or folder name such as ``0755``, ``no`` or ``2024-01-01`` is not turned into a number, a boolean
    or a date; ``null`` is None where the field allows it, and a quoted value loses its quotes); any other value
    is parsed as a YAML scalar. With ``schema``, renamed keys are also mapped to their new names
    (``apply_renamed_keys``) before the overrides are merged over a file, so an old-name override still overrides
    the file's new-name value.
    """
    result: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override `{item}` must look like section.field=value")
        dotted, raw = item.split("=", 1)
        keys = [k for k in dotted.strip().split(".") if k]
        if not keys:
            raise ConfigError(f"override `{item}` has an empty field name")
        field_type = _field_type(schema, keys) if schema is not None else None
        quoted = len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\""
        if _is_text(field_type) and not quoted:
            value: Any = None if raw.strip() in ("null", "~") and type(None) in get_args(field_type) else raw
        else:
            try:
                value = safe_load_yaml(raw, f"override `{dotted}`") if raw.strip() != "" else ""
            except (yaml.YAMLError, RecursionError):
                value = raw
        node = result
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override `{item}` conflicts with another override of `{key}`")
        node[keys[-1]] = value
    if schema is None:
        return result
    return resolve_path_values(schema, apply_renamed_keys(schema, result, "overrides"))  # `~` expanded


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is not None:
        args = ", ".join("..." if a is Ellipsis else _type_name(a) for a in get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str, errors: list[str]) -> Any:
    """Check/convert ``value`` against type ``tp``; append a message to ``errors`` on mismatch."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            trial: list[str] = []
            out = _convert(value, arg, where, trial)
            if not trial:
                return out
        errors.append(f"{where}: expected {_type_name(tp)}, got {quote(value)}")
        return value
    if origin is Literal:
        if value not in get_args(tp):
            close = difflib.get_close_matches(quote(value), [str(a) for a in get_args(tp)], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            errors.append(f"{where}: expected one of {_type_name(tp)}, got {quote(value)}{hint}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            errors.append(f"{where}: expected a mapping of {tp.__name__} fields, got {quote(value)}")
            return _MISSING
        return _build(tp, value, where, errors)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            errors.append(f"{where}: expected {_type_name(tp)}, got {quote(value)}")
            return value
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                errors.append(f"{where}: expected {len(args)} items ({_type_name(tp)}), got {quote(value)}")
                return value
            return tuple(_convert(v, a, f"{where}[{i}]", errors) for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        items = [_convert(v, item_tp, f"{where}[{i}]", errors) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            errors.append(f"{where}: expected {_type_name(tp)}, got {quote(value)}")
            return value
        val_tp = get_args(tp)[1] if get_args(tp) else Any
        return {str(k): _convert(v, val_tp, f"{where}.{k}", errors) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        errors.append(f"{where}: expected bool (true/false), got {quote(value)}")
        return value
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        errors.append(f"{where}: expected int, got {quote(value)}")
        return value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "1e-4" as a string
            except ValueError:
                pass
        errors.append(f"{where}: expected float, got {quote(value)}")
        return value
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        errors.append(f"{where}: expected str, got {quote(value)}")
        return value
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        errors.append(f"{where}: expected a path, got {quote(value)}")
        return value
    return value


def _build(cls: type[T], data: dict[str, Any], where: str, errors: list[str]) -> T:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    errors_before = len(errors)
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f"; did you mean `{(where + '.') if where else ''}{close[0]}`?" if close else ""
            errors.append(f"{path}: unknown key{hint} (valid keys: {', '.join(fields)})")
            continue
        converted = _convert(value, hints[key], path, errors)
        if converted is not _MISSING:
            kwargs[key] = converted
    # nested dataclasses given partially must start from their defaults
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            errors.append(f"{(where + '.') if where else ''}{name}: required field is missing")
    if len(errors) > errors_before:  # range checks in __post_init__ would only repeat a type error
        return _MISSING  # type: ignore[return-value]
    try:
        cfg = cls(**kwargs)
    except (ValueError, TypeError) as exc:  # __post_init__ range and cross-field checks
        message = str(exc)
        named = where and message.startswith(f"{where}.")
        errors.append(message if named else f"{where or cls.__name__}: {message}")
        return _MISSING  # type: ignore[return-value]
    errors.extend(getattr(cfg, "rule_violations", lambda: [])())  # combinations of sections (e.g. train RULES)
    return cfg


def _leaves(value: Any, name: str) -> list[str]:
    if isinstance(value, dict) and value:
        return [leaf for k, v in value.items() for leaf in _leaves(v, f"{name}.{k}")]
    return [name]


def _pop_path(data: dict[str, Any], keys: list[str]) -> tuple[bool, Any, dict[str, Any]]:
    """(found, value, data without it): the dicts along the path are copied, ``data`` is not changed."""
    if not keys or not isinstance(data, dict) or keys[0] not in data:
        return False, None, data
    out = dict(data)
    if len(keys) == 1:
        return True, out.pop(keys[0]), out
    found, value, inner = _pop_path(out[keys[0]], keys[1:])
    if found:
        out[keys[0]] = inner
    return found, value, out


def _put_path(data: dict[str, Any], keys: list[str], value: Any, name: str, clashes: list[str]) -> dict[str, Any]:
    """``data`` with ``value`` at ``keys`` (mappings merged); a leaf given on both sides with different values
    goes to ``clashes`` (the value already there is kept)."""
    out = dict(data)
    key = keys[0]
    here = f"{name}.{key}" if name else key
    if len(keys) > 1:
        inner = out.get(key, {})
        if not isinstance(inner, dict):
            clashes.append(here)
            return out
        out[key] = _put_path(inner, keys[1:], value, here, clashes)
    elif key not in out:
        out[key] = value
    elif isinstance(out[key], dict) and isinstance(value, dict):
        for sub, v in value.items():
            out[key] = _put_path(out[key], [sub], v, here, clashes)
    elif out[key] != value:
        clashes.append(here)
    return out


def apply_renamed_keys(cls: type, data: dict[str, Any], source: str = "") -> dict[str, Any]:
    """``data`` with the old keys of ``cls`` (:data:`RENAMED_KEYS`) moved to their new names, each logged as a
    warning naming the new key; ConfigError naming both when a setting is given under both names with
    different values."""
    table = RENAMED_KEYS.get(f"{cls.__module__}.{cls.__qualname__}", ())
    prefix = f"{source}: " if source else ""
    problems: list[str] = []
    for old, new in table:
        found, value, data = _pop_path(data, old.split("."))
        if not found:
            continue
        if isinstance(value, dict) and not value:
            continue  # an emptied section (its only key was renamed on its own)
        clashes: list[str] = []
        data = _put_path(data, new.split("."), value, "", clashes)
        for clash in clashes:
            problems.append(f"{old + clash[len(new):]} and {clash} are both given, with different values: {old} is "
                            f"the old name of {new} (accepted until {RENAMED_UNTIL}); give only {clash}")
        leaves = _leaves(value, old)
        if leaves == [old]:
            logger.warning("%s%s is renamed %s; accepted until %s", prefix, old, new, RENAMED_UNTIL)
        else:
            logger.warning("%s%s is renamed %s (%s); accepted until %s", prefix, old, new,
                           ", ".join(f"{leaf} -> {new}{leaf[len(old):]}" for leaf in leaves), RENAMED_UNTIL)
    if problems:
        raise ConfigError(f"{prefix}invalid config:\n  " + "\n  ".join(problems))
    return data


def config_from_dict(cls: type[T], data: dict[str, Any], source: str = "") -> T:
    """Build ``cls`` from a nested dict, strictly; raise ConfigError listing every problem.

    Old names of renamed keys (:data:`RENAMED_KEYS`) are accepted with a warning (``apply_renamed_keys``).
    """
    if isinstance(data, dict):
        data = apply_renamed_keys(cls, data, source)
    errors: list[str] = []
    cfg = _build(cls, data, "", errors)
    if errors:
        prefix = f"{source}: " if source else ""
        raise ConfigError(f"{prefix}invalid config:\n  " + "\n  ".join(errors))
    return cfg


def load_config(cls: type[T], config: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Defaults of ``cls``, then the YAML ``config`` (path or preset name), then dotted ``overrides``."""
    data: dict[str, Any] = {}
    source = "defaults"
    if config is not None:
        path = resolve_config_path(config)
        data = load_yaml_with_base(path, cls)
        source = str(path)
    if overrides:
        data = deep_merge(data, parse_overrides(overrides, cls))
        source += " + overrides"
    return config_from_dict(cls, data, source)


def config_to_dict(cfg: Any) -> Any:
    """A dataclass config as plain YAML-ready data (paths as strings, tuples as lists)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {str(k): config_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def dump_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically)."""
    from shiftvdm.utils.atomic import write_text

    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    return write_text(path, text)


def config_differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted names of the fields whose values differ between two configs of the same schema."""
    da, db = config_to_dict(a), config_to_dict(b)
    out: list[str] = []

    def walk(x: Any, y: Any, name: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y)):
                walk(x.get(k), y.get(k), f"{name}.{k}" if name else k)
        elif x != y:
            out.append(f"{name}: {quote(x)} -> {quote(y)}")

    walk(da, db, prefix)
    return out


__all__ = [
    "PATH_KEYS", "RENAMED_KEYS", "RENAMED_UNTIL", "absolute_path_values", "apply_renamed_keys", "config_differences", "config_from_dict", "config_to_dict", "deep_merge", "dump_config", "list_presets",
    "load_config", "parse_overrides", "preset_dir", "config_paths_folder", "resolve_config_path", "resolve_path_values",
]

_ = typing  # typing imported for get_type_hints on string annotations in user modules
