"""The scheduler preload (mlops.orchestration.preload, plugins/mlops_preload.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from mlops.orchestration.preload import is_local_executor_scheduler, preload
from mlops.settings import get_settings


@pytest.mark.parametrize(
    ("argv", "executor", "expected"),
    [
        (["airflow", "scheduler"], "LocalExecutor", True),
        (["airflow", "scheduler"], "airflow.executors.local_executor.LocalExecutor", True),
        (["airflow", "scheduler"], "CeleryExecutor", False),  # tasks run on workers, not forked from here
        (["airflow", "dag-processor"], "LocalExecutor", False),
        (["airflow", "api-server"], "LocalExecutor", False),
        (["airflow"], "LocalExecutor", False),
    ],
)
def test_only_a_local_executor_scheduler_preloads(argv: list[str], executor: str, expected: bool) -> None:
    assert is_local_executor_scheduler(argv, executor) is expected


def test_preload_imports_and_survives_a_broken_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "preload_ok_probe.py").write_text("LOADED = True\n")
    (tmp_path / "preload_broken_probe.py").write_text("raise RuntimeError('broken on import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("preload_ok_probe", "preload_broken_probe"):
        monkeypatch.delitem(sys.modules, name, raising=False)

    seconds = preload(["preload_ok_probe", "preload_broken_probe", "preload_missing_probe"])

    assert list(seconds) == ["preload_ok_probe"]
    assert sys.modules["preload_ok_probe"].LOADED is True
    assert "preload_broken_probe" not in sys.modules


def test_setting_default_names_modules_that_exist_and_empty_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLOPS_SCHEDULER_PRELOAD", raising=False)
    names = get_settings().scheduler_preload
    assert {"pandas", "mlflow", "great_expectations", "evidently", "skops.io"} <= set(names)
    assert not [name for name in names if name.startswith("mlops")], "our own code must stay fresh in tasks"
    for name in names:
        # Top-level packages by spec; submodules by file, without importing 15 s of libraries.
        top, _, rest = name.partition(".")
        spec = importlib.util.find_spec(top)
        assert spec is not None, f"{top} is not installed"
        if rest:
            base = Path(next(iter(spec.submodule_search_locations or []))).joinpath(*rest.split("."))
            assert base.with_suffix(".py").exists() or (base / "__init__.py").exists(), f"no module {name}"

    monkeypatch.setenv("MLOPS_SCHEDULER_PRELOAD", "")
    assert get_settings().scheduler_preload == ()
    monkeypatch.setenv("MLOPS_SCHEDULER_PRELOAD", " pandas , mlflow,")
    assert get_settings().scheduler_preload == ("pandas", "mlflow")
