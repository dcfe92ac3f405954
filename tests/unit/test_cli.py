"""The `mlops` command as a person runs it: `mlops config check`, `mlops suite bootstrap`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlops import cli
from mlops.config import load_use_case
from mlops.data import suites

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((PROJECT_ROOT / "configs").glob("*.yaml"))


def test_bundled_configs_pass_the_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config", "check"]) == 0
    out = capsys.readouterr().out
    assert all(f"{path}: ok" in out for path in CONFIGS), out


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_a_misspelt_hyperparameter_is_named_with_its_key(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = yaml.safe_load(config.read_text())
    last = len(raw["candidates"]) - 1
    right = sorted(raw["candidates"][last]["params"])[0]
    wrong = right[:-1] + right[-1] * 2  # n_estimators -> n_estimatorss
    raw["candidates"][last]["params"][wrong] = raw["candidates"][last]["params"].pop(right)
    broken = tmp_path / config.name
    broken.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("MLOPS_CONFIGS_DIR", str(tmp_path))

    # Parsing does not import scikit-learn, so it cannot see this; the check can.
    assert load_use_case(broken).candidates[last].params[wrong]
    assert cli.main(["config", "check", config.stem]) == 1
    first, line, *rest = capsys.readouterr().err.splitlines()
    assert first == f"invalid use-case config {broken}:" and rest == []
    assert line.startswith(f"  candidates[{last}].params.{wrong}: ")
    assert f"has no parameter {wrong!r}; did you mean {right!r}?" in line


def test_the_self_check_fails_on_a_misspelt_hyperparameter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops.platform import health

    monkeypatch.setenv("MLOPS_CONFIGS_DIR", str(tmp_path))
    for config in CONFIGS:
        shutil.copy(config, tmp_path / config.name)
    assert health.check_configs().ok
    raw = yaml.safe_load(CONFIGS[0].read_text())
    raw["candidates"][0]["params"]["no_such_param"] = [1]
    (tmp_path / CONFIGS[0].name).write_text(yaml.safe_dump(raw))
    named = rf"{CONFIGS[0].stem}: candidates\[0\]\.params\.no_such_param: .*mlops config check"
    with pytest.raises(ValueError, match=named):
        health.check_configs()


def test_an_unknown_use_case_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config", "check", "no_such_use_case"]) == 1
    assert "no use case 'no_such_use_case'" in capsys.readouterr().err


def _ranges(ge_dir: Path, suite: str) -> dict[str, tuple[float, float]]:
    """column -> (min, max) of the suite's value-range expectations."""
    expectations = json.loads((ge_dir / "expectations" / f"{suite}.json").read_text())["expectations"]
    return {
        e["kwargs"]["column"]: (e["kwargs"]["min_value"], e["kwargs"]["max_value"])
        for e in expectations
        if e["type"] == "expect_column_values_to_be_between"
    }


def test_suite_bootstrap_takes_the_tolerance_like_the_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A copy of the committed context: bootstrapping rewrites the suite file.
    ge_dir = tmp_path / "great_expectations"
    shutil.copytree(PROJECT_ROOT / "great_expectations", ge_dir, ignore=shutil.ignore_patterns("uncommitted"))
    monkeypatch.setenv("MLOPS_GE_DIR", str(ge_dir))

    assert cli.main(["suite", "bootstrap", "breast_cancer", "--tolerance", "0"]) == 0
    tight = _ranges(ge_dir, "breast_cancer")
    assert cli.main(["suite", "bootstrap", "breast_cancer", "--tolerance", "0.5"]) == 0
    wide = _ranges(ge_dir, "breast_cancer")
    assert "suite 'breast_cancer': 569 reference rows" in capsys.readouterr().out
    assert tight.keys() == wide.keys() and "mean_radius" in tight
    # Half the observed span added on each side (never below 0 for a column never negative).
    low, high = tight["mean_radius"]
    assert wide["mean_radius"] == pytest.approx((max(0.0, low - (high - low) / 2), high + (high - low) / 2), rel=1e-4)
    # One parser behind both commands: the same options, under each one's name.
    commands = [("mlops suite", cli.main, ["suite"]), ("python -m mlops.data.suites", suites.main, [])]
    for prog, main, prefix in commands:
        with pytest.raises(SystemExit):
            main([*prefix, "bootstrap", "--help"])
        usage = capsys.readouterr().out
        assert usage.startswith(f"usage: {prog} bootstrap") and "--reference" in usage and "--tolerance" in usage


def test_the_suite_module_runs_as_a_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mlops.data.suites", "bootstrap", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m mlops.data.suites bootstrap")
