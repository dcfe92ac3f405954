"""Parse-cost guard: DAG files must not import heavy libraries at parse time.

Timing-free: each file is imported in a fresh interpreter and `sys.modules` is
inspected. Parse time itself is measured in benchmarks/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HEAVY = ["pandas", "sklearn", "mlflow", "great_expectations", "evidently", "dvc", "scipy", "matplotlib", "pyarrow"]
DAG_FILES = sorted(PROJECT_ROOT.joinpath("dags").rglob("*.py"))
PLUGIN_FILES = sorted(PROJECT_ROOT.joinpath("plugins").rglob("*.py"))

# Airflow puts the plugins folder on sys.path before it loads a plugin, so plugin modules
# import their siblings (`mlops_ui.access`) by name; the probe does the same.
PROBE = """
import json, runpy, sys
sys.path.append("plugins")
runpy.run_path(sys.argv[1])
heavy = json.loads(sys.argv[2])
print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(heavy))))
"""


@pytest.mark.parametrize("path", DAG_FILES + PLUGIN_FILES, ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_no_heavy_import_at_parse_time(path: Path, airflow_home: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), json.dumps(HEAVY)],
        capture_output=True, text=True, env={**os.environ}, cwd=PROJECT_ROOT, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == [], f"{path.name} imports {loaded} at parse time; import them inside the task body"


def test_guard_catches_a_heavy_import(tmp_path: Path, airflow_home: Path) -> None:
    """The guard itself must be able to fail."""
    offender = tmp_path / "bad_dag.py"
    offender.write_text("import pandas\n")
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(offender), json.dumps(HEAVY)], capture_output=True, text=True, timeout=300
    )
    assert "pandas" in json.loads(done.stdout.strip().splitlines()[-1])
