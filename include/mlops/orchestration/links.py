"""Task extra links: a button on each ML task that opens what the task produced.

Registered by the MLOps plugin as *global* operator links, because TaskFlow
tasks are all `_PythonDecoratedOperator`: one link class per kind of output,
each answering only for its task ids (an empty string hides the button).

Airflow 3 calls global links in the API server with the serialized operator and
the task-instance key, so the link reads the task's return value straight from
the metadata database, the way Airflow's own `XComOperatorLink` does. The value
is a small dict of ids and paths (the tasks never return data), so this is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperatorLink

from mlops.naming import use_case_of_dag
from mlops.settings import get_settings
from mlops.ui import urls

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


def return_value(ti_key: TaskInstanceKey) -> Any:
    """The XCom return value of one task instance (one map index), or None."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(
            XComModel.get_many(
                key="return_value",
                run_id=ti_key.run_id,
                dag_ids=ti_key.dag_id,
                task_ids=ti_key.task_id,
                map_indexes=ti_key.map_index,
            ).with_only_columns(XComModel.value)
        ).first()
    return XComModel.deserialize_value(row) if row is not None else None


def airflow_base_url() -> str:
    """Where browsers reach the Airflow API server (the plugin lives under it)."""
    from airflow.configuration import conf

    return str(conf.get("api", "base_url", fallback="") or "").rstrip("/")


def _task_name(task_id: str) -> str:
    # Tasks inside a task group carry the group as a prefix: `group.train_candidate`.
    return task_id.rsplit(".", 1)[-1]


class _ReturnValueLink(BaseOperatorLink):
    """Base: answer for `task_ids` only, building the URL from the return value."""

    task_ids: ClassVar[frozenset[str]] = frozenset()

    def url_for(self, ti_key: TaskInstanceKey, value: Any) -> str:
        raise NotImplementedError

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        if _task_name(ti_key.task_id) not in self.task_ids:
            return ""
        value = return_value(ti_key)
        if value is None:
            return ""
        try:
            return self.url_for(ti_key, value)
        except (KeyError, TypeError, ValueError):
            # A task that returned something unexpected gets no button, not a 500 in the UI.
            return ""


class MlflowRunLink(_ReturnValueLink):
    """Training tasks: the candidate's MLflow run (or the parent run of the DAG run)."""

    name = "MLflow run"
    task_ids = frozenset({"train_candidate", "start_tracking_run"})

    def url_for(self, ti_key: TaskInstanceKey, value: Any) -> str:
        run_id = value if isinstance(value, str) else value["run_id"]
        return urls.run_url(urls.mlflow_ui_base(get_settings()), str(run_id)) if run_id else ""


class DataDocsLink(_ReturnValueLink):
    """Validation tasks: their Great Expectations Data Docs page, served by the plugin."""

    name = "Data Docs"
    task_ids = frozenset({"validate_snapshot", "validate_window"})

    def url_for(self, ti_key: TaskInstanceKey, value: Any) -> str:
        page = value.get("data_docs_page")
        return urls.plugin_file_url(airflow_base_url(), "data-docs", get_settings().data_docs_dir, page)


class MonitoringReportLink(_ReturnValueLink):
    """Monitoring tasks: the Evidently report of the window, served by the plugin."""

    name = "Evidently report"
    task_ids = frozenset({"assess_window"})

    def url_for(self, ti_key: TaskInstanceKey, value: Any) -> str:
        report = value.get("report_html")
        return urls.plugin_file_url(airflow_base_url(), "reports", get_settings().reports_dir, report)


class ModelVersionLink(_ReturnValueLink):
    """Registry tasks: the model version in the MLflow UI."""

    name = "Model version"
    task_ids = frozenset({"register_candidate", "promote_candidate"})

    def url_for(self, ti_key: TaskInstanceKey, value: Any) -> str:
        from mlops.config import find_use_case

        version = value if isinstance(value, (str, int)) else value.get("version")
        use_case = use_case_of_dag(ti_key.dag_id)
        if version in (None, "") or use_case is None:
            return ""
        model_name = find_use_case(use_case).model_name
        return urls.model_version_url(urls.mlflow_ui_base(get_settings()), model_name, str(version))


def all_links() -> list[BaseOperatorLink]:
    return [MlflowRunLink(), DataDocsLink(), MonitoringReportLink(), ModelVersionLink()]
