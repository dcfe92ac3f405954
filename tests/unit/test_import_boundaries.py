"""The package's shape, checked from the source: one seam per outside library, no cycles, no upward imports.

Read from the syntax tree of every module (function-level imports included, since a lazy
import is still a dependency), without importing anything. docs/architecture.md draws
the same layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "include"
PLUGINS = Path(__file__).resolve().parents[2] / "plugins"

# Each outside library is imported by the modules listed, and nowhere else in the package.
SEAMS: dict[str, tuple[str, ...]] = {
    "mlflow": ("mlops.mlflow",),
    "great_expectations": ("mlops.data.validation",),
    "evidently": ("mlops.monitoring.reports",),
    "dvc": ("mlops.data.versioning",),
    "airflow": ("mlops.orchestration",),
    "polars": ("mlops.monitoring.label_scan",),
}

# Layers, lowest first. A module may import its own package's modules and any lower layer;
# two packages in one layer do not know each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("mlops.settings", "mlops.naming", "mlops._io", "mlops.processes"),
    ("mlops.config",),
    # The Feast seam: below data (training snapshots) and serving (online lookups), which will read it.
    ("mlops.features",),
    ("mlops.mlflow", "mlops.data", "mlops.predictionlog"),
    ("mlops.training",),
    ("mlops.evaluation",),
    ("mlops.lineage",),
    ("mlops.promotion",),
    ("mlops.monitoring", "mlops.serving"),
    ("mlops.rollout",),
    ("mlops.ui",),
    ("mlops.platform",),
    ("mlops.orchestration",),
    ("mlops.cli",),
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((PACKAGE_ROOT / "mlops").rglob("*.py"))}


def _imports(path: Path, module: str) -> set[str]:
    """Every module `path` imports, anywhere in the file, as absolute dotted names."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                prefix = ".".join([*base, node.module] if node.module else base)
            else:
                prefix = node.module or ""
            found.add(prefix)
            # `from mlops.data import ingestion` imports the module mlops.data.ingestion.
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
    return found


def _internal(name: str, modules: dict[str, Path]) -> str | None:
    """The package module `name` refers to (a module, or a package's __init__), if it is ours."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _layer(module: str) -> tuple[int, str]:
    for rank, packages in enumerate(LAYERS):
        for package in packages:
            if module == package or module.startswith(package + "."):
                return rank, package
    raise AssertionError(f"{module} is in no layer of LAYERS; add its package to the list")


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = {_internal(name, modules) for name in _imports(path, module) if name.startswith("mlops")}
        graph[module] = {t for t in targets if t is not None and t != module and t != "mlops"}
    return graph


def test_each_outside_library_is_imported_by_its_seam_only() -> None:
    offenders = set()
    for module, path in _modules().items():
        for name in _imports(path, module):
            top = name.split(".")[0]
            allowed = SEAMS.get(top)
            if allowed is not None and not any(module == a or module.startswith(a + ".") for a in allowed):
                offenders.add(f"{module} imports {top} (only {', '.join(allowed)} may)")
    assert not offenders, "\n".join(sorted(offenders))


def test_plugins_reach_mlflow_only_through_the_package() -> None:
    offenders = []
    for path in sorted(PLUGINS.rglob("*.py")):
        for name in _imports(path, path.stem):
            if name.split(".")[0] in ("mlflow", "great_expectations", "evidently", "dvc"):
                offenders.append(f"{path.relative_to(PLUGINS)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_no_module_imports_upward_or_across_a_layer() -> None:
    offenders = []
    for module, targets in _graph().items():
        if module == "mlops":
            continue  # the empty root package
        rank, package = _layer(module)
        for target in sorted(targets):
            target_rank, target_package = _layer(target)
            if target_package != package and target_rank >= rank:
                offenders.append(f"{module} (layer {rank}) imports {target} (layer {target_rank})")
    assert not offenders, "\n".join(offenders)


def test_no_import_cycles() -> None:
    graph = _graph()
    # Tarjan's strongly connected components: any component of two or more modules is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("library", sorted(SEAMS))
def test_every_seam_exists(library: str) -> None:
    # A seam that names no existing module would let the check above pass vacuously.
    modules = _modules()
    present = [s for s in SEAMS[library] if s in modules or any(m.startswith(s + ".") for m in modules)]
    assert present, f"no module {SEAMS[library]} for {library}"


def test_the_checks_see_a_violation(tmp_path: Path) -> None:
    # The parser must see lazy and relative imports, or every check above passes on nothing.
    source = tmp_path / "x.py"
    source.write_text("def f():\n    import mlflow.sklearn\n    from .b import c\n")
    found = _imports(source, "mlops.a.x")
    assert {"mlflow.sklearn", "mlops.a.b", "mlops.a.b.c"} <= found
