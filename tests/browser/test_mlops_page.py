"""A real browser (headless Chromium) logs in to Airflow and uses the MLOps page.

Logs in through Airflow's login form, opens MLOps from the navigation, sees the
champion, opens the drift report in place, follows a task's "MLflow run" extra
link to the run in the MLflow UI, approves a promotion that waits for a person
in Airflow's own form and sees @champion move, and saves screenshots to
test-artifacts/. Skipped, with the reason, when Chromium or its driver is not
installed (.ci/system-deps installs both: Debian `chromium` and `chromium-driver`).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ui_stack import (
    APPROVAL_CONFIG,
    APPROVAL_DAG,
    APPROVAL_USE_CASE,
    TRAIN_DAG,
    USE_CASE,
    UIStack,
    create_task_results,
    seed_baseline_champion,
    start_approval_run,
    start_ui_stack,
)

from mlops.config import find_use_case

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
    yield from start_ui_stack(tmp_path_factory.mktemp("ui-browser"), {APPROVAL_USE_CASE: APPROVAL_CONFIG})


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
def task_runs(ui: UIStack) -> dict[str, str]:
    return create_task_results(ui)


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
    from mlops import stack

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


def test_log_in_and_see_the_champion(browser: WebDriver, ui: UIStack) -> None:
    log_in(browser, ui)
    nav = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "a[href$='plugin/mlops']"), "the MLOps nav entry")
    nav.click()
    in_plugin_frame(browser)
    try:
        row = wait_for(
            lambda: browser.find_element(By.CSS_SELECTOR, f"#uc-{USE_CASE} tr.alias-champion"), "the champion row"
        )
        assert "v2" in row.text and "gate passed" in row.text and "95.5" in row.text
        challenger = browser.find_element(By.CSS_SELECTOR, f"#uc-{USE_CASE} tr.alias-challenger")
        assert "gate rejected" in challenger.text and "rmse 131 > max 120" in challenger.text
        points = browser.find_elements(By.CSS_SELECTOR, f"#uc-{USE_CASE} svg.drift-chart circle.point")
        assert len(points) == 4
    finally:
        browser.switch_to.default_content()
    screenshot(browser, "mlops-page", for_docs=True)


def test_open_the_drift_report_in_place(browser: WebDriver, ui: UIStack) -> None:
    browser.get(f"{ui.base}/plugin/mlops")
    in_plugin_frame(browser)
    try:
        report = wait_for(
            lambda: browser.find_element(By.CSS_SELECTOR, f"#uc-{USE_CASE} iframe.report"), "the report frame"
        )
        browser.execute_script("arguments[0].scrollIntoView()", report)
        browser.switch_to.frame(report)
        heading = wait_for(lambda: browser.find_element(By.ID, "evidently-report"), "the Evidently report")
        assert "7 of 10 columns drifted" in heading.text
        browser.switch_to.parent_frame()
        # The same report opened on its own, via its link on the page.
        browser.find_element(By.CSS_SELECTOR, f"#uc-{USE_CASE} a.report-link").click()
        wait_for(lambda: browser.find_element(By.ID, "evidently-report"), "the report page")
    finally:
        browser.switch_to.default_content()
    screenshot(browser, "mlops-report")


def test_follow_a_tasks_mlflow_link(browser: WebDriver, ui: UIStack, task_runs: dict[str, str]) -> None:
    run_id = ui.seeded["run_ids"]["2"]
    # Airflow shows extra links once a task has run, on the task instance's Details tab.
    try:
        ui.api.request(
            "PATCH",
            f"/dags/{TRAIN_DAG}/dagRuns/{task_runs[TRAIN_DAG]}/taskInstances/train_candidate",
            params={"map_index": -1},
            json={"new_state": "success"},
        )
    except RuntimeError as exc:
        if "already in success state" not in str(exc):
            raise
    browser.get(f"{ui.base}/dags/{TRAIN_DAG}/runs/{task_runs[TRAIN_DAG]}/tasks/train_candidate/mapped/-1")
    details = wait_for(
        lambda: next(e for e in browser.find_elements(By.TAG_NAME, "a") if e.text.strip() == "Details"),
        "the task instance's Details tab",
    )
    details.click()
    button = wait_for(
        lambda: next(e for e in browser.find_elements(By.TAG_NAME, "a") if e.text.strip() == "MLflow run"),
        "the 'MLflow run' extra-link button on train_candidate",
    )
    href = button.get_attribute("href")
    assert href == f"{ui.settings.mlflow_ui_url}/#/runs/{run_id}"
    screenshot(browser, "task-extra-links", for_docs=True)
    before = set(browser.window_handles)
    button.click()
    new = wait_for(lambda: set(browser.window_handles) - before, "the MLflow tab")
    browser.switch_to.window(new.pop())
    wait_for(lambda: "gradient_boosting-v2" in browser.page_source, "the run's page in the MLflow UI")
    assert run_id in browser.current_url
    screenshot(browser, "mlflow-run")


def test_model_tab_of_a_dag_run(browser: WebDriver, ui: UIStack, task_runs: dict[str, str]) -> None:
    browser.switch_to.window(browser.window_handles[0])
    browser.get(f"{ui.base}/dags/{TRAIN_DAG}/runs/{task_runs[TRAIN_DAG]}/plugin/mlops-run")
    frame = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "iframe[title=Model]"), "the Model tab")
    browser.switch_to.frame(frame)
    try:
        wait_for(lambda: "gradient_boosting-v2" in browser.page_source, "this run's MLflow runs in the Model tab")
    finally:
        browser.switch_to.default_content()
    screenshot(browser, "model-tab")


def test_approve_a_pending_promotion_moves_the_alias(browser: WebDriver, ui: UIStack, approval_run: str) -> None:
    from mlflow import MlflowClient

    from mlops import stack

    client = MlflowClient(ui.settings.mlflow_tracking_uri)
    model = find_use_case(APPROVAL_USE_CASE).model_name
    champion_before = client.get_model_version_by_alias(model, "champion").version
    wait_for_approval_request(ui, approval_run)

    # The MLOps page lists the request with the gate's evidence.
    browser.switch_to.window(browser.window_handles[0])
    browser.get(f"{ui.base}/plugin/mlops")
    in_plugin_frame(browser)
    try:
        pending = wait_for(
            lambda: browser.find_element(By.CSS_SELECTOR, f"#uc-{APPROVAL_USE_CASE} .pending-approval"),
            "the pending approval on the MLOps page",
        )
        assert pending.get_attribute("data-run-id") == approval_run
        candidate = pending.find_element(By.CSS_SELECTOR, "a.version").text.removeprefix("v")
        assert candidate != champion_before
        evidence = pending.find_element(By.CSS_SELECTOR, "table.evidence").text
        assert f"candidate v{candidate}" in evidence and f"champion v{champion_before}" in evidence
        assert "f1" in evidence and "roc_auc" in evidence
        assert f"better than champion v{champion_before}" in pending.text and "passed" in pending.text
        scroll_frame_to(browser, browser.find_element(By.CSS_SELECTOR, f"#uc-{APPROVAL_USE_CASE}"))
        browser.switch_to.default_content()
        screenshot(browser, "approval", for_docs=True)
        in_plugin_frame(browser)
        # The link leaves the sandboxed iframe for Airflow's own approve/reject form.
        browser.find_element(By.CSS_SELECTOR, f"#uc-{APPROVAL_USE_CASE} .pending-approval a.review-approval").click()
    finally:
        browser.switch_to.default_content()
    form = f"{ui.base}/dags/{APPROVAL_DAG}/runs/{approval_run}/tasks/approve_promotion/required_actions"
    wait_for(lambda: browser.current_url.startswith(form), "Airflow's Required Actions tab of approve_promotion")
    approve = wait_for(
        lambda: next(b for b in browser.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Approve"),
        "Airflow's Approve button",
    )
    assert f"better than champion v{champion_before}" in browser.page_source  # the request shows the evidence
    screenshot(browser, "approval-airflow-form")
    approve.click()

    # Airflow records who answered; the run goes on and promotes.
    path = f"/dags/{APPROVAL_DAG}/dagRuns/{approval_run}/taskInstances/approve_promotion/-1/hitlDetails"

    def answer() -> dict[str, Any] | None:
        detail: dict[str, Any] = ui.api.request("GET", path)
        return detail if detail["response_received"] else None

    answered = wait_for(answer, "the answer recorded by Airflow")
    assert answered["chosen_options"] == ["Approve"]
    assert answered["responded_by_user"]["name"] == stack.AIRFLOW_USER
    assert ui.api.wait_for_run(APPROVAL_DAG, approval_run, timeout=RUN_WAIT_SECONDS) == "success"

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
