"""`materialize_features` under `dag.test()`: the project's feature repository into a real Feast store.

The store lives under this test's MLOPS_HOME (Parquet offline, SQLite online). A first run
registers the definitions, writes the bundled weather offline and loads the online store;
a second run writes the same offline bytes and loads nothing new (incremental), and the
online values are the offline ones. The training of the store-backed bike_sharing_store waits
on it: its first task fails before the first run and passes after.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow_xcom import task_xcom

pytestmark = pytest.mark.integration


def test_materialize_twice_loads_the_online_store_once_with_the_offline_values(
    airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd

    from mlops.features import store
    from mlops.orchestration.features import build_materialize_dag

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    repo = store.FeatureRepo.default()
    assert _check_before_training() == "failed"  # nothing materialized: training stops at its first task
    dag = build_materialize_dag()
    first = dag.test()
    assert str(first.state) == "success"
    result = task_xcom(dag.dag_id, "materialize_online", first.run_id)
    assert result["views"] == ["weather_hourly"] and result["offline_rows"] == {"weather_hourly": 17379}
    version = store.offline_version(repo, "weather_hourly")

    second = dag.test()
    assert str(second.state) == "success"
    assert store.offline_version(repo, "weather_hourly") == version  # the same source, the same bytes
    assert store.stale_definitions(repo) == []

    offline = pd.read_parquet(repo.offline_dir / "weather_hourly.parquet").set_index("hour")
    hours = ["2011-01-01T01", "2011-07-15T14", "2012-12-31T23"]
    online = store.online_features(repo, [{"hour": h} for h in hours], ["weather_hourly:temp", "weather_hourly:hum"])
    assert [row["temp"] for row in online] == [float(offline.loc[h, "temp"]) for h in hours]
    assert [row["hum"] for row in online] == [float(offline.loc[h, "hum"]) for h in hours]
    assert _check_before_training() == "success"


def _check_before_training() -> str:
    """The state of `check_feature_store`, the first task of train_bike_sharing_store, run alone."""
    from mlops.config import find_use_case
    from mlops.orchestration.training import build_training_dag

    dag = build_training_dag(find_use_case("bike_sharing_store"))
    only = dag.partial_subset(task_ids=["check_feature_store"], include_upstream=True, include_downstream=False)
    run = only.test()
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}["check_feature_store"]
