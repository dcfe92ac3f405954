"""Every test module belongs to a CI session: `.ci/pytest-sessions` runs listed paths only.

Why: a module added beside the others but not listed in a session group is never run by
`./run test`, and nothing says so (this happened to tests/integration/test_serving_labels.py).
"""

from __future__ import annotations

import re
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SESSIONS = PROJECT_ROOT / ".ci" / "pytest-sessions"


def _full_group_paths() -> list[str]:
    script = SESSIONS.read_text()
    block = re.search(r"^full_groups=\((.*?)^\)", script, re.DOTALL | re.MULTILINE)
    assert block, "no full_groups=( ... ) in .ci/pytest-sessions"
    lines = [line for line in block.group(1).splitlines() if not line.strip().startswith("#")]
    groups = re.findall(r'"([^"]*)"', "\n".join(lines), re.DOTALL)
    return [path for group in groups for path in group.split()]


def test_every_test_module_is_in_a_full_session() -> None:
    paths = _full_group_paths()
    assert "tests/unit" in paths
    modules = sorted(p.relative_to(PROJECT_ROOT).as_posix() for p in (PROJECT_ROOT / "tests").rglob("test_*.py"))
    assert len(modules) > 50
    orphans = [m for m in modules if not any(m == p or m.startswith(p.rstrip("/") + "/") for p in paths)]
    assert orphans == [], f"add these to a group in .ci/pytest-sessions (full_groups): {orphans}"


def test_every_listed_path_exists() -> None:
    missing = [p for p in _full_group_paths() if not (PROJECT_ROOT / p.split("::")[0]).exists()]
    assert missing == [], f".ci/pytest-sessions lists paths that do not exist: {missing}"
