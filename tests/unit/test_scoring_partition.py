"""Which partition a batch-scoring run scores, with and without a logical date."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from mlops.serving.batch import run_partition

LOGICAL = datetime(2011, 5, 1, tzinfo=UTC)
RUN_AFTER = datetime(2011, 5, 2, 6, 0, tzinfo=UTC)


def test_an_explicit_partition_wins() -> None:
    assert run_partition("2011-06-30", LOGICAL, RUN_AFTER) == "2011-06-30"


@pytest.mark.parametrize("partition", ["../../etc", "2011-05-01/../../x", "/tmp/x", "2011-13-01", "yesterday"])
def test_a_partition_that_is_not_a_date_is_refused(partition: str) -> None:
    # It becomes the folder name date=<partition>: anything but a date could leave the landing folder.
    with pytest.raises(ValueError, match="is not a date: pass it as YYYY-MM-DD"):
        run_partition(partition, LOGICAL, RUN_AFTER)


def test_the_logical_date_is_the_default_like_ds() -> None:
    assert run_partition(None, LOGICAL, RUN_AFTER) == "2011-05-01"
    assert run_partition("", LOGICAL, RUN_AFTER) == "2011-05-01"


def test_without_a_logical_date_the_run_after_date_is_used() -> None:
    assert run_partition(None, None, RUN_AFTER) == "2011-05-02"


def test_dates_are_taken_in_utc() -> None:
    late_evening_in_new_york = datetime(2011, 5, 2, 22, 0, tzinfo=timezone(timedelta(hours=-4)))
    assert run_partition(None, None, late_evening_in_new_york) == "2011-05-03"


def test_no_date_at_all_says_how_to_name_the_partition() -> None:
    with pytest.raises(ValueError, match=r'conf \{"partition": "YYYY-MM-DD"\}'):
        run_partition(None, None, None)
