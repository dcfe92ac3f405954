"""serving.missing (impute | refuse), integers sent as floats, a classifier's probabilities in the micro-batch."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from mlops.config import ConfigError, load_use_case
from mlops.naming import proba_column
from mlops.serving.logentry import LogEntry
from mlops.serving.logwriter import merge_entries
from mlops.serving.microbatch import MicroBatcher
from mlops.serving.models import LoadedModel, model_classes
from mlops.serving.schema import InputSchema, RequestError, parse_json

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SIGNATURE = [
    {"name": "temp", "type": "double", "required": True},
    {"name": "count", "type": "long", "required": True},
    {"name": "season", "type": "string", "required": True},
]


def _schema(missing: str) -> InputSchema:
    return InputSchema.from_signature(SIGNATURE, ["temp", "count"], ["season"], missing=missing, use_case="demo")


def _parse(schema: InputSchema, body: bytes) -> Any:
    return schema.parse(parse_json(body), max_records=100)


def _refusal(schema: InputSchema, body: bytes) -> RequestError:
    with pytest.raises(RequestError) as caught:
        _parse(schema, body)
    return caught.value


def test_impute_accepts_a_null_in_any_feature_and_hands_the_pipeline_nan() -> None:
    schema = _schema("impute")
    parsed = _parse(schema, b'{"records": [{"temp": null, "count": null, "season": null}, '
                            b'{"temp": 1.5, "count": 3, "season": "a"}]}')  # fmt: skip
    assert parsed.rows == [[None, None, None], [1.5, 3, "a"]]
    frame = schema.to_frame(parsed.rows)
    assert str(frame["count"].dtype) == "float64" and np.isnan(frame["count"][0]) and frame["count"][1] == 3
    assert np.isnan(frame["temp"][0]) and frame["season"].isna()[0]
    # Without a null the integer column is int64, as the pipeline was trained.
    assert str(schema.to_frame([[1.5, 3, "a"]])["count"].dtype) == "int64"
    # A field must still be sent (null is a value; absence is a client bug).
    assert _refusal(schema, b'{"record": {"temp": 1.0, "season": "a"}}').detail[0]["loc"] == ["body", "record", "count"]


@pytest.mark.parametrize("field", ["temp", "count", "season"])
def test_refuse_answers_a_null_with_a_422_naming_the_field_and_the_policy(field: str) -> None:
    record = {"temp": 1.5, "count": 3, "season": "a", field: None}
    error = _refusal(_schema("refuse"), f'{{"records": [{_json(record)}]}}'.encode())
    assert error.status == 422
    assert [item["loc"] for item in error.detail] == [["body", "records", 0, field]]
    assert error.detail[0]["msg"] == (
        "may not be null: serving.missing is 'refuse' for demo; send a value or set serving.missing: impute"
    )


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj)


def test_an_integer_sent_as_3_0_is_3_and_3_5_is_refused_naming_the_field() -> None:
    schema = _schema("impute")
    assert _parse(schema, b'{"record": {"temp": 1, "count": 3.0, "season": "a"}}').rows == [[1.0, 3, "a"]]
    assert type(_parse(schema, b'{"record": {"temp": 1, "count": 3.0, "season": "a"}}').rows[0][1]) is int
    error = _refusal(schema, b'{"record": {"temp": 1, "count": 3.5, "season": "a"}}')
    assert error.status == 422 and error.detail[0]["loc"] == ["body", "record", "count"]
    assert "must be an integer, got 3.5" in error.detail[0]["msg"]


def test_the_log_types_follow_the_signature() -> None:
    assert _schema("impute").log_types == {"temp": "double", "count": "long", "season": "string"}


def test_serving_missing_is_in_the_config_defaults_to_impute_and_rejects_other_values(tmp_path: Path) -> None:
    raw = yaml.safe_load((PROJECT_ROOT / "configs" / "flight_delays.yaml").read_text())
    path = tmp_path / "flight_delays.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert load_use_case(path).serving.missing == "impute"
    path.write_text(yaml.safe_dump({**raw, "serving": {"missing": "refuse"}}))
    assert load_use_case(path).serving.missing == "refuse"
    path.write_text(yaml.safe_dump({**raw, "serving": {"missing": "fill"}}))
    with pytest.raises(ConfigError, match="missing"):
        load_use_case(path)


# --------------------------------------------------------------------------- classifiers


class ProbaModel:
    """A fitted logistic regression that counts predict and predict_proba calls."""

    def __init__(self) -> None:
        from sklearn.linear_model import LogisticRegression

        x = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "b": [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]})
        self.fitted = LogisticRegression().fit(x, ["no", "no", "no", "yes", "yes", "yes"])
        self.classes_ = self.fitted.classes_
        self.calls: list[str] = []

    def predict(self, frame: pd.DataFrame) -> Any:
        self.calls.append("predict")
        return self.fitted.predict(frame)

    def predict_proba(self, frame: pd.DataFrame) -> Any:
        self.calls.append(f"predict_proba({len(frame)})")
        return self.fitted.predict_proba(frame)


class OneModelCache:
    def __init__(self, model: LoadedModel) -> None:
        self.model = model

    def get(self, use_case: str) -> LoadedModel | None:
        return self.model


def test_a_classifier_micro_batch_calls_predict_proba_once_and_derives_the_class() -> None:
    model = ProbaModel()
    loaded = LoadedModel(
        use_case="demo", model_name="demo_model", version="1", alias="champion", run_id=None,
        aliases=("champion",), signature=None, schema=InputSchema.from_signature(None, ["a", "b"], []),
        model=model, loaded_at=datetime.now(UTC), classes=model_classes(model),
    )  # fmt: skip
    assert loaded.classes == ("no", "yes")
    batcher = MicroBatcher(OneModelCache(loaded), "demo", 0.005)  # type: ignore[arg-type]

    async def two_requests() -> list[Any]:
        return await asyncio.gather(
            batcher.predict(loaded, [[0.0, 1.0]]), batcher.predict(loaded, [[5.0, 0.0], [1.0, 0.0]])
        )

    first, second = asyncio.run(two_requests())
    assert model.calls == ["predict_proba(3)"]
    expected = model.fitted.predict_proba(pd.DataFrame({"a": [0.0, 5.0], "b": [1.0, 0.0]}))
    assert first[1] == ["no"] and second[1][0] == "yes"
    assert np.allclose(first[2][0], expected[0]) and np.allclose(second[2][0], expected[1])
    assert all(abs(sum(row) - 1) < 1e-9 for row in [*first[2], *second[2][:1]])

    # The log entry of such a request becomes prediction plus one proba__<class> column per class.
    entry = LogEntry(
        use_case="demo", model_name="demo_model", model_version="1", source="online", ids=["x"],
        event_times=[datetime(2023, 1, 1)], names=["a", "b"], rows=[[0.0, 1.0]], predictions=first[1],
        feature_types={"a": "double", "b": "double"}, classes=loaded.classes, probabilities=first[2],
    )  # fmt: skip
    from mlops.predictionlog.frames import build_frame

    frame = build_frame(merge_entries([entry]), datetime(2023, 1, 2))
    assert frame["prediction"].tolist() == ["no"] and frame["role"].tolist() == ["champion"]
    assert frame[proba_column("yes")].tolist() == [pytest.approx(expected[0][1])]
