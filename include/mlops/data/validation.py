"""Data-validation gate: one Great Expectations suite per use case, run before training.

The only module that imports great_expectations (always inside functions: the import
alone takes seconds, and DAG files import this module). Everything it returns is a plain
dataclass, so a GX upgrade touches this file only.

The file context lives in `settings.great_expectations_dir` (env MLOPS_GE_DIR). Suites,
the pandas datasource, validation definitions and checkpoints are created by `bootstrap`
and committed; `validate` only reads them, so parallel runs never rewrite shared files
(validation results and Data Docs pages are per run, under `uncommitted/`).

    mlops suite bootstrap <use_case> [--reference PATH] [--tolerance 0.1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from mlops._io import file_lock
from mlops.config import FileSource, SklearnSource, UseCase, find_use_case
from mlops.naming import WINDOW_DOCS_SITE, WINDOW_SUITE_SUFFIX
from mlops.settings import get_settings

if TYPE_CHECKING:
    import pandas as pd

DATASOURCE = "mlops_pandas"
BATCH_DEFINITION = "whole_dataframe"
DATA_DOCS_SITE = "local_site"
MAX_DATE_PARAMETER = "max_date"
MIN_ROWS_PARAMETER = "min_rows"
DEFAULT_TOLERANCE = 0.1
# Object columns with more distinct values than this are free text or ids, not categories.
MAX_CATEGORIES = 50

INT_TYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
INT_TYPES += [t.capitalize() for t in INT_TYPES[:4]]  # pandas nullable Int8..Int64
FLOAT_TYPES = ["float16", "float32", "float64", "Float32", "Float64"]
STRING_TYPES = ["str", "StringDtype"]
BOOL_TYPES = ["bool", "boolean"]
DATETIME_TYPES = ["datetime64[ns]", "datetime64[us]", "datetime64[ms]", "datetime64[s]", "DatetimeTZDtype"]
DATE_FORMATS = ["%Y-%m-%d", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"]


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


def validate_features(use_case: UseCase, df: pd.DataFrame, run_id: str = "window") -> ValidationOutcome:
    """Check a production window (the prediction log) against the suite's feature expectations.

    The log carries the features but not the target, the time column or the source's
    other columns, so table-level and non-feature expectations do not apply; too few
    rows is the monitoring decision's own guard. The feature suite is derived from the
    committed one at run time, in an in-memory context, so nothing committed is ever
    written; its checkpoint stores the result under `uncommitted/window_validations/`
    and builds its Data Docs page in the site `WINDOW_DOCS_SITE` (a folder of
    `settings.data_docs_dir`, with its own index, so the training site's index is left alone).
    """
    from great_expectations.checkpoint.actions import UpdateDataDocsAction

    import great_expectations as gx

    features = set(use_case.features.all)
    committed = _context().suites.get(use_case.suite_name)
    context = _window_context()
    suite = context.suites.add(gx.ExpectationSuite(name=f"{use_case.suite_name}{WINDOW_SUITE_SUFFIX}"))
    for expectation in committed.expectations:
        if expectation.configuration.kwargs.get("column") in features:
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


# ---------------------------------------------------------------- bootstrap


def derive_expectations(
    use_case: UseCase, reference: pd.DataFrame, *, tolerance: float = DEFAULT_TOLERANCE
) -> list[ExpectationSpec]:
    """Expectations for `use_case` learned from a reference frame (pure pandas, no GX).

    Numeric ranges are the observed range widened by `tolerance` x its span on each side
    (never below zero for columns that are never negative); null and duplicate fractions
    become `mostly` loosened by `tolerance`; categories are the observed values.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    needed = [*use_case.features.all, use_case.target, *([use_case.time_column] if use_case.time_column else [])]
    missing = [c for c in needed if c not in reference.columns]
    if missing:
        raise ValueError(
            f"reference data for {use_case.name!r} lacks configured columns {missing}; "
            f"it has {list(reference.columns)}. Fix the config or pass the right --reference"
        )
    if reference.empty:
        raise ValueError(f"reference data for {use_case.name!r} has no rows")

    columns = [str(c) for c in reference.columns]
    specs = [
        ExpectationSpec("ExpectTableColumnsToMatchSet", {"column_set": sorted(columns), "exact_match": True}),
        # The floor depends on the caller (training or a monitoring window): a run-time parameter.
        ExpectationSpec("ExpectTableRowCountToBeBetween", {"min_value": {"$PARAMETER": MIN_ROWS_PARAMETER}}),
    ]
    unique_fraction = 1.0 - float(reference.duplicated(keep=False).mean())
    specs.append(
        ExpectationSpec(
            "ExpectCompoundColumnsToBeUnique", {"column_list": columns, **_mostly(unique_fraction, tolerance)}
        )
    )
    categorical = set(use_case.features.categorical)
    if use_case.task == "classification":
        categorical.add(use_case.target)

    for name in columns:
        series = reference[name]
        kind = series.dtype.kind
        specs.append(ExpectationSpec("ExpectColumnValuesToBeInTypeList", {"column": name, "type_list": _types(series)}))
        specs.append(
            ExpectationSpec(
                "ExpectColumnValuesToNotBeNull", {"column": name, **_mostly(float(series.notna().mean()), tolerance)}
            )
        )
        values = series.dropna()
        if name == use_case.time_column:
            specs.extend(_time_expectations(name, values))
        elif name in categorical or (kind in "OSUb" and values.nunique() <= MAX_CATEGORIES):
            domain = sorted(v.item() if hasattr(v, "item") else v for v in values.unique())
            specs.append(ExpectationSpec("ExpectColumnValuesToBeInSet", {"column": name, "value_set": domain}))
        elif kind in "iuf" and not values.empty:
            low, high = _widened(values, tolerance, integer=kind in "iu")
            specs.append(
                ExpectationSpec("ExpectColumnValuesToBeBetween", {"column": name, "min_value": low, "max_value": high})
            )
    return specs


def _types(series: pd.Series) -> list[str]:
    kind = series.dtype.kind
    if kind == "b":
        return BOOL_TYPES
    if kind in "iu":
        return INT_TYPES
    if kind == "f":
        # Float columns may legitimately arrive as ints (e.g. whole-number humidity).
        return [*FLOAT_TYPES, *INT_TYPES]
    if kind == "M":
        return DATETIME_TYPES
    return STRING_TYPES


def _mostly(fraction: float, tolerance: float) -> dict[str, float]:
    """No `mostly` when the reference is perfect: then a single violation is news."""
    if fraction >= 1.0:
        return {}
    return {"mostly": max(0.0, math.floor((fraction - tolerance) * 100) / 100)}


def _widened(values: pd.Series, tolerance: float, *, integer: bool) -> tuple[float, float]:
    low, high = float(values.min()), float(values.max())
    margin = tolerance * (high - low) if high > low else tolerance * max(abs(high), 1.0)
    new_low, new_high = low - margin, high + margin
    if low >= 0:
        new_low = max(0.0, new_low)  # counts, sizes and rates never go negative
    if integer:
        return float(math.floor(new_low)), float(math.ceil(new_high))
    return math.floor(new_low * 1e6) / 1e6, math.ceil(new_high * 1e6) / 1e6


def _time_expectations(name: str, values: pd.Series) -> list[ExpectationSpec]:
    import pandas as pd

    # Not after the run's date: the checkpoint passes it as a suite parameter.
    latest = ExpectationSpec(
        "ExpectColumnMaxToBeBetween", {"column": name, "max_value": {"$PARAMETER": MAX_DATE_PARAMETER}}
    )
    if values.dtype.kind == "M":
        return [latest]
    for fmt in DATE_FORMATS:
        if pd.to_datetime(values, format=fmt, errors="coerce").notna().all():
            return [
                ExpectationSpec("ExpectColumnValuesToMatchStrftimeFormat", {"column": name, "strftime_format": fmt}),
                latest,
            ]
    return [ExpectationSpec("ExpectColumnValuesToBeDateutilParseable", {"column": name}), latest]


def bootstrap_suite(use_case: UseCase, reference_df: pd.DataFrame, *, tolerance: float = DEFAULT_TOLERANCE) -> Path:
    """Derive the suite from config and reference data, save it with its checkpoint; return the suite file."""

    specs = derive_expectations(use_case, reference_df, tolerance=tolerance)
    with _context_lock():
        context = _context()  # first: a suite resolves its store through the current context
        suite = _build_suite(context, use_case, specs, tolerance, len(reference_df))
        context.suites.add_or_update(suite)
        _wire_checkpoint(context, use_case)
    return get_settings().great_expectations_dir / "expectations" / f"{use_case.suite_name}.json"


def _build_suite(context: Any, use_case: UseCase, specs: list[ExpectationSpec], tolerance: float, rows: int) -> Any:
    """A new suite object; expectations unchanged since the saved suite keep their ids (clean git diffs)."""
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
        meta={"bootstrapped_by": "mlops.validation.bootstrap_suite", "tolerance": tolerance, "reference_rows": rows},
    )
    for expectation in suite.expectations:
        expectation.id = known_ids.get(key(expectation.expectation_type, expectation.configuration.kwargs))
    return suite


def load_reference(use_case: UseCase, reference: Path | None = None) -> pd.DataFrame:
    """The reference frame: an explicit CSV/Parquet file, else the use case's own source."""
    import pandas as pd

    if reference is not None:
        return pd.read_parquet(reference) if reference.suffix == ".parquet" else pd.read_csv(reference)
    try:
        from mlops.data import ingestion
    except ImportError:
        pass  # fall back below to the two source kinds that need no connection
    else:
        frame: pd.DataFrame = ingestion.load_source(use_case)
        return frame
    if isinstance(use_case.source, FileSource) and use_case.source_path is not None:
        return load_reference(use_case, use_case.source_path)
    if isinstance(use_case.source, SklearnSource):
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, f"load_{use_case.source.dataset}")(as_frame=True)
        sk_frame: pd.DataFrame = bunch.frame
        return sk_frame.rename(columns=lambda c: str(c).replace(" ", "_"))
    raise ValueError(f"cannot load the source of {use_case.name!r} without mlops.ingestion; pass --reference PATH")


def main(argv: Sequence[str] | None = None, prog: str = "python -m mlops.data.validation") -> int:
    """The suite command line; `mlops suite` is this same parser under another name."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    boot = commands.add_parser("bootstrap", help="derive a use case's suite from reference data and save it")
    boot.add_argument("use_case")
    boot.add_argument("--reference", type=Path, help="CSV or Parquet file; default: the use case's source")
    boot.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="range widening, share of the span")
    args = parser.parse_args(argv)

    use_case = find_use_case(args.use_case)
    reference = load_reference(use_case, args.reference)
    path = bootstrap_suite(use_case, reference, tolerance=args.tolerance)
    print(f"suite {use_case.suite_name!r}: {len(reference)} reference rows -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
