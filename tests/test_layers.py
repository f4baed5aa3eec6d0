"""The package's layer order and its import graph, read from the source: every import of every module, those
inside functions included.

utils/ (with errors.py) is the bottom layer: it imports nothing else of shiftvdm. motion/ never imports rewards/,
train/ or recipes/; rewards/ never imports train/ or recipes/; nothing but recipes/ and the command line imports
recipes/ (recipes/ may import anything). Beyond these, every layer has a rank (``RANK``) and no module imports a
layer ranked above its own. A lazy import inside a function is still a dependency (it only moves the failure to
run time), so it counts the same as one at the top of a file.

No two modules import each other, directly or through others (``import_circles``): module A importing module B
is an edge A → B, whether the import is at the top or in a function. Running a package's ``__init__`` before its
submodules is no edge (Python always does it first, and a package importing its own submodules is the norm).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

import shiftvdm

SRC = Path(shiftvdm.__file__).resolve().parent
ENTRY_POINTS = {"cli", "__main__"}  # the command line dispatches to the recipes
# Layers from the bottom up: a module imports its own layer and those ranked below it (never one above). Layers of
# one rank do not need each other today; the circle check keeps it so should one start to.
RANK = {"errors": 0, "utils": 0, "config": 1, "data": 2, "motion": 2, "backbone": 2, "eval": 3, "rewards": 3,
        "train": 4, "recipes": 5, "cli": 6, "__main__": 6}
# Circles another branch removes: each entry's test is an expected failure until it lands there (strict: once the
# circle is gone the entry must go too).
KNOWN_CIRCLES: dict[frozenset[str], str] = {}  # none: a circle found here is a failure


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
            target = _absolute(node, package)
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names if alias.name != "*"]
    return found


def _absolute(node: ast.ImportFrom, package: str) -> str:
    """The absolute module name of a ``from ... import`` (relative ones resolved against ``package``)."""
    if not node.level:
        return node.module or ""
    base = package.split(".")
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


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
        elif own in RANK and other in RANK and RANK[other] > RANK[own]:
            bad.append(f"{module}:{line} imports {target}: {own}/ sits below {other}/ (RANK)")
    return bad


def import_edges(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``source`` imports, at any depth: ``from pkg import name`` is an edge to the
    submodule ``pkg.name`` when there is one, else to ``pkg`` itself."""
    package = module if is_package else module.rpartition(".")[0]
    edges = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            edges |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(node, package)
            edges |= {f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names}
    return (edges & known) - {module}


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module of ``graph`` (module -> modules it imports),
    each sorted, in sorted order (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def graph_of(sources: Iterable[tuple[str, str, bool]]) -> dict[str, set[str]]:
    """The import graph of (module name, source, is_package) triples, restricted to those modules."""
    sources = list(sources)
    known = {name for name, _, _ in sources}
    return {name: import_edges(source, name, is_package, known) for name, source, is_package in sources}


def package_graph() -> dict[str, set[str]]:
    return graph_of((module_name(p), p.read_text(encoding="utf-8"), p.name == "__init__.py") for p in _modules())


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
    assert violations("shiftvdm.train.hooks", [(1, "shiftvdm.recipes.generate")])
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


def test_the_circle_check_sees_lazy_circles():
    """The two circles of e17d547: recipes/dry_run.py imported recipes/train.py at the top of its file, train's
    ``_main`` imported dry_run back inside the function; critic.py lazily imports discriminator_training."""
    dry_run = "from shiftvdm.recipes.train import merge_train_config\n"
    train = ("from shiftvdm.config import parse_overrides\n"
             "def _main(argv):\n"
             "    if '--dry-run' in argv:\n"
             "        from shiftvdm.recipes.dry_run import run_dry_run\n"
             "        return run_dry_run(argv)\n")
    critic = ("class MotionCritic:\n"
              "    def update(self):\n"
              "        from .discriminator_training import discriminator_step\n")
    training = "from shiftvdm.rewards.critic import MotionCritic\n"
    graph = graph_of([("shiftvdm.recipes.dry_run", dry_run, False), ("shiftvdm.recipes.train", train, False),
                      ("shiftvdm.config", "", False), ("shiftvdm.rewards.critic", critic, False),
                      ("shiftvdm.rewards.discriminator_training", training, False)])
    assert import_circles(graph) == [["shiftvdm.recipes.dry_run", "shiftvdm.recipes.train"],
                                     ["shiftvdm.rewards.critic", "shiftvdm.rewards.discriminator_training"]]
    # longer circles are found whole; a package importing its submodules (and they, their siblings) is no circle
    ring = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_circles(ring) == [["a", "b", "c"]]
    package = [("shiftvdm.eval", "from shiftvdm.eval.suite import evaluate_videos\n", True),
               ("shiftvdm.eval.suite", "from shiftvdm.eval import inputs\nfrom . import results\n", False),
               ("shiftvdm.eval.inputs", "", False), ("shiftvdm.eval.results", "", False)]
    assert graph_of(package)["shiftvdm.eval.suite"] == {"shiftvdm.eval.inputs", "shiftvdm.eval.results"}
    assert import_circles(graph_of(package)) == []
    # `from pkg import name` where name is no module is an edge to the package itself
    back = package[:3] + [("shiftvdm.eval.results", "from shiftvdm.eval import evaluate_videos\n", False)]
    assert import_circles(graph_of(back)) == [["shiftvdm.eval", "shiftvdm.eval.results", "shiftvdm.eval.suite"]]


def test_the_rank_rule_refuses_upward_imports():
    assert violations("shiftvdm.backbone.svd", [(3, "shiftvdm.train.memory")]) == [
        "shiftvdm.backbone.svd:3 imports shiftvdm.train.memory: backbone/ sits below train/ (RANK)"]
    assert violations("shiftvdm.data.synthetic", [(1, "shiftvdm.eval.sprites")])
    assert violations("shiftvdm.config", [(1, "shiftvdm.backbone")])
    assert not violations("shiftvdm.train.memory", [(1, "shiftvdm.backbone"), (2, "shiftvdm.rewards.critic")])
    assert not violations("shiftvdm.recipes.launch", [(1, "shiftvdm.recipes.dry_run"), (2, "shiftvdm.train.shift")])


def test_every_layer_has_a_rank():
    layers = {layer(module_name(p)) for p in _modules()} - {""}
    assert layers <= set(RANK), f"give these layers a place in RANK: {sorted(layers - set(RANK))}"


def test_no_import_circle():
    circles = [c for c in import_circles(package_graph()) if frozenset(c) not in KNOWN_CIRCLES]
    assert circles == [], "modules that import each other (directly or through others): " + "; ".join(
        " <-> ".join(c) for c in circles)
