"""A training snapshot's dates are judged against its run's window, not against today's date.

`validate_snapshot` is what the training DAG's `validate_snapshot` task runs. Against a
copy of the committed Great Expectations context (results and Data Docs stay out of the repo).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from mlops.config import UseCase, find_use_case
from mlops.data import validation

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIKE_CSV = PROJECT_ROOT / "data" / "raw" / "bike_sharing_hourly.csv"
MAX_DATE_CHECK = "expect_column_max_to_be_between(dteday)"


@pytest.fixture(scope="module")
def bike() -> UseCase:
    return find_use_case("bike_sharing")


def _february(year: int) -> pd.DataFrame:
    """The 2011 rows of February as if they were from `year` (a clean snapshot of one month)."""
    df = pd.read_csv(BIKE_CSV)
    df = df[(df["dteday"] >= "2011-02-01") & (df["dteday"] < "2011-03-01")].reset_index(drop=True)
    return df.assign(dteday=df["dteday"].str.replace("2011-", f"{year}-", regex=False))


def _failed(outcome: validation.ValidationOutcome) -> list[str]:
    return [f.describe().split(":")[0] for f in outcome.failed]


def test_the_last_date_is_the_day_before_the_exclusive_end() -> None:
    assert validation.last_date_before("2011-03-01T00:00:00") == date(2011, 2, 28)
    assert validation.last_date_before("2011-03-01T06:30:00") == date(2011, 3, 1)
    assert validation.last_date_before("2012-03-01") == date(2012, 2, 29)
    assert validation.last_date_before(None) is None


def test_rows_after_today_but_inside_the_window_pass(ge_dir: Path, bike: UseCase) -> None:
    # A run whose window ends after the machine's date (a clock behind, or a planned as_of).
    future = date.today().year + 5
    outcome = validation.validate_snapshot(bike, _february(future), "window-future", f"{future}-03-01T00:00:00")
    assert outcome.success, [f.describe() for f in outcome.failed]


def test_rows_after_the_window_fail_even_if_long_past(ge_dir: Path, bike: UseCase) -> None:
    # February 2011 against a window that ended on 2011-02-15: half the rows are after it.
    outcome = validation.validate_snapshot(bike, _february(2011), "window-past", "2011-02-15T00:00:00")
    assert not outcome.success and _failed(outcome) == [MAX_DATE_CHECK]
    (failure,) = outcome.failed
    assert failure.observed == "observed datetime.datetime(2011, 2, 28, 0, 0)"  # the newest row
