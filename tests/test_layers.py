"""The package's layer order, read from the source: every import of every module, those inside functions included.

utils/ (with errors.py) is the bottom layer: it imports nothing else of shiftvdm. motion/ never imports rewards/,
train/ or recipes/; rewards/ never imports train/ or recipes/; nothing but recipes/ and the command line imports
recipes/. A lazy import inside a function is still a dependency (it only moves the failure to run time), so it
counts the same as one at the top of a file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import shiftvdm

SRC = Path(shiftvdm.__file__).resolve().parent
ENTRY_POINTS = {"cli", "__main__"}  # the command line dispatches to the recipes


def module_name(path: Path) -> str:
    parts = ("shiftvdm",) + path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, at any depth; relative imports resolved
    against ``module``; ``from pkg import name`` yields ``pkg.name`` as well (``name`` may be a submodule)."""
    found: list[tuple[int, str]] = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names if alias.name != "*"]
    return found


def layer(name: str) -> str:
    """The first component under shiftvdm (``shiftvdm.train.shift`` -> ``train``); '' for other packages."""
    parts = name.split(".")
    return parts[1] if parts[0] == "shiftvdm" and len(parts) > 1 else ""


def violations(module: str, imports: list[tuple[int, str]]) -> list[str]:
    """The layer rules broken by ``module``'s imports, one message per import."""
    own = layer(module)
    bad, seen = [], set()
    for line, target in imports:
        other = layer(target)
        if not other or other == own or (line, other) in seen:  # one message per import statement and layer
            continue
        seen.add((line, other))
        if own in ("utils", "errors") and other not in ("utils", "errors"):
            bad.append(f"{module}:{line} imports {target}: utils/ and errors.py are the bottom layer")
        elif own == "motion" and other in ("rewards", "train", "recipes"):
            bad.append(f"{module}:{line} imports {target}: motion/ sits below rewards/, train/ and recipes/")
        elif own == "rewards" and other in ("train", "recipes"):
            bad.append(f"{module}:{line} imports {target}: rewards/ sits below train/ and recipes/")
        elif other == "recipes" and own not in ENTRY_POINTS:
            bad.append(f"{module}:{line} imports {target}: only recipes/ and the command line import recipes/")
    return bad


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_the_checker_sees_imports_inside_functions_and_relative_ones():
    source = ("import os\n"
              "def f():\n"
              "    from shiftvdm.rewards.critic import MotionCritic\n"
              "    from ..train import shift\n"
              "    from . import base\n"
              "class C:\n"
              "    def g(self):\n"
              "        import shiftvdm.recipes.demo\n")
    found = imported_modules(source, "shiftvdm.motion.features")
    assert (3, "shiftvdm.rewards.critic") in found
    assert (4, "shiftvdm.train.shift") in found
    assert (5, "shiftvdm.motion.base") in found
    assert (8, "shiftvdm.recipes.demo") in found
    bad = violations("shiftvdm.motion.features", found)
    assert len(bad) == 3 and all("motion/ sits below" in b for b in bad)
    assert imported_modules("from . import x\n", "shiftvdm.utils", is_package=True) == [
        (1, "shiftvdm.utils"), (1, "shiftvdm.utils.x")]
    assert violations("shiftvdm.utils.outputs", [(7, "shiftvdm.data.manifest")])
    assert violations("shiftvdm.train.runtime", [(1, "shiftvdm.recipes.generate")])
    assert not violations("shiftvdm.cli", [(1, "shiftvdm.recipes.train")])
    assert not violations("shiftvdm.train.shift", [(1, "shiftvdm.rewards.protocol"), (2, "shiftvdm.utils.seeding")])


def test_every_module_is_seen():
    names = {module_name(p) for p in _modules()}
    assert {"shiftvdm.utils.outputs", "shiftvdm.motion.features", "shiftvdm.rewards.critic", "shiftvdm.train.shift",
            "shiftvdm.recipes.dry_run", "shiftvdm.cli"} <= names


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_layer_order(path):
    module = module_name(path)
    imports = imported_modules(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")
    assert violations(module, imports) == []
