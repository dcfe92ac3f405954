"""Every name the platform writes and later looks up: DAG ids, run keys, experiments, aliases, tags.

One place, with no dependencies, so the writers (training, registry, monitoring) and the
readers (the UI plugin, the demo, the tests) cannot spell a name two ways; the UI imports
this module without pulling in scikit-learn or MLflow.
"""

from __future__ import annotations

from collections.abc import Sequence

# --------------------------------------------------------------------------- DAGs and runs

TRAINING_DAG_PREFIX = "train_"
MONITORING_DAG_PREFIX = "monitor_"
SCORING_DAG_PREFIX = "score_"
LABELS_DAG_PREFIX = "ingest_labels_"
ROLLOUT_DAG_PREFIX = "rollout_"
LOG_SUMMARY_DAG_PREFIX = "summarize_log_"
DAG_PREFIXES = (
    TRAINING_DAG_PREFIX,
    MONITORING_DAG_PREFIX,
    SCORING_DAG_PREFIX,
    LABELS_DAG_PREFIX,
    ROLLOUT_DAG_PREFIX,
    LOG_SUMMARY_DAG_PREFIX,
)
CARD_DAG_PREFIX = "model_card_"
ROLLBACK_DAG_ID = "rollback_model"
SELF_CHECK_DAG_ID = "platform_self_check"
MATERIALIZE_FEATURES_DAG_ID = "materialize_features"


def training_dag_id(use_case: str) -> str:
    return f"{TRAINING_DAG_PREFIX}{use_case}"


def monitoring_dag_id(use_case: str) -> str:
    return f"{MONITORING_DAG_PREFIX}{use_case}"


def scoring_dag_id(use_case: str) -> str:
    return f"{SCORING_DAG_PREFIX}{use_case}"


def log_summary_dag_id(use_case: str) -> str:
    """The DAG that summarises the prediction log's newly landed files for monitoring at volume."""
    return f"{LOG_SUMMARY_DAG_PREFIX}{use_case}"


def labels_dag_id(use_case: str) -> str:
    """The DAG that ingests the use case's labels from its landing folder and SQL query."""
    return f"{LABELS_DAG_PREFIX}{use_case}"


def rollout_dag_id(use_case: str) -> str:
    """The DAG that judges a shadow challenger on live labelled traffic and promotes or rejects it."""
    return f"{ROLLOUT_DAG_PREFIX}{use_case}"


def card_dag_id(use_case: str) -> str:
    """The DAG that refreshes the current champion's model card whenever the champion Asset changes."""
    return f"{CARD_DAG_PREFIX}{use_case}"


def use_case_of_dag(dag_id: str) -> str | None:
    """`train_bike_sharing` -> `bike_sharing`; None for DAGs that belong to no use case."""
    for prefix in DAG_PREFIXES:
        if dag_id.startswith(prefix) and len(dag_id) > len(prefix):
            return dag_id[len(prefix) :]
    return None


def run_key(dag_id: str, run_id: str) -> str:
    """The idempotency key of everything a DAG run writes: a re-run finds its own earlier writes by it."""
    return f"{dag_id}/{run_id}"


def training_slot_variable(use_case: str) -> str:
    """The Airflow Variable naming the training run of `use_case` that started last."""
    return f"mlops_training_slot__{use_case}"


def last_trigger_variable(use_case: str) -> str:
    """The Airflow Variable holding when monitoring last triggered a retraining of `use_case`."""
    return f"mlops_last_retrain_trigger__{use_case}"


# --------------------------------------------------------------------------- MLflow experiments


def training_experiment(use_case: str) -> str:
    return use_case


def monitoring_experiment(use_case: str) -> str:
    return f"{use_case}-monitoring"


def reproduce_experiment(use_case: str) -> str:
    """Where `mlops reproduce` logs its retrainings: apart from the runs that registered models."""
    return f"{use_case}-reproduce"


def report_folder_name(run_key: str) -> str:
    """The folder of a monitoring run's reports under `reports/<use case>/`: the run key made path-safe."""
    return "".join(ch if ch.isalnum() or ch in "-_.=" else "_" for ch in run_key) or "run"


# --------------------------------------------------------------------------- registry aliases

CHAMPION = "champion"
PREVIOUS = "previous"
CHALLENGER = "challenger"
SHADOW = "shadow"
"""A candidate that passed the offline gate, scored beside @champion on live traffic (deployment.strategy: shadow)."""
CANARY = "canary"
"""A candidate that passed the offline gate, answering a growing fraction of live requests (strategy: canary)."""
ROLLOUT_ALIASES = (SHADOW, CANARY)
"""The aliases of a rollout in progress: at most one of them per model at a time."""
ALIASES = (CHAMPION, PREVIOUS, CHALLENGER)

# --------------------------------------------------------------------------- tags on training runs

# Lineage keys are plain (monitoring reads `snapshot_path` to find the reference data);
# machinery keys start with `mlops.`.
TAG_RUN_TYPE = "mlops.run_type"
"""`parent` on the run of a DAG run, `candidate` on each child."""
TAG_CANDIDATE_KEY = "mlops.candidate_key"
TAG_MODEL_URI = "mlops.model_uri"
"""Written last on a candidate run: its presence means the run is complete."""
TAG_PARENT = "mlflow.parentRunId"
TAG_DAG_ID = "airflow_dag_id"
TAG_DAG_RUN_ID = "airflow_run_id"
TAG_DVC_MD5 = "dvc_md5"
TAG_SNAPSHOT_PATH = "snapshot_path"
TAG_DATA_DOCS_PAGE = "data_docs_page"
"""On a training run's parent run: the Data Docs page of its validation."""
TAG_USE_CASE = "mlops.use_case"
TAG_MODEL_NAME = "mlops.model_name"
TAG_GIT_COMMIT = "git_commit"
TAG_GIT_DIRTY = "git_dirty"
"""`true` when the working tree had uncommitted changes at training time (then the commit does not pin the code)."""
TAG_UV_LOCK = "uv_lock_sha256"
TAG_WINDOW_START = "window_start"
TAG_WINDOW_END = "window_end"
TAG_SNAPSHOT_ROWS = "snapshot_rows"
TAG_REASON = "reason"
TAG_MONITORING_REPORT = "monitoring_report"
"""On a training run: the Evidently report of the monitoring run that asked for it."""
TAG_VALIDATION_SUCCESS = "validation_success"
TAG_VALIDATION_STATISTICS = "validation_statistics"
"""On a training run: `<successful> of <evaluated> expectations` of the snapshot's validation."""
TAG_CANDIDATE_SPEC = "mlops.candidate_spec"
"""On a candidate run: its estimator, parameters and key as JSON, so a retraining needs no config grid."""
USE_CASE_ARTIFACT = "lineage/use_case.json"
"""On a candidate run: the use-case config it was trained under (features, seed, holdout), as JSON."""

# --------------------------------------------------------------------------- tags on monitoring runs

TAG_MONITORING_RUN_KEY = "run_key"
"""On a monitoring run: the DAG run that logged it."""
TAG_MONITORING_USE_CASE = "use_case"
TAG_MONITORING_ACTION = "monitoring.action"
"""The decision's action: retrain, none, insufficient_data, data_bug or cooldown."""
TAG_MONITORING_DRIFT_ENGINE = "monitoring.drift_engine"
TAG_MONITORING_CHAMPION_VERSION = "champion_version"
"""The model version whose training data was the reference."""

# --------------------------------------------------------------------------- metrics read back

METRIC_DRIFT_SHARE = "drift_share"
"""On a monitoring run: the share of drifted columns, at the monitored window's end."""
GATE_CANDIDATE_METRIC_PREFIX = "gate_candidate_"
GATE_CHAMPION_METRIC_PREFIX = "gate_champion_"
GATE_DECISION_ARTIFACT = "gate/decision.json"
"""On a training run's parent run: the gate's whole decision, slice scores included."""
"""On a training run's parent run: the gate's scores of candidate and champion on one holdout."""

# --------------------------------------------------------------------------- tags on model versions

TAG_RUN_KEY = "mlops.run_key"
"""The DAG run that registered the version (one version per run key)."""
TAG_PROMOTED_BY = "mlops.promoted_by"
"""The run key whose decision moved `@champion` here, written last: a replay of that run moves nothing."""
TAG_REJECTED_BY = "mlops.rejected_by"
TAG_PROMOTED_AT = "mlops.promoted_at"
"""When `@champion` moved to the version (ISO time, UTC, to the second)."""
TAG_REJECTED_AT = "mlops.rejected_at"
TAG_REJECTION_REASON = "mlops.rejection_reason"
TAG_REPLACED = "mlops.replaced"
TAG_GATE_PASSED = "mlops.gate.passed"
"""`true`/`false`, on the model version and on the parent run."""
TAG_GATE_REASONS = "mlops.gate.reasons"
"""The gate's reasons joined with `; `, a separator some reasons also contain ("...; allowed 5.0%")."""
TAG_GATE_CHECKS = "mlops.gate.checks"
TAG_GATE_CHAMPION_VERSION = "mlops.gate.champion_version"
TAG_GATE_RUN_KEY = "mlops.gate.run_key"
TAG_APPROVAL_DECISION = "mlops.approval.decision"
TAG_APPROVAL_BY = "mlops.approval.by"
TAG_APPROVAL_AT = "mlops.approval.at"
TAG_APPROVAL_REASON = "mlops.approval.reason"
TAG_ROLLBACK_AT = "mlops.rollback.at"
"""On the version a rollback made `@champion`: when, who asked, why, and the version it replaced."""
TAG_ROLLBACK_BY = "mlops.rollback.requested_by"
TAG_ROLLBACK_REASON = "mlops.rollback.reason"
TAG_ROLLBACK_FROM = "mlops.rollback.from_version"
TAG_ROLLED_BACK_AT = "mlops.rolled_back.at"
"""On the version a rollback took `@champion` from: when, who, why, and the version it went to."""
TAG_ROLLED_BACK_BY = "mlops.rolled_back.by"
TAG_ROLLED_BACK_REASON = "mlops.rolled_back.reason"
TAG_ROLLED_BACK_TO = "mlops.rolled_back.to"
# A shadow rollout (deployment.strategy: shadow): set when the training DAG makes the version
# @shadow, and the evidence when rollout_<use case> decides.
TAG_SHADOW_AT = "mlops.rollout.shadow_at"
"""When `@shadow` was set on the version (ISO, UTC): the rollout's log window and its deadline start here."""
TAG_SHADOW_BY = "mlops.rollout.shadow_by"
"""The training run key that made the version `@shadow`, written last: a re-run of that run moves nothing."""
TAG_SHADOW_REASON = "mlops.rollout.shadow_reason"
"""Why the version is `@shadow` and not `@champion` (the gate passed under the shadow strategy)."""
# A canary rollout (deployment.strategy: canary): its step is on the version, so a restarted
# service or scheduler resumes at the same fraction.
TAG_CANARY_AT = "mlops.rollout.canary_at"
"""When `@canary` was set on the version (ISO, UTC): the rollout's log window and its deadline start here."""
TAG_CANARY_BY = "mlops.rollout.canary_by"
"""The training run key that made the version `@canary`, written last."""
TAG_CANARY_REASON = "mlops.rollout.canary_reason"
TAG_CANARY_STEP = "mlops.rollout.canary_step"
"""The index into `deployment.canary_steps` the canary is at: its fraction of requests."""
TAG_CANARY_STEP_AT = "mlops.rollout.canary_step_at"
"""When the canary reached its current step (ISO, UTC): the step's request count starts here."""
TAG_CANARY_BREACH = "mlops.rollout.canary_breach"
"""JSON `{reason, check, at, by}`: a guard breach the service saw; from then on the canary gets 0 % of requests."""
TAG_ROLLOUT_PROGRESS = "mlops.rollout.progress"
"""JSON of the last rollout run's decision and evidence, written on every run (a wait too): what the UI shows."""
TAG_ROLLOUT_DECISION = "mlops.rollout.decision"
"""`promote` or `reject`: what the rollout decided on live traffic (a `wait` writes nothing)."""
TAG_ROLLOUT_REASONS = "mlops.rollout.reasons"
TAG_ROLLOUT_ROWS = "mlops.rollout.rows"
"""Labelled requests the decision compared (shadow: scored by both; canary: the fewer of the two sides)."""
TAG_ROLLOUT_METRIC = "mlops.rollout.metric"
TAG_ROLLOUT_CHAMPION_METRIC = "mlops.rollout.champion_metric"
TAG_ROLLOUT_CANDIDATE_METRIC = "mlops.rollout.candidate_metric"
"""The shadow's or canary's primary metric on the compared live requests."""
TAG_ROLLOUT_CHAMPION_VERSION = "mlops.rollout.champion_version"
TAG_ROLLOUT_INTERVAL = "mlops.rollout.interval"
"""`[low, high] at 95%`: the bootstrap interval of the candidate's relative gain over the champion."""
TAG_ROLLOUT_MCNEMAR = "mlops.rollout.mcnemar"
"""Paired classification only: `McNemar: c requests right by the candidate only, b by the champion only, exact p`."""
TAG_ROLLOUT_EVIDENCE = "mlops.rollout.evidence"
"""The whole evidence as JSON (rows, metrics, interval, decision, reasons)."""
TAG_ROLLOUT_DECIDED_AT = "mlops.rollout.decided_at"
TAG_ROLLOUT_DECIDED_BY = "mlops.rollout.decided_by"
"""The rollout run key that applied the decision, written last."""
TAG_MODEL_CARD = "mlops.model_card"
"""On a model version: the artifact path of its Markdown model card, on the version's training run."""


def model_card_artifact(version: str) -> str:
    """Where a version's model card lies among its training run's artifacts."""
    return f"model_card/v{version}.md"


APPROVAL_TAGS = (TAG_APPROVAL_DECISION, TAG_APPROVAL_BY, TAG_APPROVAL_AT)
# Tags about the gate, a promotion, a rejection, an approval or a rollback: the page lists
# them as recorded. Not the run key or the copied metrics, which say nothing about a decision.
DECISION_TAG_PREFIXES = (
    "mlops.gate.", "mlops.approval.", TAG_REJECTION_REASON, "mlops.rejected", "mlops.promoted",
    TAG_REPLACED, "mlops.rollback.", "mlops.rolled_back.", "mlops.rollout.",
)  # fmt: skip

# --------------------------------------------------------------------------- reproductions

TAG_REPRODUCES = "mlops.reproduces"
"""On a run of `<use case>-reproduce`: the model version (`name/version`) it retrained."""
TAG_CODE_DRIFT = "mlops.code_drift"
"""`true` when the retraining ran on another commit or lock file than the recorded one (`--allow-code-drift`)."""
TAG_REPRODUCED = "mlops.reproduced"
"""`true` when every recorded metric came out the same (within the tolerance)."""

# --------------------------------------------------------------------------- Great Expectations

WINDOW_DOCS_SITE = "monitoring_windows"
"""The Data Docs site of the monitoring windows' validations (beside the snapshots' `local_site`)."""
WINDOW_SUITE_SUFFIX = "_features"
"""A window is validated against `<use case>_features`: the suite without the target's expectations."""

# --------------------------------------------------------------------------- the prediction log

ROLE_CHAMPION = "champion"
ROLE_SHADOW = "shadow"
ROLE_CANARY = "canary"
ROLES = (ROLE_CHAMPION, ROLE_SHADOW, ROLE_CANARY)
"""Which alias answered (or shadowed) a logged prediction; a log without the column is all champion."""

PROBA_COLUMN_PREFIX = "proba__"
"""A classifier's log row holds one probability column per class: `proba__<class label>`."""


def proba_column(label: object) -> str:
    """The log column holding the probability of class `label` (`proba__1`, `proba__yes`)."""
    return f"{PROBA_COLUMN_PREFIX}{label}"


def positive_class(classes: Sequence[object]) -> object:
    """The positive class of a binary classifier: the last of scikit-learn's sorted `classes_`."""
    if len(classes) != 2:
        raise ValueError(f"a binary classifier has two classes, got {list(classes)}")
    return classes[-1]
