"""The bundled flight data is exactly what its generator writes, and holds the drift its README promises."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from mlops.config import find_use_case

PROJECT_ROOT = Path(__file__).resolve().parents[2]
GENERATOR = PROJECT_ROOT / "data" / "generators" / "flight_delays.py"
COMMITTED = PROJECT_ROOT / "data" / "raw" / "flight_delays.csv"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("flight_delays_generator", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


@pytest.fixture(scope="module")
def flights() -> pd.DataFrame:
    return pd.read_csv(COMMITTED)


def test_the_committed_file_is_what_the_generator_writes(tmp_path: Path) -> None:
    out = tmp_path / "flight_delays.csv"
    assert _generator().main(["--out", str(out)]) == 0
    regenerated, committed = hashlib.md5(out.read_bytes()).hexdigest(), hashlib.md5(COMMITTED.read_bytes()).hexdigest()
    assert regenerated == committed, (
        f"{COMMITTED} (md5 {committed}) is not what {GENERATOR} writes (md5 {regenerated}): run "
        "`python data/generators/flight_delays.py` and `mlops suite bootstrap flight_delays`, and commit both"
    )
    assert COMMITTED.stat().st_size < 3_000_000


def test_another_seed_gives_other_data() -> None:
    generator = _generator()
    assert generator.generate(1) != generator.generate(2)


def test_the_columns_are_the_configs_with_their_types(flights: pd.DataFrame) -> None:
    use_case = find_use_case("flight_delays")
    assert set(flights.columns) == {use_case.time_column, *use_case.features.all, use_case.target}
    integers = ["dep_hour", "day_of_week", "distance", "seats", "delayed"]
    assert all(flights[c].dtype == "int64" for c in integers), flights.dtypes
    assert all(flights[c].dtype == object for c in use_case.features.categorical)
    assert sorted(flights["delayed"].unique()) == [0, 1]


def _months(flights: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(flights["scheduled_departure"]).dt.month


def test_weather_goes_missing_only_after_the_training_window(flights: pd.DataFrame) -> None:
    weather = ["temperature", "wind_speed", "precipitation", "visibility"]
    months = _months(flights)
    missing = flights[weather].isna()
    assert not missing[months <= 3].any().any(), "no outage before April: the training window is complete"
    # An outage silences the whole station: all four readings go together.
    assert (missing.all(axis=1) == missing.any(axis=1)).all()
    share = missing["temperature"].groupby(months).mean()
    assert 0 < share[4] < 0.01 and share[8:].min() > 0.05 and share[8:].max() < 0.12
    assert flights.drop(columns=weather).notna().all().all()


def test_the_new_carrier_starts_in_july_and_is_delayed_more(flights: pd.DataFrame) -> None:
    first = flights.loc[flights["carrier"] == "NK", "scheduled_departure"].min()
    assert first.startswith("2023-07-01")
    # NK flies mostly in the morning, so compare it with the other carriers at the same airports and hours.
    summer = flights[_months(flights) >= 7].set_index(["origin", "dep_hour"])
    new = summer[summer["carrier"] == "NK"]
    others = summer[(summer["carrier"] != "NK") & summer.index.isin(new.index.unique())]
    assert len(others) > 500 and new["delayed"].mean() > 1.5 * others["delayed"].mean()
