"""Use-case configuration: one YAML file per use case, validated at DAG parse time.

A broken file must stop the parse with a message naming the file and the key, so
the schema forbids unknown keys and the estimator check runs without importing
scikit-learn (the parse-cost guard forbids heavy imports at parse time). For the same
reason hyperparameter names are checked by `check_hyperparameters` (`mlops config
check`), which imports scikit-learn, and not at parse time.
"""

from __future__ import annotations

import importlib.util
import re
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlops.settings import get_settings

# Direction of each metric the platform knows, so gates never guess.
REGRESSION_METRICS = {"rmse": "min", "mae": "min", "r2": "max", "mape": "min"}
CLASSIFICATION_METRICS = {
    "accuracy": "max",
    "f1": "max",
    "precision": "max",
    "recall": "max",
    "roc_auc": "max",
    "log_loss": "min",
}
METRIC_DIRECTIONS = {**REGRESSION_METRICS, **CLASSIFICATION_METRICS}


class ConfigError(ValueError):
    """A use-case file is invalid; the message names the file and the key."""


class _Inconsistent(ValueError):
    """Problems found across fields, each with the key it is about.

    A model validator cannot set the location of its error (pydantic reports it at the
    top level), so the keys travel with the error and `_format_error` prints them.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{key}: {message}" for key, message in problems))
        self.problems = problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileSource(_Strict):
    kind: Literal["files"] = "files"
    path: str = Field(description="Path or glob of CSV or Parquet files, relative to the project root.")
    format: Literal["csv", "parquet"] | None = Field(
        default=None, description="Inferred from the file extension when left out."
    )


class SqlSource(_Strict):
    kind: Literal["sql"]
    conn_id: str = Field(description="Airflow connection id.")
    query: str


class SklearnSource(_Strict):
    kind: Literal["sklearn"]
    dataset: Literal["breast_cancer", "wine", "iris", "diabetes", "digits"]


class Features(_Strict):
    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)

    @property
    def all(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @model_validator(mode="after")
    def _not_empty_and_disjoint(self) -> Features:
        if not self.all:
            raise ValueError("list at least one numeric or categorical feature")
        both = set(self.numeric) & set(self.categorical)
        if both:
            raise ValueError(f"columns listed as both numeric and categorical: {sorted(both)}")
        return self


class Window(_Strict):
    start: date | None = None
    end: date | None = Field(
        default=None,
        description="Exclusive end. Overridden by the run's `as_of`; defaults to the newest row in the source.",
    )
    days: int | None = Field(default=None, gt=0, description="Train on the last N days before `end`.")


class Training(_Strict):
    window: Window = Field(default_factory=Window)
    holdout_fraction: float = Field(default=0.2, gt=0, lt=0.9)
    seed: int = 42
    min_rows: int = Field(default=100, gt=0)


class Candidate(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    estimator: str = Field(description="Dotted path of a scikit-learn estimator class.")
    params: dict[str, list[Any]] = Field(
        default_factory=dict, description="Hyperparameter grid: every combination is a candidate run."
    )

    @field_validator("estimator")
    @classmethod
    def _estimator_exists(cls, value: str) -> str:
        check_estimator_path(value)
        return value

    @field_validator("params", mode="before")
    @classmethod
    def _scalars_become_lists(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: v if isinstance(v, list) else [v] for k, v in value.items()}
        return value


class Threshold(_Strict):
    min: float | None = None
    max: float | None = None


class Gate(_Strict):
    primary_metric: str
    thresholds: dict[str, Threshold] = Field(default_factory=dict)
    max_regression: float = Field(
        default=0.0,
        ge=0,
        description="Largest allowed relative loss on the primary metric against the champion (0.05 = 5 %).",
    )
    slices: list[str] = Field(
        default_factory=list,
        description="Categorical features whose values the primary metric is reported per (model card, gate).",
    )
    max_slice_regression: float | None = Field(
        default=None,
        ge=0,
        description=(
            "Largest allowed relative loss of the primary metric in any one slice value against the champion "
            "on the same holdout (0.1 = 10 %); unset: slices are reported, not judged."
        ),
    )


class Schedules(_Strict):
    training: str | None = None
    scoring: str | None = "@daily"
    monitoring: str | None = "@daily"
    log_summaries: str | None = Field(
        default="@hourly",
        description="When summarize_log_<use case> extends the day summaries of the log's new files "
        "(docs/monitoring.md, At volume); None turns it off (the monitoring run then summarises them).",
    )


class Monitoring(_Strict):
    drift_share_threshold: float = Field(default=0.5, gt=0, le=1)
    performance_degradation: float = Field(
        default=0.25, gt=0, description="Relative loss of the primary metric versus the champion's holdout."
    )
    window_days: int = Field(default=7, gt=0)
    min_rows: int = Field(default=100, gt=0)
    cooldown_hours: float = Field(default=6, ge=0)
    max_null_share_increase: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description=(
            "A feature whose null share in the window exceeds the reference's by more than this "
            "(0.1 = 10 points) is a data-quality finding with its own alert: no retraining, no data bug."
        ),
    )
    max_skew_share: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="A store-backed use case: a feature whose served values differ from the offline store's on "
        "more than this share of the window's rows is a skew finding with its own alert (never a retrain).",
    )
    exact_below_rows: int = Field(
        default=2_000_000,
        gt=0,
        description="A Parquet-log window of fewer rows is read whole and judged exactly; a larger one is judged "
        "from its files' merged summaries plus a stratified sample (docs/monitoring.md, At volume).",
    )
    sample_rows: int = Field(
        default=200_000,
        gt=0,
        description="Rows of the stratified sample a window at or above exact_below_rows keeps for the reports, "
        "the validation, the label lag and the performance metrics.",
    )


class Approval(_Strict):
    required: bool = False
    timeout_hours: float = Field(default=24, gt=0)


class Serving(_Strict):
    missing: Literal["impute", "refuse"] = Field(
        default="impute",
        description="A null feature in a request: `impute` answers it (the pipeline imputes) and logs the null; "
        "`refuse` answers 422 naming the field.",
    )


class Deployment(_Strict):
    """How a candidate that passed the offline gate reaches live traffic (issue 18, docs/serving.md)."""

    strategy: Literal["direct", "shadow", "canary"] = Field(
        default="direct",
        description="`direct`: the promote step moves @champion (today's behaviour). `shadow`: it sets @shadow; "
        "the service scores every request with @shadow too, off the response path, and logs those rows with "
        "role `shadow`; the rollout_<use case> DAG then promotes or rejects on labelled live rows. `canary`: it "
        "sets @canary; the service answers `canary_steps[step]` of the requests (sticky by X-Routing-Key or the "
        "request id) with it, rolls it back to 0 % itself on an error or latency breach, and the rollout DAG "
        "advances the step, promotes or rolls back on labelled live rows.",
    )
    shadow_timeout_ms: float = Field(
        default=250,
        gt=0,
        description="A shadow not done with a micro-batch this long after the champion answered it is abandoned "
        "(its rows are not logged) and counted as a time-out.",
    )
    shadow_sample: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="The fraction of micro-batches the shadow scores, drawn at random (1: all). Below 1 the "
        "shadow costs less CPU and the rollout gathers its paired rows that much slower (min_labeled_rows and "
        "deadline_hours are counted on the rows scored by both).",
    )
    shadow_hang_ms: float = Field(
        default=5000,
        gt=0,
        description="A shadow micro-batch still running this long after its deadline (shadow_timeout_ms) is taken "
        "for a hang: the shadow's worker process is killed and started again.",
    )
    min_labeled_rows: int = Field(
        default=200,
        gt=0,
        description="The rollout judges the labelled metric only once this many labelled rows exist (shadow: "
        "scored by both; canary: on each side).",
    )
    deadline_hours: float = Field(
        default=72, gt=0, description="No decision this long after the rollout began: rejected, with the reason."
    )
    confidence: float = Field(default=0.95, gt=0, lt=1, description="Of the bootstrap interval on the primary metric.")
    min_improvement: float = Field(
        default=0.0,
        description="Relative gain of the primary metric the candidate must show: the lower bound of the "
        "interval must exceed it (0.0: any sure improvement; 0.02: at least 2 %). A canary is promoted on it at "
        "its last step.",
    )
    canary_steps: list[float] = Field(
        default_factory=lambda: [0.05, 0.25, 1.0],
        min_length=1,
        description="The canary's fractions of requests, step by step (increasing, each in (0, 1]).",
    )
    canary_min_requests: int = Field(
        default=200,
        gt=0,
        description="Requests the canary must answer at a step (counted in the prediction log) before the rollout "
        "DAG moves it to the next one.",
    )
    canary_max_error_rate: float = Field(
        default=0.01,
        ge=0,
        lt=1,
        description="Share of the canary's requests that may fail (a 5xx, or a time-out past canary_timeout_ms) "
        "before the service rolls it back.",
    )
    canary_timeout_ms: float = Field(
        default=1000, gt=0, description="A canary answer slower than this counts as an error (a time-out)."
    )
    canary_max_latency_ratio: float = Field(
        default=1.5,
        ge=1,
        description="The canary's p99 may be at most this times the champion's p99 (plus canary_latency_slack_ms), "
        "both over the same seconds (serving/canary.py).",
    )
    canary_latency_slack_ms: float = Field(
        default=5,
        ge=0,
        description="Added to the latency bound: at a p99 of one millisecond a ratio alone would trip on noise.",
    )
    canary_guard_min_requests: int = Field(
        default=50,
        gt=0,
        description="The service judges the canary's error rate and p99 only once it has answered this many of "
        "its recent requests (and the champion as many, for the p99).",
    )

    canary_latency_min_requests: int = Field(
        default=500,
        gt=0,
        description="The latency check waits for this many answers on each side in its window: the p99 of 50 "
        "answers is the slowest one, and one request delayed by a busy machine would roll a sound canary back.",
    )
    canary_latency_significance: float = Field(
        default=0.001,
        gt=0,
        lt=1,
        description="The latency check finds the canary slower only when a one-sided Fisher exact test says its "
        "share of answers over the bound exceeds the champion's share over it, in the same seconds, with a "
        "p-value below this (so a few unlucky answers do not roll a sound canary back).",
    )
    canary_latency_checks: int = Field(
        default=3,
        ge=1,
        description="Consecutive latency checks (one every 10 canary answers) that must find the canary slower "
        "before the service rolls it back: a stall that passes does not decide.",
    )

    def canary_step(self, tag: str | None) -> int:
        """The step a version's `mlops.rollout.canary_step` tag names, within `canary_steps`; 0 when the tag is
        unset or unreadable (the smallest fraction is the safe one). The service routes by it and the rollout
        DAG judges by it, so both read it here."""
        try:
            return min(max(int(tag or "0"), 0), len(self.canary_steps) - 1)
        except ValueError:
            return 0

    @field_validator("canary_steps")
    @classmethod
    def _increasing_fractions(cls, steps: list[float]) -> list[float]:
        if any(not 0 < f <= 1 for f in steps):
            raise ValueError(f"each canary step is a fraction of requests in (0, 1]; got {steps}")
        if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            raise ValueError(f"canary steps must increase, e.g. [0.05, 0.25, 1.0]; got {steps}")
        return steps


class FeatureStoreSource(_Strict):
    """Features read from the Feast store (docs/features.md) instead of sent by the client."""

    entity_keys: list[str] = Field(min_length=1, description="Join keys the client sends, e.g. [hour].")
    features: list[str] = Field(min_length=1, description="`feature_view:feature` references.")
    request_features: list[str] = Field(
        default_factory=list, description="Features the client still sends with each request."
    )
    hour_column: str | None = Field(
        default=None,
        description="When `time_column` holds dates only: the column with the hour of day (8 or '8am'). Each "
        "row's event time, the point-in-time join's clock, is then that date at that hour (UTC).",
    )

    @model_validator(mode="after")
    def _references(self) -> FeatureStoreSource:
        problems = [
            f"features[{i}]: {ref!r} is not `feature_view:feature`"
            for i, ref in enumerate(self.features)
            if ref.count(":") != 1 or not all(ref.split(":"))
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def views(self) -> list[str]:
        return sorted({ref.split(":")[0] for ref in self.features})

    @property
    def feature_names(self) -> list[str]:
        return [ref.split(":")[1] for ref in self.features]


class ModelCard(_Strict):
    limitations: str = Field(
        default="",
        description="Known limitations of the use case's models, printed in every model card.",
    )


class LabelsQuery(_Strict):
    conn_id: str = Field(description="Airflow connection id of the database the labels live in.")
    query: str = Field(
        description="Returns columns id (or request_id), label and optionally event_time; it may use the "
        "bound parameters :start (the last successful ingest run's time) and :end (this run's)."
    )


class Labels(_Strict):
    """How ground truth arrives after the prediction: the landing folder, an SQL query, the schedule."""

    path: str | None = Field(
        default=None,
        description="Landing folder of CSV or Parquet label files (id,label[,event_time]); relative paths are "
        "under the project root. Default: MLOPS_HOME/landing/labels/<use case>.",
    )
    sql: LabelsQuery | None = None
    schedule: str | None = Field(default="@hourly", description="Of the ingest_labels_<use case> DAG.")
    classes: list[int | str] | None = Field(
        default=None,
        description="Classification only: the class labels a label may take. Unset: the classes of the "
        "logged predictions' probability columns (proba__<class>), i.e. those the model was trained on.",
    )


# Airflow's FAB auth manager's own roles: each reads every DAG already (Public: anyone, signed in
# or not), so naming one in `access` would restrict nothing or open a use case to everybody.
BUILT_IN_ROLES = ("Admin", "Op", "User", "Viewer", "Public")


def _team_role(name: str) -> str:
    if not name.strip() or name != name.strip():
        raise ValueError(f"{name!r} is not a role name: no blanks around it, e.g. 'team-a-viewers'")
    if name in BUILT_IN_ROLES:
        raise ValueError(
            f"{name!r} is a built-in Airflow role that reads every DAG (Public: anyone); "
            "name a team's role, e.g. 'team-a-viewers' (docs/deployment.md, access per team)"
        )
    return name


TeamRole = Annotated[str, AfterValidator(_team_role)]


class Access(_Strict):
    """Which Airflow roles may see and run this use case's DAGs (FAB auth manager; docs/deployment.md).

    Each role becomes the DAGs' `access_control`: the DAG processor grants it on every DAG of the
    use case, and the MLOps page shows the use case (its reports and Data Docs pages too) only to
    users who may read its DAGs. The roles must exist in Airflow before the DAGs are parsed.
    """

    readers: list[TeamRole] = Field(
        default_factory=list,
        description="Roles that may read the use case's DAGs and runs (and see it on the MLOps page).",
    )
    operators: list[TeamRole] = Field(
        default_factory=list,
        description="Roles that may also trigger, clear and pause them (they read them too).",
    )


SOURCE_KINDS = ("files", "sql", "sklearn")


class UseCase(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Id used in DAG ids and paths.")
    description: str = ""
    owner: str = "mlops"
    task: Literal["regression", "classification"]
    source: FileSource | SqlSource | SklearnSource = Field(discriminator="kind")
    target: str
    time_column: str | None = None
    features: Features
    training: Training = Field(default_factory=Training)
    candidates: list[Candidate] = Field(min_length=1)
    gate: Gate
    model_name: str = Field(description="Registered model name in the MLflow Model Registry.")
    schedule: Schedules = Field(default_factory=Schedules)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    approval: Approval = Field(default_factory=Approval)
    model_card: ModelCard = Field(default_factory=ModelCard)
    serving: Serving = Field(default_factory=Serving)
    labels: Labels = Field(default_factory=Labels)
    deployment: Deployment = Field(default_factory=Deployment)
    feature_store: FeatureStoreSource | None = None
    access: Access | None = Field(
        default=None,
        description="Team roles that may read or operate this use case's DAGs; unset: Airflow's roles decide alone.",
    )
    tags: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> UseCase:
        known = REGRESSION_METRICS if self.task == "regression" else CLASSIFICATION_METRICS
        problems: list[tuple[str, str]] = []
        not_for_task = f"is not a {self.task} metric; use one of {sorted(known)}"
        if self.gate.primary_metric not in known:
            problems.append(("gate.primary_metric", f"{self.gate.primary_metric!r} {not_for_task}"))
        problems += [(f"gate.thresholds.{m}", f"{m!r} {not_for_task}") for m in self.gate.thresholds if m not in known]
        for kind in ("numeric", "categorical"):
            for i, column in enumerate(getattr(self.features, kind)):
                if column == self.target:
                    problems.append((f"features.{kind}[{i}]", f"{column!r} is the target; a model cannot use it"))
        problems += self._slice_problems()
        problems += self._access_problems()
        if self.feature_store is not None:
            for i, name in enumerate(self.feature_store.feature_names):
                if name not in self.features.all:
                    problems.append((f"feature_store.features[{i}]", f"{name!r} is not in features; list it there too"))
        if self.labels.classes is not None and self.task != "classification":
            problems.append(("labels.classes", "a class set is for classification; a regression label is a number"))
        first_with: dict[str, int] = {}
        for i, candidate in enumerate(self.candidates):
            if candidate.name in first_with:
                taken = f"candidates[{first_with[candidate.name]}]"
                problems.append((f"candidates[{i}].name", f"{candidate.name!r} is taken by {taken}; names are unique"))
            first_with.setdefault(candidate.name, i)
        if problems:
            raise _Inconsistent(problems)
        return self

    def _slice_problems(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        categorical = self.features.categorical
        for i, column in enumerate(self.gate.slices):
            if column not in categorical:
                hint = f"one of {categorical}" if categorical else "none is configured (features.categorical)"
                problems.append((f"gate.slices[{i}]", f"{column!r} is not a categorical feature; slice by {hint}"))
        if self.gate.max_slice_regression is not None and not self.gate.slices:
            message = "judges slices, but gate.slices names none; list the features to slice by"
            problems.append(("gate.max_slice_regression", message))
        return problems

    def _access_problems(self) -> list[tuple[str, str]]:
        if self.access is None:
            return []
        problems: list[tuple[str, str]] = []
        seen: dict[str, str] = {}
        for kind in ("readers", "operators"):
            for i, role in enumerate(getattr(self.access, kind)):
                key = f"access.{kind}[{i}]"
                if role in seen:
                    message = f"{role!r} is listed already as {seen[role]}; name each role once (operators read too)"
                    problems.append((key, message))
                seen.setdefault(role, key)
        if not seen:
            problems.append(("access", "names no role; list readers or operators, or leave `access` out"))
        return problems

    @property
    def primary_direction(self) -> str:
        return METRIC_DIRECTIONS[self.gate.primary_metric]

    @property
    def suite_name(self) -> str:
        return self.name

    @property
    def client_fields(self) -> list[str]:
        """What a client sends in each record: every feature; for a store-backed use case, its entity keys and
        the features the store does not hold (the request features), never a store feature (the service 422s it)."""
        if self.feature_store is None:
            return list(self.features.all)
        from_store = set(self.feature_store.feature_names)
        return [*self.feature_store.entity_keys, *(f for f in self.features.all if f not in from_store)]

    @property
    def source_path(self) -> Path | None:
        if isinstance(self.source, FileSource):
            path = Path(self.source.path)
            return path if path.is_absolute() else get_settings().project_root / path
        return None

    @property
    def labels_landing_dir(self) -> Path:
        """Where label files land for the ingest_labels DAG (`labels.path`, else MLOPS_HOME/landing/labels/<name>)."""
        if self.labels.path is None:
            return get_settings().home / "landing" / "labels" / self.name
        path = Path(self.labels.path)
        return path if path.is_absolute() else get_settings().project_root / path


def check_estimator_path(dotted: str) -> None:
    """Check `sklearn.x.Y` names a class, without importing scikit-learn.

    Parse time must stay free of heavy imports, so the check reads the module's
    source: the class must be defined or re-exported there.
    """
    if not re.fullmatch(r"sklearn(\.[a-z_][a-z0-9_]*)+\.[A-Z][A-Za-z0-9]*", dotted):
        raise ValueError(f"{dotted!r} is not a scikit-learn estimator path such as 'sklearn.linear_model.Ridge'")
    module, _, name = dotted.rpartition(".")
    spec = importlib.util.find_spec("sklearn")  # locates the package; does not import it
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("scikit-learn is not installed")
    base = Path(next(iter(spec.submodule_search_locations)))
    rel = Path(*module.split(".")[1:])
    candidates = [base / rel / "__init__.py", (base / rel).with_suffix(".py")]
    source_file = next((p for p in candidates if p.is_file()), None)
    if source_file is None:
        raise ValueError(f"module {module!r} does not exist in scikit-learn")
    if not re.search(rf"\b{re.escape(name)}\b", source_file.read_text(encoding="utf-8")):
        raise ValueError(f"{module!r} has no estimator named {name!r}")


def check_hyperparameters(use_case: UseCase) -> list[str]:
    """The grid keys no candidate's estimator accepts, as `key: message` lines (empty when all are fine).

    Not part of parsing: it imports scikit-learn, which the DAG parse must not (the
    parse-cost guard and its 0.3 s budget), and reading each estimator's signature out
    of scikit-learn's source instead would be slow and miss inherited ones. Run it with
    `mlops config check`; otherwise a misspelt parameter shows only when that candidate
    is fitted, after ingestion and validation.
    """
    import difflib
    import importlib
    import inspect

    problems: list[str] = []
    for i, candidate in enumerate(use_case.candidates):
        module_name, _, class_name = candidate.estimator.rpartition(".")
        estimator = getattr(importlib.import_module(module_name), class_name, None)
        if not inspect.isclass(estimator):
            problems.append(f"candidates[{i}].estimator: {candidate.estimator!r} is not a class in {module_name}")
            continue
        signature = inspect.signature(estimator.__init__)
        accepted = sorted(
            name
            for name, parameter in signature.parameters.items()
            if name != "self" and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
        )
        for name in candidate.params:
            if name not in accepted:
                close = difflib.get_close_matches(name, accepted, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                problems.append(
                    f"candidates[{i}].params.{name}: {class_name} has no parameter {name!r}; "
                    f"{hint}it takes {', '.join(accepted)}"
                )
    return problems


def _key(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the YAML path a person looks for: `candidates[2].params`."""
    key = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            key += f"[{part}]"
        elif part.startswith(("function-after", "tagged-union")):
            continue
        elif i > 0 and loc[i - 1] == "source" and part in SOURCE_KINDS:
            continue  # pydantic puts the union's tag in the path: `source.files.path` is `source.path`
        else:
            key += f".{part}" if key else part
    return key


def _format_error(path: Path, exc: ValidationError) -> str:
    lines = [f"invalid use-case config {path}:"]
    for err in exc.errors():
        error = err.get("ctx", {}).get("error")
        if isinstance(error, _Inconsistent):
            lines += [f"  {key}: {message}" for key, message in error.problems]
            continue
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {_key(err['loc']) or '<top level>'}: {message}")
    return "\n".join(lines)


def load_use_case(path: Path) -> UseCase:
    """Read and validate one YAML file, raising ConfigError naming file and key."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid use-case config {path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid use-case config {path}: the top level must be a mapping of keys")
    try:
        use_case = UseCase.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_error(path, exc)) from None
    if use_case.name != path.stem:
        raise ConfigError(f"invalid use-case config {path}: name: must equal the file name {path.stem!r}")
    return use_case


def load_all(configs_dir: Path | None = None) -> list[UseCase]:
    directory = configs_dir or get_settings().configs_dir
    return [load_use_case(p) for p in sorted(directory.glob("*.yaml"))]


def resolve_use_case(use_case: UseCase | str) -> UseCase:
    """Accept a loaded use case or its name (task arguments arrive as names)."""
    return use_case if isinstance(use_case, UseCase) else find_use_case(use_case)


def find_use_case(name: str, configs_dir: Path | None = None) -> UseCase:
    directory = configs_dir or get_settings().configs_dir
    path = directory / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in directory.glob("*.yaml"))
        raise ConfigError(f"no use case {name!r} in {directory}; known: {known}")
    return load_use_case(path)
