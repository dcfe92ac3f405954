"""Read what a task returned in a DAG run that `dag.test()` finished, from Airflow's metadata DB."""

from __future__ import annotations

from typing import Any


def task_xcom(dag_id: str, task_id: str, run_id: str | None = None, key: str = "return_value") -> Any:
    """The task's XCom `key` in `run_id`, or in the latest run that has one; None if there is none."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        query = session.query(XComModel).filter(
            XComModel.dag_id == dag_id, XComModel.task_id == task_id, XComModel.key == key
        )
        if run_id is not None:
            query = query.filter(XComModel.run_id == run_id)
        row = query.order_by(XComModel.timestamp.desc()).first()
        return None if row is None else XComModel.deserialize_value(row)
