"""The Lineage section of the MLOps page: each alias's version traced back to its data, code and trigger.

The chain is `mlops.lineage`'s, the same the `mlops lineage` command prints; this module
adds the links (MLflow runs and versions, the Data Docs page and the Evidently report the
plugin serves, the Airflow DAG run) and the version's model card as HTML. A version whose
lineage cannot be read still shows, with the error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlops.config import UseCase
from mlops.naming import TAG_MODEL_CARD
from mlops.settings import Settings
from mlops.ui import files, urls

if TYPE_CHECKING:
    from mlops.lineage.chain import Chain
    from mlops.mlflow.browse import VersionRecord
    from mlops.ui.queries import PageQueries


@dataclass(frozen=True)
class LineageView:
    alias: str
    version: str
    chain: Chain | None
    version_url: str
    training_run_url: str | None = None
    parent_run_url: str | None = None
    monitoring_run_url: str | None = None
    data_docs: str | None = None
    """The validation's Data Docs page, relative to the Data Docs root (the plugin serves it)."""
    report: str | None = None
    """The triggering monitoring run's report, relative to the reports root."""
    dag_run_path: str | None = None
    """The training DAG run's page, from the Airflow UI root."""
    card_html: str | None = None
    error: str | None = None


def lineage_view(
    queries: PageQueries, use_case: UseCase, alias: str, record: VersionRecord, settings: Settings
) -> LineageView:
    """One version's chain with its links; what cannot be read lands in `error`."""
    from mlops.lineage.chain import build_chain

    base = urls.mlflow_ui_base(settings)
    version_url = urls.model_version_url(base, record.name, record.version)
    try:
        chain = build_chain(queries.lineage_records(use_case, record.version))
    except Exception as exc:  # one unreadable version must not hide the others
        return LineageView(alias, record.version, None, version_url, error=f"{type(exc).__name__}: {exc}")
    trigger = chain.trigger
    training = chain.training
    return LineageView(
        alias=alias,
        version=record.version,
        chain=chain,
        version_url=version_url,
        training_run_url=_run_link(base, training.run_id if training else None),
        parent_run_url=_run_link(base, training.parent_run_id if training else None),
        monitoring_run_url=_run_link(base, trigger.monitoring_run_id if trigger else None),
        data_docs=files.relative_to_root(settings.data_docs_dir, chain.validation.data_docs_page),
        report=files.relative_to_root(settings.reports_dir, trigger.report) if trigger else None,
        dag_run_path=_dag_run_link(chain),
        card_html=_card_html(queries, record),
    )


def _run_link(base: str, run_id: str | None) -> str | None:
    return urls.run_url(base, run_id) if run_id else None


def _dag_run_link(chain: Chain) -> str | None:
    if chain.airflow_dag_id and chain.airflow_run_id:
        return urls.dag_run_path(chain.airflow_dag_id, chain.airflow_run_id)
    return None


def _card_html(queries: PageQueries, record: VersionRecord) -> str | None:
    from mlops.ui.markdown import markdown_html

    path = record.tags.get(TAG_MODEL_CARD)
    if not path or not record.run_id:
        return None
    text = queries.artifact_text(record.run_id, path)
    return markdown_html(text) if text is not None else None
