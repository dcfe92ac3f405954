"""The REST client's trigger: retried on a server error, never two runs for one request."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from mlops.platform import airflow_api
from mlops.platform.airflow_api import AirflowAPI, AirflowAPIError

DATABASE_ERROR = {"detail": {"reason": "Database error", "statement": "hidden", "orig_error": "hidden"}}


class FakeAirflow:
    """An Airflow API double keeping DAG runs by id, with scripted answers to POST dagRuns."""

    def __init__(self, post_answers: list[str]) -> None:
        # "ok"; "lost" (500, nothing stored); "stored" (500 after storing); "taken" (500, and
        # meanwhile another client created a run with that id); "invalid" (422).
        self.post_answers = post_answers
        self.runs: dict[str, dict[str, Any]] = {}
        self.posts: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": "t"})
        assert request.headers["Authorization"] == "Bearer t"
        prefix = "/api/v2/dags/train/dagRuns"
        if request.method == "POST" and request.url.path == prefix:
            body = json.loads(request.content)
            self.posts.append(body)
            if body["dag_run_id"] in self.runs:
                return httpx.Response(409, json={"detail": "exists"})
            answer = self.post_answers.pop(0) if self.post_answers else "ok"
            if answer == "invalid":
                return httpx.Response(422, json={"detail": [{"loc": ["body", "conf"], "msg": "bad"}]})
            if answer == "taken":
                self.runs[body["dag_run_id"]] = {"dag_run_id": body["dag_run_id"], "conf": {"by": "someone else"}}
            if answer in ("ok", "stored"):
                self.runs[body["dag_run_id"]] = {"dag_run_id": body["dag_run_id"], "conf": body["conf"]}
            if answer == "ok":
                return httpx.Response(200, json=self.runs[body["dag_run_id"]])
            return httpx.Response(500, json=DATABASE_ERROR)
        if request.method == "GET" and request.url.path.startswith(prefix + "/"):
            run = self.runs.get(request.url.path.removeprefix(prefix + "/"))
            return httpx.Response(200, json=run) if run else httpx.Response(404, json={"detail": "no run"})
        return httpx.Response(404, json={"detail": f"unexpected {request.method} {request.url.path}"})


@pytest.fixture(autouse=True)
def no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(airflow_api, "TRIGGER_RETRY_SECONDS", 0.0)


def client(fake: FakeAirflow) -> AirflowAPI:
    return AirflowAPI("http://airflow", "admin", "pw", transport=httpx.MockTransport(fake))


def test_a_lost_trigger_is_sent_again_under_the_same_run_id() -> None:
    fake = FakeAirflow(["lost", "ok"])
    assert client(fake).trigger("train", conf={"reason": "drift"}, run_id="r1") == "r1"
    assert [p["dag_run_id"] for p in fake.posts] == ["r1", "r1"]
    assert fake.runs == {"r1": {"dag_run_id": "r1", "conf": {"reason": "drift"}}}


def test_a_trigger_that_landed_despite_its_error_is_not_run_twice() -> None:
    fake = FakeAirflow(["stored"])
    assert client(fake).trigger("train", conf={"reason": "drift"}, run_id="r1") == "r1"
    assert len(fake.posts) == 2  # the retry met a 409 and found its own run
    assert list(fake.runs) == ["r1"]


def test_without_a_run_id_the_client_chooses_one_so_the_retry_is_safe() -> None:
    fake = FakeAirflow(["stored"])
    run_id = client(fake).trigger("train", conf={"reason": "manual"})
    assert run_id.startswith("manual__") and list(fake.runs) == [run_id]
    assert {p["dag_run_id"] for p in fake.posts} == {run_id}


def test_a_conflict_with_someone_elses_run_is_an_error() -> None:
    fake = FakeAirflow([])
    fake.runs["r1"] = {"dag_run_id": "r1", "conf": {"reason": "earlier"}}
    with pytest.raises(AirflowAPIError) as first_try:
        client(fake).trigger("train", conf={"reason": "drift"}, run_id="r1")
    assert first_try.value.status_code == 409 and len(fake.posts) == 1

    fake = FakeAirflow(["taken"])
    with pytest.raises(AirflowAPIError) as on_retry:
        client(fake).trigger("train", conf={"reason": "drift"}, run_id="r2")
    assert on_retry.value.status_code == 409 and fake.runs["r2"]["conf"] == {"by": "someone else"}


def test_a_persistent_server_error_surfaces_after_the_last_attempt() -> None:
    fake = FakeAirflow(["lost"] * airflow_api.TRIGGER_ATTEMPTS)
    with pytest.raises(AirflowAPIError, match="500") as error:
        client(fake).trigger("train", run_id="r1")
    assert error.value.status_code == 500
    assert len(fake.posts) == airflow_api.TRIGGER_ATTEMPTS and fake.runs == {}


def test_a_client_error_is_not_retried() -> None:
    fake = FakeAirflow(["invalid", "ok"])
    with pytest.raises(AirflowAPIError, match="422"):
        client(fake).trigger("train", run_id="r1")
    assert len(fake.posts) == 1 and fake.runs == {}
