"""Batch scoring and replay against a real MLflow server and real log files."""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import pandas as pd
import pytest
from test_serving import register, regressor, write_configs

from mlops.config import load_use_case
from mlops.predictionlog import read_predictions, write_labels
from mlops.replay import replay
from mlops.scoring import land_partition, read_landed_partition, score_partition

pytestmark = pytest.mark.integration
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bike(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("scoring")
    names = write_configs(root / "configs", uuid.uuid4().hex[:8])
    use_case = load_use_case(root / "configs" / "bike_sharing.yaml")
    pipeline, features = regressor(root / "configs" / "bike_sharing.yaml")
    version = register(names["bike_sharing"], pipeline, features)
    return use_case, version, pipeline, root


def _day(day: str) -> pd.DataFrame:
    frame = pd.read_csv(PROJECT_ROOT / "data" / "raw" / "bike_sharing_hourly.csv")
    return frame[frame["dteday"] == day].reset_index(drop=True)


def test_rescoring_a_partition_replaces_it(bike, tmp_path: Path) -> None:
    use_case, version, pipeline, _ = bike
    log = str(tmp_path / "log")
    frame = _day("2011-05-02")
    first = score_partition(use_case, "2011-05-02", frame, log_uri=log)
    assert first.rows == len(frame) and first.replaced_rows == 0 and first.model_version == version
    score_partition(use_case, "2011-05-03", _day("2011-05-03"), log_uri=log)

    again = score_partition(use_case, "2011-05-02", frame, log_uri=log)
    assert again.replaced_rows == len(frame)

    logged = read_predictions(use_case, "2011-05-02", "2011-05-04", uri=log)
    assert len(logged) == len(frame) + len(_day("2011-05-03"))
    mine = logged[logged["batch_partition"] == "2011-05-02"]
    assert mine["request_id"].is_unique and set(mine["source"]) == {"batch"}
    assert mine["prediction"].tolist() == pytest.approx(pipeline.predict(frame[use_case.features.all]).tolist())
    assert set(use_case.features.all) <= set(logged.columns)


def test_landed_partition_is_read_back_and_scored(bike, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_case, version, _, _ = bike
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLOPS_PREDICTION_LOG_URI", raising=False)
    assert read_landed_partition(use_case, "2011-05-05") is None
    land_partition(use_case, "2011-05-05", _day("2011-05-05"))
    frame = read_landed_partition(use_case, "2011-05-05")
    assert frame is not None and len(frame) == len(_day("2011-05-05"))
    result = score_partition(use_case, "2011-05-05", frame)
    assert result.rows == len(frame) and result.model_version == version
    assert (tmp_path / "home" / "predictions" / use_case.name / "date=2011-05-05").is_dir()


def test_labels_join_the_scored_rows_by_id(bike, tmp_path: Path) -> None:
    use_case, _, _, _ = bike
    log, labels = str(tmp_path / "log"), str(tmp_path / "labels")
    frame = _day("2011-05-04")
    score_partition(use_case, "2011-05-04", frame, log_uri=log)
    ids = [f"2011-05-04:{i}" for i in range(5)]
    write_labels(use_case, ids, frame["cnt"].head(5).tolist(), ["2011-05-04"] * 5, uri=labels)

    joined = read_predictions(use_case, "2011-05-04", "2011-05-05", with_labels=True, uri=log, labels_uri=labels)
    by_id = dict(zip(joined["request_id"], joined["label"], strict=True))
    assert [by_id[i] for i in ids] == frame["cnt"].head(5).astype(float).tolist()
    assert sum(math.isnan(v) for v in by_id.values()) == len(frame) - 5


def test_scoring_refuses_a_frame_without_the_features(bike, tmp_path: Path) -> None:
    use_case, _, _, _ = bike
    with pytest.raises(ValueError, match=r"lacks feature columns \['temp'\]"):
        score_partition(use_case, "2011-05-02", _day("2011-05-02").drop(columns=["temp"]), log_uri=str(tmp_path))


def test_batch_replay_logs_in_time_order_and_delivers_labels_after_the_delay(
    bike, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_case, version, _, _ = bike
    log, labels = str(tmp_path / "log"), str(tmp_path / "labels")
    lines: list[str] = []
    result = replay(
        use_case, "2011-05-30", "2011-06-03", speed=0, label_delay=2, via="batch",
        log_uri=log, labels_uri=labels, progress=lines.append,
    )  # fmt: skip
    assert result.failed_rows == 0 and result.model_versions == {version: result.rows}
    assert any(line.startswith("replaying 2011-05 ... ") for line in lines)
    assert any(line.startswith("replaying 2011-06 ... ") for line in lines)

    logged = read_predictions(use_case, "2011-05-30", "2011-06-03", with_labels=True, uri=log, labels_uri=labels)
    assert len(logged) == result.rows and set(logged["source"]) == {"replay"}
    assert logged["event_time"].is_monotonic_increasing
    assert logged["event_time"].dt.hour.nunique() == 24  # hours come from the `hr` column
    # Two simulated days of delay: the last two days' labels had not arrived when the replay ended.
    has_label = logged.groupby(logged["event_time"].dt.date)["label"].apply(lambda s: s.notna().all())
    assert has_label.tolist() == [True, True, False, False]
    assert result.labels_pending == int((~logged["label"].notna()).sum())

    # Re-running the replay replaces its partitions rather than doubling them.
    replay(use_case, "2011-05-30", "2011-06-03", speed=0, label_delay=2, via="batch", log_uri=log,
           labels_uri=labels, progress=lines.append)  # fmt: skip
    assert len(read_predictions(use_case, "2011-05-30", "2011-06-03", uri=log)) == result.rows
