"""Expectation suites learned from data: `mlops suite bootstrap <use_case>`.

`derive_expectations` turns a use case's config and a reference frame into plain
`ExpectationSpec`s (pure pandas, testable without Great Expectations); `bootstrap_suite`
saves them through `mlops.data.validation`, the one module that talks to GX.

    mlops suite bootstrap <use_case> [--reference PATH] [--tolerance 0.1]

The reference defaults to the use case's own source, read as ingestion reads it. An SQL
source needs its Airflow connection: `mlops suite` resolves it the way Airflow does outside
a task (`mlops.orchestration.connections`); `python -m mlops.data.suites`, which stands below
the Airflow layer, asks for `--reference` instead.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mlops.config import SqlSource, UseCase, find_use_case
from mlops.data import ingestion, validation
from mlops.data.validation import MAX_DATE_PARAMETER, MIN_ROWS_PARAMETER, ExpectationSpec

if TYPE_CHECKING:
    import pandas as pd

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

SqlUriResolver = Callable[[str], str]


# ---------------------------------------------------------------- deriving expectations


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


# ---------------------------------------------------------------- bootstrapping


def bootstrap_suite(use_case: UseCase, reference_df: pd.DataFrame, *, tolerance: float = DEFAULT_TOLERANCE) -> Path:
    """Derive the suite from config and reference data, save it with its checkpoint; return the suite file."""
    specs = derive_expectations(use_case, reference_df, tolerance=tolerance)
    meta = {
        "bootstrapped_by": "mlops.data.suites.bootstrap_suite",
        "tolerance": tolerance,
        "reference_rows": len(reference_df),
    }
    return validation.save_suite(use_case, specs, meta)


def load_reference(
    use_case: UseCase, reference: Path | None = None, sql_uri_resolver: SqlUriResolver | None = None
) -> pd.DataFrame:
    """The reference frame: an explicit CSV/Parquet file, else the use case's whole source.

    An SQL source is read through `sql_uri_resolver` (conn_id -> SQLAlchemy URL); without
    one the error says how to get one.
    """
    import pandas as pd

    if reference is not None:
        return pd.read_parquet(reference) if reference.suffix == ".parquet" else pd.read_csv(reference)
    if isinstance(use_case.source, SqlSource) and sql_uri_resolver is None:
        raise ValueError(
            f"the source of {use_case.name!r} is the SQL connection {use_case.source.conn_id!r}, which only the "
            f"Airflow layer resolves: run `mlops suite bootstrap {use_case.name}`, or pass --reference PATH"
        )
    frame: pd.DataFrame = ingestion.load_source(use_case, sql_uri_resolver)
    return frame


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The suite subcommands, on `mlops suite` and on `python -m mlops.data.suites` alike."""
    commands = parser.add_subparsers(dest="action", required=True)
    boot = commands.add_parser("bootstrap", help="derive a use case's suite from reference data and save it")
    boot.add_argument("use_case")
    boot.add_argument("--reference", type=Path, help="CSV or Parquet file; default: the use case's source")
    boot.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="range widening, share of the span")
    return parser


def build_parser(prog: str) -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0]))


def run(args: argparse.Namespace, sql_uri_resolver: SqlUriResolver | None = None) -> int:
    """Bootstrap as the parsed options say; 0 on success, 1 with a message on bad input."""
    try:
        use_case = find_use_case(args.use_case)
        reference = load_reference(use_case, args.reference, sql_uri_resolver)
        path = bootstrap_suite(use_case, reference, tolerance=args.tolerance)
    except (ValueError, LookupError, OSError) as exc:
        # Bad config, an unreadable source or reference, an unknown connection: a message, not a traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"suite {use_case.suite_name!r}: {len(reference)} reference rows -> {path}")
    return 0


def main(
    argv: Sequence[str] | None = None,
    prog: str = "python -m mlops.data.suites",
    sql_uri_resolver: SqlUriResolver | None = None,
) -> int:
    """The suite command line; `mlops suite` adds the same options to its own subcommand, with a connection resolver."""
    return run(build_parser(prog).parse_args(argv), sql_uri_resolver)


if __name__ == "__main__":
    sys.exit(main())
