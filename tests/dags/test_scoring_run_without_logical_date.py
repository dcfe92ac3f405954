"""The scoring DAG for a run that has no logical date (REST trigger with `logical_date: null`).

Such a run has no `ds` in its context; AirflowAPI.trigger starts runs that way. It must
score the day it ran after, under `dag.test()` against a real MLflow server.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from airflow_xcom import task_xcom

from mlops.config import UseCase, find_use_case

pytestmark = pytest.mark.integration

RAW = Path(__file__).resolve().parents[2] / "data" / "raw" / "bike_sharing_hourly.csv"


def _rows(start: str, end: str) -> pd.DataFrame:
    frame = pd.read_csv(RAW)
    return frame[(frame["dteday"] >= start) & (frame["dteday"] < end)].reset_index(drop=True)


@pytest.fixture(scope="module")
def bike(mlflow_server: str, airflow_home: Path) -> UseCase:
    """A champion fitted on Jan-Feb 2011 and registered under a model name of this module's own."""
    import mlflow
    import skops.io
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    from mlops.training import candidates

    use_case = find_use_case("bike_sharing")
    use_case = use_case.model_copy(update={"model_name": f"bike_sharing_no_logical_date_{uuid.uuid4().hex[:8]}"})
    features, target = candidates.features_and_target(use_case, _rows("2011-01-01", "2011-03-01"))
    pipeline = candidates.build_pipeline(use_case, candidates.expand_candidates(use_case)[0]).fit(features, target)
    mlflow.set_experiment(f"tests-{use_case.model_name}")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=infer_signature(features.head(50), pipeline.predict(features.head(50))),
            input_example=features.head(2),
            registered_model_name=use_case.model_name,
            skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(pipeline)),
            pip_requirements=["scikit-learn", "pandas", "numpy", "skops"],
        )
    MlflowClient().set_registered_model_alias(use_case.model_name, "champion", str(info.registered_model_version))
    return use_case


def test_a_run_without_logical_date_scores_the_day_it_ran_after(
    bike: UseCase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops.orchestration.scoring import build_scoring_dag
    from mlops.predictionlog.predictions import read_predictions
    from mlops.serving import batch

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))  # landing folder and prediction log of this test only
    monkeypatch.delenv("MLOPS_PREDICTION_LOG_URI", raising=False)
    batch.land_partition(bike, "2011-04-09", _rows("2011-04-09", "2011-04-10"))
    dag = build_scoring_dag(bike)

    dag_run = dag.test(logical_date=None, run_after=datetime(2011, 4, 9, 18, 30, tzinfo=UTC))
    assert dag_run.logical_date is None
    assert str(dag_run.state) == "success"
    result = task_xcom(dag.dag_id, "score_landed_partition", dag_run.run_id)
    assert result["partition"] == "2011-04-09" and result["rows"] == 24
    logged = read_predictions(bike, "2011-04-09", "2011-04-10")
    assert len(logged) == 24 and set(logged["batch_partition"]) == {"2011-04-09"}

    # A day with nothing landed skips, as a run with a logical date does.
    quiet = dag.test(logical_date=None, run_after=datetime(2011, 4, 10, 18, 30, tzinfo=UTC))
    states = {ti.task_id: str(ti.state) for ti in quiet.get_task_instances()}
    assert states == {"score_landed_partition": "skipped", "summarize_scored_partition": "skipped"}
