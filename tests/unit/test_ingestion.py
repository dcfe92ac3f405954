"""Ingestion: sources, bad inputs, windows, snapshots and the holdout split.

Runs on a small slice of the bundled bike-sharing file copied into tmp_path,
with MLOPS_HOME in tmp_path so snapshots and the DVC repo never touch .mlops.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from mlops.config import UseCase
from mlops.data.ingestion import (
    IngestionError,
    Snapshot,
    ingest_snapshot,
    load_source,
    read_snapshot,
    resolve_window,
    split_holdout,
)
from mlops.data.versioning import restore
from mlops.settings import get_settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIKE_CSV = PROJECT_ROOT / "data" / "raw" / "bike_sharing_hourly.csv"
SLICE_ROWS = 24 * 45  # 2011-01-01 .. about 2011-02-16, hourly


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "mlops-home"
    monkeypatch.setenv("MLOPS_HOME", str(home))
    return home


@pytest.fixture
def bike_slice(tmp_path: Path) -> Path:
    """The header and the first SLICE_ROWS lines of the bundled file, byte for byte."""
    lines = BIKE_CSV.read_bytes().splitlines(keepends=True)[: SLICE_ROWS + 1]
    path = tmp_path / "source" / "bike.csv"
    path.parent.mkdir()
    path.write_bytes(b"".join(lines))
    return path


def bike_use_case(source: dict[str, Any] | str, **training: Any) -> UseCase:
    """The shipped bike config pointed at another source and window."""
    raw = yaml.safe_load((PROJECT_ROOT / "configs" / "bike_sharing.yaml").read_text())
    raw["source"] = {"kind": "files", "path": str(source)} if isinstance(source, (str, Path)) else source
    raw["training"] = {**raw["training"], **training}
    return UseCase.model_validate(raw)


def breast_cancer_use_case() -> UseCase:
    raw = yaml.safe_load((PROJECT_ROOT / "configs" / "breast_cancer.yaml").read_text())
    return UseCase.model_validate(raw)


def assert_same_rows(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Equal frames, where Parquet's None and CSV's NaN both mean missing (the slice has gaps)."""
    pd.testing.assert_frame_equal(actual.fillna("<missing>"), expected.fillna("<missing>"))


# ---------------------------------------------------------------- sources


def test_csv_source_keeps_columns_and_types(bike_slice: Path) -> None:
    df = load_source(bike_use_case(bike_slice))
    assert len(df) == SLICE_ROWS
    assert list(df.columns) == BIKE_CSV.read_text().splitlines()[0].split(",")
    # No coercion: the date stays text and categorical codes stay strings, as in the file.
    assert df["dteday"].dtype == object and df["hr"].iloc[0] == "12am"


def test_glob_concatenates_csv_and_parquet_in_sorted_order(bike_slice: Path) -> None:
    df = pd.read_csv(bike_slice)
    folder = bike_slice.parent / "parts"
    folder.mkdir()
    df.iloc[500:].to_csv(folder / "b.csv", index=False)
    df.iloc[:500].to_csv(folder / "a.csv", index=False)
    combined = load_source(bike_use_case(folder / "*.csv"))
    pd.testing.assert_frame_equal(combined, df)

    df.iloc[:500].to_parquet(folder / "a.parquet", index=False)
    df.iloc[500:].to_parquet(folder / "b.parquet", index=False)
    assert_same_rows(load_source(bike_use_case(folder / "*.parquet")), df)


def test_sklearn_breast_cancer_source() -> None:
    use_case = breast_cancer_use_case()
    df = load_source(use_case)
    assert df.shape == (569, 31)
    assert "mean_radius" in df.columns and "worst_fractal_dimension" in df.columns
    assert not any(" " in c for c in df.columns)
    assert set(use_case.features.all) | {"target"} == set(df.columns)
    assert sorted(df["target"].unique().tolist()) == [0, 1]


def test_sql_source_through_resolver(tmp_path: Path, bike_slice: Path) -> None:
    db = tmp_path / "source.db"
    with sqlite3.connect(db) as connection:
        pd.read_csv(bike_slice).to_sql("rides", connection, index=False)
    use_case = bike_use_case({"kind": "sql", "conn_id": "rides_db", "query": "SELECT * FROM rides WHERE hum > 50"})
    asked: list[str] = []

    def resolver(conn_id: str) -> str:
        asked.append(conn_id)
        return f"sqlite:///{db}"

    df = load_source(use_case, resolver)
    assert asked == ["rides_db"]
    assert len(df) == int((pd.read_csv(bike_slice)["hum"] > 50).sum()) and len(df) > 0

    with pytest.raises(IngestionError, match="sql_uri_resolver"):
        load_source(use_case)
    broken = bike_use_case({"kind": "sql", "conn_id": "rides_db", "query": "SELECT * FROM no_such_table"})
    with pytest.raises(IngestionError, match="'rides_db' failed"):
        load_source(broken, resolver)
    with pytest.raises(IngestionError, match="'rides_db' failed.*check the query and the connection"):
        load_source(use_case, lambda conn_id: "nosuchdialect://host/db")


# ---------------------------------------------------------------- bad inputs


def test_no_file_matches(tmp_path: Path) -> None:
    with pytest.raises(IngestionError, match=r"no file matches .*missing/\*\.csv.*check the path"):
        load_source(bike_use_case(tmp_path / "missing" / "*.csv"))


@pytest.mark.parametrize("name", ["empty.csv", "empty.parquet"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(IngestionError, match=r"is empty \(0 bytes\)"):
        load_source(bike_use_case(tmp_path / name))


def test_blank_csv(tmp_path: Path) -> None:
    (tmp_path / "blank.csv").write_text("\n\n")
    with pytest.raises(IngestionError, match="is empty"):
        load_source(bike_use_case(tmp_path / "blank.csv"))


def test_truncated_csv(bike_slice: Path) -> None:
    data = bike_slice.read_bytes()
    bike_slice.write_bytes(data[: len(data) - 30])  # cut inside the last line
    with pytest.raises(IngestionError, match=r"looks truncated: its last line has \d+ of 14 fields"):
        load_source(bike_use_case(bike_slice))


def test_csv_cut_inside_quotes(tmp_path: Path) -> None:
    path = tmp_path / "quoted.csv"
    path.write_text('dteday,note\n2011-01-01,"fine"\n2011-01-02,"cut off he')
    with pytest.raises(IngestionError, match="not a well-formed CSV"):
        load_source(bike_use_case(path))


def test_wrong_encoding(tmp_path: Path, bike_slice: Path) -> None:
    df = pd.read_csv(bike_slice).head(20)
    df.loc[3, "weathersit"] = "Clear ☀ début"
    path = tmp_path / "latin.csv"
    df.assign(weathersit=df["weathersit"].str.replace("☀", "")).to_csv(path, index=False, encoding="latin-1")
    with pytest.raises(IngestionError, match="is not UTF-8.*re-save it as UTF-8"):
        load_source(bike_use_case(path))


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_bad_parquet(tmp_path: Path, bike_slice: Path, damage: str) -> None:
    path = tmp_path / "data.parquet"
    pd.read_csv(bike_slice).to_parquet(path, index=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not parquet at all\n" * 10)
    with pytest.raises(IngestionError, match="not a readable Parquet file.*truncated or corrupt"):
        load_source(bike_use_case(path))


def test_missing_time_column(tmp_path: Path, bike_slice: Path) -> None:
    path = tmp_path / "renamed.csv"
    pd.read_csv(bike_slice).rename(columns={"dteday": "date"}).to_csv(path, index=False)
    with pytest.raises(IngestionError, match=r"time column 'dteday'.*\['date', 'season'"):
        load_source(bike_use_case(path))


def test_unknown_extension_asks_for_format(tmp_path: Path, bike_slice: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_bytes(bike_slice.read_bytes())
    with pytest.raises(IngestionError, match="set source.format"):
        load_source(bike_use_case(path))
    assert len(load_source(bike_use_case({"kind": "files", "path": str(path), "format": "csv"}))) == SLICE_ROWS


def test_unparseable_dates(tmp_path: Path, bike_slice: Path) -> None:
    path = tmp_path / "dates.csv"
    df = pd.read_csv(bike_slice)
    df.loc[5, "dteday"] = "yesterday"
    df.to_csv(path, index=False)
    with pytest.raises(IngestionError, match=r"1 value\(s\) of time column 'dteday'.*'yesterday'"):
        ingest_snapshot(bike_use_case(path), "run1")


# ---------------------------------------------------------------- windows


def test_window_resolution(bike_slice: Path) -> None:
    newest = pd.Timestamp("2011-02-14 17:00")
    ts = pd.Timestamp
    # as_of beats the configured end; days counts back from it.
    use_case = bike_use_case(bike_slice, window={"end": "2011-02-01", "days": 10})
    assert resolve_window(use_case, "2011-02-10", newest) == (ts("2011-01-31"), ts("2011-02-10"))
    assert resolve_window(use_case, None, newest) == (ts("2011-01-22"), ts("2011-02-01"))
    # Without an end the window closes the day after the newest row, so that day is complete.
    assert resolve_window(bike_use_case(bike_slice, window={}), None, newest) == (None, ts("2011-02-15"))
    explicit = bike_use_case(bike_slice, window={"start": "2011-01-05", "days": 3})
    assert resolve_window(explicit, None, newest) == (ts("2011-01-05"), ts("2011-02-15"))
    # Airflow's UTC-aware logical date against naive source dates.
    assert resolve_window(use_case, "2011-02-10T00:00:00+00:00", newest)[1] == ts("2011-02-10")
    assert resolve_window(breast_cancer_use_case(), "2011-02-10", newest) == (None, None)


def test_window_errors(bike_slice: Path) -> None:
    newest = pd.Timestamp("2011-02-14")
    backwards = bike_use_case(bike_slice, window={"start": "2011-03-01", "end": "2011-02-01"})
    with pytest.raises(IngestionError, match="start 2011-03-01 00:00:00 is not before end"):
        resolve_window(backwards, None, newest)
    with pytest.raises(IngestionError, match="as_of 'next tuesday' is not a date"):
        resolve_window(bike_use_case(bike_slice), "next tuesday", newest)


def test_snapshot_holds_exactly_the_window(bike_slice: Path) -> None:
    use_case = bike_use_case(bike_slice, window={"days": 7})
    snapshot = ingest_snapshot(use_case, "scheduled__2011-02-01T00:00:00+00:00", as_of="2011-02-01")
    df = read_snapshot(snapshot.path)
    source = pd.read_csv(bike_slice)
    expected = source[(source["dteday"] >= "2011-01-25") & (source["dteday"] < "2011-02-01")]
    assert_same_rows(df, expected.reset_index(drop=True))
    assert (snapshot.rows, snapshot.window_start, snapshot.window_end) == (
        len(expected),
        "2011-01-25T00:00:00",
        "2011-02-01T00:00:00",
    )
    assert Path(snapshot.path) == (
        get_settings().data_dir
        / "snapshots"
        / "bike_sharing"
        / "scheduled__2011-02-01T00_00_00_00_00"
        / "snapshot.parquet"
    )
    # What XCom carries: plain JSON that rebuilds the same record.
    assert Snapshot.from_dict(json.loads(json.dumps(snapshot.to_dict()))) == snapshot


def test_empty_window_names_window_and_source(bike_slice: Path) -> None:
    use_case = bike_use_case(bike_slice, window={"days": 30})
    window = r"window \[2012-05-02 00:00:00, 2012-06-01 00:00:00\)"
    with pytest.raises(IngestionError, match=rf"bike\.csv fall in the {window}") as err:
        ingest_snapshot(use_case, "run1", as_of="2012-06-01")
    assert "2011-01-01" in str(err.value)  # says where the data actually is
    assert not (get_settings().data_dir / "snapshots").exists()


def test_sklearn_snapshot_has_no_window() -> None:
    snapshot = ingest_snapshot(breast_cancer_use_case(), "run1", as_of="2024-01-01")
    assert (snapshot.rows, snapshot.window_start, snapshot.window_end) == (569, None, None)
    assert snapshot.columns[-1] == "target"


# ---------------------------------------------------------------- re-runs and restore


def test_reingest_same_run_is_idempotent(bike_slice: Path) -> None:
    use_case = bike_use_case(bike_slice, window={"days": 14})
    first = ingest_snapshot(use_case, "manual__1", as_of="2011-02-01")
    first_bytes = Path(first.path).read_bytes()
    second = ingest_snapshot(use_case, "manual__1", as_of="2011-02-01")
    assert second == first
    assert Path(second.path).read_bytes() == first_bytes
    run_dirs = list((get_settings().data_dir / "snapshots" / "bike_sharing").iterdir())
    assert [p.name for p in run_dirs] == ["manual__1"]
    assert sorted(p.name for p in run_dirs[0].iterdir()) == ["snapshot.parquet", "snapshot.parquet.dvc"]


def test_restore_after_source_changed(tmp_path: Path, bike_slice: Path) -> None:
    use_case = bike_use_case(bike_slice, window={"days": 14})
    original = ingest_snapshot(use_case, "manual__1", as_of="2011-02-01")
    original_bytes = Path(original.path).read_bytes()

    # Upstream rewrites history; re-running the same run now versions different data.
    changed = pd.read_csv(bike_slice)
    changed["cnt"] = changed["cnt"] + 1
    changed.to_csv(bike_slice, index=False)
    rerun = ingest_snapshot(use_case, "manual__1", as_of="2011-02-01")
    assert rerun.md5 != original.md5

    restored = restore(original.md5, tmp_path / "restored" / "snapshot.parquet")
    assert restored.read_bytes() == original_bytes
    assert read_snapshot(str(restored))["cnt"].sum() == read_snapshot(rerun.path)["cnt"].sum() - rerun.rows


def test_read_missing_snapshot_says_how_to_restore(tmp_path: Path) -> None:
    with pytest.raises(IngestionError, match="mlops data restore"):
        read_snapshot(str(tmp_path / "gone.parquet"))


# ---------------------------------------------------------------- holdout


def test_time_holdout_is_the_latest_rows_in_stable_order(bike_slice: Path) -> None:
    use_case = bike_use_case(bike_slice, holdout_fraction=0.25)
    df = pd.read_csv(bike_slice)
    shuffled = df.sample(frac=1.0, random_state=3).reset_index(drop=True)
    train, holdout = split_holdout(use_case, shuffled)
    assert len(holdout) == -(-len(df) // 4) and len(train) + len(holdout) == len(df)
    assert train["dteday"].max() <= holdout["dteday"].min()
    # Within a day the incoming order is kept (stable sort), not re-sorted by another column.
    expected = shuffled.sort_values("dteday", kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(pd.concat([train, holdout], ignore_index=True), expected)
    again = split_holdout(use_case, shuffled)
    pd.testing.assert_frame_equal(again[1], holdout)


def test_stratified_holdout_is_seeded_and_keeps_class_balance() -> None:
    use_case = breast_cancer_use_case()
    df = load_source(use_case)
    train, holdout = split_holdout(use_case, df)
    assert len(holdout) == -(-len(df) * 25 // 100)
    assert abs(holdout["target"].mean() - df["target"].mean()) < 0.01
    pd.testing.assert_frame_equal(split_holdout(use_case, df)[1], holdout)
    reseeded = UseCase.model_validate(
        {**use_case.model_dump(), "training": {**use_case.training.model_dump(), "seed": 8}}
    )
    assert not split_holdout(reseeded, df)[1].equals(holdout)
    # Together the two parts are the input, each row exactly once.
    both = pd.concat([train, holdout]).sort_values(list(df.columns)).reset_index(drop=True)
    pd.testing.assert_frame_equal(both, df.sort_values(list(df.columns)).reset_index(drop=True))


def test_random_holdout_without_time_column(bike_slice: Path) -> None:
    raw = bike_use_case(bike_slice).model_dump()
    use_case = UseCase.model_validate({**raw, "time_column": None})
    df = pd.read_csv(bike_slice)
    first = split_holdout(use_case, df)
    second = split_holdout(use_case, df)
    pd.testing.assert_frame_equal(first[1], second[1])
    assert first[1]["dteday"].max() > first[0]["dteday"].min()  # not time-ordered


def test_holdout_needs_two_rows(bike_slice: Path) -> None:
    with pytest.raises(IngestionError, match="widen the window"):
        split_holdout(bike_use_case(bike_slice), pd.read_csv(bike_slice).head(1))
