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


# Each mutation breaks one thing and returns (the key the message must name, what it must say there).
Mutation = Callable[[dict[str, Any]], tuple[str, str]]


def _unknown_key(raw: dict[str, Any]) -> tuple[str, str]:
    raw["trainig"] = {"seed": 1}
    return "trainig", "Extra inputs are not permitted"


def _missing_target(raw: dict[str, Any]) -> tuple[str, str]:
    del raw["target"]
    return "target", "Field required"


def _threshold_wrong_type(raw: dict[str, Any]) -> tuple[str, str]:
    metric = raw["gate"]["primary_metric"]
    raw["gate"]["thresholds"][metric] = {"max": "very low"}
    return f"gate.thresholds.{metric}.max", "Input should be a valid number"


def _estimator_missing(raw: dict[str, Any]) -> tuple[str, str]:
    raw["candidates"][0]["estimator"] = "sklearn.ensemble.RandomForestRegresor"
    return "candidates[0].estimator", "has no estimator named 'RandomForestRegresor'"


def _unknown_metric(raw: dict[str, Any]) -> tuple[str, str]:
    raw["gate"]["primary_metric"] = "accuracy_plus"
    return "gate.primary_metric", f"'accuracy_plus' is not a {raw['task']} metric"


def _threshold_on_unknown_metric(raw: dict[str, Any]) -> tuple[str, str]:
    raw["gate"]["thresholds"]["speed"] = {"max": 1.0}
    return "gate.thresholds.speed", f"'speed' is not a {raw['task']} metric"


def _target_as_feature(raw: dict[str, Any]) -> tuple[str, str]:
    raw["features"]["numeric"].append(raw["target"])
    return f"features.numeric[{len(raw['features']['numeric']) - 1}]", "is the target"


def _duplicate_candidate_name(raw: dict[str, Any]) -> tuple[str, str]:
    raw["candidates"].append(dict(raw["candidates"][0]))
    return f"candidates[{len(raw['candidates']) - 1}].name", "is taken by candidates[0]"


def _wrong_source_kind(raw: dict[str, Any]) -> tuple[str, str]:
    raw["source"] = {"kind": "ftp", "path": "x"}
    return "source", "does not match any of the expected tags"


def _file_source_without_path(raw: dict[str, Any]) -> tuple[str, str]:
    raw["source"] = {"kind": "files"}
    return "source.path", "Field required"


def _slice_not_categorical(raw: dict[str, Any]) -> tuple[str, str]:
    numeric = raw["features"]["numeric"][0]
    raw["gate"]["slices"] = [*raw["features"].get("categorical", [])[:1], numeric]
    return f"gate.slices[{len(raw['gate']['slices']) - 1}]", f"{numeric!r} is not a categorical feature"


def _slice_regression_without_slices(raw: dict[str, Any]) -> tuple[str, str]:
    raw["gate"]["slices"] = []
    raw["gate"]["max_slice_regression"] = 0.1
    return "gate.max_slice_regression", "gate.slices names none"


def _negative_slice_regression(raw: dict[str, Any]) -> tuple[str, str]:
    raw["gate"]["max_slice_regression"] = -0.1
    return "gate.max_slice_regression", "greater than or equal to 0"


def _limitations_not_text(raw: dict[str, Any]) -> tuple[str, str]:
    raw["model_card"] = {"limitations": ["a", "list"]}
    return "model_card.limitations", "Input should be a valid string"


def _unknown_model_card_key(raw: dict[str, Any]) -> tuple[str, str]:
    raw["model_card"] = {"limitation": "typo"}
    return "model_card.limitation", "Extra inputs are not permitted"


def _canary_steps_decreasing(raw: dict[str, Any]) -> tuple[str, str]:
    raw["deployment"] = {"strategy": "canary", "canary_steps": [0.25, 0.05]}
    return "deployment.canary_steps", "canary steps must increase, e.g. [0.05, 0.25, 1.0]; got [0.25, 0.05]"


def _unknown_strategy(raw: dict[str, Any]) -> tuple[str, str]:
    raw["deployment"] = {"strategy": "blue_green"}
    return "deployment.strategy", "Input should be 'direct', 'shadow' or 'canary'"


def _zero_shadow_timeout(raw: dict[str, Any]) -> tuple[str, str]:
    raw["deployment"] = {"strategy": "shadow", "shadow_timeout_ms": 0}
    return "deployment.shadow_timeout_ms", "greater than 0"


def _confidence_over_one(raw: dict[str, Any]) -> tuple[str, str]:
    raw["deployment"] = {"strategy": "shadow", "confidence": 95}
    return "deployment.confidence", "less than 1"


def _unknown_deployment_key(raw: dict[str, Any]) -> tuple[str, str]:
    raw["deployment"] = {"strategy": "shadow", "min_labelled_rows": 10}
    return "deployment.min_labelled_rows", "Extra inputs are not permitted"


def _built_in_role_in_access(raw: dict[str, Any]) -> tuple[str, str]:
    raw["access"] = {"readers": ["team-a-viewers", "Viewer"]}
    return "access.readers[1]", "'Viewer' is a built-in Airflow role that reads every DAG"


def _role_listed_twice_in_access(raw: dict[str, Any]) -> tuple[str, str]:
    raw["access"] = {"readers": ["team-a"], "operators": ["team-a"]}
    return "access.operators[0]", "'team-a' is listed already as access.readers[0]"


def _blank_role_in_access(raw: dict[str, Any]) -> tuple[str, str]:
    raw["access"] = {"operators": [" team-a-ops"]}
    return "access.operators[0]", "is not a role name"


def _empty_access(raw: dict[str, Any]) -> tuple[str, str]:
    raw["access"] = {"readers": []}
    return "access", "names no role"


def _unknown_access_key(raw: dict[str, Any]) -> tuple[str, str]:
    raw["access"] = {"viewers": ["team-a"]}
    return "access.viewers", "Extra inputs are not permitted"


MUTATIONS: list[Mutation] = [
    _unknown_key, _missing_target, _threshold_wrong_type, _estimator_missing, _unknown_metric,
    _threshold_on_unknown_metric, _target_as_feature, _duplicate_candidate_name, _wrong_source_kind,
    _file_source_without_path, _slice_not_categorical, _slice_regression_without_slices,
    _negative_slice_regression, _limitations_not_text, _unknown_model_card_key, _canary_steps_decreasing,
    _unknown_strategy, _zero_shadow_timeout, _confidence_over_one, _unknown_deployment_key,
    _built_in_role_in_access, _role_listed_twice_in_access, _blank_role_in_access, _empty_access,
    _unknown_access_key,
]  # fmt: skip


def test_bundled_configs_parse() -> None:
    names = {u.name for u in load_all()}
    assert {"bike_sharing", "breast_cancer", "flight_delays"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
@pytest.mark.parametrize("mutate", MUTATIONS, ids=lambda f: f.__name__.strip("_"))
def test_mistakes_name_file_and_key(config: Path, mutate: Mutation, tmp_path: Path) -> None:
    raw = copy.deepcopy(yaml.safe_load(config.read_text()))
    key, says = mutate(raw)
    broken = tmp_path / config.name
    broken.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as error:
        load_use_case(broken)
    first, *lines = str(error.value).splitlines()
    assert first == f"invalid use-case config {broken}:"
    # The key starts its own line, followed by what is wrong there.
    named = [line for line in lines if line.startswith(f"  {key}: ")]
    assert named and says in named[0], f"no line '  {key}: ...{says}...' in {lines}"


def test_deployment_defaults_to_direct_and_reads_a_shadow_strategy(tmp_path: Path) -> None:
    raw = yaml.safe_load(CONFIGS[0].read_text())
    path = tmp_path / CONFIGS[0].name
    path.write_text(yaml.safe_dump(raw))
    default = load_use_case(path).deployment
    assert (default.strategy, default.shadow_timeout_ms, default.min_labeled_rows) == ("direct", 250, 200)
    assert (default.deadline_hours, default.confidence, default.min_improvement) == (72, 0.95, 0.0)
    raw["deployment"] = {"strategy": "shadow", "shadow_timeout_ms": 40, "min_labeled_rows": 50, "min_improvement": 0.02}
    path.write_text(yaml.safe_dump(raw))
    shadow = load_use_case(path).deployment
    assert (shadow.strategy, shadow.shadow_timeout_ms, shadow.min_labeled_rows) == ("shadow", 40, 50)
    assert (shadow.min_improvement, shadow.confidence) == (0.02, 0.95)


def test_several_inconsistencies_are_all_named(tmp_path: Path) -> None:
    raw = yaml.safe_load(CONFIGS[0].read_text())
    for mutate in (_unknown_metric, _target_as_feature, _duplicate_candidate_name):
        mutate(raw)
    broken = tmp_path / CONFIGS[0].name
    broken.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as error:
        load_use_case(broken)
    keys = [line.split(": ")[0].strip() for line in str(error.value).splitlines()[1:]]
    assert keys == [
        "gate.primary_metric",
        f"features.numeric[{len(raw['features']['numeric']) - 1}]",
        f"candidates[{len(raw['candidates']) - 1}].name",
    ]


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
