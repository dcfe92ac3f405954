"""mlops.ui: the facts the MLOps page shows, against a real MLflow server and real folders."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mlops import naming
from mlops.config import UseCase, load_use_case
from mlops.monitoring.reports import report_dir
from mlops.settings import get_settings
from mlops.ui import chart, files, urls, views

PROJECT_ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- file guard


@pytest.fixture
def served(tmp_path: Path) -> Path:
    root = tmp_path / "reports"
    (root / "uc" / "run1").mkdir(parents=True)
    (root / "uc" / "run1" / "drift.html").write_text("<html>drift</html>")
    (root / "uc" / "manual__2026-01-01T00%3A00").mkdir()
    (root / "uc" / "manual__2026-01-01T00%3A00" / "page.html").write_text("encoded name")
    (tmp_path / "secret.txt").write_text("outside")
    (root / "uc" / "escape.html").symlink_to(tmp_path / "secret.txt")
    (root / "uc" / "escape_dir").symlink_to(tmp_path)
    return root


def test_confined_file_is_served(served: Path) -> None:
    assert files.resolve_confined(served, "uc/run1/drift.html") == (served / "uc/run1/drift.html").resolve()


def test_a_file_whose_name_contains_percent_escapes_is_found(served: Path) -> None:
    # The web server decoded %253A once to %3A: that is the literal name on disk.
    found = files.resolve_confined(served, "uc/manual__2026-01-01T00%3A00/page.html")
    assert found.read_text() == "encoded name"


@pytest.mark.parametrize(
    "attempt",
    [
        "../secret.txt",
        "uc/../../secret.txt",
        "uc/run1/../../../secret.txt",
        "/etc/passwd",
        str(Path("/etc/passwd")),
        "%2e%2e/secret.txt",
        "%2e%2e%2fsecret.txt",
        "%252e%252e%252fsecret.txt",
        "%25252e%25252e/secret.txt",
        "%2fetc%2fpasswd",
        "..%5csecret.txt",
        "uc\\..\\..\\secret.txt",
        "uc/run1/drift.html\x00.png",
        "~/secret.txt",
        "C:/windows/win.ini",
        "uc/escape.html",
        "uc/escape_dir/secret.txt",
        "uc/run1",
        "uc/run1/missing.html",
        "",
    ],
)
def test_traversal_and_non_files_are_refused(served: Path, attempt: str) -> None:
    with pytest.raises(files.PathRefused):
        files.resolve_confined(served, attempt)


def test_relative_to_root_only_inside(served: Path, tmp_path: Path) -> None:
    assert files.relative_to_root(served, served / "uc/run1/drift.html") == "uc/run1/drift.html"
    assert files.relative_to_root(served, tmp_path / "secret.txt") is None
    assert files.relative_to_root(served, served / "uc" / "escape.html") is None
    assert files.relative_to_root(served, None) is None


# --------------------------------------------------------------------------- pure helpers


def test_gate_facts_reads_the_tags_the_registry_writes() -> None:
    passed, reasons, decision = views.gate_facts(
        {"mlops.gate.passed": "false", "mlops.gate.reasons": "rmse 130 > max 120; r2 0.4 < min 0.5",
         "mlops.run_key": "train_x/r1", "mlops.rejection_reason": "rmse 130 > max 120", "mlops.metric.rmse": "130"}
    )  # fmt: skip
    assert passed is False and reasons == ["rmse 130 > max 120; r2 0.4 < min 0.5"]
    assert set(decision) == {"mlops.gate.passed", "mlops.gate.reasons", "mlops.rejection_reason"}

    passed, reasons, _ = views.gate_facts({"mlops.gate.passed": "true", "mlops.gate.reasons": "rmse 90 <= max 120"})
    assert passed is True and reasons == ["rmse 90 <= max 120"]
    # A version the gate has not judged (registered, evaluation still running) says nothing.
    assert views.gate_facts({"mlops.run_key": "train_x/r1"}) == (None, [], {})


def test_a_rejection_is_shown_when_it_says_more_than_the_gate() -> None:
    def version(tags: dict[str, str]) -> views.VersionView:
        passed, reasons, decision = views.gate_facts(tags)
        return views.VersionView("2", [], None, None, None, {}, passed, reasons, decision, tags, "", None)

    gate = {"mlops.gate.passed": "false", "mlops.gate.reasons": "rmse 130 > max 120; r2 0.4 < min 0.5"}
    assert version({**gate, "mlops.rejection_reason": "rmse 130 > max 120; r2 0.4 < min 0.5"}).rejection is None
    human = {"mlops.gate.passed": "true", "mlops.gate.reasons": "rmse 90 <= max 120",
             "mlops.rejection_reason": "promotion rejected by ana; champion kept"}  # fmt: skip
    assert version(human).rejection == "promotion rejected by ana; champion kept"


def test_urls_and_dag_names() -> None:
    base = "http://mlflow:5000/"
    assert urls.run_url(base, "abc") == "http://mlflow:5000/#/runs/abc"
    assert urls.model_version_url(base, "m/x", "3") == "http://mlflow:5000/#/models/m%2Fx/versions/3"
    assert naming.use_case_of_dag("train_bike_sharing") == "bike_sharing"
    assert naming.use_case_of_dag("monitor_breast_cancer") == "breast_cancer"
    assert naming.use_case_of_dag("rollback_model") is None
    assert naming.use_case_of_dag("train_") is None


def test_folder_naming_matches_monitoring() -> None:
    key = "monitor_bike_sharing/scheduled__2026-01-01T00:00:00+00:00"
    assert report_dir("bike_sharing", key, Path("/r")).name == files.safe_folder_name(key)


def test_drift_chart_has_one_point_per_run_and_the_threshold() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    points = [views.DriftPoint(start + timedelta(days=i), v, "none", f"http://m/#/runs/{i}") for i, v in
              enumerate([0.1, 0.3, 0.7])]  # fmt: skip
    svg = chart.drift_chart_svg(points, threshold=0.5)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count('class="point"') == 3
    assert 'class="threshold"' in svg and "retraining threshold 0.5" in svg
    assert "2026-01-01" in svg and "2026-01-03" in svg
    assert svg.count("#c0392b") >= 2  # the point above the threshold is drawn in the alert colour
    assert chart.drift_chart_svg([], 0.5) == ""
    single = chart.drift_chart_svg(points[:1], 0.5)
    assert single.count('class="point"') == 1


def test_latest_report_skips_incomplete_runs(tmp_path: Path) -> None:
    root = tmp_path / "reports"
    old = root / "uc" / "old"
    old.mkdir(parents=True)
    (old / "drift.html").write_text("old")
    (old / "data_quality.html").write_text("q")
    (old / "summary.json").write_text("{}")
    unfinished = root / "uc" / "unfinished"
    unfinished.mkdir()
    (unfinished / "drift.html").write_text("half")  # no summary.json: still being written
    os.utime(old / "summary.json", (1, 1))

    report = files.latest_report(root, "uc")
    assert report is not None and report.folder == "old"
    assert report.html == "uc/old/drift.html"
    assert report.files == ["uc/old/drift.html", "uc/old/data_quality.html"]
    assert files.latest_report(root, "other") is None


def test_latest_data_docs_page(tmp_path: Path) -> None:
    docs = tmp_path / "local_site"
    assert files.latest_data_docs_page(docs, "uc") is None
    page_dir = docs / "validations" / "uc" / "run" / "20260101T000000Z"
    page_dir.mkdir(parents=True)
    (page_dir / "a.html").write_text("a")
    assert files.latest_data_docs_page(docs, "uc") == "validations/uc/run/20260101T000000Z/a.html"


# --------------------------------------------------------------------------- against MLflow


@pytest.fixture
def use_case(mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> UseCase:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLOPS_GE_DIR", str(tmp_path / "ge"))
    monkeypatch.delenv("MLOPS_MLFLOW_UI_URL", raising=False)
    base = load_use_case(PROJECT_ROOT / "configs" / "bike_sharing.yaml")
    suffix = uuid.uuid4().hex[:8]
    return base.model_copy(update={"name": f"uc_{suffix}", "model_name": f"model_{suffix}"})


def seed_registry(use_case: UseCase, dag_run_key: str) -> dict[str, str]:
    """Three versions judged and moved by the registry's own functions: v1 @previous, v2 @champion, v3 @challenger."""
    from mlflow.tracking import MlflowClient

    from mlops.evaluation.gate import check_gate
    from mlops.mlflow import registry
    from mlops.promotion import decisions

    client = MlflowClient()
    experiment = client.create_experiment(use_case.name)
    client.create_registered_model(use_case.model_name)
    dag_id, dag_run_id = dag_run_key.split("/")
    run_ids = {}
    for version, rmse in {"1": 110.0, "2": 100.0, "3": 130.0}.items():
        run = client.create_run(
            experiment, run_name=f"candidate-{version}", tags={"airflow_dag_id": dag_id, "airflow_run_id": dag_run_id}
        )
        client.log_metric(run.info.run_id, "rmse", rmse)
        client.log_metric(run.info.run_id, "r2", 0.8)
        client.set_terminated(run.info.run_id)
        mv = client.create_model_version(
            use_case.model_name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
            tags={registry.TAG_RUN_KEY: dag_run_key},
        )  # fmt: skip
        assert mv.version == version
        champion = registry.champion(use_case.model_name)
        decision = check_gate(
            use_case, {"rmse": rmse, "r2": 0.8}, champion.metrics if champion else None,
            champion_version=champion.version if champion else None,
        )  # fmt: skip
        decisions.apply_decision(use_case, version, decision, dag_run_key)
        run_ids[version] = run.info.run_id
    return run_ids


def seed_monitoring(use_case: UseCase, shares: list[float]) -> list[datetime]:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiment = client.create_experiment(f"{use_case.name}-monitoring")
    ends = [datetime(2011, 3, 1, tzinfo=UTC) + timedelta(days=7 * i) for i in range(len(shares))]
    # Logged newest first: the chart must order by the window end, not by logging order.
    for end, share in reversed(list(zip(ends, shares, strict=True))):
        run = client.create_run(experiment, tags={"monitoring.action": "retrain" if share >= 0.5 else "none"})
        client.log_batch(run.info.run_id, metrics=[Metric("drift_share", share, int(end.timestamp() * 1000), 0)])
        client.set_terminated(run.info.run_id)
    return ends


def test_gather_use_case_shows_aliases_metrics_reasons_and_drift(use_case: UseCase, mlflow_server: str) -> None:
    run_ids = seed_registry(use_case, "train_x/manual__1")
    ends = seed_monitoring(use_case, [0.1, 0.2, 0.6])
    settings = get_settings()
    report = report_dir(use_case.name, "monitor_x/run_a", settings.reports_dir)
    report.mkdir(parents=True)
    (report / "drift.html").write_text("<html>evidently</html>")
    (report / "summary.json").write_text("{}")

    view = views.gather_use_case(use_case, settings)

    assert view.errors == []
    assert {alias: v.version for alias, v in view.by_alias.items()} == {
        "champion": "2", "previous": "1", "challenger": "3",
    }  # fmt: skip
    champion = view.by_alias["champion"]
    assert champion.metrics["rmse"] == 100.0 and champion.passed is True
    assert champion.run_url == f"{mlflow_server}/#/runs/{run_ids['2']}"
    assert champion.version_url == f"{mlflow_server}/#/models/{use_case.model_name}/versions/2"
    assert champion.aliases == ["champion"] and champion.created is not None
    challenger = view.by_alias["challenger"]
    assert challenger.passed is False
    assert challenger.reasons == ["rmse 130 > max 120; rmse 130 is 30.0% worse than champion v2 (100); allowed 5.0%"]
    assert challenger.rejection is None  # the gate's own reasons, already shown
    assert view.by_alias["previous"].reasons[0].endswith("no champion yet: judged on the absolute thresholds only")
    assert [v.version for v in view.recent] == ["3", "2", "1"]

    assert [p.drift_share for p in view.drift] == [0.1, 0.2, 0.6]
    assert [p.when for p in view.drift] == ends
    assert view.drift[-1].action == "retrain"
    assert view.monitoring_url is not None and view.monitoring_url.startswith(f"{mlflow_server}/#/experiments/")

    assert view.report is not None and view.report.html == f"{use_case.name}/{report.name}/drift.html"
    assert files.resolve_confined(settings.reports_dir, view.report.html).read_text() == "<html>evidently</html>"


def test_gather_run_finds_what_the_dag_run_produced(use_case: UseCase) -> None:
    from mlflow.tracking import MlflowClient

    seed_registry(use_case, "train_x/manual__1")
    run = views.gather_run(use_case, "train_x", "manual__1")
    assert run.errors == []
    assert [v.version for v in run.versions] == ["3", "2", "1"]
    assert [name for name, _ in run.mlflow_runs] == ["candidate-1", "candidate-2", "candidate-3"]
    assert all("/#/runs/" in url for _, url in run.mlflow_runs)

    other = views.gather_run(use_case, "train_x", "manual__2")
    assert other.versions == [] and other.mlflow_runs == []

    # A monitoring run, tagged as mlops.monitoring tags it.
    client = MlflowClient()
    experiment = client.create_experiment(f"{use_case.name}-monitoring")
    client.create_run(experiment, run_name="monitor-monitor_x/manual__1", tags={"run_key": "monitor_x/manual__1"})
    client.create_run(experiment, run_name="monitor-monitor_x/manual__9", tags={"run_key": "monitor_x/manual__9"})
    monitored = views.gather_run(use_case, "monitor_x", "manual__1")
    assert [name for name, _ in monitored.mlflow_runs] == ["monitor-monitor_x/manual__1"] and not monitored.versions


def test_promotion_time_comes_from_its_tag(use_case: UseCase) -> None:
    from mlflow.tracking import MlflowClient

    seed_registry(use_case, "train_x/manual__1")
    MlflowClient().set_model_version_tag(use_case.model_name, "2", "mlops.promoted_at", "2026-01-02T04:04:05+01:00")
    view = views.gather_use_case(use_case)
    assert view.by_alias["champion"].promoted_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert view.by_alias["champion"].created != view.by_alias["champion"].promoted_at


def test_unregistered_model_shows_empty_not_an_error(use_case: UseCase) -> None:
    view = views.gather_use_case(use_case)
    assert view.errors == [] and view.by_alias == {} and view.recent == [] and view.drift == []


def test_mlflow_down_is_reported_on_the_page(use_case: UseCase, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops.processes import free_port

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    view = views.gather_use_case(use_case)
    assert len(view.errors) == 1 and "could not be read" in view.errors[0]
    assert view.by_alias == {}


def test_a_shadow_in_the_registry_feeds_the_rollout_panel_not_the_alias_table(use_case: UseCase) -> None:
    from mlflow.tracking import MlflowClient

    seed_registry(use_case, "train_x/manual__1")
    assert views.gather_use_case(use_case).rollout is None
    client = MlflowClient()
    # v3 failed the gate; as a shadow it stands for any candidate, the page does not judge that.
    client.set_registered_model_alias(use_case.model_name, naming.SHADOW, "3")
    client.set_model_version_tag(use_case.model_name, "3", naming.TAG_SHADOW_AT, "2026-12-01T10:00:00+00:00")

    view = views.gather_use_case(use_case)
    assert view.errors == [] and view.rollout is not None
    assert (view.rollout.strategy, view.rollout.version, view.rollout.champion_version) == ("shadow", "3", "2")
    assert view.rollout.progress is None and view.rollout.progress_note is not None  # no rollout run yet
    assert "shadow" in view.by_alias and [entry.alias for entry in view.lineage][-1] == "shadow"


def test_mlflow_ui_url_overrides_links(use_case: UseCase, monkeypatch: pytest.MonkeyPatch) -> None:
    seed_registry(use_case, "train_x/manual__1")
    monkeypatch.setenv("MLOPS_MLFLOW_UI_URL", "https://mlflow.example.org/")
    view = views.gather_use_case(use_case)
    assert view.by_alias["champion"].version_url.startswith("https://mlflow.example.org/#/models/")


def test_the_lineage_section_traces_each_aliased_version(use_case: UseCase, mlflow_server: str) -> None:
    from mlflow.tracking import MlflowClient

    run_ids = seed_registry(use_case, "train_x/manual__1")
    client = MlflowClient()
    client.log_text(run_ids["2"], "# Model card: v2\n\n| metric | value |\n| --- | --- |\n| rmse | 100 |\n",
                    "model_card/v2.md")  # fmt: skip
    client.set_model_version_tag(use_case.model_name, "2", "mlops.model_card", "model_card/v2.md")
    docs_page = get_settings().data_docs_dir / "validations" / use_case.name / "page.html"
    docs_page.parent.mkdir(parents=True, exist_ok=True)
    docs_page.write_text("<html>validation</html>")
    client.set_tag(run_ids["2"], "data_docs_page", str(docs_page))

    view = views.gather_use_case(use_case)
    assert view.errors == []
    by_alias = {entry.alias: entry for entry in view.lineage}
    assert list(by_alias) == ["champion", "previous", "challenger"]
    champion = by_alias["champion"]
    assert champion.error is None and champion.chain is not None
    assert [(c.change, c.alias) for c in champion.chain.alias_history] == [("gained", "champion")]
    assert champion.training_run_url == f"{mlflow_server}/#/runs/{run_ids['2']}"
    assert champion.dag_run_path == "/dags/train_x/runs/manual__1"
    assert champion.data_docs == f"validations/{use_case.name}/page.html"
    assert champion.chain.data.availability == "no DVC md5 recorded" and champion.chain.data.restorable is None
    assert champion.card_html == (
        "<h3>Model card: v2</h3>\n"
        "<table><tr><th>metric</th><th>value</th></tr><tr><td>rmse</td><td>100</td></tr></table>"
    )
    previous = by_alias["previous"].chain
    assert previous is not None and [(c.change, c.alias) for c in previous.alias_history] == [
        ("gained", "champion"), ("gained", "previous"), ("lost", "champion")]  # fmt: skip
    assert by_alias["challenger"].card_html is None  # no card was logged for it


def test_card_markdown_is_escaped_before_it_becomes_html() -> None:
    from mlops.ui.markdown import markdown_html

    text = "# Card <script>\n\n- `a<b>` and **bold** and *it*\n- two\n\nplain & <img src=x onerror=alert(1)>\n"
    assert markdown_html(text) == (
        "<h3>Card &lt;script&gt;</h3>\n"
        "<ul><li><code>a&lt;b&gt;</code> and <strong>bold</strong> and <em>it</em></li><li>two</li></ul>\n"
        "<p>plain &amp; &lt;img src=x onerror=alert(1)&gt;</p>"
    )
