"""A real browser (headless Chromium) logs in to Airflow and uses the MLOps page on real state.

The stack's own scheduler first walks the loop (`ui_stack.run_the_loop`): it trains
bike_sharing, replayed traffic is scored into the prediction log, two monitoring runs
write Evidently reports, and the second one's drift triggers a retraining that
promotes a new champion. The browser then logs in through Airflow's login form, opens
MLOps from the navigation, sees that champion with its metrics and the gate's reasons,
opens the latest drift report in place, follows the "MLflow run" extra link of the
train_candidate task that trained the champion to its run in the MLflow UI, approves
one promotion that waits for a person and rejects another in Airflow's own form, and
saves screenshots to test-artifacts/. Skipped, with the reason, when Chromium or its
driver is not installed (.ci/system-deps installs both: Debian `chromium` and
`chromium-driver`).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from ui_stack import (
    APPROVAL_CONFIG,
    APPROVAL_DAG,
    APPROVAL_USE_CASE,
    LOOP_CONFIG,
    MONITOR_DAG,
    TRAIN_DAG,
    USE_CASE,
    LoopRuns,
    UIStack,
    return_value,
    run_the_loop,
    seed_baseline_champion,
    start_approval_run,
    start_ui_stack,
    wait_for_success,
)

from mlops.config import find_use_case
from mlops.ui.files import safe_folder_name

pytestmark = [pytest.mark.browser, pytest.mark.integration]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "browser"
DOCS_SCREENSHOTS = PROJECT_ROOT / "docs" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
WAIT_SECONDS = 120.0  # an upper bound for a loaded CI machine, not a performance assertion
RUN_WAIT_SECONDS = 900.0  # the same for a training run (about 30 s on an idle 2-core machine)


def _missing() -> str | None:
    if CHROMIUM is None or CHROMEDRIVER is None:
        return (
            "headless Chromium is not installed (need both `chromium` and `chromedriver` on PATH): "
            "run `apt-get install -y chromium chromium-driver` or .ci/system-deps"
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: run `uv sync` (it is a dev dependency)"
    return None


if (reason := _missing()) is not None:
    pytest.skip(reason, allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIStack]:
    changes = {USE_CASE: LOOP_CONFIG, APPROVAL_USE_CASE: APPROVAL_CONFIG}
    yield from start_ui_stack(tmp_path_factory.mktemp("ui-browser"), changes, seed=False)


@pytest.fixture(scope="module")
def loop(ui: UIStack) -> LoopRuns:
    """Everything the page shows about bike_sharing, produced by the platform itself (see run_the_loop)."""
    return run_the_loop(ui)


@pytest.fixture(scope="module")
def approval_run(ui: UIStack) -> str:
    """A real training run that will wait for a person, against a seeded champion.

    Started only when needed, not alongside the other steps: their REST writes and
    the run's task updates would meet in the stack's SQLite database, and a write
    that waits over five seconds for the lock fails with "database is locked".
    """
    seed_baseline_champion(find_use_case(APPROVAL_USE_CASE))
    return start_approval_run(ui, "ui_test_approval")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    os.environ.setdefault("SE_AVOID_STATS", "true")  # Selenium Manager must not phone home
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT_SECONDS) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # the DOM is still changing: try again
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")


def screenshot(driver: WebDriver, name: str, for_docs: bool = False) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    if for_docs and os.environ.get("MLOPS_UPDATE_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOCS_SCREENSHOTS / f"{name}.png")
    return path


def log_in(driver: WebDriver, ui: UIStack) -> None:
    from mlops.platform import stack

    driver.get(f"{ui.base}/")
    username = wait_for(lambda: driver.find_element(By.NAME, "username"), "the Airflow login form")
    username.send_keys(stack.AIRFLOW_USER)
    driver.find_element(By.NAME, "password").send_keys(stack.airflow_password(ui.settings))
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(lambda: driver.get_cookie("_token"), "the Airflow session cookie after login")


def in_plugin_frame(driver: WebDriver) -> WebElement:
    frame = wait_for(lambda: driver.find_element(By.CSS_SELECTOR, "iframe[title=MLOps]"), "the MLOps iframe")
    driver.switch_to.frame(frame)
    return frame


def scroll_frame_to(driver: WebDriver, element: WebElement) -> None:
    # scrollIntoView would also scroll Airflow's layout around the iframe, out of the screenshot.
    driver.execute_script("window.scrollTo(0, arguments[0].getBoundingClientRect().top + window.scrollY - 8)", element)


def wait_for_approval_request(ui: UIStack, run_id: str) -> None:
    """Until the run's approval task waits for a person; fails at once if the run ends instead."""

    def waiting() -> bool:
        states = {ti["task_id"]: ti["state"] for ti in ui.api.task_instances(APPROVAL_DAG, run_id)}
        run_state = ui.api.dag_run(APPROVAL_DAG, run_id)["state"]
        if run_state in ("success", "failed"):
            pytest.fail(f"{APPROVAL_DAG}/{run_id} ended {run_state} without asking for approval: {states}")
        return states.get("approve_promotion") == "awaiting_input"

    deadline = time.monotonic() + RUN_WAIT_SECONDS
    while not waiting():
        if time.monotonic() > deadline:
            states = {ti["task_id"]: ti["state"] for ti in ui.api.task_instances(APPROVAL_DAG, run_id)}
            raise AssertionError(f"{APPROVAL_DAG}/{run_id} did not reach approve_promotion: {states}")
        time.sleep(2)
    # A race in Airflow 3.3: the worker that parked the task reports "success" to the
    # scheduler a few seconds later. If the answer has resumed the task by then, the
    # scheduler sees a running task "finished" and fails it. People take longer than
    # that; this test waits for the scheduler to log that report before answering.
    log = ui.settings.run_dir / "logs" / "airflow-scheduler.log"
    finished = f"TaskInstance Finished: dag_id={APPROVAL_DAG}, task_id=approve_promotion, run_id={run_id},"
    wait_for(lambda: finished in log.read_text(errors="replace"), f"the scheduler's report of the parked task in {log}")


def test_anonymous_browser_cannot_open_the_page(browser: WebDriver, ui: UIStack) -> None:
    browser.delete_all_cookies()
    browser.get(f"{ui.base}/mlops/")
    assert "Log in to Airflow" in browser.page_source
    assert 'class="alias-champion"' not in browser.page_source


def test_log_in_and_see_the_champion(browser: WebDriver, ui: UIStack, loop: LoopRuns) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(ui.settings.mlflow_tracking_uri)
    model = find_use_case(USE_CASE).model_name
    champion = client.get_model_version_by_alias(model, "champion")
    previous = client.get_model_version_by_alias(model, "previous")
    # The retraining that monitoring triggered promoted the champion; the first one is @previous now.
    assert champion.tags["mlops.run_key"] == f"{TRAIN_DAG}/{loop.retraining}"
    assert previous.tags["mlops.run_key"] == f"{TRAIN_DAG}/{loop.first_training}"
    rmse = client.get_run(champion.run_id).data.metrics["rmse"]

    log_in(browser, ui)
    nav = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "a[href$='plugin/mlops']"), "the MLOps nav entry")
    nav.click()
    in_plugin_frame(browser)
    try:
        row = wait_for(
            lambda: browser.find_element(By.CSS_SELECTOR, f"#uc-{USE_CASE} tr.alias-champion"), "the champion row"
        )
        assert f"v{champion.version}" in row.text and "gate passed" in row.text
        assert f"rmse {rmse:.4g}" in row.text  # the run's own metric, as the page formats it
        # The gate's reasons as the registry recorded them: the new model against the old champion.
        assert champion.tags["mlops.gate.reasons"] in row.text
        assert f"better than champion v{previous.version}" in row.text
        # A promotion time only when the registry recorded one.
        assert ("promoted " in row.text) == ("mlops.promoted_at" in champion.tags), row.text
        old = browser.find_element(By.CSS_SELECTOR, f"#uc-{USE_CASE} tr.alias-previous")
        assert f"v{previous.version}" in old.text and "no champion yet" in old.text
        points = browser.find_elements(By.CSS_SELECTOR, f"#uc-{USE_CASE} svg.drift-chart circle.point")
        assert len(points) == len(loop.monitoring)
        titles = [p.find_element(By.TAG_NAME, "title").get_attribute("textContent") for p in points]
        for title, assessment in zip(titles, loop.assessments, strict=True):
            decision = assessment["decision"]
            assert (
                f"{assessment['window_end']}: drift share {decision['drift_share']:.2f} ({decision['action']})" in title
            )
    finally:
        browser.switch_to.default_content()
    screenshot(browser, "mlops-page", for_docs=True)


def test_open_the_drift_report_in_place(browser: WebDriver, ui: UIStack, loop: LoopRuns) -> None:
    latest = loop.assessments[-1]
    drifted, columns = len(latest["decision"]["drifted_columns"]), len(find_use_case(USE_CASE).features.all)
    # Evidently's own summary line, rendered by the report's scripts inside the sandboxed frame.
    summary = f"Drift is detected for {latest['decision']['drift_share']:.1%} of columns ({drifted} out of {columns})"
    folder = safe_folder_name(f"{MONITOR_DAG}/{loop.monitoring[-1]}")

    def rendered() -> bool:
        return summary in browser.find_element(By.TAG_NAME, "body").text

    browser.get(f"{ui.base}/plugin/mlops")
    in_plugin_frame(browser)
    try:
        report = wait_for(
            lambda: browser.find_element(By.CSS_SELECTOR, f"#uc-{USE_CASE} iframe.report"), "the report frame"
        )
        assert report.get_attribute("src").endswith(f"/mlops/reports/{USE_CASE}/{quote(folder)}/drift.html")
        scroll_frame_to(
            browser, browser.find_element(By.XPATH, f"//section[@id='uc-{USE_CASE}']//h3[.='Latest Evidently report']")
        )
        browser.switch_to.frame(report)
        wait_for(rendered, f"Evidently's summary {summary!r} in the report frame")
        browser.switch_to.parent_frame()
        browser.switch_to.default_content()
        screenshot(browser, "mlops-report-in-place")
        in_plugin_frame(browser)
        # The same report opened on its own, via its link on the page.
        browser.find_element(By.CSS_SELECTOR, f"#uc-{USE_CASE} a.report-link").click()
        wait_for(rendered, "the report page opened from its link")
    finally:
        browser.switch_to.default_content()
    screenshot(browser, "mlops-report")


def champion_task(ui: UIStack, loop: LoopRuns) -> tuple[int, dict[str, Any]]:
    """(map index, return value) of the train_candidate instance of the retraining that trained @champion."""
    from mlflow import MlflowClient

    champion = MlflowClient(ui.settings.mlflow_tracking_uri).get_model_version_by_alias(
        find_use_case(USE_CASE).model_name, "champion"
    )
    for index in range(len(LOOP_CONFIG["candidates"])):
        value = return_value(ui, TRAIN_DAG, loop.retraining, "train_candidate", index)
        if value["run_id"] == champion.run_id:
            return index, value
    raise AssertionError(f"no train_candidate of {loop.retraining} trained run {champion.run_id}")


def test_follow_a_tasks_mlflow_link(browser: WebDriver, ui: UIStack, loop: LoopRuns) -> None:
    index, trained = champion_task(ui, loop)
    task = f"{ui.base}/dags/{TRAIN_DAG}/runs/{quote(loop.retraining, safe='')}/tasks/train_candidate/mapped/{index}"
    browser.get(task)
    # Airflow shows extra links on the task instance's Details tab.
    details = wait_for(
        lambda: next(e for e in browser.find_elements(By.TAG_NAME, "a") if e.text.strip() == "Details"),
        "the task instance's Details tab",
    )
    details.click()
    button = wait_for(
        lambda: next(e for e in browser.find_elements(By.TAG_NAME, "a") if e.text.strip() == "MLflow run"),
        "the 'MLflow run' extra-link button on train_candidate",
    )
    assert button.get_attribute("href") == f"{ui.settings.mlflow_ui_url}/#/runs/{trained['run_id']}"
    screenshot(browser, "task-extra-links", for_docs=True)
    before = set(browser.window_handles)
    button.click()
    new = wait_for(lambda: set(browser.window_handles) - before, "the MLflow tab")
    browser.switch_to.window(new.pop())
    # The MLflow UI shows the run by its name: the candidate key the task trained.
    wait_for(lambda: trained["key"] in browser.page_source, f"run {trained['key']} in the MLflow UI")
    assert trained["run_id"] in browser.current_url
    screenshot(browser, "mlflow-run")


def test_model_tab_of_a_dag_run(browser: WebDriver, ui: UIStack, loop: LoopRuns) -> None:
    from mlflow import MlflowClient

    champion = MlflowClient(ui.settings.mlflow_tracking_uri).get_model_version_by_alias(
        find_use_case(USE_CASE).model_name, "champion"
    )
    browser.switch_to.window(browser.window_handles[0])
    browser.get(f"{ui.base}/dags/{TRAIN_DAG}/runs/{quote(loop.retraining, safe='')}/plugin/mlops-run")
    frame = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "iframe[title=Model]"), "the Model tab")
    browser.switch_to.frame(frame)
    try:
        this_run = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "section.run"), "the run's own section")
        # The version this run registered, its parent run and the candidates it trained, and
        # the Data Docs page of its validation.
        versions = this_run.find_elements(By.CSS_SELECTOR, "table.versions a.version")
        assert [v.text for v in versions] == [f"v{champion.version}"]
        names = [li.text for li in this_run.find_elements(By.CSS_SELECTOR, "ul.mlflow-runs li")]
        keys = [
            return_value(ui, TRAIN_DAG, loop.retraining, "train_candidate", i)["key"]
            for i in range(len(LOOP_CONFIG["candidates"]))
        ]
        assert sorted(names) == sorted([f"{TRAIN_DAG}/{loop.retraining}", *keys])
        assert this_run.find_element(By.CSS_SELECTOR, "a.data-docs").get_attribute("href").endswith(".html")
    finally:
        browser.switch_to.default_content()
    screenshot(browser, "model-tab")

    # A monitoring run's tab: its MLflow run and its own report.
    monitor_run = loop.monitoring[-1]
    browser.get(f"{ui.base}/dags/{MONITOR_DAG}/runs/{monitor_run}/plugin/mlops-run")
    browser.switch_to.frame(wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "iframe[title=Model]"), "tab"))
    try:
        this_run = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "section.run"), "the run's own section")
        names = [li.text for li in this_run.find_elements(By.CSS_SELECTOR, "ul.mlflow-runs li")]
        assert names == [f"monitor-{MONITOR_DAG}/{monitor_run}"]
        report = this_run.find_element(By.CSS_SELECTOR, "iframe.report").get_attribute("src")
        assert f"/{safe_folder_name(f'{MONITOR_DAG}/{monitor_run}')}/drift.html" in report
    finally:
        browser.switch_to.default_content()


def review_pending_request(browser: WebDriver, ui: UIStack, run_id: str, champion: str, screenshot_name: str) -> str:
    """On the MLOps page: the request of `run_id` with the gate's evidence; follow its link to Airflow's form.

    Returns the candidate version the request is about.
    """
    browser.switch_to.window(browser.window_handles[0])
    browser.get(f"{ui.base}/plugin/mlops")
    in_plugin_frame(browser)
    try:
        pending = wait_for(
            lambda: browser.find_element(By.CSS_SELECTOR, f"#uc-{APPROVAL_USE_CASE} .pending-approval"),
            "the pending approval on the MLOps page",
        )
        assert pending.get_attribute("data-run-id") == run_id
        candidate = str(pending.find_element(By.CSS_SELECTOR, "a.version").text.removeprefix("v"))
        assert candidate != champion
        evidence = pending.find_element(By.CSS_SELECTOR, "table.evidence").text
        assert f"candidate v{candidate}" in evidence and f"champion v{champion}" in evidence
        assert "f1" in evidence and "roc_auc" in evidence
        assert f"champion v{champion}" in pending.text and "passed" in pending.text
        scroll_frame_to(browser, browser.find_element(By.CSS_SELECTOR, f"#uc-{APPROVAL_USE_CASE}"))
        browser.switch_to.default_content()
        screenshot(browser, screenshot_name, for_docs=screenshot_name == "approval")
        in_plugin_frame(browser)
        # The link leaves the sandboxed iframe for Airflow's own approve/reject form.
        browser.find_element(By.CSS_SELECTOR, f"#uc-{APPROVAL_USE_CASE} .pending-approval a.review-approval").click()
    finally:
        browser.switch_to.default_content()
    form = f"{ui.base}/dags/{APPROVAL_DAG}/runs/{run_id}/tasks/approve_promotion/required_actions"
    wait_for(lambda: browser.current_url.startswith(form), "Airflow's Required Actions tab of approve_promotion")
    return candidate


def answer_in_airflow(browser: WebDriver, ui: UIStack, run_id: str, option: str, evidence: str) -> dict[str, Any]:
    """Click `option` in Airflow's form (which shows `evidence`); returns the answer Airflow recorded."""
    button = wait_for(
        lambda: next(b for b in browser.find_elements(By.TAG_NAME, "button") if b.text.strip() == option),
        f"Airflow's {option} button",
    )
    assert evidence in browser.page_source  # the request shows the gate's evidence
    screenshot(browser, f"{option.lower()}-airflow-form")
    button.click()
    path = f"/dags/{APPROVAL_DAG}/dagRuns/{run_id}/taskInstances/approve_promotion/-1/hitlDetails"

    def answer() -> dict[str, Any] | None:
        detail: dict[str, Any] = ui.api.request("GET", path)
        return detail if detail["response_received"] else None

    answered: dict[str, Any] = wait_for(answer, "the answer recorded by Airflow")
    return answered


def test_approve_a_pending_promotion_moves_the_alias(browser: WebDriver, ui: UIStack, approval_run: str) -> None:
    from mlflow import MlflowClient

    from mlops.platform import stack

    client = MlflowClient(ui.settings.mlflow_tracking_uri)
    model = find_use_case(APPROVAL_USE_CASE).model_name
    champion_before = client.get_model_version_by_alias(model, "champion").version
    wait_for_approval_request(ui, approval_run)

    candidate = review_pending_request(browser, ui, approval_run, champion_before, "approval")
    answered = answer_in_airflow(browser, ui, approval_run, "Approve", f"better than champion v{champion_before}")
    # Airflow records who answered; the run goes on and promotes.
    assert answered["chosen_options"] == ["Approve"]
    assert answered["responded_by_user"]["name"] == stack.AIRFLOW_USER
    wait_for_success(ui, APPROVAL_DAG, approval_run)

    # Back on the MLOps page: @champion moved to the candidate, the old one is @previous.
    browser.get(f"{ui.base}/plugin/mlops")
    in_plugin_frame(browser)
    try:
        section = f"#uc-{APPROVAL_USE_CASE}"
        champion = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, f"{section} tr.alias-champion"), "@champion")
        assert f"v{candidate}" in champion.text and f"approved by {stack.AIRFLOW_USER}" in champion.text
        previous = browser.find_element(By.CSS_SELECTOR, f"{section} tr.alias-previous")
        assert f"v{champion_before}" in previous.text
        assert not browser.find_elements(By.CSS_SELECTOR, f"{section} .pending-approval")
        scroll_frame_to(browser, browser.find_element(By.CSS_SELECTOR, section))
    finally:
        browser.switch_to.default_content()
    screenshot(browser, "approval-done")

    # MLflow agrees, and the version says who approved.
    promoted = client.get_model_version_by_alias(model, "champion")
    assert promoted.version == candidate
    assert client.get_model_version_by_alias(model, "previous").version == champion_before
    assert promoted.tags["mlops.approval.decision"] == "approved"
    assert promoted.tags["mlops.approval.by"] == stack.AIRFLOW_USER


def test_reject_a_pending_promotion_keeps_the_champion(browser: WebDriver, ui: UIStack, approval_run: str) -> None:
    """A second run of the same candidate passes the gate (no worse than the champion); a person says no."""
    from mlflow import MlflowClient

    from mlops.platform import stack

    client = MlflowClient(ui.settings.mlflow_tracking_uri)
    model = find_use_case(APPROVAL_USE_CASE).model_name
    champion_before = client.get_model_version_by_alias(model, "champion")
    assert champion_before.tags.get("mlops.approval.decision") == "approved", "runs after the approval test"
    run_id = start_approval_run(ui, "ui_test_rejection")
    wait_for_approval_request(ui, run_id)

    candidate = review_pending_request(browser, ui, run_id, champion_before.version, "rejection")
    answered = answer_in_airflow(browser, ui, run_id, "Reject", f"champion v{champion_before.version}")
    assert answered["chosen_options"] == ["Reject"]
    assert answered["responded_by_user"]["name"] == stack.AIRFLOW_USER
    wait_for_success(ui, APPROVAL_DAG, run_id)

    # @champion did not move; the rejected version is @challenger and records who said no and why,
    # next to the gate's own verdict (it passed), which the answer does not rewrite.
    assert client.get_model_version_by_alias(model, "champion").version == champion_before.version
    assert client.get_model_version_by_alias(model, "challenger").version == candidate
    tags = client.get_model_version(model, candidate).tags
    reason = f"promotion rejected by {stack.AIRFLOW_USER}; champion kept"
    assert tags["mlops.approval.decision"] == "rejected" and tags["mlops.approval.by"] == stack.AIRFLOW_USER
    assert tags["mlops.approval.at"].startswith(answered["responded_at"][:16])
    assert tags["mlops.approval.reason"] == reason and tags["mlops.rejection_reason"] == reason
    assert (
        tags["mlops.gate.passed"] == "true"
        and f"equals champion v{champion_before.version}" in tags["mlops.gate.reasons"]
    )

    # The page says so: the champion is unchanged, the rejected version shows the answer.
    browser.get(f"{ui.base}/plugin/mlops")
    in_plugin_frame(browser)
    try:
        section = f"#uc-{APPROVAL_USE_CASE}"
        champion = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, f"{section} tr.alias-champion"), "@champion")
        assert f"v{champion_before.version}" in champion.text
        row = next(
            r
            for r in browser.find_elements(By.CSS_SELECTOR, f"{section} table.gate tr")
            if r.text.startswith(f"v{candidate} ")
        )
        assert f"rejected by {stack.AIRFLOW_USER}" in row.text and "not promoted" in row.text
        challenger = browser.find_element(By.CSS_SELECTOR, f"{section} tr.alias-challenger")
        assert f"v{candidate}" in challenger.text and "gate passed" in challenger.text
        assert f"not promoted: {reason}" in challenger.text
        assert not browser.find_elements(By.CSS_SELECTOR, f"{section} .pending-approval")
        scroll_frame_to(
            browser,
            browser.find_element(By.XPATH, f"//section[@id='uc-{APPROVAL_USE_CASE}']//h3[.='Last gate decisions']"),
        )
    finally:
        browser.switch_to.default_content()
    screenshot(browser, "rejection-done")
