"""CI's closing step (.ci/junit-summary): a skipped proof fails the run unless MLOPS_ALLOW_SKIP names it.

The JUnit files come from real pytest runs of small test trees laid out like ours, so the
policy reads what pytest really writes (a module skipped whole, a skipped parameter).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SUMMARY = PROJECT_ROOT / ".ci" / "junit-summary"

TREE = {
    # A proof skipped whole at collection (as the browser tests do without Chromium).
    "tests/browser/test_page.py": """
        import pytest
        pytest.skip("headless Chromium is not installed", allow_module_level=True)
        def test_page(): pass
    """,
    # One parameter of a proof skipped (as the PostgreSQL case of the SQL-source test).
    "tests/dags/test_sql_source.py": """
        import pytest
        @pytest.mark.parametrize("connection", ["postgres_connection", "sqlite_connection"])
        def test_sql(connection):
            if connection == "postgres_connection":
                pytest.skip("PostgreSQL not reachable at 127.0.0.1:5432")
    """,
    "tests/unit/test_plain.py": """
        def test_passes(): pass
    """,
}


def _junit(tmp_path: Path, tree: dict[str, str]) -> Path:
    """Run pytest on `tree` (relative path -> source) and return the folder of its JUnit file."""
    project = tmp_path / "project"
    for relative, source in tree.items():
        path = project / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    results = tmp_path / "junit"
    results.mkdir()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--junitxml",
            str(results / "s-1.xml"),
            "tests",
        ],
        cwd=project,
        capture_output=True,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTEST")},
    )
    assert (results / "s-1.xml").is_file()
    return results


def _summary(results: Path, allow: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_ALLOW_SKIP"}
    if allow is not None:
        env["MLOPS_ALLOW_SKIP"] = allow
    return subprocess.run([sys.executable, str(SUMMARY), str(results)], capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def skipped_proofs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _junit(tmp_path_factory.mktemp("skips"), TREE)


def test_skipped_proofs_fail_the_run_and_say_how_to_allow_them(skipped_proofs: Path) -> None:
    done = _summary(skipped_proofs, None)
    assert done.returncode == 1, done.stdout
    lines = done.stdout.splitlines()
    assert lines[-1] == "2 passed, 2 failed, 0 skipped"
    assert any(
        line.startswith("FAILED (skipped proof 'browser'") and "headless Chromium is not installed" in line
        for line in lines
    ), lines
    assert any("tests.dags.test_sql_source.test_sql[postgres_connection]" in line for line in lines), lines
    assert "MLOPS_ALLOW_SKIP=browser" in done.stdout and "MLOPS_ALLOW_SKIP=postgres" in done.stdout


def test_a_named_skip_is_allowed_and_only_that_one(skipped_proofs: Path) -> None:
    only_browser = _summary(skipped_proofs, "browser")
    assert only_browser.returncode == 1
    assert only_browser.stdout.splitlines()[-1] == "2 passed, 1 failed, 1 skipped"
    assert "skip allowed by MLOPS_ALLOW_SKIP=browser: tests.browser.test_page" in only_browser.stdout

    both = _summary(skipped_proofs, "browser, postgres")
    assert both.returncode == 0, both.stdout
    assert both.stdout.splitlines()[-1] == "2 passed, 0 failed, 2 skipped"


def test_a_skip_outside_the_proofs_is_named_by_its_file(tmp_path: Path) -> None:
    results = _junit(tmp_path, {"tests/unit/test_other.py": "import pytest\ndef test_x(): pytest.skip('no tool')\n"})
    refused = _summary(results, "celery")
    assert refused.returncode == 1
    assert "FAILED (skipped) tests.unit.test_other.test_x: no tool" in refused.stdout
    assert "MLOPS_ALLOW_SKIP=tests/unit/test_other.py" in refused.stdout
    assert _summary(results, "tests/unit/test_other.py").returncode == 0
    assert _summary(results, "all").returncode == 0


def test_a_run_without_skips_passes(tmp_path: Path) -> None:
    done = _summary(_junit(tmp_path, {"tests/unit/test_plain.py": TREE["tests/unit/test_plain.py"]}), None)
    assert done.returncode == 0 and done.stdout.splitlines() == ["1 passed, 0 failed, 0 skipped"]


def test_the_sessions_script_fails_on_the_summarys_verdict() -> None:
    # pytest exits 0 over skips: the sessions script must take the summary's exit code.
    sessions = (PROJECT_ROOT / ".ci" / "pytest-sessions").read_text()
    assert '.ci/junit-summary "$results" || status=1' in sessions
