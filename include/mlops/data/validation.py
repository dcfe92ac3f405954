"""Data-validation gate: one Great Expectations suite per use case, run before training.

The only module that imports great_expectations (always inside functions: the import
alone takes seconds, and DAG files import this module). Everything it returns is a plain
dataclass, so a GX upgrade touches this file only.

The file context lives in `settings.great_expectations_dir` (env MLOPS_GE_DIR). Suites,
the pandas datasource, validation definitions and checkpoints are written by `save_suite`
(which `mlops suite bootstrap`, in `mlops.data.suites`, calls) and committed; `validate`
only reads them, so parallel runs never rewrite shared files (validation results and Data
Docs pages are per run, under `uncommitted/`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from mlops._io import file_lock
from mlops.config import UseCase
from mlops.naming import WINDOW_DOCS_SITE, WINDOW_SUITE_SUFFIX
from mlops.settings import get_settings

if TYPE_CHECKING:
    import pandas as pd

DATASOURCE = "mlops_pandas"
BATCH_DEFINITION = "whole_dataframe"
DATA_DOCS_SITE = "local_site"
# Run-time parameters of a suite: the checkpoint passes their values on every run.
MAX_DATE_PARAMETER = "max_date"
MIN_ROWS_PARAMETER = "min_rows"


class DataValidationError(RuntimeError):
    """The batch broke its suite; the message lists the failed expectations and the Data Docs page."""

    def __init__(self, message: str, outcome: ValidationOutcome) -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass(frozen=True)
class FailedExpectation:
    expectation_type: str
    column: str | None
    observed: str
    """A short human summary of what was seen (count and examples, or the error raised)."""

    def describe(self) -> str:
        where = f"({self.column})" if self.column else ""
        return f"{self.expectation_type}{where}: {self.observed}"


@dataclass(frozen=True)
class ValidationOutcome:
    success: bool
    failed: list[FailedExpectation]
    statistics: dict[str, float]
    data_docs_page: str | None
    """File path of the rendered validation-result page, for the UI to link to."""
    suite: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (for XCom and run tags)."""
        return asdict(self)


@dataclass(frozen=True)
class ExpectationSpec:
    """One expectation as plain data: the GX class name and its keyword arguments."""

    type: str
    kwargs: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- validation


def validate(
    use_case: UseCase, df: pd.DataFrame, run_id: str, *, as_of: date | None = None, min_rows: int | None = None
) -> ValidationOutcome:
    """Run the use case's checkpoint on `df`; builds its Data Docs page. Never raises on bad data.

    `as_of` is the newest date the time column may hold (the run's logical date); rows
    dated later are treated as corrupt. Defaults to today. `min_rows` defaults to
    `training.min_rows`; a monitoring window passes `monitoring.min_rows`.
    """
    import great_expectations as gx

    context = _context()
    checkpoint = _get_or_create_checkpoint(context, use_case)
    max_date = (as_of or date.today()).isoformat() + "T23:59:59"
    result = checkpoint.run(
        batch_parameters={"dataframe": df},
        expectation_parameters={
            MAX_DATE_PARAMETER: max_date,
            MIN_ROWS_PARAMETER: use_case.training.min_rows if min_rows is None else min_rows,
        },
        run_id=gx.RunIdentifier(run_name=run_id),
    )
    (identifier, suite_result), *_ = result.run_results.items()
    present = {str(c) for c in df.columns}
    # Table-level failures first: a missing column explains the column errors after it.
    failed = sorted(
        (_failure(r, present) for r in suite_result.results if not r.success),
        key=lambda f: (not f.expectation_type.startswith("expect_table"), f.observed.startswith("could not")),
    )
    statistics = {k: float(v) for k, v in suite_result.statistics.items() if isinstance(v, int | float)}
    return ValidationOutcome(
        success=bool(suite_result.success),
        failed=failed,
        statistics=statistics,
        data_docs_page=_data_docs_page(context, identifier),
        suite=use_case.suite_name,
    )


def validate_snapshot(use_case: UseCase, df: pd.DataFrame, run_id: str, window_end: str | None) -> ValidationOutcome:
    """Validate a training snapshot, judging its dates against the run's window rather than today.

    `window_end` is the snapshot's exclusive window end (`Snapshot.window_end`, ISO); the
    newest date a row may hold is the day before it (the day of the last instant inside).
    A re-run next year still judges the same window the same way. Without a time column
    (no window) the default applies.
    """
    return validate(use_case, df, run_id, as_of=last_date_before(window_end))


def last_date_before(window_end: str | None) -> date | None:
    """The last calendar date inside a window whose exclusive end is `window_end`; None without one."""
    if not window_end:
        return None
    import pandas as pd

    last_instant = pd.Timestamp(window_end) - pd.Timedelta(1, unit="ns")
    return date(last_instant.year, last_instant.month, last_instant.day)


def ensure_valid(outcome: ValidationOutcome) -> None:
    """Raise DataValidationError if the validation failed, so the run stops before training."""
    if outcome.success:
        return
    total = int(outcome.statistics.get("evaluated_expectations", 0))
    lines = [
        f"data validation failed: {len(outcome.failed)} of {total} expectations of suite {outcome.suite!r} failed:",
        *(f"  - {f.describe()}" for f in outcome.failed),
        f"Data Docs: {outcome.data_docs_page or 'not built (see the task log)'}",
        "Fix the input data and re-run; if the change is intended, re-bootstrap the suite with "
        f"`mlops suite bootstrap {outcome.suite}` and commit it.",
    ]
    raise DataValidationError("\n".join(lines), outcome)


def validate_features(
    use_case: UseCase, df: pd.DataFrame, run_id: str = "window", skip_expectations: Collection[str] = ()
) -> ValidationOutcome:
    """Check a production window (the prediction log) against the suite's feature expectations.

    The log carries the features but not the target, the time column or the source's
    other columns, so table-level and non-feature expectations do not apply; too few
    rows is the monitoring decision's own guard. The feature suite is derived from the
    committed one at run time, in an in-memory context, so nothing committed is ever
    written; its checkpoint stores the result under `uncommitted/window_validations/`
    and builds its Data Docs page in the site `WINDOW_DOCS_SITE` (a folder of
    `settings.data_docs_dir`, with its own index, so the training site's index is left alone).
    `skip_expectations` names expectation types (snake case) left out, e.g. the not-null
    checks when the service imputes nulls.
    """
    from great_expectations.checkpoint.actions import UpdateDataDocsAction

    import great_expectations as gx

    features = set(use_case.features.all)
    committed = _context().suites.get(use_case.suite_name)
    context = _window_context()
    suite = context.suites.add(gx.ExpectationSuite(name=f"{use_case.suite_name}{WINDOW_SUITE_SUFFIX}"))
    for expectation in committed.expectations:
        config = expectation.configuration
        if config.kwargs.get("column") in features and config.type not in skip_expectations:
            suite.add_expectation(expectation.copy(update={"id": None}))
    batch_definition = (
        context.data_sources.add_pandas("window")
        .add_dataframe_asset(use_case.name)
        .add_batch_definition_whole_dataframe("window")
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=suite.name, data=batch_definition, suite=suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=suite.name,
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="update_data_docs", site_names=[WINDOW_DOCS_SITE])],
            result_format="SUMMARY",
        )
    )
    # The run name becomes a folder of the results store and the site, which refuse path separators.
    run_name = run_id.replace("/", "_").replace("\\", "_")
    run = checkpoint.run(batch_parameters={"dataframe": df}, run_id=gx.RunIdentifier(run_name=run_name))
    (identifier, result), *_ = run.run_results.items()
    present = {str(c) for c in df.columns}
    return ValidationOutcome(
        success=bool(result.success),
        failed=[_failure(r, present) for r in result.results if not r.success],
        statistics={k: float(v) for k, v in result.statistics.items() if isinstance(v, int | float)},
        data_docs_page=_data_docs_page(context, identifier, WINDOW_DOCS_SITE),
        suite=suite.name,
    )


def _window_context() -> Any:
    """An in-memory context whose validation results and Data Docs site are files under `uncommitted/`."""
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    import great_expectations as gx

    settings = get_settings()
    defaults = InMemoryStoreBackendDefaults()
    # File-backed results, so the site's index lists past windows too, not only this one.
    defaults.stores[defaults.validation_results_store_name]["store_backend"] = {
        "class_name": "TupleFilesystemStoreBackend",
        "base_directory": str(settings.great_expectations_dir / "uncommitted" / "window_validations"),
    }
    site = {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(window_docs_dir())},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "validation_results_limit": 50},
    }
    config = DataContextConfig(
        store_backend_defaults=defaults,
        data_docs_sites={WINDOW_DOCS_SITE: site},
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def window_docs_dir() -> Path:
    """Root of the monitoring windows' Data Docs site: inside the folder the UI plugin serves."""
    return get_settings().data_docs_dir / WINDOW_DOCS_SITE


def _failure(result: Any, present: set[str]) -> FailedExpectation:
    config = result.expectation_config
    kwargs = config.kwargs
    column = kwargs.get("column")
    observed = _observed(result)
    if column is not None and column not in present:
        # GX's own error for an absent column can be as cryptic as "list index out of range".
        observed = "could not be evaluated: the column is missing from the data"
    if "column_list" in kwargs:
        column = _short(", ".join(kwargs["column_list"]), 40)
        if result.result.get("unexpected_count"):
            # Examples would be whole rows; the count is what matters for duplicates.
            res = result.result
            observed = f"{res['unexpected_count']} duplicated rows ({res.get('unexpected_percent', 0):.1f}%)"
    return FailedExpectation(expectation_type=config.type, column=column, observed=observed)


def _observed(result: Any) -> str:
    info = result.exception_info or {}
    # GX nests metric errors by metric id; a top-level error carries `raised_exception` itself.
    errors = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    messages = [str(e.get("exception_message")) for e in errors if e.get("raised_exception")]
    if messages:
        return f"could not be evaluated: {_short(messages[0], 160)}"
    res = result.result or {}
    mismatched = (res.get("details") or {}).get("mismatched")
    if mismatched:
        parts = [f"{k} {sorted(map(str, v))}" for k, v in mismatched.items() if v]
        return "columns " + "; ".join(parts)
    if res.get("unexpected_count"):
        examples = _short(repr(list(res.get("partial_unexpected_list") or [])[:3]), 80)
        return f"{res['unexpected_count']} unexpected values ({res.get('unexpected_percent', 0):.1f}%), e.g. {examples}"
    if "observed_value" in res:
        return f"observed {_short(repr(res['observed_value']), 80)}"
    return "failed"


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _data_docs_page(context: Any, identifier: Any, site_name: str = DATA_DOCS_SITE) -> str | None:
    urls = context.get_docs_sites_urls(resource_identifier=identifier, site_names=[site_name], only_if_exists=True)
    for site in urls:
        url = site.get("site_url")
        if url and url.startswith("file://"):
            return unquote(urlparse(url).path)
    return None


# ---------------------------------------------------------------- context


def _context() -> Any:
    import great_expectations as gx

    root = get_settings().great_expectations_dir
    if not (root / "great_expectations.yml").is_file():
        raise FileNotFoundError(
            f"no Great Expectations context at {root} (great_expectations.yml missing); "
            "set MLOPS_GE_DIR to the project's great_expectations/ folder"
        )
    return gx.get_context(mode="file", context_root_dir=str(root))


def _context_lock() -> contextlib.AbstractContextManager[None]:
    """Serialise writes to the context's shared files across processes."""
    return file_lock(get_settings().great_expectations_dir / "uncommitted" / ".mlops.lock")


def _get_or_create_checkpoint(context: Any, use_case: UseCase) -> Any:
    from great_expectations.exceptions.exceptions import DataContextError

    try:
        return context.checkpoints.get(use_case.suite_name)
    except DataContextError:
        pass
    try:
        context.suites.get(use_case.suite_name)
    except DataContextError:
        raise LookupError(
            f"no expectation suite {use_case.suite_name!r} in {get_settings().great_expectations_dir}; "
            f"create it with `mlops suite bootstrap {use_case.name}` and commit it"
        ) from None
    with _context_lock():
        # Another process may have created it while we waited; get_context re-reads the files.
        return _wire_checkpoint(_context(), use_case)


def _wire_checkpoint(context: Any, use_case: UseCase) -> Any:
    """Create (or update) the datasource, asset, batch definition, validation definition and checkpoint."""
    from great_expectations.checkpoint.actions import UpdateDataDocsAction

    import great_expectations as gx

    name = use_case.suite_name
    try:
        datasource = context.data_sources.get(DATASOURCE)
    except (KeyError, ValueError):
        datasource = context.data_sources.add_pandas(DATASOURCE)
    if use_case.name in datasource.get_asset_names():
        asset = datasource.get_asset(use_case.name)
    else:
        asset = datasource.add_dataframe_asset(use_case.name)
    try:
        batch_definition = asset.get_batch_definition(BATCH_DEFINITION)
    except KeyError:
        batch_definition = asset.add_batch_definition_whole_dataframe(BATCH_DEFINITION)
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=name, data=batch_definition, suite=context.suites.get(name))
    )
    checkpoint = gx.Checkpoint(
        name=name,
        validation_definitions=[definition],
        actions=[UpdateDataDocsAction(name="update_data_docs", site_names=[DATA_DOCS_SITE])],
        result_format="SUMMARY",
    )
    return context.checkpoints.add_or_update(checkpoint)


# ---------------------------------------------------------------- saving a suite


def save_suite(use_case: UseCase, specs: Sequence[ExpectationSpec], meta: Mapping[str, Any]) -> Path:
    """Save the use case's suite (these expectations, this meta) with its checkpoint; return the suite file.

    Expectations unchanged since the saved suite keep their ids, so a re-bootstrap gives a clean git diff.
    """
    with _context_lock():
        context = _context()  # first: a suite resolves its store through the current context
        context.suites.add_or_update(_build_suite(context, use_case, specs, meta))
        _wire_checkpoint(context, use_case)
    return get_settings().great_expectations_dir / "expectations" / f"{use_case.suite_name}.json"


def _build_suite(context: Any, use_case: UseCase, specs: Sequence[ExpectationSpec], meta: Mapping[str, Any]) -> Any:
    from great_expectations.exceptions.exceptions import DataContextError

    import great_expectations as gx

    def key(type_: str, kwargs: dict[str, Any]) -> str:
        return type_ + json.dumps(kwargs, sort_keys=True, default=str)

    try:
        saved = context.suites.get(use_case.suite_name)
        known_ids = {key(e.expectation_type, e.configuration.kwargs): e.id for e in saved.expectations}
    except DataContextError:
        known_ids = {}
    # Built in one go: adding expectations one by one to a suite whose name is already
    # stored would write the stored file once per expectation.
    suite = gx.ExpectationSuite(
        name=use_case.suite_name,
        expectations=[getattr(gx.expectations, spec.type)(**spec.kwargs) for spec in specs],
        meta=dict(meta),
    )
    for expectation in suite.expectations:
        expectation.id = known_ids.get(key(expectation.expectation_type, expectation.configuration.kwargs))
    return suite
