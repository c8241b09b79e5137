"""The house rules of docs/ARCHITECTURE.md, checked against the code so that the document stays true.

Imports are read with ``ast`` (module level and inside functions; ``if TYPE_CHECKING:`` blocks
are skipped, since they never run).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "bossflow"
DOC = ROOT / "docs" / "ARCHITECTURE.md"

LAYERS = ("core", "adapters", "models", "data", "search", "training", "evaluation", "cli")
"""Bottom to top; a module may import its own layer and those before it."""

FACADE = ("bossflow", "bossflow._aliases", "bossflow._version")
"""Outside the layers: the lazy public API, the old-path finder, the version."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def imports_of(name: str, path: Path) -> set[str]:
    """The modules ``name`` imports (absolute names; ``from pkg import sub`` counts ``pkg.sub`` when it is a module)."""
    known = modules()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            submodules = {f"{target}.{alias.name}" for alias in node.names} & set(known)
            found.update(submodules)
            if len(submodules) < len(node.names) or not name.startswith(f"{target}."):
                found.add(target)  # names taken from the module itself, or a package from outside it
    return found


def internal_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {t for t in imports_of(name, path) if t in known and t != name} for name, path in known.items()}


def layer_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_is_named_in_the_design_doc():
    text = DOC.read_text(encoding="utf-8")
    missing = [str(p.relative_to(PACKAGE)) for p in modules().values() if f"`{p.relative_to(PACKAGE).as_posix()}`" not in text]
    assert not missing, f"docs/ARCHITECTURE.md does not name: {', '.join(missing)}"


def test_the_doc_states_the_layer_order_of_this_test():
    order = " → ".join(f"`{layer}`" for layer in LAYERS)
    assert f"Layers, bottom to top: {order}" in DOC.read_text(encoding="utf-8")


def test_every_module_belongs_to_a_layer_or_the_facade():
    strays = [name for name in modules() if layer_of(name) is None and name not in FACADE]
    assert not strays, f"modules outside every layer: {strays}"


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for name, targets in internal_graph().items():
        layer = layer_of(name)
        for target in targets:
            if target in FACADE and target != "bossflow":
                continue
            if target == "bossflow" or (layer is not None and LAYERS.index(layer_of(target)) > LAYERS.index(layer)):
                if name not in FACADE:
                    upward.append(f"{name} -> {target}")
    assert not upward, "imports against the layers: " + "; ".join(sorted(upward))


def test_no_import_cycles():
    graph = internal_graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_argparse_lives_only_in_cli():
    users = [name for name, path in modules().items()
             if layer_of(name) != "cli" and "argparse" in imports_of(name, path)]
    assert not users, f"argparse outside cli/: {users}"


def test_cli_choices_match_the_library():
    from bossflow.cli import _choices
    from bossflow.core.distributed import PRECISIONS
    from bossflow.core.schedules import SCHEDULE_FAMILIES
    from bossflow.core.solvers import TEACHER_METHODS
    from bossflow.evaluation.classifier import FEATURE_CLASSIFIERS
    from bossflow.search import SEARCHES
    from bossflow.search.auto import EFFORTS
    from bossflow.training.straighten import DISTANCES, OBJECTIVES

    assert _choices.SEARCH_METHODS == tuple(SEARCHES)
    assert _choices.SCHEDULE_FAMILIES == tuple(SCHEDULE_FAMILIES)
    assert _choices.EFFORTS == tuple(EFFORTS)
    assert _choices.PRECISIONS == tuple(PRECISIONS)
    assert _choices.OBJECTIVES == tuple(OBJECTIVES)
    assert _choices.DISTANCES == tuple(DISTANCES)
    from bossflow.training.batches import STEP_SAMPLINGS
    from bossflow.training.loop import LR_SCHEDULES

    assert _choices.LR_SCHEDULES == LR_SCHEDULES and _choices.STEP_SAMPLINGS == STEP_SAMPLINGS
    assert _choices.FEATURE_CLASSIFIERS == tuple(FEATURE_CLASSIFIERS)
    assert _choices.TEACHER_METHODS == TEACHER_METHODS
    from bossflow.training.pair_solver import PAIR_SOLVERS

    assert _choices.PAIR_SOLVERS == ("auto", *PAIR_SOLVERS)
    from bossflow.adapters.export import FORMATS
    from bossflow.cli import export

    assert export.FORMATS == FORMATS


@pytest.mark.parametrize("argv", [["--help"], *[[cmd, "--help"] for cmd in
                                   ("schedule", "demo", "bench", "evaluate", "teacher", "straighten", "sample", "export")]])
def test_help_imports_no_torch(argv):
    probe = (
        "import sys\n"
        "from bossflow.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "NO-TORCH"
    assert "usage: bossflow" in result.stdout


def test_old_module_paths_are_the_moved_modules():
    import importlib

    from bossflow._aliases import MOVED

    for old, new in MOVED.items():
        module = importlib.import_module(old)
        assert module is importlib.import_module(new)
        assert module.__spec__.name == new  # importing through the alias leaves the module's own spec


def test_public_api_names_resolve():
    import bossflow as bf

    for name in bf.__all__:
        assert getattr(bf, name) is not None
    assert bf.models.gmm_2d().sample_shape == (2,)
