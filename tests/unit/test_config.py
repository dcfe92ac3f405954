"""Use-case configs: every bundled file parses; every kind of mistake names the file and key."""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops.config import ConfigError, check_estimator_path, load_all, load_use_case

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def _unknown_key(raw: dict[str, Any]) -> str:
    raw["trainig"] = {"seed": 1}
    return "trainig"


def _missing_target(raw: dict[str, Any]) -> str:
    del raw["target"]
    return "target"


def _threshold_wrong_type(raw: dict[str, Any]) -> str:
    metric = raw["gate"]["primary_metric"]
    raw["gate"]["thresholds"][metric] = {"max": "very low"}
    return f"gate.thresholds.{metric}.max"


def _estimator_missing(raw: dict[str, Any]) -> str:
    raw["candidates"][0]["estimator"] = "sklearn.ensemble.RandomForestRegresor"
    return "candidates.0.estimator"


def _unknown_metric(raw: dict[str, Any]) -> str:
    raw["gate"]["primary_metric"] = "accuracy_plus"
    return "accuracy_plus"


def _wrong_source_kind(raw: dict[str, Any]) -> str:
    raw["source"] = {"kind": "ftp", "path": "x"}
    return "source"


MUTATIONS: list[Callable[[dict[str, Any]], str]] = [
    _unknown_key, _missing_target, _threshold_wrong_type, _estimator_missing, _unknown_metric, _wrong_source_kind,
]  # fmt: skip


def test_bundled_configs_parse() -> None:
    names = {u.name for u in load_all()}
    assert {"bike_sharing", "breast_cancer"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
@pytest.mark.parametrize("mutate", MUTATIONS, ids=lambda f: f.__name__.strip("_"))
def test_mistakes_name_file_and_key(
    config: Path, mutate: Callable[[dict[str, Any]], str], tmp_path: Path
) -> None:
    raw = copy.deepcopy(yaml.safe_load(config.read_text()))
    key = mutate(raw)
    broken = tmp_path / config.name
    broken.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as error:
        load_use_case(broken)
    message = str(error.value)
    assert str(broken) in message
    assert key in message


def test_not_yaml_and_not_a_mapping(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_use_case(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_use_case(bad)


def test_name_must_match_file(tmp_path: Path) -> None:
    raw = yaml.safe_load(CONFIGS[0].read_text())
    other = tmp_path / "other_name.yaml"
    other.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="name: must equal the file name"):
        load_use_case(other)


def test_estimator_check_does_not_import_sklearn() -> None:
    already = "sklearn" in sys.modules
    check_estimator_path("sklearn.linear_model.Ridge")
    with pytest.raises(ValueError, match="no estimator named"):
        check_estimator_path("sklearn.linear_model.Rigde")
    with pytest.raises(ValueError, match="does not exist"):
        check_estimator_path("sklearn.nonexistent.Thing")
    with pytest.raises(ValueError, match="not a scikit-learn estimator path"):
        check_estimator_path("os.system")
    assert ("sklearn" in sys.modules) == already
