"""The main demo's monitoring lines: the skew check as the MLOps page words it, from the run's summary.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlops.platform.demo import report_skew


def test_each_monitoring_run_prints_its_skew_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    features = {name: {"rows": 730, "differing": 0, "example": None, "share": 0.0} for name in ("temp", "hum")}
    skew = {"rows": 730, "features": features, "schema": [], "findings": [], "note": None}
    (tmp_path / "summary.json").write_text(json.dumps({"skew": skew}))
    report_skew({"report_dir": str(tmp_path)})
    line = capsys.readouterr().out.strip()
    assert line.endswith(
        "  training/serving skew: 730 served rows compared with the offline store "
        "(rows that differ: temp 0.0 %, hum 0.0 %); no skew"
    )


def test_a_run_without_a_skew_check_or_a_report_prints_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "summary.json").write_text(json.dumps({"skew": None}))
    report_skew({"report_dir": str(tmp_path)})
    report_skew({"report_dir": str(tmp_path / "gone")})
    report_skew({})
    assert capsys.readouterr().out == ""


def test_the_readmes_request_to_the_demos_use_case_is_the_documented_example() -> None:
    """The README's curl after the demo sends what the service's own OpenAPI example sends (the hour and the calendar,
    no weather), which tests/integration/test_serving_features.py proves is answered with the store's weather."""
    import re

    from mlops.config import find_use_case
    from mlops.platform.demo import USE_CASE
    from mlops.serving.openapi import example_body

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    found = re.search(rf"curl -s localhost:8000/predict/{USE_CASE} .*?\n\s+-d '(.+?)'", readme)
    assert found, f"no curl to /predict/{USE_CASE} in the README"
    assert json.loads(found.group(1)) == example_body(find_use_case(USE_CASE), None)
