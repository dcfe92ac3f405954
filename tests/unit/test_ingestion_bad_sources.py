"""Ingestion refuses timestamps from the future wherever they sit, and names a UTF-16 export."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mlops.config import UseCase
from mlops.data.ingestion import IngestionError, ingest_snapshot

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIKE_CSV = PROJECT_ROOT / "data" / "raw" / "bike_sharing_hourly.csv"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "mlops-home"))
    return tmp_path / "mlops-home"


def _use_case(path: Path) -> UseCase:
    raw = yaml.safe_load((PROJECT_ROOT / "configs" / "bike_sharing.yaml").read_text())
    raw["source"] = {"kind": "files", "path": str(path)}
    return UseCase.model_validate(raw)


def _source(tmp_path: Path, future_dates: list[str]) -> Path:
    frame = pd.read_csv(BIKE_CSV, nrows=24 * 60)
    frame.loc[frame.index[-len(future_dates) :], "dteday"] = future_dates
    path = tmp_path / "bike.csv"
    frame.to_csv(path, index=False)
    return path


def test_rows_dated_after_today_stop_ingestion_even_outside_the_window(tmp_path: Path, home: Path) -> None:
    path = _source(tmp_path, ["2099-01-01", "2099-01-02"])
    # The window (ending 2011-02-15) would simply leave the 2099 rows out: refused instead.
    with pytest.raises(IngestionError) as caught:
        ingest_snapshot(_use_case(path), "run1", as_of="2011-02-15", today=date(2026, 11, 26))
    message = str(caught.value)
    assert "2 row(s)" in message and "'dteday' after today (2026-11-26)" in message
    assert "2099-01-01" in message and "Fix the dates at the source" in message
    assert not (home / "data" / "snapshots").exists()


def test_today_itself_is_not_the_future(tmp_path: Path) -> None:
    path = _source(tmp_path, ["2026-11-26"])
    snapshot = ingest_snapshot(_use_case(path), "run1", as_of="2011-02-15", today=date(2026, 11, 26))
    assert snapshot.rows > 0
    with pytest.raises(IngestionError, match="after today \\(2026-11-25\\)"):
        ingest_snapshot(_use_case(path), "run2", as_of="2011-02-15", today=date(2026, 11, 25))


def test_a_utf16_export_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "bike.csv"
    pd.read_csv(BIKE_CSV, nrows=48).to_csv(path, index=False, encoding="utf-16")
    with pytest.raises(IngestionError, match="UTF-16 byte-order mark.*iconv -f utf-16 -t utf-8"):
        ingest_snapshot(_use_case(path), "run1", as_of="2011-01-02")
