"""mlops.ui.rollout: the rollout panel's view, from the aliases and tags the rollout contract writes.

Pure: plain dicts in, the view out. The tags are spelled with mlops.naming, as the
rollout DAG and the service write them (see CONTRACT.md of issue 18).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mlops import naming
from mlops.config import UseCase, load_use_case
from mlops.ui.rollout import rollout_view

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MLFLOW = "http://mlflow.example:5000"


@pytest.fixture
def use_case() -> UseCase:
    return load_use_case(PROJECT_ROOT / "configs" / "bike_sharing.yaml")


def with_canary_steps(use_case: UseCase, steps: list[float]) -> UseCase:
    deployment = use_case.deployment.model_copy(update={"canary_steps": steps})
    return use_case.model_copy(update={"deployment": deployment})


def shadow_progress(**changes: Any) -> dict[str, Any]:
    progress: dict[str, Any] = {
        "strategy": "shadow", "version": "4", "champion_version": "3",
        "since": "2026-12-01T10:00:00+00:00", "deadline": "2026-12-04T10:00:00+00:00",
        "step": None, "fraction": None, "steps": None,
        "action": "wait", "reasons": ["120 of 200 labelled rows scored by both: waiting for more"],
        "decided_at": "2026-12-02T10:00:00+00:00",
        "evidence": {
            "metric": "rmse", "direction": "min", "candidate_version": "4", "rows": 120,
            "candidate_rows": 900, "champion_rows": 120, "candidate_labelled": 120,
            "champion_metric": 41.2, "candidate_metric": 39.0,
            "gain": 0.053, "interval": [-0.01, 0.11], "confidence": 0.95, "paired": True, "note": None,
        },
        "ends_when": ["promote: 200 labelled rows and the interval's lower bound above 0",
                      "reject: at 2026-12-04 10:00 UTC without a decision"],
    }  # fmt: skip
    return {**progress, **changes}


def canary_progress(**changes: Any) -> dict[str, Any]:
    progress = shadow_progress(strategy="canary", step=1, fraction=0.25, steps=[0.05, 0.25, 1.0])
    # Unpaired: each side's own labelled requests; `rows` is the fewer of the two.
    progress["evidence"] = {**progress["evidence"], "paired": False, "interval": [0.01, 0.09],
                            "rows": 150, "candidate_labelled": 150, "champion_rows": 610}  # fmt: skip
    return {**progress, **changes}


# --------------------------------------------------------------------------- no rollout


def test_no_rollout_alias_means_no_panel(use_case: UseCase) -> None:
    assert rollout_view(use_case, {"champion": "3", "previous": "2"}, {}, MLFLOW) is None


# --------------------------------------------------------------------------- shadow


def test_a_waiting_shadow_shows_its_evidence_and_what_would_end_it(use_case: UseCase) -> None:
    tags = {
        naming.TAG_SHADOW_AT: "2026-12-01T10:00:00+00:00",
        naming.TAG_ROLLOUT_PROGRESS: json.dumps(shadow_progress()),
    }
    view = rollout_view(use_case, {"champion": "3", "shadow": "4"}, tags, MLFLOW)

    assert view is not None
    assert (view.strategy, view.version, view.champion_version) == ("shadow", "4", "3")
    assert view.since == datetime(2026, 12, 1, 10, tzinfo=UTC)
    assert view.deadline == datetime(2026, 12, 4, 10, tzinfo=UTC)
    assert view.fraction is None and view.serving_fraction is None and view.step_label is None
    progress = view.progress
    assert progress is not None and view.progress_note is None
    assert progress.action == "wait" and progress.reasons == shadow_progress()["reasons"]
    assert (progress.rows, progress.candidate_rows) == (120, 900)
    assert progress.candidate_labelled == progress.champion_rows == 120  # paired: the same requests
    assert (progress.metric, progress.direction) == ("rmse", "min")
    assert (progress.candidate_metric, progress.champion_metric) == (39.0, 41.2)
    assert progress.interval == (-0.01, 0.11) and progress.confidence == 0.95 and progress.paired is True
    assert len(progress.ends_when) == 2 and progress.ends_when[1].startswith("reject")
    # The evidence: the version's page in MLflow and the rollout DAG's grid in Airflow.
    assert view.version_url == f"{MLFLOW}/#/models/{use_case.model_name}/versions/4"
    assert view.dag_id == "rollout_bike_sharing" and view.dag_path == "/dags/rollout_bike_sharing"
    assert view.notes == []


def test_a_shadow_before_its_first_rollout_run_says_so(use_case: UseCase) -> None:
    tags = {naming.TAG_SHADOW_AT: "2026-12-01T10:00:00Z"}
    view = rollout_view(use_case, {"champion": "3", "shadow": "4"}, tags, MLFLOW)

    assert view is not None and view.progress is None
    assert view.progress_note is not None and "first run of rollout_bike_sharing is pending" in view.progress_note
    assert not view.progress_unreadable
    # The deadline still shows: the config's hours from when @shadow was set.
    hours = use_case.deployment.deadline_hours
    assert (view.deadline - view.since).total_seconds() == hours * 3600  # type: ignore[operator]


# --------------------------------------------------------------------------- canary


def test_a_canary_at_step_one_with_a_breach_answers_nothing(use_case: UseCase) -> None:
    breach = {"reason": "error rate 4.0% over 0.01 on 60 requests", "check": "error_rate",
              "at": "2026-12-02T11:30:00+00:00", "by": "serving"}  # fmt: skip
    tags = {
        naming.TAG_CANARY_AT: "2026-12-01T10:00:00+00:00",
        naming.TAG_CANARY_STEP: "1",
        naming.TAG_CANARY_STEP_AT: "2026-12-02T09:00:00+00:00",
        naming.TAG_CANARY_BREACH: json.dumps(breach),
        naming.TAG_ROLLOUT_PROGRESS: json.dumps(canary_progress()),
    }
    view = rollout_view(use_case, {"champion": "3", "canary": "4"}, tags, MLFLOW)

    assert view is not None and view.strategy == "canary"
    assert view.steps == [0.05, 0.25, 1.0] and view.step == 1 and view.step_label == "step 2 of 3"
    assert view.fraction == 0.25 and view.serving_fraction == 0.0
    assert view.step_since == datetime(2026, 12, 2, 9, tzinfo=UTC)
    assert view.breach is not None and view.breach.check == "error_rate" and view.breach.by == "serving"
    assert view.breach.reason.startswith("error rate 4.0%")
    assert view.breach.at == datetime(2026, 12, 2, 11, 30, tzinfo=UTC)
    assert view.progress is not None and view.progress.paired is False and view.progress.interval == (0.01, 0.09)
    assert (view.progress.rows, view.progress.candidate_labelled, view.progress.champion_rows) == (150, 150, 610)


def test_a_canary_without_a_breach_answers_its_step(use_case: UseCase) -> None:
    tags = {naming.TAG_CANARY_STEP: "0", naming.TAG_ROLLOUT_PROGRESS: json.dumps(canary_progress(step=0))}
    view = rollout_view(use_case, {"canary": "4"}, tags, MLFLOW)

    assert view is not None and view.breach is None
    assert view.fraction == view.serving_fraction == 0.05
    # No @champion alias: the champion the run compared against, from the progress.
    assert view.champion_version == "3"


def test_a_canary_before_its_first_rollout_run_takes_its_steps_from_the_config(use_case: UseCase) -> None:
    configured = with_canary_steps(use_case, [0.1, 0.5, 1.0])
    tags = {naming.TAG_CANARY_AT: "2026-12-01T10:00:00+00:00", naming.TAG_CANARY_STEP: "1"}
    view = rollout_view(configured, {"champion": "3", "canary": "4"}, tags, MLFLOW)

    assert view is not None and view.progress is None and view.progress_note is not None
    assert view.steps == [0.1, 0.5, 1.0] and view.fraction == 0.5 and view.step_label == "step 2 of 3"


def test_a_step_past_the_configured_steps_shows_no_fraction(use_case: UseCase) -> None:
    configured = with_canary_steps(use_case, [0.1, 1.0])
    view = rollout_view(configured, {"canary": "4"}, {naming.TAG_CANARY_STEP: "5"}, MLFLOW)

    assert view is not None and view.step == 5 and view.fraction is None


# --------------------------------------------------------------------------- unreadable tags


@pytest.mark.parametrize(
    "raw", ["{not json", "[1, 2]", json.dumps({"action": "wait", "evidence": "rows: 12"})],
    ids=["not-json", "not-an-object", "evidence-not-an-object"],
)  # fmt: skip
def test_a_malformed_progress_tag_is_shown_as_unreadable(use_case: UseCase, raw: str) -> None:
    tags = {naming.TAG_SHADOW_AT: "2026-12-01T10:00:00+00:00", naming.TAG_ROLLOUT_PROGRESS: raw}
    view = rollout_view(use_case, {"champion": "3", "shadow": "4"}, tags, MLFLOW)

    assert view is not None and view.progress is None
    assert view.progress_note is not None and "unreadable" in view.progress_note and view.progress_unreadable
    assert naming.TAG_ROLLOUT_PROGRESS in view.progress_note
    assert view.since is not None and view.deadline is not None  # the rest of the panel still shows


def test_odd_field_types_in_the_progress_are_dropped_not_raised(use_case: UseCase) -> None:
    progress = shadow_progress(reasons="one reason", ends_when=None)
    progress["evidence"] = {**progress["evidence"], "rows": "many", "interval": [0.1], "candidate_metric": "n/a"}
    tags = {naming.TAG_ROLLOUT_PROGRESS: json.dumps(progress)}
    view = rollout_view(use_case, {"shadow": "4"}, tags, MLFLOW)

    assert view is not None and view.progress is not None
    assert view.progress.reasons == ["one reason"] and view.progress.ends_when == []
    assert view.progress.rows is None and view.progress.interval is None and view.progress.candidate_metric is None


def test_paired_evidence_without_per_side_counts_counts_rows_for_both(use_case: UseCase) -> None:
    progress = shadow_progress()
    progress["evidence"] = {
        k: v for k, v in progress["evidence"].items() if k not in ("champion_rows", "candidate_labelled")
    }
    view = rollout_view(use_case, {"shadow": "4"}, {naming.TAG_ROLLOUT_PROGRESS: json.dumps(progress)}, MLFLOW)

    assert view is not None and view.progress is not None
    assert view.progress.candidate_labelled == view.progress.champion_rows == 120


def test_an_unreadable_breach_still_stops_the_canary(use_case: UseCase) -> None:
    tags = {naming.TAG_CANARY_STEP: "1", naming.TAG_CANARY_BREACH: "error rate too high",
            naming.TAG_ROLLOUT_PROGRESS: json.dumps(canary_progress())}  # fmt: skip
    view = rollout_view(use_case, {"canary": "4"}, tags, MLFLOW)

    assert view is not None and view.breach is not None and view.serving_fraction == 0.0
    assert any("breach tag" in note for note in view.notes)


def test_progress_that_disagrees_with_the_aliases_is_noted(use_case: UseCase) -> None:
    tags = {naming.TAG_ROLLOUT_PROGRESS: json.dumps(shadow_progress(version="3"))}
    view = rollout_view(use_case, {"shadow": "4", "canary": "5"}, tags, MLFLOW)

    assert view is not None and view.strategy == "shadow" and view.version == "4"
    assert any("@canary is on v5 too" in note for note in view.notes)
    assert any("names v3, not v4" in note for note in view.notes)


# --------------------------------------------------------------------------- McNemar on the panel


def render_panel(use_case: UseCase, view: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """The rollout panel as the page renders it: the plugin's own template environment and filters."""
    from types import SimpleNamespace

    monkeypatch.syspath_prepend(str(PROJECT_ROOT / "plugins"))
    from mlops_ui.responses import _templates

    macro = _templates.from_string('{% import "_macros.html" as m %}{{ m.rollout_section(view) }}')
    return str(macro.render(view=SimpleNamespace(name=use_case.name, rollout=view)))


def test_a_paired_classification_shows_mcnemar_beside_the_bootstrap(
    use_case: UseCase, monkeypatch: pytest.MonkeyPatch
) -> None:
    progress = shadow_progress()
    progress["evidence"] = {**progress["evidence"], "metric": "accuracy", "direction": "max",
                            "champion_only_right": 12, "candidate_only_right": 31, "mcnemar_p": 0.0046}  # fmt: skip
    tags = {naming.TAG_SHADOW_AT: "2026-12-01T10:00:00+00:00", naming.TAG_ROLLOUT_PROGRESS: json.dumps(progress)}
    view = rollout_view(use_case, {"champion": "3", "shadow": "4"}, tags, MLFLOW)
    assert view is not None and view.progress is not None
    assert (view.progress.champion_only_right, view.progress.candidate_only_right) == (12, 31)
    assert view.progress.mcnemar_p == 0.0046

    panel = render_panel(use_case, view, monkeypatch)
    assert '<tr class="mcnemar"><td>right where the other side was wrong</td><td>31</td><td>12</td></tr>' in panel
    assert "McNemar's exact test on the 43 requests only one side got right: p = <strong>0.0046</strong>" in panel
    assert "interval <strong>[-1.00%, +11.00%]</strong> at 95%" in panel  # the bootstrap's, as before


def test_no_mcnemar_where_it_does_not_apply(use_case: UseCase, monkeypatch: pytest.MonkeyPatch) -> None:
    tags = {naming.TAG_CANARY_AT: "2026-12-01T10:00:00+00:00", naming.TAG_CANARY_STEP: "1",
            naming.TAG_ROLLOUT_PROGRESS: json.dumps(canary_progress())}  # fmt: skip
    view = rollout_view(use_case, {"champion": "3", "canary": "4"}, tags, MLFLOW)
    assert view is not None and view.progress is not None and view.progress.mcnemar_p is None
    panel = render_panel(use_case, view, monkeypatch)
    assert "rollout-evidence" in panel and "McNemar" not in panel and 'class="mcnemar"' not in panel
