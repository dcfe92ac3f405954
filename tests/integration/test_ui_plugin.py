"""The MLOps plugin inside a real Airflow API server: login required, champion shown, no file escapes.

One stack for the whole module (starting it takes minutes on a busy machine), in
Airflow's multi-team mode so that a viewer outside the project's team can log in
and must see none of its use cases. Traversal attempts go over a raw socket so no
client library normalises `..` away.
"""

from __future__ import annotations

import http.client
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "browser"))
from ui_stack import (
    APPROVAL_CONFIG,
    APPROVAL_USE_CASE,
    MONITOR_DAG,
    OTHER_TEAM,
    SECRET,
    TEAM,
    TRAIN_DAG,
    USE_CASE,
    UIStack,
    create_task_results,
    extra_links,
    login,
    start_ui_stack,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIStack]:
    yield from start_ui_stack(tmp_path_factory.mktemp("ui-plugin"), {APPROVAL_USE_CASE: APPROVAL_CONFIG}, teams=True)


@pytest.fixture(scope="module")
def task_runs(ui: UIStack) -> dict[str, str]:
    return create_task_results(ui)


def raw_get(ui: UIStack, raw_path: str) -> tuple[int, bytes]:
    """GET exactly `raw_path` (no normalisation, no re-encoding) with a valid token."""
    url = urlparse(ui.base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        conn.putrequest("GET", raw_path, skip_accept_encoding=True)
        conn.putheader("Authorization", f"Bearer {ui.token}")
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------- registration


def test_plugin_registers_app_views_and_links(ui: UIStack) -> None:
    plugins = ui.api.request("GET", "/plugins")["plugins"]
    mlops = next(p for p in plugins if p["name"] == "mlops")
    assert [a["url_prefix"] for a in mlops["fastapi_apps"]] == ["/mlops"]
    views = {(v["name"], v["destination"]): v["href"] for v in mlops["external_views"]}
    assert views[("MLOps", "nav")] == "mlops/"
    assert views[("Model", "dag")] == "mlops/dag/{DAG_ID}"
    assert views[("Model", "dag_run")] == "mlops/dag/{DAG_ID}/run/{RUN_ID}"
    assert len(mlops["global_operator_extra_links"]) == 4
    import_errors = ui.api.request("GET", "/plugins/importErrors")
    assert import_errors["total_entries"] == 0, import_errors


# --------------------------------------------------------------------------- login


@pytest.mark.parametrize(
    "path", ["/mlops/", "/mlops/dag/train_bike_sharing", "/mlops/reports/x.html", "/mlops/data-docs/index.html",
             "/mlops/static/mlops.js", "/mlops/dag/train_bike_sharing/run/x"],
)  # fmt: skip
def test_anonymous_requests_are_refused(ui: UIStack, path: str) -> None:
    response = ui.get(path)
    assert response.status_code == 401
    assert "champion" not in response.text


def test_a_forged_token_is_refused(ui: UIStack) -> None:
    header, payload, _ = ui.token.split(".")
    forged = f"{header}.{payload}.c2lnbmF0dXJl"
    assert ui.get("/mlops/", token=forged).status_code in (401, 403)
    assert ui.get("/mlops/", token="not-a-jwt", cookie=True).status_code in (401, 403)


def test_anonymous_browser_gets_a_login_hint(ui: UIStack) -> None:
    response = ui.get("/mlops/", headers={"Accept": "text/html"})
    assert response.status_code == 401 and "Log in to Airflow" in response.text


# --------------------------------------------------------------------------- who sees what


def test_a_user_sees_only_use_cases_whose_dags_they_may_read(ui: UIStack) -> None:
    # Two viewers: bo is in the team owning the project's DAGs, ana in another team.
    tokens = {user: login(ui.base, user, password) for user, password in ui.passwords.items()}
    outsider, member = tokens["ana"], tokens["bo"]

    # The premise, from Airflow itself: ana may read no DAG of the project, bo all of them.
    def readable_dags(token: str) -> set[str]:
        response = ui.get("/api/v2/dags", token=token, params={"limit": 100})
        assert response.status_code == 200, response.text[:300]
        return {d["dag_id"] for d in response.json()["dags"]}

    assert readable_dags(outsider) == set(), f"ana is in team {OTHER_TEAM}, the DAGs in team {TEAM}"
    assert {TRAIN_DAG, MONITOR_DAG, f"train_{APPROVAL_USE_CASE}"} <= readable_dags(member)

    # The page: nothing of either use case for ana, only that some are hidden; all of it for bo.
    page = ui.get("/mlops/", token=outsider)
    assert page.status_code == 200
    every_use_case = len(list(ui.settings.configs_dir.glob("*.yaml")))
    assert every_use_case >= 2 and f"{every_use_case} use cases not shown" in page.text
    assert 'class="use-case"' not in page.text and ui.seeded["model_name"] not in page.text
    assert USE_CASE not in page.text and APPROVAL_USE_CASE not in page.text
    shown = ui.get("/mlops/", token=member).text
    assert f'id="uc-{USE_CASE}"' in shown and f'id="uc-{APPROVAL_USE_CASE}"' in shown
    assert "not shown" not in shown and 'class="alias-champion"' in shown

    # The DAG and run tabs: 403 for ana, the page for bo.
    for path in (f"/mlops/dag/{TRAIN_DAG}", f"/mlops/dag/{MONITOR_DAG}/run/ui_test_monitor"):
        assert ui.get(path, token=outsider).status_code == 403
        assert ui.get(path, token=member).status_code == 200

    # Files of the use case: a 404 for ana, as if missing; served to bo. Shared styles serve both.
    report = "/mlops/reports/" + Path(ui.seeded["report_html"]).relative_to(ui.settings.reports_dir).as_posix()
    docs = "/mlops/data-docs/" + Path(ui.seeded["data_docs_page"]).relative_to(ui.settings.data_docs_dir).as_posix()
    for path in (report, docs, "/mlops/data-docs/index.html"):
        denied = ui.get(path, token=outsider)
        assert denied.status_code == 404 and "evidently-report" not in denied.text and "data-docs" not in denied.text
        assert ui.get(path, token=member).status_code == 200
    for path in ("/mlops/data-docs/static/styles/data_docs.css", "/mlops/static/mlops.css"):
        assert ui.get(path, token=outsider).status_code == 200


# --------------------------------------------------------------------------- the page


@pytest.mark.parametrize("cookie", [False, True], ids=["bearer", "cookie"])
def test_page_shows_champion_previous_challenger_and_reasons(ui: UIStack, cookie: bool) -> None:
    response = ui.get("/mlops/", token=ui.token, cookie=cookie)
    assert response.status_code == 200, response.text[:500]
    page = response.text
    assert f'id="uc-{USE_CASE}"' in page and 'id="uc-breast_cancer"' in page
    model = ui.seeded["model_name"]
    assert 'class="alias-champion"' in page
    champion_row = page.split('class="alias-champion"')[1].split("</tr>")[0]
    assert f"#/models/{model}/versions/2" in champion_row and "95.5" in champion_row
    challenger_row = page.split('class="alias-challenger"')[1].split("</tr>")[0]
    assert "gate rejected" in challenger_row and "rmse 131 &gt; max 120" in challenger_row
    assert page.count('class="point"') == 4  # the drift chart, one dot per monitoring run
    assert f"/mlops/reports/{USE_CASE}/" in page and "<iframe" in page
    assert "/mlops/data-docs/validations/bike_sharing/" in page
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    assert "cdn" not in page.lower() and "https://" not in page.replace(ui.settings.mlflow_ui_url, "")
    # Approval is required only there: the page asked Airflow's REST API, as the caller, and nothing waits.
    approvals = page.split(f'id="uc-{APPROVAL_USE_CASE}"')[1]
    assert "Waiting for approval" in approvals and "Nothing waits" in approvals
    assert "Waiting for approval" not in page.split(f'id="uc-{APPROVAL_USE_CASE}"')[0]
    assert 'class="error"' not in page


def test_page_traces_each_aliased_version_in_a_lineage_section(ui: UIStack) -> None:
    from mlops.config import find_use_case
    from mlops.lineage import cards

    model, runs = ui.seeded["model_name"], ui.seeded["run_ids"]
    # The card registration logs, written by the registration's own function for the seeded champion.
    assert cards.log_version_card(find_use_case(USE_CASE), "2") == "model_card/v2.md"
    page = ui.get("/mlops/", token=ui.token).text.split(f'id="uc-{USE_CASE}"')[1].split('class="use-case"')[0]
    assert "<h3>Lineage</h3>" in page
    champion = page.split(f'id="lineage-{USE_CASE}-v2" data-alias="champion"')[1].split('<details class="lineage"')[0]
    assert f'href="{ui.settings.mlflow_ui_url}/#/runs/{runs["2"]}"' in champion
    assert f'href="/dags/{TRAIN_DAG}/runs/ui_test_train"' in champion  # the Airflow DAG run, from the UI root
    assert "gained @champion: promoted by train_bike_sharing/ui_test_train" in champion
    assert "no DVC md5 recorded" in champion  # the seeded runs record no snapshot: said, not assumed
    assert '<details class="model-card"><summary>Model card of v2</summary>' in champion
    assert f"<h3>Model card: {model} v2</h3>" in champion and "<h4>Known limitations</h4>" in champion
    assert f"mlops reproduce {model}/2" in champion
    previous = page.split(f'id="lineage-{USE_CASE}-v1" data-alias="previous"')[1].split("</dl>")[0]
    assert "lost @champion" in previous and "gained @previous" in previous
    assert f'id="lineage-{USE_CASE}-v3" data-alias="challenger"' in page and 'class="error"' not in page


def test_dag_and_run_tabs(ui: UIStack, task_runs: dict[str, str]) -> None:
    dag_page = ui.get(f"/mlops/dag/{TRAIN_DAG}", token=ui.token)
    assert dag_page.status_code == 200 and 'class="alias-champion"' in dag_page.text
    assert 'id="uc-breast_cancer"' not in dag_page.text

    run_page = ui.get(f"/mlops/dag/{TRAIN_DAG}/run/{task_runs[TRAIN_DAG]}", token=ui.token)
    assert run_page.status_code == 200
    this_run = run_page.text.split("Use case now")[0]
    assert this_run.count("/versions/") == 3 and "gradient_boosting-v2" in this_run

    monitor_page = ui.get(f"/mlops/dag/{MONITOR_DAG}/run/{task_runs[MONITOR_DAG]}", token=ui.token)
    assert "Evidently report of this run" in monitor_page.text

    assert ui.get("/mlops/dag/platform_self_check", token=ui.token).status_code == 404


def test_served_report_is_sandboxed(ui: UIStack) -> None:
    page = ui.get("/mlops/", token=ui.token).text
    src = page.split('<iframe class="report"')[1].split('src="')[1].split('"')[0]
    response = ui.get(src, token=ui.token)
    assert response.status_code == 200 and "evidently-report" in response.text
    assert response.headers["content-security-policy"].startswith("sandbox")


# --------------------------------------------------------------------------- traversal


TRAVERSALS = [
    "/mlops/reports/../../secret.txt",
    "/mlops/reports/../../../secret.txt",
    "/mlops/reports/bike_sharing/../../../secret.txt",
    "/mlops/reports/%2e%2e/%2e%2e/secret.txt",
    "/mlops/reports/%2e%2e%2f%2e%2e%2fsecret.txt",
    "/mlops/reports/%252e%252e%252f%252e%252e%252fsecret.txt",
    "/mlops/reports/..%2f..%2f..%2fsecret.txt",
    "/mlops/reports/..%5c..%5csecret.txt",
    "/mlops/reports//etc/passwd",
    "/mlops/reports/%2fetc%2fpasswd",
    "/mlops/reports/bike_sharing/escape.html",
    "/mlops/reports/bike_sharing%00.html",
    "/mlops/data-docs/../../../../secret.txt",
    "/mlops/data-docs/%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.txt",
    "/mlops/data-docs/%252e%252e/%252e%252e/%252e%252e/great_expectations.yml",
    "/mlops/static/..%2f..%2fmlops_plugin.py",
    "/mlops/static/../app.py",
]


@pytest.mark.parametrize("raw_path", TRAVERSALS)
def test_traversal_never_serves_a_file_outside(ui: UIStack, raw_path: str) -> None:
    status, body = raw_get(ui, raw_path)
    assert 400 <= status < 500, (status, body[:200])
    assert SECRET.encode() not in body and b"root:" not in body and b"AirflowPlugin" not in body


def test_client_normalised_traversal_leaves_the_plugin(ui: UIStack) -> None:
    # httpx (like browsers) resolves `..` before sending: the request becomes /secret.txt,
    # which Airflow answers with its own UI page, outside the plugin and without the file.
    response = ui.get("/mlops/reports/../../secret.txt", token=ui.token)
    assert response.url.path == "/secret.txt"
    assert SECRET not in response.text
    assert response.status_code == 404 or "<base href" in response.text


# --------------------------------------------------------------------------- extra links


def test_extra_links_follow_task_return_values(ui: UIStack, task_runs: dict[str, str]) -> None:
    mlflow = ui.settings.mlflow_ui_url
    train_run, monitor_run = task_runs[TRAIN_DAG], task_runs[MONITOR_DAG]

    links = extra_links(ui, TRAIN_DAG, train_run, "train_candidate")
    assert links["MLflow run"] == f"{mlflow}/#/runs/{ui.seeded['run_ids']['2']}"
    assert not links["Model version"] and not links["Data Docs"] and not links["Evidently report"]

    promote = extra_links(ui, TRAIN_DAG, train_run, "promote_candidate")
    assert promote["Model version"] == f"{mlflow}/#/models/{ui.seeded['model_name']}/versions/2"

    docs = extra_links(ui, TRAIN_DAG, train_run, "validate_snapshot")["Data Docs"]
    assert docs is not None and docs.startswith(f"{ui.base}/mlops/data-docs/validations/{USE_CASE}/")
    assert "Validation passed" in ui.get(docs.removeprefix(ui.base), token=ui.token).text

    report = extra_links(ui, MONITOR_DAG, monitor_run, "assess_window")["Evidently report"]
    assert report is not None and report.startswith(f"{ui.base}/mlops/reports/{USE_CASE}/")
    assert "evidently-report" in ui.get(report.removeprefix(ui.base), token=ui.token).text

    # A path outside the Data Docs folder gets no link at all.
    assert not extra_links(ui, MONITOR_DAG, monitor_run, "validate_window")["Data Docs"]
    # A task that has not run yet has nothing to link to.
    assert not any(extra_links(ui, TRAIN_DAG, train_run, "register_candidate").values())


def test_mlflow_run_link_opens_the_run(ui: UIStack, task_runs: dict[str, str]) -> None:
    link = extra_links(ui, TRAIN_DAG, task_runs[TRAIN_DAG], "train_candidate")["MLflow run"]
    assert link is not None
    run_id = link.rsplit("/", 1)[-1]
    api = httpx.get(f"{ui.settings.mlflow_tracking_uri}/api/2.0/mlflow/runs/get", params={"run_id": run_id}, timeout=30)
    assert api.status_code == 200 and api.json()["run"]["info"]["run_name"] == "gradient_boosting-v2"


# --------------------------------------------------------------------------- rollout panel


def test_a_rollout_in_progress_shows_its_panel_with_the_evidence(ui: UIStack) -> None:
    """A canary at step 2 of 3, tagged as the rollout contract of issue 18 has it, on a real version."""
    import json

    from mlflow.tracking import MlflowClient

    from mlops import naming

    model = ui.seeded["model_name"]
    assert "Rollout in progress" not in ui.get("/mlops/", token=ui.token).text  # no rollout alias: no panel

    client = MlflowClient(tracking_uri=ui.settings.mlflow_tracking_uri)
    experiment = client.get_experiment_by_name(USE_CASE)
    assert experiment is not None
    run = client.create_run(experiment.experiment_id, run_name="gradient_boosting-canary")
    client.set_terminated(run.info.run_id)
    version = client.create_model_version(model, f"{run.info.artifact_uri}/model", run_id=run.info.run_id).version
    progress = {
        "strategy": "canary", "version": version, "champion_version": "2",
        "since": "2026-12-01T10:00:00+00:00", "deadline": "2026-12-04T10:00:00+00:00",
        "step": 1, "fraction": 0.25, "steps": [0.05, 0.25, 1.0],
        "action": "wait", "reasons": ["180 of 200 labelled rows on each side: waiting for more"],
        "decided_at": "2026-12-02T10:00:00+00:00",
        "evidence": {"metric": "rmse", "direction": "min", "candidate_version": version, "rows": 180,
                     "candidate_rows": 412, "candidate_labelled": 180, "champion_rows": 1236,
                     "champion_metric": 95.5, "candidate_metric": 91.25, "gain": 0.0445,
                     "interval": [-0.012, 0.097], "confidence": 0.95, "paired": False, "note": None},
        "ends_when": ["advance to 100% once the canary answered 200 requests at 25%",
                      "reject at 2026-12-04 10:00 UTC if still undecided"],
    }  # fmt: skip
    tags = {
        naming.TAG_CANARY_AT: "2026-12-01T10:00:00+00:00",
        naming.TAG_CANARY_STEP: "1",
        naming.TAG_CANARY_STEP_AT: "2026-12-02T09:00:00+00:00",
        naming.TAG_ROLLOUT_PROGRESS: json.dumps(progress),
    }
    for key, value in tags.items():
        client.set_model_version_tag(model, version, key, value)
    client.set_registered_model_alias(model, naming.CANARY, version)
    try:
        page = ui.get("/mlops/", token=ui.token).text
        assert f'id="rollout-{USE_CASE}" data-strategy="canary"' in page and 'class="error"' not in page
        panel = page.split(f'id="rollout-{USE_CASE}"')[1].split("</div>")[0]
        assert '<strong class="strategy">canary</strong>' in panel and "against champion v2" in panel
        assert "Answers <strong>25%</strong> of requests (step 2 of 3" in panel
        assert '<span class="action-wait">wait</span>' in panel and "180 of 200 labelled rows" in panel
        assert "<td>labelled rows compared</td><td>180</td><td>1236</td>" in panel
        assert "<td>91.25</td><td>95.5</td>" in panel  # candidate, champion: the live metric of each side
        assert "Labelled rows compared: <strong>180</strong>" in panel
        assert "The candidate has answered <strong>412</strong> requests so far" in panel
        assert "interval <strong>[-1.20%, +9.70%]</strong> at 95%" in panel
        assert "advance to 100% once the canary answered 200 requests" in panel
        version_link = f'href="{ui.settings.mlflow_ui_url}/#/models/{model}/versions/{version}"'
        assert version_link in panel and 'href="/dags/rollout_bike_sharing"' in panel
        # The alias table keeps its three rows; the other use case has no rollout.
        assert 'class="alias-canary"' not in page
        assert "Rollout in progress" not in page.split(f'id="uc-{APPROVAL_USE_CASE}"')[1]
        # The evidence link's version holds the progress the panel shows, as MLflow serves it.
        served = httpx.get(
            f"{ui.settings.mlflow_tracking_uri}/api/2.0/mlflow/model-versions/get",
            params={"name": model, "version": version}, timeout=30,
        ).json()["model_version"]  # fmt: skip
        assert {t["key"]: t["value"] for t in served["tags"]}[naming.TAG_ROLLOUT_PROGRESS] == json.dumps(progress)
        assert naming.CANARY in served["aliases"]
        # The DAG tab of the use case shows the same panel.
        assert f'id="rollout-{USE_CASE}"' in ui.get(f"/mlops/dag/{TRAIN_DAG}", token=ui.token).text
    finally:
        client.delete_registered_model_alias(model, naming.CANARY)
        client.delete_model_version(model, version)
