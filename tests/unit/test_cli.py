"""The `mlops` command's config check, run as a person would: `mlops config check`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlops import cli
from mlops.config import load_use_case

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


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


def test_an_unknown_use_case_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config", "check", "no_such_use_case"]) == 1
    assert "no use case 'no_such_use_case'" in capsys.readouterr().err
