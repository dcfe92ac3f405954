"""The prediction log keeps the model signature's types, on Parquet and SQLite alike, and refuses to change them."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlops.config import load_use_case
from mlops.data.suites import derive_expectations
from mlops.naming import proba_column
from mlops.predictionlog.frames import META_COLUMNS, PredictionBatch, build_frame
from mlops.predictionlog.predictions import append_predictions, read_predictions, replace_batch_partition
from mlops.predictionlog.stores import LogSchemaError, PredictionLogError
from mlops.serving.schema import InputSchema

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TYPES = {"count": "long", "temp": "double", "season": "string", "holiday": "bool"}


def _batch(
    features: dict[str, list[Any]],
    *,
    version: str = "1",
    types: dict[str, str] | None = None,
    predictions: list[Any] | None = None,
    start: datetime = datetime(2023, 1, 2, 8),
    classes: tuple[Any, ...] | None = None,
    probabilities: list[list[float]] | None = None,
    source: str = "online",
    partition: str | None = None,
) -> PredictionBatch:
    n = len(next(iter(features.values())))
    return PredictionBatch(
        use_case="uc", model_name="m", model_version=version, source=source,
        request_ids=[f"{version}-{start:%H%M}-{i}" for i in range(n)],
        event_times=[start + timedelta(minutes=i) for i in range(n)],
        predictions=predictions if predictions is not None else [0] * n,
        features=features, feature_types=TYPES if types is None else types,
        classes=classes, probabilities=probabilities, batch_partition=partition,
    )  # fmt: skip


@pytest.fixture(params=["parquet", "sqlite"])
def uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "log") if request.param == "parquet" else f"sqlite:///{tmp_path / 'log.db'}"


def test_declared_types_come_back_from_the_store_as_written(uri: str) -> None:
    """Integers stay int64, text stays text, booleans stay bool; a null makes them nullable, never float."""
    complete = _batch({"count": [1, 2, 3], "temp": [1.5, 2.0, 3.0], "season": ["a", "b", "c"],
                       "holiday": [True, False, True]})  # fmt: skip
    append_predictions("uc", [complete], uri=uri)
    back = read_predictions("uc", None, None, uri=uri)
    assert {c: str(back[c].dtype) for c in TYPES} == {
        "count": "int64", "temp": "float64", "season": "object", "holiday": "bool"
    }  # fmt: skip
    assert back["count"].tolist() == [1, 2, 3] and back["holiday"].tolist() == [True, False, True]
    assert back["role"].tolist() == ["champion"] * 3 and list(back.columns[: len(META_COLUMNS)]) == list(META_COLUMNS)

    # 3.0 from a JSON client is the integer 3; nulls arrive under serving.missing: impute.
    with_nulls = _batch({"count": [None, 3.0, 4], "temp": [None, 1.0, 2.0], "season": [None, "a", "b"],
                         "holiday": [None, True, False]}, start=datetime(2023, 1, 2, 9))  # fmt: skip
    append_predictions("uc", [with_nulls], uri=uri)
    back = read_predictions("uc", None, None, uri=uri)
    assert {c: str(back[c].dtype) for c in TYPES} == {
        "count": "Int64", "temp": "float64", "season": "object", "holiday": "boolean"
    }  # fmt: skip
    assert back["count"].tolist()[3:] == [pd.NA, 3, 4]
    assert back["season"].tolist()[3] is None and back["holiday"].tolist()[3:] == [pd.NA, True, False]
    # A window without the nulls is plain int64 again.
    assert str(read_predictions("uc", None, "2023-01-02T09:00", uri=uri)["count"].dtype) == "int64"


def test_a_non_integer_value_for_an_integer_feature_fails_naming_the_feature() -> None:
    with pytest.raises(ValueError, match=r"feature 'count' is declared long but holds values such as 3\.5"):
        build_frame([_batch({"count": [3.5, 1], "temp": [1.0, 2.0], "season": ["a", "b"],
                             "holiday": [True, True]})], datetime(2023, 1, 3))  # fmt: skip


def test_a_write_that_changes_a_column_type_is_refused_naming_column_types_and_remedy(uri: str) -> None:
    append_predictions("uc", [_batch({"count": [1, 2], "temp": [1.0, 2.0], "season": ["a", "b"],
                                      "holiday": [True, False]})], uri=uri)  # fmt: skip
    retyped = _batch({"count": [1.5, 2.5], "temp": [1.0, 2.0], "season": ["a", "b"], "holiday": [True, False]},
                     version="2", types={**TYPES, "count": "double"}, start=datetime(2023, 1, 2, 10))  # fmt: skip
    with pytest.raises(LogSchemaError) as caught:
        append_predictions("uc", [retyped], uri=uri)
    message = str(caught.value)
    assert "column 'count' is long in the log (model version(s) 1) but double in this write" in message
    assert "model version(s) 2" in message and "never silently converted" in message
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, PredictionLogError)
    # Nothing of the refused write is in the log, and batch partitions are held to the same rule.
    assert len(read_predictions("uc", None, None, uri=uri)) == 2
    partition = _batch({"count": [1.5], "temp": [1.0], "season": ["a"], "holiday": [True]}, version="2",
                       types={**TYPES, "count": "double"}, source="batch", partition="p1")  # fmt: skip
    with pytest.raises(LogSchemaError, match="column 'count'"):
        replace_batch_partition("uc", "p1", partition, uri=uri)
    # A new version with the same types is welcome, and gets its own schema record.
    append_predictions("uc", [_batch({"count": [7], "temp": [1.0], "season": ["z"], "holiday": [False]},
                                     version="2", start=datetime(2023, 1, 2, 11))], uri=uri)  # fmt: skip
    assert read_predictions("uc", None, None, uri=uri)["count"].tolist() == [1, 2, 7]


def test_the_schema_is_stored_once_per_version(tmp_path: Path) -> None:
    uri = str(tmp_path / "log")
    for hour in (8, 9):
        append_predictions("uc", [_batch({"count": [1], "temp": [1.0], "season": ["a"], "holiday": [True]},
                                         start=datetime(2023, 1, 2, hour))], uri=uri)  # fmt: skip
    files = list((tmp_path / "log" / "uc" / "_schema").glob("*.json"))
    assert len(files) == 1
    record = json.loads(files[0].read_text())
    assert record["model_version"] == "1"
    assert {k: record["columns"][k] for k in ("count", "temp", "season", "holiday", "prediction", "event_time")} == {
        "count": "long", "temp": "double", "season": "string", "holiday": "bool", "prediction": "long",
        "event_time": "datetime",
    }  # fmt: skip


def test_classifier_rows_keep_the_class_type_and_one_probability_column_per_class(uri: str) -> None:
    batch = _batch({"count": [1, 2], "temp": [1.0, 2.0], "season": ["a", "b"], "holiday": [True, False]},
                   predictions=[1, 0], classes=(0, 1), probabilities=[[0.2, 0.8], [0.9, 0.1]])  # fmt: skip
    labels = _batch({"count": [3], "temp": [1.0], "season": ["a"], "holiday": [True]}, version="1",
                    predictions=[1], classes=(0, 1), probabilities=[[0.4, 0.6]],
                    start=datetime(2023, 1, 2, 9))  # fmt: skip
    append_predictions("uc", [batch, labels], uri=uri)
    back = read_predictions("uc", None, None, uri=uri)
    assert str(back["prediction"].dtype) == "int64" and back["prediction"].tolist() == [1, 0, 1]
    assert back[proba_column(1)].tolist() == [0.8, 0.1, 0.6] and back[proba_column(0)].tolist() == [0.2, 0.9, 0.4]
    assert str(back[proba_column(1)].dtype) == "float64"
    text = build_frame([_batch({"count": [1]}, types={"count": "long"}, predictions=["yes"], classes=("no", "yes"),
                               probabilities=[[0.3, 0.7]])], datetime(2023, 1, 3))  # fmt: skip
    assert text["prediction"].tolist() == ["yes"] and text["proba__yes"].tolist() == [0.7]


def test_a_log_written_before_roles_and_types_reads_as_champion(tmp_path: Path) -> None:
    """Old Parquet files: no role column, integer features as float64; they read back as champion rows."""
    old = build_frame([_batch({"count": [1.0, 2.0]}, types={"count": "double"})], datetime(2023, 1, 3))
    old = old.drop(columns=["role"])
    folder = tmp_path / "log" / "uc" / "date=2023-01-02"
    folder.mkdir(parents=True)
    old.to_parquet(folder / "online__old.parquet", index=False)
    back = read_predictions("uc", None, None, uri=str(tmp_path / "log"))
    assert back["role"].tolist() == ["champion", "champion"]
    # A typed write after it: the stored schema says long, and the old floats read back as integers.
    append_predictions("uc", [_batch({"count": [3]}, types={"count": "long"}, start=datetime(2023, 1, 2, 9))],
                       uri=str(tmp_path / "log"))  # fmt: skip
    back = read_predictions("uc", None, None, uri=str(tmp_path / "log"))
    assert str(back["count"].dtype) == "int64" and back["count"].tolist() == [1, 2, 3]


def _type_names(series: pd.Series) -> set[str]:
    """What GX's ExpectColumnValuesToBeInTypeList compares on pandas: the dtype, or each value's type (object)."""
    if series.dtype == object:
        return {type(v).__name__ for v in series.dropna()}
    return {str(series.dtype)}


def test_a_flight_delays_window_from_the_log_passes_the_suite_type_checks_training_data_passed(uri: str) -> None:
    """The issue's failure: integer features came back float64 and every window was called a data bug."""
    from mlflow.models import infer_signature

    use_case = load_use_case(PROJECT_ROOT / "configs" / "flight_delays.yaml")
    raw = pd.read_csv(PROJECT_ROOT / "data" / "raw" / use_case.source.path.split("/")[-1])  # type: ignore[union-attr]
    training = raw.head(2000)
    signature = infer_signature(training[use_case.features.all])
    schema = InputSchema.from_signature(
        signature.inputs.to_dict(), use_case.features.numeric, use_case.features.categorical
    )
    assert {schema.log_types[c] for c in ("dep_hour", "day_of_week", "distance", "seats")} == {"long"}
    production = raw[raw["temperature"].isna()].head(100)  # weather missing, as from April
    assert len(production) == 100
    for window in (training.tail(300), production):
        features = {c: [None if pd.isna(v) else v for v in window[c].tolist()] for c in use_case.features.all}
        append_predictions(use_case.name, [PredictionBatch(
            use_case=use_case.name, model_name=use_case.model_name, model_version="1", source="replay",
            request_ids=[f"r{i}" for i in window.index],
            event_times=pd.to_datetime(window["scheduled_departure"]).tolist(),
            predictions=[0] * len(window), features=features, feature_types=schema.log_types,
            classes=(0, 1), probabilities=[[0.7, 0.3]] * len(window),
        )], uri=uri)  # fmt: skip

    type_lists = {
        spec.kwargs["column"]: spec.kwargs["type_list"]
        for spec in derive_expectations(use_case, training)
        if spec.type == "ExpectColumnValuesToBeInTypeList"
    }
    back = read_predictions(use_case.name, None, None, uri=uri)
    assert len(back) == 400
    for column in use_case.features.all:
        assert _type_names(back[column]) <= set(type_lists[column]), (column, _type_names(back[column]))
        assert _type_names(training[column]) <= set(type_lists[column])
    assert back["temperature"].isna().sum() == 100
