"""Lineage assembled from hand-made records: the aliases over time, the chain, its text, the model card.

The records are what the registry and training write (the same tag names, through
mlops.naming); the end-to-end proof against real servers is tests/dags/test_lineage_reproduce.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from mlops.config import UseCase, find_use_case
from mlops.data.versioning import Availability, CopyCheck
from mlops.lineage.card import NO_LIMITATIONS, render_card
from mlops.lineage.chain import Records, build_chain
from mlops.lineage.history import AliasChange, alias_history, aliases_at
from mlops.lineage.render import render_text
from mlops.lineage.reproduce import compare_metrics
from mlops.mlflow.browse import VersionRecord
from mlops.mlflow.runs import RunRecord
from mlops.naming import (
    TAG_APPROVAL_BY,
    TAG_APPROVAL_DECISION,
    TAG_GATE_PASSED,
    TAG_GATE_REASONS,
    TAG_PROMOTED_AT,
    TAG_PROMOTED_BY,
    TAG_REJECTED_AT,
    TAG_REJECTED_BY,
    TAG_REPLACED,
    TAG_ROLLBACK_AT,
    TAG_ROLLBACK_BY,
    TAG_ROLLBACK_FROM,
    TAG_ROLLBACK_REASON,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MD5 = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def bike() -> UseCase:
    return find_use_case("bike_sharing", CONFIGS)


def promoted(at: str, by: str, replaced: str = "none") -> dict[str, str]:
    return {TAG_PROMOTED_AT: at, TAG_PROMOTED_BY: by, TAG_REPLACED: replaced}


# A history as the registry writes it: v1 promoted; v2 promoted over v1; v3 kept as
# challenger; v1 rolled back to (v2 becomes @previous); v3 promoted by hand later (a rollback).
VERSION_TAGS = {
    "1": {**promoted("2026-01-01T10:00:00+00:00", "train/r1"),
          TAG_ROLLBACK_AT: "2026-01-03T09:00:00+00:00", TAG_ROLLBACK_BY: "ana", TAG_ROLLBACK_REASON: "v2 is off",
          TAG_ROLLBACK_FROM: "2"},
    "2": promoted("2026-01-02T10:00:00+00:00", "train/r2", replaced="1"),
    "3": {TAG_REJECTED_AT: "2026-01-02T12:00:00+00:00", TAG_REJECTED_BY: "train/r3",
          "mlops.rejection_reason": "rmse 130 > max 120",
          TAG_ROLLBACK_AT: "2026-01-04T08:00:00+00:00", TAG_ROLLBACK_BY: "bo", TAG_ROLLBACK_FROM: "1"},
}  # fmt: skip


def changes_of(history: list[AliasChange], version: str) -> list[tuple[str, str, str]]:
    return [(c.at[:13], c.change, c.alias) for c in history if c.version == version]


def test_alias_history_replays_every_move_in_time_order() -> None:
    history = alias_history(VERSION_TAGS.items())
    assert changes_of(history, "1") == [
        ("2026-01-01T10", "gained", "champion"),
        ("2026-01-02T10", "gained", "previous"),
        ("2026-01-02T10", "lost", "champion"),
        ("2026-01-03T09", "gained", "champion"),
        ("2026-01-03T09", "lost", "previous"),
        ("2026-01-04T08", "lost", "champion"),
        ("2026-01-04T08", "gained", "previous"),
    ]
    assert changes_of(history, "2") == [
        ("2026-01-02T10", "gained", "champion"),
        ("2026-01-03T09", "lost", "champion"),
        ("2026-01-03T09", "gained", "previous"),
        ("2026-01-04T08", "lost", "previous"),
    ]
    assert changes_of(history, "3") == [
        ("2026-01-02T12", "gained", "challenger"),
        ("2026-01-04T08", "gained", "champion"),
        ("2026-01-04T08", "lost", "challenger"),
    ]
    rollback = next(c for c in history if c.version == "1" and c.at.startswith("2026-01-03"))
    assert rollback.cause == "rollback requested by ana: v2 is off"


def test_aliases_at_a_moment() -> None:
    history = alias_history(VERSION_TAGS.items())
    assert aliases_at(history, "2", datetime(2026, 1, 2, 11, tzinfo=UTC)) == ["champion"]
    assert aliases_at(history, "2", datetime(2026, 1, 3, 10, tzinfo=UTC)) == ["previous"]
    assert aliases_at(history, "1", datetime(2026, 1, 2, 11, tzinfo=UTC)) == ["previous"]
    assert aliases_at(history, "3", datetime(2026, 1, 1, tzinfo=UTC)) == []


def records(bike: UseCase, **changes: object) -> Records:
    versions = [
        VersionRecord("bike_sharing_cnt", v, "run-" + v, aliases=["champion"] if v == "3" else [], tags=tags)
        for v, tags in VERSION_TAGS.items()
    ]
    version = VersionRecord(
        "bike_sharing_cnt", "2", "run-2", aliases=[], created=datetime(2026, 1, 2, 9, tzinfo=UTC),
        tags={**VERSION_TAGS["2"], "mlops.run_key": "train/r2", TAG_GATE_PASSED: "true",
              TAG_GATE_REASONS: "rmse 35.1 <= max 120", TAG_APPROVAL_DECISION: "approved", TAG_APPROVAL_BY: "ana"},
    )  # fmt: skip
    lineage = {
        "dvc_md5": MD5, "snapshot_path": "/data/snapshot.parquet", "git_commit": "abc123", "git_dirty": "false",
        "uv_lock_sha256": "f" * 64, "airflow_dag_id": "train_bike_sharing", "airflow_run_id": "r2",
        "window_start": "2011-01-01T00:00:00", "window_end": "2011-03-01T00:00:00",
        "reason": "monitoring found retrain",
        "monitoring_report": "/reports/bike_sharing/monitor_bike_sharing_m1/drift.html",
    }  # fmt: skip
    training = RunRecord(
        "run-2", "0", "FINISHED", datetime(2026, 1, 2, 8, tzinfo=UTC),
        metrics={"rmse": 35.1, "r2": 0.8, "fit_seconds": 0.4},
        params={"n_train": "800", "n_holdout": "200", "seed": "42", "estimator": "sklearn.ensemble.X"},
        tags={**lineage, "mlops.candidate_key": "gradient_boosting-x", "mlflow.parentRunId": "parent-2",
              "mlflow.runName": "gradient_boosting-x"},
    )  # fmt: skip
    parent = RunRecord("parent-2", "0", "FINISHED", None, tags={
        **lineage, "data_docs_page": "/ge/page.html", "validation_success": "true",
        "validation_statistics": "40 of 40 expectations met", "mlflow.runName": "train_bike_sharing/r2"})  # fmt: skip
    monitoring = RunRecord("mon-1", "1", "FINISHED", None, metrics={"drift_share": 0.6},
                           tags={"run_key": "monitor_bike_sharing/m1", "monitoring.action": "retrain",
                                 "champion_version": "1"})  # fmt: skip
    base: dict[str, object] = {
        "version": version, "versions": versions, "training_run": training, "parent_run": parent,
        "monitoring_run": monitoring, "use_case": bike, "use_case_origin": "recorded with run run-2",
        "availability": Availability(MD5, [CopyCheck("the DVC cache (/c)", "ok", MD5)]),
        "gate_decision": {"checks": ["rmse 35.1 <= max 120",
                                     "rmse 35.1 is 2.0% worse than champion v1 (34.4); allowed 5.0%"],
                          "candidate_slices": {"season": {"spring": 30.0, "summer": 41.0}},
                          "champion_slices": {"season": {"spring": 33.0}},
                          "slice_rows": {"season": {"spring": 150, "summer": 50}}},
    }  # fmt: skip
    return Records(**{**base, **changes})  # type: ignore[arg-type]


def test_chain_names_each_fact_from_the_record_that_holds_it(bike: UseCase) -> None:
    chain = build_chain(records(bike))
    assert chain.run_key == "train/r2" and chain.registered_at == "2026-01-02T09:00:00+00:00"
    assert [(c.change, c.alias) for c in chain.alias_history] == [
        ("gained", "champion"), ("lost", "champion"), ("gained", "previous"), ("lost", "previous")]  # fmt: skip
    assert chain.training is not None and chain.training.parent_run_id == "parent-2"
    assert chain.training.metrics == {"r2": 0.8, "rmse": 35.1}  # the platform's metrics, not timings
    assert chain.data.restorable is True and chain.data.rows == 1000 and chain.data.dvc_md5 == MD5
    assert chain.data.source.startswith("files ") and chain.data.source.endswith("bike_sharing_hourly.csv")
    assert chain.code.git_commit == "abc123" and chain.code.git_dirty == "false"
    assert chain.validation.result == "passed" and chain.validation.statistics == "40 of 40 expectations met"
    assert chain.trigger is not None and chain.trigger.monitoring_run_id == "mon-1"
    assert chain.trigger.drift_share == 0.6 and chain.trigger.champion_version == "1"
    assert chain.gate.passed is True and chain.gate.candidate_slices["season"]["summer"] == 41.0
    assert chain.approval.describe() == "approved by ana"
    assert chain.to_dict()["data"]["restorable"] is True


def test_what_is_not_recorded_is_said_so(bike: UseCase) -> None:
    bare = RunRecord("run-2", "0", "FINISHED", None)
    chain = build_chain(records(bike, training_run=bare, parent_run=None, monitoring_run=None, availability=None,
                                availability_error="no DVC md5 recorded", gate_decision=None))  # fmt: skip
    assert chain.data.dvc_md5 == "not recorded" and chain.data.restorable is None
    assert chain.data.availability == "no DVC md5 recorded" and chain.trigger is None
    assert chain.code.git_dirty == "not recorded" and chain.validation.result == "not recorded"
    text = render_text(chain)
    assert "trigger: not recorded" in text and "snapshot: DVC md5 not recorded, no DVC md5 recorded" in text


def test_a_corrupt_snapshot_is_shown_as_not_restorable(bike: UseCase) -> None:
    corrupt = Availability(MD5, [CopyCheck("the DVC cache (/c)", "corrupt", "9" * 32),
                                 CopyCheck("DVC remote local (/r)", "missing")])  # fmt: skip
    chain = build_chain(records(bike, availability=corrupt))
    assert chain.data.restorable is False
    assert chain.data.availability.startswith(f"not restorable: the copy of {MD5} in the DVC cache (/c) is corrupt")


def test_a_predictions_role_is_the_alias_its_version_held_when_it_was_logged(bike: UseCase) -> None:
    row = {"request_id": "req-7", "use_case": "bike_sharing", "model_name": "bike_sharing_cnt", "model_version": "2",
           "event_time": "2011-04-01T08:00:00", "logged_at": "2026-01-02T11:30:00", "source": "online",
           "prediction": 181.5, "columns": {"temp": 12.0, "season": "spring", "request_note": "x"}}  # fmt: skip
    chain = build_chain(records(bike, prediction=row))
    assert chain.prediction is not None
    assert chain.prediction.role == "@champion (by the alias history at the time it was logged)"
    assert chain.prediction.inputs == {"temp": 12.0, "season": "spring"}
    assert chain.prediction.other_columns == {"request_note": "x"}
    later = build_chain(records(bike, prediction={**row, "logged_at": "2026-01-05T00:00:00"}))
    assert later.prediction is not None and later.prediction.role.startswith("v2 held no alias")
    logged = build_chain(records(bike, prediction={**row, "columns": {"role": "shadow"}}))
    assert logged.prediction is not None and logged.prediction.role == "shadow (as logged)"
    assert render_text(chain).splitlines()[0] == "prediction req-7 (bike_sharing, online): 181.5"


def test_model_card_has_every_section(bike: UseCase) -> None:
    card = render_card(build_chain(records(bike)), bike)
    headings = [line for line in card.splitlines() if line.startswith("## ")]
    assert headings == [f"## {name}" for name in (
        "Intended use", "Training data", "Features and target", "Holdout metrics", "Metrics per slice", "Gate",
        "Approval", "Lineage", "Known limitations")]  # fmt: skip
    assert bike.description in card and f"owner: {bike.owner}" in card
    assert f"DVC md5 `{MD5}`" in card and "window: [2011-01-01T00:00:00, 2011-03-01T00:00:00)" in card
    assert "| spring | 150 | 30 | 33 |" in card and "| summer | 50 | 41 | – |" in card
    assert "### weathersit (rmse on the holdout)" in card and "Not scored" in card
    assert "The gate passed: rmse 35.1 <= max 120" in card and "approved by ana" in card
    # Each check is a line of its own, even one holding the tag's own separator.
    assert "\n- rmse 35.1 is 2.0% worse than champion v1 (34.4); allowed 5.0%\n" in card
    assert bike.model_card.limitations in card
    unconfigured = bike.model_copy(update={"model_card": bike.model_card.model_copy(update={"limitations": ""})})
    assert NO_LIMITATIONS in render_card(build_chain(records(bike)), unconfigured)


def test_metrics_compare_exactly_by_default_and_within_a_relative_tolerance() -> None:
    recorded = {"rmse": 35.08, "r2": 0.8, "fit_seconds": 1.0}
    exact = compare_metrics(recorded, {"rmse": 35.08, "r2": 0.8}, 0.0)
    assert [(m.metric, m.agrees) for m in exact] == [("r2", True), ("rmse", True)]  # timings are not compared
    off = compare_metrics(recorded, {"rmse": 35.08 + 1e-12, "r2": 0.8}, 0.0)
    assert not off[1].agrees and off[1].difference == pytest.approx(1e-12)
    assert all(m.agrees for m in compare_metrics(recorded, {"rmse": 35.08 + 1e-12, "r2": 0.8}, 1e-9))
    missing = compare_metrics(recorded, {"rmse": 35.08}, 0.0)
    assert missing[0].metric == "r2" and missing[0].reproduced is None and not missing[0].agrees
