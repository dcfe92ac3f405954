"""The data-validation gate against the committed Great Expectations context.

Each module run copies the committed `great_expectations/` folder to a temp dir and
points MLOPS_GE_DIR there, so validation results and Data Docs never dirty the repo.
Importing GX takes seconds, so the context is shared by the whole module.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.config import UseCase, find_use_case
from mlops.data import suites
from mlops.data.validation import DataValidationError, ValidationOutcome, ensure_valid, validate
from mlops.settings import get_settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIKE_CSV = PROJECT_ROOT / "data" / "raw" / "bike_sharing_hourly.csv"


@pytest.fixture(scope="module")
def bike() -> UseCase:
    return find_use_case("bike_sharing")


@pytest.fixture(scope="module")
def clean_bike() -> pd.DataFrame:
    """The demo's training window (Jan-Feb 2011), about 1,400 rows."""
    df = pd.read_csv(BIKE_CSV)
    return df[(df["dteday"] >= "2011-01-01") & (df["dteday"] < "2011-03-01")].reset_index(drop=True)


def _every_third(df: pd.DataFrame, column: str, value: object) -> pd.DataFrame:
    out = df.copy()
    out.loc[out.index % 3 == 0, column] = value
    return out


def _first_rows(df: pd.DataFrame, column: str, value: object, n: int = 5) -> pd.DataFrame:
    out = df.copy()
    out.loc[out.index < n, column] = value
    return out


# name -> (how to break the clean slice, expected failing expectation type, its column or None)
BAD_INPUTS: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], str, str | None]] = {
    "missing column": (lambda d: d.drop(columns=["temp"]), "expect_table_columns_to_match_set", None),
    "wrong type": (lambda d: d.assign(temp=d["temp"].astype(str)), "expect_column_values_to_be_in_type_list", "temp"),
    "all-null feature": (lambda d: d.assign(hum=np.nan), "expect_column_values_to_not_be_null", "hum"),
    "all-null sparse feature": (lambda d: d.assign(weekday=None), "expect_column_values_to_not_be_null", "weekday"),
    "empty frame": (lambda d: d.iloc[0:0], "expect_table_row_count_to_be_between", None),
    "negative target": (lambda d: d.assign(cnt=-d["cnt"]), "expect_column_values_to_be_between", "cnt"),
    "renamed column": (lambda d: d.rename(columns={"temp": "temp_c"}), "expect_table_columns_to_match_set", None),
    "added column": (lambda d: d.assign(station="A"), "expect_table_columns_to_match_set", None),
    "duplicated rows flood": (
        lambda d: pd.concat([d, d.iloc[: len(d) // 2]], ignore_index=True),
        "expect_compound_columns_to_be_unique",
        "dteday",
    ),
    "NaN flood": (lambda d: _every_third(d, "windspeed", np.nan), "expect_column_values_to_not_be_null", "windspeed"),
    "inf flood": (lambda d: _every_third(d, "windspeed", np.inf), "expect_column_values_to_be_between", "windspeed"),
    "future timestamps": (
        lambda d: _first_rows(d, "dteday", "2999-01-01"),
        "expect_column_max_to_be_between",
        "dteday",
    ),
    "invalid date": (
        lambda d: _first_rows(d, "dteday", "2011-02-30"),
        "expect_column_values_to_match_strftime_format",
        "dteday",
    ),
    "unknown category": (lambda d: _first_rows(d, "season", "monsoon"), "expect_column_values_to_be_in_set", "season"),
    "float target": (lambda d: d.assign(cnt=d["cnt"] + 0.5), "expect_column_values_to_be_in_type_list", "cnt"),
}


def test_clean_bike_slice_passes_and_builds_data_docs(ge_dir: Path, bike: UseCase, clean_bike: pd.DataFrame) -> None:
    assert len(clean_bike) > 1000
    outcome = validate(bike, clean_bike, run_id="manual__clean")

    assert outcome.success, [f.describe() for f in outcome.failed]
    assert outcome.failed == []
    assert outcome.suite == "bike_sharing"
    assert outcome.statistics["evaluated_expectations"] == outcome.statistics["successful_expectations"] > 30
    ensure_valid(outcome)  # does not raise
    assert outcome.data_docs_page is not None
    page = Path(outcome.data_docs_page)
    assert page.is_file() and page.suffix == ".html"
    assert page.is_relative_to(get_settings().data_docs_dir)
    assert "manual__clean" in str(page)
    assert "bike_sharing" in page.read_text(encoding="utf-8")
    assert outcome.to_dict()["data_docs_page"] == outcome.data_docs_page


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_with_named_expectation_and_docs_page(
    case: str, ge_dir: Path, bike: UseCase, clean_bike: pd.DataFrame
) -> None:
    breaker, expectation_type, column = BAD_INPUTS[case]
    outcome = validate(bike, breaker(clean_bike), run_id=f"bad__{case.replace(' ', '_')}")

    assert not outcome.success
    matching = [f for f in outcome.failed if f.expectation_type == expectation_type]
    assert matching, [f.describe() for f in outcome.failed]
    if column is not None:
        assert any(f.column is not None and f.column.startswith(column) for f in matching)
    assert outcome.data_docs_page is not None and Path(outcome.data_docs_page).is_file()

    with pytest.raises(DataValidationError) as raised:
        ensure_valid(outcome)
    message = str(raised.value)
    assert expectation_type in message
    assert column is None or f"({column}" in message
    assert outcome.data_docs_page in message
    assert "mlops suite bootstrap bike_sharing" in message
    assert raised.value.outcome is outcome


def test_failure_messages_say_what_was_seen(ge_dir: Path, bike: UseCase, clean_bike: pd.DataFrame) -> None:
    renamed = validate(bike, clean_bike.rename(columns={"temp": "temp_c"}), run_id="messages_renamed")
    # The schema failure comes first: it explains the column errors listed after it.
    assert renamed.failed[0].expectation_type == "expect_table_columns_to_match_set"
    assert "missing ['temp']" in renamed.failed[0].observed
    assert "unexpected ['temp_c']" in renamed.failed[0].observed
    temp_failures = [f for f in renamed.failed if f.column == "temp"]
    assert temp_failures and all("column is missing from the data" in f.observed for f in temp_failures)

    unknown = validate(bike, _first_rows(clean_bike, "season", "monsoon"), run_id="messages_category")
    (failure,) = unknown.failed
    assert failure.column == "season" and "5 unexpected" in failure.observed and "monsoon" in failure.observed

    empty = validate(bike, clean_bike.iloc[0:0], run_id="messages_empty")
    assert any(f.observed == "observed 0" for f in empty.failed)


def test_as_of_bounds_the_time_column(ge_dir: Path, bike: UseCase, clean_bike: pd.DataFrame) -> None:
    # The slice ends in February 2011: valid for a run dated then, not for one dated in January.
    assert validate(bike, clean_bike, run_id="as_of_feb", as_of=date(2011, 2, 28)).success
    early = validate(bike, clean_bike, run_id="as_of_jan", as_of=date(2011, 1, 31))
    assert [f.expectation_type for f in early.failed] == ["expect_column_max_to_be_between"]


def test_min_rows_defaults_to_training_and_can_be_lowered(
    ge_dir: Path, bike: UseCase, clean_bike: pd.DataFrame
) -> None:
    window = clean_bike.iloc[: bike.monitoring.min_rows + 10]  # a monitoring-sized window
    assert len(window) < bike.training.min_rows
    too_small = validate(bike, window, run_id="small_window")
    assert [f.expectation_type for f in too_small.failed] == ["expect_table_row_count_to_be_between"]
    assert too_small.failed[0].observed == f"observed {len(window)}"
    assert validate(bike, window, run_id="monitoring_window", min_rows=bike.monitoring.min_rows).success


def test_missing_values_within_reference_share_pass(ge_dir: Path, bike: UseCase) -> None:
    # The bike data lacks some weekday and weathersit values; the suite tolerates that share.
    df = pd.read_csv(BIKE_CSV)
    assert df["weekday"].isna().any() and df["weathersit"].isna().any()
    assert validate(bike, df, run_id="whole_file", as_of=date(2012, 12, 31)).success


def test_bootstrap_breast_cancer_passes_reference_and_fails_corrupted_copy(ge_dir: Path) -> None:
    use_case = find_use_case("breast_cancer")
    assert suites.main(["bootstrap", "breast_cancer", "--tolerance", "0.05"]) == 0
    suite_file = ge_dir / "expectations" / "breast_cancer.json"
    assert suite_file.is_file() and '"tolerance": 0.05' in suite_file.read_text(encoding="utf-8")

    reference = suites.load_reference(use_case)
    assert validate(use_case, reference, run_id="bc_reference").success

    shifted = reference.assign(mean_area=reference["mean_area"] * 3, target=reference["target"].replace({1: 2}))
    outcome = validate(use_case, shifted, run_id="bc_shifted")
    failed = {(f.expectation_type, f.column) for f in outcome.failed}
    assert ("expect_column_values_to_be_between", "mean_area") in failed
    assert ("expect_column_values_to_be_in_set", "target") in failed


def test_bootstrap_writes_suite_from_explicit_reference(ge_dir: Path, tmp_path: Path, bike: UseCase) -> None:
    # A fresh use case: its suite, validation definition and checkpoint are created from scratch.
    new_case = bike.model_copy(update={"name": "bike_copy"})
    reference = pd.read_csv(BIKE_CSV).iloc[:2000]
    path = suites.bootstrap_suite(new_case, reference, tolerance=0.2)
    assert path == ge_dir / "expectations" / "bike_copy.json" and path.is_file()
    assert (ge_dir / "checkpoints" / "bike_copy.json").is_file()
    assert validate(new_case, reference, run_id="bike_copy_reference").success


def test_validate_without_suite_says_how_to_create_it(ge_dir: Path, bike: UseCase, clean_bike: pd.DataFrame) -> None:
    with pytest.raises(LookupError, match=r"mlops suite bootstrap no_suite_yet"):
        validate(bike.model_copy(update={"name": "no_suite_yet"}), clean_bike, run_id="x")


def test_derive_expectations_from_config_and_data(bike: UseCase) -> None:
    df = pd.read_csv(BIKE_CSV)
    specs = suites.derive_expectations(bike, df, tolerance=0.1)
    by_key = {(s.type, s.kwargs.get("column")): s.kwargs for s in specs}

    assert set(by_key[("ExpectTableColumnsToMatchSet", None)]["column_set"]) == set(df.columns)
    assert by_key[("ExpectTableRowCountToBeBetween", None)]["min_value"] == {"$PARAMETER": "min_rows"}
    cnt = by_key[("ExpectColumnValuesToBeBetween", "cnt")]
    assert cnt["min_value"] == 0 and cnt["max_value"] > df["cnt"].max()
    assert "float64" not in by_key[("ExpectColumnValuesToBeInTypeList", "cnt")]["type_list"]
    assert by_key[("ExpectColumnValuesToBeInSet", "hr")]["value_set"] == sorted(df["hr"].unique())
    # Sparse columns get a `mostly` below their observed completeness; complete ones none.
    assert 0.8 < by_key[("ExpectColumnValuesToNotBeNull", "weekday")]["mostly"] < df["weekday"].notna().mean()
    assert "mostly" not in by_key[("ExpectColumnValuesToNotBeNull", "temp")]
    assert by_key[("ExpectColumnValuesToMatchStrftimeFormat", "dteday")]["strftime_format"] == "%Y-%m-%d"


def test_derive_expectations_rejects_reference_without_configured_columns(bike: UseCase) -> None:
    df = pd.read_csv(BIKE_CSV, nrows=50).drop(columns=["hum"])
    with pytest.raises(ValueError, match=r"lacks configured columns \['hum'\]"):
        suites.derive_expectations(bike, df)
    with pytest.raises(ValueError, match="tolerance"):
        suites.derive_expectations(bike, pd.read_csv(BIKE_CSV, nrows=50), tolerance=-1)


def test_parallel_validations_leave_the_context_intact(ge_dir: Path, clean_bike: pd.DataFrame, tmp_path: Path) -> None:
    committed = {p: p.read_bytes() for p in ge_dir.rglob("*") if p.is_file() and "uncommitted" not in p.parts}
    data = tmp_path / "clean.parquet"
    clean_bike.to_parquet(data)
    script = textwrap.dedent(
        f"""
        import sys, pandas as pd
        from mlops.config import find_use_case
        from mlops.data.validation import validate
        outcome = validate(find_use_case("bike_sharing"), pd.read_parquet({str(data)!r}), run_id=sys.argv[1])
        sys.exit(0 if outcome.success and outcome.data_docs_page else 1)
        """
    )
    env = {**os.environ, "MLOPS_GE_DIR": str(ge_dir)}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, f"parallel_{i}"], env=env, stderr=subprocess.PIPE)
        for i in range(2)
    ]
    errors = [p.communicate(timeout=600)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    after = {p: p.read_bytes() for p in ge_dir.rglob("*") if p.is_file() and "uncommitted" not in p.parts}
    assert after == committed


def test_outcome_is_plain_data() -> None:
    outcome = ValidationOutcome(success=True, failed=[], statistics={}, data_docs_page=None, suite="s")
    assert outcome.to_dict() == {"success": True, "failed": [], "statistics": {}, "data_docs_page": None, "suite": "s"}
