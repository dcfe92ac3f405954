"""Training runs in MLflow tracking: experiments, parent and child runs, and one candidate's record.

Plain arguments in (a fitted pipeline, frames, dicts), `RunRecord`s and strings out: the
training package decides what to log and when; this module only knows how MLflow stores it.
MLflow is imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops.mlflow.client import fluent_client, resume_run, tag_filter
from mlops.mlflow.runs import RunRecord, record
from mlops.naming import TAG_PARENT

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

# Run tags holding the digests MLflow computed for the logged datasets.
TRAINING_DIGEST_TAG = "dataset_digest"
HOLDOUT_DIGEST_TAG = "holdout_digest"

# The packages a logged model pins, at the versions that trained it. MLflow would otherwise
# export all of uv.lock (~260 packages, Airflow included) into every model's requirements.
_MODEL_REQUIREMENTS = ("mlflow", "scikit-learn", "pandas", "numpy", "scipy", "skops")


@dataclass(frozen=True)
class CandidateLog:
    """What a candidate run records about its model, as plain values."""

    params: dict[str, Any]
    source: str
    """The file the training and holdout frames were read from (the snapshot)."""
    target: str
    dataset_name: str
    """The datasets are logged as `<dataset_name>-train` and `<dataset_name>-holdout`."""
    train: pd.DataFrame = field(repr=False)
    holdout: pd.DataFrame = field(repr=False)
    pipeline: Any = field(repr=False)
    """The fitted scikit-learn pipeline, logged as the run's model."""
    model_inputs: pd.DataFrame = field(repr=False)
    """The holdout's model inputs: the signature is inferred on them, the first rows are the input example."""
    metrics: dict[str, float]
    """Holdout metrics, linked to the logged model and the holdout dataset."""
    run_metrics: dict[str, float] = field(default_factory=dict)
    """Metrics of the run itself (timings)."""


class OpenRun:
    """A run open for logging (see `open_run`); every call writes into it."""

    def __init__(self, run: RunRecord) -> None:
        self.run = run

    def log_candidate(self, candidate: CandidateLog) -> str:
        """Params, both datasets (their digests as tags), the model and its metrics; returns the model URI.

        The model goes in with its signature, a five-row input example, pinned requirements
        and the types skops must trust to load it.
        """
        import mlflow
        import mlflow.sklearn
        from mlflow.models import infer_signature

        mlflow.log_params(candidate.params)
        holdout = _log_datasets(candidate)
        features = candidate.model_inputs
        info = mlflow.sklearn.log_model(
            candidate.pipeline,
            name="model",
            signature=infer_signature(features, candidate.pipeline.predict(features)),
            input_example=features.head(5),
            pip_requirements=_pip_requirements(),
            skops_trusted_types=_skops_trusted_types(candidate.pipeline),
        )
        # Linked to the logged model and the holdout, so the model page shows them too.
        mlflow.log_metrics(candidate.metrics, model_id=info.model_id, dataset=holdout)
        for name, value in candidate.run_metrics.items():
            mlflow.log_metric(name, value)
        return str(info.model_uri)

    def log_figures(self, figures: Mapping[str, Any]) -> None:
        """Artifact path -> matplotlib figure; the figures are closed once logged."""
        import matplotlib.pyplot as plt
        import mlflow

        for path, figure in figures.items():
            mlflow.log_figure(figure, path)
        plt.close("all")

    def log_documents(self, documents: Mapping[str, Any]) -> None:
        """Artifact path -> JSON-serialisable value."""
        import mlflow

        for path, document in documents.items():
            mlflow.log_dict(document, path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        import mlflow

        mlflow.set_tags(dict(tags))


@contextmanager
def open_run(run: RunRecord) -> Iterator[OpenRun]:
    """Log into `run` until the block ends; the run then ends FINISHED (FAILED if the block raised)."""
    with resume_run(run.run_id, run.experiment_id):
        yield OpenRun(run)


def _client() -> MlflowClient:
    return fluent_client()


def ensure_experiment(name: str, tags: Mapping[str, str]) -> str:
    """The id of experiment `name`: restored if deleted, created with `tags` if missing."""
    from mlflow.exceptions import MlflowException

    mlflow_client = _client()
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            mlflow_client.restore_experiment(experiment.experiment_id)
        return str(experiment.experiment_id)
    try:
        return str(mlflow_client.create_experiment(name, tags=dict(tags)))
    except MlflowException:
        # Another task created it in the meantime.
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def create_run(experiment_id: str, run_name: str, tags: Mapping[str, str]) -> RunRecord:
    return record(_client().create_run(experiment_id, run_name=run_name, tags=dict(tags)))


def get_run(run_id: str) -> RunRecord:
    return record(_client().get_run(run_id))


def set_tags(run_id: str, tags: Mapping[str, str]) -> None:
    mlflow_client = _client()
    for key, value in tags.items():
        mlflow_client.set_tag(run_id, key, value)


def reopen_run(run_id: str) -> None:
    """Mark a finished run RUNNING again, so that child runs can be created under it."""
    from mlflow.entities import RunStatus

    _client().update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))


def end_run(run_id: str, status: str = "FINISHED") -> None:
    _client().set_terminated(run_id, status=status)


def delete_run(run_id: str) -> None:
    _client().delete_run(run_id)


def child_runs(parent: RunRecord, tags: Mapping[str, str] | None = None) -> list[RunRecord]:
    """The live (not deleted) children of `parent` carrying every tag of `tags`, oldest first."""
    from mlflow.entities import ViewType

    clauses = [tag_filter(TAG_PARENT, parent.run_id), *(tag_filter(k, v) for k, v in (tags or {}).items())]
    runs = _client().search_runs(
        [parent.experiment_id],
        filter_string=" and ".join(clauses),
        run_view_type=ViewType.ACTIVE_ONLY,
        order_by=["attributes.start_time ASC"],
    )
    return [record(run) for run in runs]


def _log_datasets(candidate: CandidateLog) -> Any:
    """Log the training and holdout frames as the run's inputs; returns the holdout dataset."""
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    with warnings.catch_warnings():
        # A local path matches both local artifact sources MLflow registers; either is right.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        # The dataset schema records the snapshot's int columns as they are; nothing enforces it.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        train = from_pandas(
            candidate.train, source=candidate.source, targets=candidate.target, name=f"{candidate.dataset_name}-train"
        )
        holdout = from_pandas(
            candidate.holdout,
            source=candidate.source,
            targets=candidate.target,
            name=f"{candidate.dataset_name}-holdout",
        )
        mlflow.log_input(train, context="training")
        mlflow.log_input(holdout, context="holdout")
    mlflow.set_tags({TRAINING_DIGEST_TAG: train.digest, HOLDOUT_DIGEST_TAG: holdout.digest})
    return holdout


def _skops_trusted_types(pipeline: Any) -> list[str]:
    """Types skops must trust to load our pipeline; only numpy/scipy/sklearn ones are accepted."""
    # On import skops looks for scipy's ufuncs in every loaded module; in a task process that
    # touches Airflow's deprecated-module shims ~1 100 times, and each warning went through the
    # task log: 11 s per candidate. Silenced, the scan costs well under a second.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import skops.io

    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(pipeline))
    unexpected = [t for t in untrusted if not t.startswith(("numpy.", "scipy.", "sklearn."))]
    if unexpected:
        raise ValueError(
            f"the fitted pipeline holds types outside numpy/scipy/scikit-learn ({unexpected}); "
            "only scikit-learn estimators are supported as candidates"
        )
    return list(untrusted)


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in _MODEL_REQUIREMENTS]
