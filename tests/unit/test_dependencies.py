"""The installed libraries are the ones the project asks for and was proven with, and they import together.

`pyproject.toml` states the constraints; `uv.lock` is the known-good combination: what CI
installs (`uv sync --frozen`), what the image installs, and what `uv_lock_sha256` on every
training run names. A broken resolution (such as evidently under pandas 3) or an
environment that drifted from the lock must fail here rather than a DAG at run time.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
LOCK = tomllib.loads((PROJECT_ROOT / "uv.lock").read_text(encoding="utf-8"))

# The modules the platform's stages import, each from the distribution that ships it.
STACK = [
    "airflow.sdk",
    "airflow.providers.standard.operators.hitl",
    "mlflow",
    "mlflow.sklearn",
    "great_expectations",
    "evidently",
    "evidently.presets",
    "pandas",
    "sklearn",
    "dvc.repo",
    "fastapi",
    "pyarrow.parquet",
    "polars",
]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


LOCKED = {_canonical(p["name"]): p["version"] for p in LOCK["package"] if "version" in p}


def _requirements() -> list[Requirement]:
    """The project's own constraints: its dependencies, the production extra and the dev group."""
    lines = [
        *PYPROJECT["project"]["dependencies"],
        *PYPROJECT["project"]["optional-dependencies"]["production"],
        *PYPROJECT["dependency-groups"]["dev"],
    ]
    return [Requirement(line) for line in lines]


def _owner(module_file: Path, top_level: str) -> metadata.Distribution:
    """The installed distribution whose RECORD lists `module_file`."""
    for name in metadata.packages_distributions().get(top_level, []):
        dist = metadata.distribution(name)
        root = Path(str(dist.locate_file(""))).resolve()
        if module_file.is_relative_to(root):
            relative = module_file.relative_to(root).as_posix()
            if any(str(f) == relative for f in dist.files or ()):
                return dist
    raise AssertionError(f"{module_file} belongs to no installed distribution: a stray copy shadows the library")


@pytest.mark.parametrize("requirement", _requirements(), ids=str)
def test_installed_versions_satisfy_the_projects_constraints(requirement: Requirement) -> None:
    try:
        installed = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        pytest.fail(f"{requirement.name} is not installed: run `uv sync --frozen --extra production`")
    assert requirement.specifier.contains(installed, prereleases=True), (
        f"{requirement.name} {installed} is installed, but pyproject.toml asks for {requirement}"
    )


@pytest.mark.parametrize("requirement", _requirements(), ids=lambda r: r.name)
def test_installed_versions_are_the_locked_ones(requirement: Requirement) -> None:
    name = _canonical(requirement.name)
    assert name in LOCKED, f"{requirement.name} is a requirement but not in uv.lock: run `uv lock`"
    installed = metadata.version(requirement.name)
    assert installed == LOCKED[name], (
        f"{requirement.name} {installed} is installed, uv.lock has {LOCKED[name]}: run `uv sync --frozen`"
    )


@pytest.mark.parametrize("module", STACK)
def test_library_imports_from_its_locked_distribution(module: str) -> None:
    imported = importlib.import_module(module)
    assert imported.__file__ is not None, f"{module} is a namespace package, not an installed library"
    dist = _owner(Path(imported.__file__).resolve(), module.split(".")[0])
    name = _canonical(dist.metadata["Name"])
    assert LOCKED.get(name) == dist.version, (
        f"{module} comes from {name} {dist.version}; uv.lock has {LOCKED.get(name)}"
    )


def test_the_lock_was_resolved_from_this_pyproject() -> None:
    # uv records the constraints it resolved; a pyproject edited without `uv lock` differs from them
    # (and `uv sync --frozen` would not notice).
    (project,) = [p for p in LOCK["package"] if p["name"] == PYPROJECT["project"]["name"]]
    recorded = [*project["metadata"]["requires-dist"], *project["metadata"]["requires-dev"]["dev"]]
    locked = {_canonical(r["name"]): SpecifierSet(r.get("specifier", "")) for r in recorded}
    for requirement in _requirements():
        assert locked.get(_canonical(requirement.name)) == requirement.specifier, (
            f"{requirement} in pyproject.toml, {locked.get(_canonical(requirement.name))} in uv.lock: run `uv lock`"
        )


def test_pandas_below_3_for_evidently() -> None:
    import pandas

    assert int(pandas.__version__.split(".")[0]) < 3, "evidently 0.7 does not import under pandas 3"
    from evidently import Report  # the import that breaks under pandas 3

    assert Report.__module__.startswith("evidently.")
