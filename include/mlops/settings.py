"""Every setting the platform reads from the environment, with its default.

One place so that `.env.example`, the README's configuration table and the code
cannot disagree. Nothing here is cached: tests and the stack launcher change the
environment and expect the next call to see it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# include/mlops/settings.py -> project root is two levels above the package.
PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_PROJECT_ROOT = PACKAGE_DIR.parent.parent


# What the training, validation and monitoring tasks import: together 8-15 s per task
# process when imported afresh (measured in benchmarks/training).
DEFAULT_SCHEDULER_PRELOAD = ",".join(
    [
        "pandas", "pyarrow.parquet", "scipy.stats", "sklearn.ensemble", "sklearn.linear_model",
        "sklearn.pipeline", "sklearn.compose", "sklearn.inspection", "matplotlib.pyplot",
        "mlflow", "mlflow.sklearn", "mlflow.models", "mlflow.pyfunc", "great_expectations", "evidently",
        "dvc.repo",
        # Feast: 5-9 s afresh, in each store-backed task (materialize_features, a training run's store
        # check and snapshot join, the monitoring skew check); no threads or handlers at import.
        "feast",
        # skops (MLflow's safe sklearn format) scans every loaded module for scipy's ufuncs when
        # imported; under Airflow each scan hits deprecated-module shims, 1 100 warnings, 11 s
        # per task process. Imported once here, it is already done when a task starts.
        "skops.io",
        # Not our own mlops.* modules: they import in under a second, and a task should run
        # the code on disk, not the code the scheduler saw when it started.
    ]
)  # fmt: skip


def _path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={value!r} must be an integer") from exc


@dataclass(frozen=True)
class Settings:
    project_root: Path
    home: Path
    """Git-ignored folder holding all local state: Airflow and MLflow databases,
    snapshots, the DVC remote, reports, the prediction log, logs and pid files."""
    configs_dir: Path
    great_expectations_dir: Path
    host: str
    airflow_port: int
    mlflow_port: int
    serving_port: int
    mlflow_tracking_uri: str
    prediction_log_uri: str
    """A folder (Parquet partitions by date) or an SQLAlchemy URL (a SQL table)."""
    alert_webhook_url: str | None
    alert_smtp_host: str | None
    alert_smtp_port: int
    alert_email_to: str | None
    alert_email_from: str
    mlflow_ui_url: str = ""
    """MLflow as browsers reach it, for links in the Airflow UI (defaults to the tracking URI)."""
    scheduler_preload: tuple[str, ...] = ()
    """Modules a LocalExecutor scheduler imports before forking its workers (see
    mlops.orchestration.preload); empty turns preloading off."""
    build_git_commit: str | None = None
    """The commit the container image was built from (the Dockerfile's GIT_COMMIT), for
    training runs in a tree without `.git`."""
    build_git_dirty: str | None = None
    """Whether that build's tree had uncommitted changes (the Dockerfile's GIT_DIRTY)."""
    mlflow_auth: bool = False
    """The local stack runs MLflow with its basic-auth app (MLOPS_MLFLOW_AUTH=basic; docs/deployment.md)."""
    feature_redis_url: str | None = None
    """The feature store's online store on Redis (`redis://[:password@]host:port/db`); unset: SQLite under
    MLOPS_HOME (docs/features.md)."""
    feature_postgres_url: str | None = None
    """The feature store's registry and offline store on PostgreSQL (`postgresql://user[:password]@host:port/db`);
    unset: a registry file and Parquet under MLOPS_HOME."""
    feature_project: str = "mlops"
    """Feast's project: several platforms can share one registry database and Redis (it ends every online key)."""

    @property
    def data_dir(self) -> Path:
        """Run-partitioned snapshots; also the root of the DVC repository."""
        return self.home / "data"

    @property
    def dvc_remote_dir(self) -> Path:
        return self.home / "dvc-remote"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def labels_dir(self) -> Path:
        return self.home / "labels"

    @property
    def cards_dir(self) -> Path:
        """The current champion's model card of each use case: `<cards_dir>/<use case>/champion.md`."""
        return self.home / "cards"

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def run_dir(self) -> Path:
        """Pid files and process logs of the local stack."""
        return self.home / "run"

    @property
    def data_docs_dir(self) -> Path:
        return self.great_expectations_dir / "uncommitted" / "data_docs" / "local_site"


def get_settings() -> Settings:
    root = _path("MLOPS_PROJECT_ROOT", DEFAULT_PROJECT_ROOT)
    home = _path("MLOPS_HOME", root / ".mlops")
    host = os.environ.get("MLOPS_HOST", "127.0.0.1")
    mlflow_port = _int("MLOPS_MLFLOW_PORT", 5000)
    return Settings(
        project_root=root,
        home=home,
        configs_dir=_path("MLOPS_CONFIGS_DIR", root / "configs"),
        great_expectations_dir=_path("MLOPS_GE_DIR", root / "great_expectations"),
        host=host,
        airflow_port=_int("MLOPS_AIRFLOW_PORT", 8080),
        mlflow_port=mlflow_port,
        serving_port=_int("MLOPS_SERVING_PORT", 8000),
        mlflow_tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", f"http://{host}:{mlflow_port}"),
        prediction_log_uri=os.environ.get("MLOPS_PREDICTION_LOG_URI", str(home / "predictions")),
        alert_webhook_url=os.environ.get("MLOPS_ALERT_WEBHOOK_URL") or None,
        alert_smtp_host=os.environ.get("MLOPS_ALERT_SMTP_HOST") or None,
        alert_smtp_port=_int("MLOPS_ALERT_SMTP_PORT", 25),
        alert_email_to=os.environ.get("MLOPS_ALERT_EMAIL_TO") or None,
        alert_email_from=os.environ.get("MLOPS_ALERT_EMAIL_FROM", "mlops@localhost"),
        mlflow_ui_url=(
            os.environ.get("MLOPS_MLFLOW_UI_URL")
            or os.environ.get("MLFLOW_TRACKING_URI", f"http://{host}:{mlflow_port}")
        ).rstrip("/"),
        scheduler_preload=tuple(
            name.strip()
            for name in os.environ.get("MLOPS_SCHEDULER_PRELOAD", DEFAULT_SCHEDULER_PRELOAD).split(",")
            if name.strip()
        ),
        build_git_commit=_build_value("MLOPS_GIT_COMMIT"),
        build_git_dirty=_build_value("MLOPS_GIT_DIRTY"),
        mlflow_auth=_mlflow_auth(),
        feature_redis_url=os.environ.get("MLOPS_FEATURE_REDIS_URL") or None,
        feature_postgres_url=os.environ.get("MLOPS_FEATURE_POSTGRES_URL") or None,
        feature_project=os.environ.get("MLOPS_FEATURE_PROJECT") or "mlops",
    )


def _mlflow_auth() -> bool:
    value = os.environ.get("MLOPS_MLFLOW_AUTH", "").strip().lower()
    if value not in ("", "off", "basic"):
        raise ValueError(f"MLOPS_MLFLOW_AUTH must be 'basic' (MLflow's basic-auth app) or unset; got {value!r}")
    return value == "basic"


def _build_value(name: str) -> str | None:
    """A value the image build recorded; blank or "unknown" (the build arg's default) is no value."""
    value = os.environ.get(name, "").strip()
    return value if value and value != "unknown" else None
