"""What the MLOps page asks of MLflow, through the `mlops.mlflow` seam.

Which experiment, tag and alias hold each fact is the pipeline's naming (mlops.naming);
how to ask MLflow is the seam's (mlops.mlflow.browse, .registry, .runs). This module
puts the two together for the page, and answers in plain records.

One `PageQueries` serves one request: it holds a client for the configured server (no
process-global MLflow state, which matters in the Airflow API server that hosts the
plugin) and remembers the run metrics it has read, since several versions of a page
may point at one run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlops.mlflow import browse, runs
from mlops.mlflow.browse import MetricPoint, VersionRecord
from mlops.mlflow.client import client
from mlops.mlflow.runs import RunRecord
from mlops.naming import (
    ALIASES,
    METRIC_DRIFT_SHARE,
    ROLLOUT_ALIASES,
    TAG_DAG_ID,
    TAG_DAG_RUN_ID,
    TAG_MONITORING_RUN_KEY,
    TAG_RUN_KEY,
    monitoring_experiment,
    run_key,
    training_experiment,
)

if TYPE_CHECKING:
    from mlops.config import UseCase
    from mlops.lineage.chain import Records

PAGE_ALIASES = (*ALIASES, *ROLLOUT_ALIASES)
"""The aliases the page looks up: its alias table shows ALIASES; a rollout alias feeds the rollout panel."""


class PageQueries:
    """The page's questions to the MLflow server at `tracking_uri`."""

    def __init__(self, tracking_uri: str) -> None:
        self._client = client(tracking_uri)
        self._run_metrics: dict[str, dict[str, float]] = {}

    def run_metrics(self, run_id: str) -> dict[str, float]:
        """Every metric of a run; empty if the run is gone (the version pointing at it still shows)."""
        if run_id not in self._run_metrics:
            self._run_metrics[run_id] = browse.run_metrics(self._client, run_id)
        return self._run_metrics[run_id]

    def model_versions(self, model_name: str, recent: int) -> tuple[dict[str, VersionRecord], list[VersionRecord]]:
        """(alias -> version, newest `recent` versions) of a registered model; empty if it is not registered."""
        if not browse.registered_model_exists(self._client, model_name):
            return {}, []
        newest = browse.newest_versions(self._client, model_name, recent)
        by_alias: dict[str, VersionRecord] = {}
        for alias in PAGE_ALIASES:
            found = next((v for v in newest if alias in v.aliases), None)
            found = found or browse.version_by_alias(self._client, model_name, alias)
            if found is not None:
                by_alias[alias] = found
        return by_alias, newest

    def drift_history(self, use_case: str, limit: int) -> tuple[list[MetricPoint], str | None]:
        """The drift share of the newest `limit` monitoring runs of `use_case`, and their experiment's id.

        Each point is the run's last `drift_share`, at the metric's own timestamp: the
        monitored window's end, so a replay of past windows plots in data time.
        """
        experiment = browse.experiment_id(self._client, monitoring_experiment(use_case))
        if experiment is None:
            return [], None
        return browse.last_metric_values(self._client, experiment, METRIC_DRIFT_SHARE, limit), experiment

    def dag_run_versions(self, model_name: str, dag_id: str, dag_run_id: str) -> list[VersionRecord]:
        """Every version the DAG run registered (by the registry's run-key tag), newest first."""
        return browse.versions_tagged(self._client, model_name, TAG_RUN_KEY, run_key(dag_id, dag_run_id))

    def dag_run_mlflow_runs(self, use_case: str, dag_id: str, dag_run_id: str) -> list[RunRecord]:
        """The MLflow runs a DAG run logged: a training run's parent and candidates, then a monitoring run."""
        training = {TAG_DAG_ID: dag_id, TAG_DAG_RUN_ID: dag_run_id}
        monitoring = {TAG_MONITORING_RUN_KEY: run_key(dag_id, dag_run_id)}
        return [
            *browse.runs_tagged(self._client, training_experiment(use_case), training),
            *browse.runs_tagged(self._client, monitoring_experiment(use_case), monitoring),
        ]

    def candidate_version(self, model_name: str, dag_id: str, dag_run_id: str) -> VersionRecord | None:
        """The version a training DAG run registered as its candidate, if it has registered one yet."""
        # Imported on use: the registry module serves the writers, and the plugin's import stays small.
        from mlops.mlflow import registry

        version = registry.find_version_by_run_key(model_name, run_key(dag_id, dag_run_id))
        return browse.model_version(self._client, model_name, version) if version is not None else None

    def lineage_records(self, use_case: UseCase, version: str) -> Records:
        """What the lineage chain of a version is built from (the snapshot's DVC copies hashed)."""
        from mlops.lineage.gather import Target, gather

        return gather(Target(use_case.model_name, version, use_case), mlflow_client=self._client)

    def artifact_text(self, run_id: str, path: str) -> str | None:
        """A text artifact of a run (a model card), or None when the run has none."""
        from mlops.mlflow.lineage import artifact_text

        return artifact_text(self._client, run_id, path)

    def gate_run(self, use_case: str, dag_id: str, dag_run_id: str) -> RunRecord | None:
        """The training DAG run's parent MLflow run, where the gate logged its evidence."""
        return runs.find_parent_run(use_case, dag_id, dag_run_id, mlflow_client=self._client)
