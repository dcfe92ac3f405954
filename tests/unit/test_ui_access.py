"""Which use case a file or a DAG of the MLOps page belongs to: what the plugin's access checks rely on."""

from __future__ import annotations

import pytest

from mlops.ui import files, views


def test_a_use_case_is_read_through_its_training_and_monitoring_dags() -> None:
    assert views.use_case_dag_ids("bike_sharing") == ("train_bike_sharing", "monitor_bike_sharing")


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("validations/bike_sharing/manual__2026-01-01/20260101T000000Z/abc.html", ("suite", "bike_sharing")),
        ("expectations/bike_sharing.html", ("suite", "bike_sharing")),
        ("monitoring_windows/validations/bike_sharing_features/run/20260101T000000Z/a.html", ("suite", "bike_sharing")),
        ("monitoring_windows/expectations/breast_cancer_features.html", ("suite", "breast_cancer")),
        ("static/styles/data_docs_custom_styles_template.css", ("shared", None)),
        ("monitoring_windows/static/fonts/x.woff", ("shared", None)),
        ("index.html", ("index", None)),
        ("monitoring_windows/index.html", ("index", None)),
        # Not a page of a known shape: refused rather than guessed.
        ("monitoring_windows/validations/bike_sharing/run/t/a.html", ("unknown", None)),
        ("validations/bike_sharing.html", ("unknown", None)),
        ("expectations/bike_sharing/x.html", ("unknown", None)),
        ("other/index.html", ("unknown", None)),
        ("monitoring_windows", ("unknown", None)),
        ("", ("unknown", None)),
    ],
)
def test_data_docs_files_are_told_apart(relative: str, expected: tuple[str, str | None]) -> None:
    assert files.data_docs_file_kind(relative) == expected
