"""Batch scoring and replay against a real MLflow server and real log files."""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from polling import wait_until
from test_serving import register, regressor, start_service, write_configs

from mlops.config import load_use_case
from mlops.platform.replay import replay
from mlops.predictionlog.labels import write_labels
from mlops.predictionlog.predictions import read_predictions
from mlops.serving.batch import land_partition, read_landed_partition, score_partition

pytestmark = pytest.mark.integration
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bike(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("scoring")
    names = write_configs(root / "configs", uuid.uuid4().hex[:8])
    use_case = load_use_case(root / "configs" / "bike_sharing.yaml")
    pipeline, features = regressor(root / "configs" / "bike_sharing.yaml")
    version = register(names["bike_sharing"], pipeline, features)
    return use_case, version, pipeline, root


def _day(day: str) -> pd.DataFrame:
    frame = pd.read_csv(PROJECT_ROOT / "data" / "raw" / "bike_sharing_hourly.csv")
    return frame[frame["dteday"] == day].reset_index(drop=True)


def test_rescoring_a_partition_replaces_it(bike, tmp_path: Path) -> None:
    use_case, version, pipeline, _ = bike
    log = str(tmp_path / "log")
    frame = _day("2011-05-02")
    first = score_partition(use_case, "2011-05-02", frame, log_uri=log)
    assert first.rows == len(frame) and first.replaced_rows == 0 and first.model_version == version
    score_partition(use_case, "2011-05-03", _day("2011-05-03"), log_uri=log)

    again = score_partition(use_case, "2011-05-02", frame, log_uri=log)
    assert again.replaced_rows == len(frame)

    logged = read_predictions(use_case, "2011-05-02", "2011-05-04", uri=log)
    assert len(logged) == len(frame) + len(_day("2011-05-03"))
    mine = logged[logged["batch_partition"] == "2011-05-02"]
    assert mine["request_id"].is_unique and set(mine["source"]) == {"batch"}
    assert mine["prediction"].tolist() == pytest.approx(pipeline.predict(frame[use_case.features.all]).tolist())
    assert set(use_case.features.all) <= set(logged.columns)


def test_landed_partition_is_read_back_and_scored(bike, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_case, version, _, _ = bike
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLOPS_PREDICTION_LOG_URI", raising=False)
    assert read_landed_partition(use_case, "2011-05-05") is None
    land_partition(use_case, "2011-05-05", _day("2011-05-05"))
    frame = read_landed_partition(use_case, "2011-05-05")
    assert frame is not None and len(frame) == len(_day("2011-05-05"))
    result = score_partition(use_case, "2011-05-05", frame)
    assert result.rows == len(frame) and result.model_version == version
    assert (tmp_path / "home" / "predictions" / use_case.name / "date=2011-05-05").is_dir()


def test_labels_join_the_scored_rows_by_id(bike, tmp_path: Path) -> None:
    use_case, _, _, _ = bike
    log, labels = str(tmp_path / "log"), str(tmp_path / "labels")
    frame = _day("2011-05-04")
    score_partition(use_case, "2011-05-04", frame, log_uri=log)
    ids = [f"2011-05-04:{i}" for i in range(5)]
    write_labels(use_case, ids, frame["cnt"].head(5).tolist(), ["2011-05-04"] * 5, uri=labels)

    joined = read_predictions(use_case, "2011-05-04", "2011-05-05", with_labels=True, uri=log, labels_uri=labels)
    by_id = dict(zip(joined["request_id"], joined["label"], strict=True))
    assert [by_id[i] for i in ids] == frame["cnt"].head(5).astype(float).tolist()
    assert sum(math.isnan(v) for v in by_id.values()) == len(frame) - 5


def test_scoring_refuses_a_frame_without_the_features(bike, tmp_path: Path) -> None:
    use_case, _, _, _ = bike
    with pytest.raises(ValueError, match=r"lacks feature columns \['temp'\]"):
        score_partition(use_case, "2011-05-02", _day("2011-05-02").drop(columns=["temp"]), log_uri=str(tmp_path))


def test_batch_replay_logs_in_time_order_and_delivers_labels_after_the_delay(
    bike, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_case, version, _, _ = bike
    log, labels = str(tmp_path / "log"), str(tmp_path / "labels")
    lines: list[str] = []
    result = replay(
        use_case, "2011-05-30", "2011-06-03", speed=0, label_delay=2, via="batch",
        log_uri=log, labels_uri=labels, progress=lines.append,
    )  # fmt: skip
    assert result.failed_rows == 0 and result.model_versions == {version: result.rows}
    assert any(line.startswith("replaying 2011-05 ... ") for line in lines)
    assert any(line.startswith("replaying 2011-06 ... ") for line in lines)

    logged = read_predictions(use_case, "2011-05-30", "2011-06-03", with_labels=True, uri=log, labels_uri=labels)
    assert len(logged) == result.rows and set(logged["source"]) == {"replay"}
    # Time order is the order the days were scored in: read_predictions sorts by event time,
    # so look at when each day's partition was written (logged_at is the scoring time).
    written = logged.groupby("batch_partition")["logged_at"].agg(["min", "max"]).sort_values("min")
    assert list(written.index) == [f"replay-2011-{d}" for d in ("05-30", "05-31", "06-01", "06-02")]
    assert (written["max"].iloc[:-1].to_numpy() < written["min"].iloc[1:].to_numpy()).all()
    assert logged["event_time"].dt.hour.nunique() == 24  # each full day of 24 rows spread over its hours
    # Two simulated days of delay: the last two days' labels had not arrived when the replay ended.
    has_label = logged.groupby(logged["event_time"].dt.date)["label"].apply(lambda s: s.notna().all())
    assert has_label.tolist() == [True, True, False, False]
    assert result.labels_pending == int((~logged["label"].notna()).sum())

    # Re-running the replay replaces its partitions rather than doubling them.
    replay(use_case, "2011-05-30", "2011-06-03", speed=0, label_delay=2, via="batch", log_uri=log,
           labels_uri=labels, progress=lines.append)  # fmt: skip
    assert len(read_predictions(use_case, "2011-05-30", "2011-06-03", uri=log)) == result.rows


class RecordingProxy:
    """An HTTP proxy in front of the prediction service that records each request it passes on.

    `requests` holds (monotonic arrival time, path, event_times of the body) in arrival order,
    which is what the replay actually sent and when.
    """

    def __init__(self, target: str) -> None:
        self.requests: list[tuple[float, str, list[str]]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self, method: str) -> None:
                arrived = time.monotonic()
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                if method == "POST":
                    proxy.requests.append((arrived, self.path, json.loads(body).get("event_times") or []))
                upstream = httpx.request(
                    method, f"{target}{self.path}", content=body or None,
                    headers={"content-type": self.headers.get("content-type", "application/json")}, timeout=60,
                )  # fmt: skip
                self.send_response(upstream.status_code)
                self.send_header("content-type", upstream.headers.get("content-type", "application/json"))
                self.send_header("content-length", str(len(upstream.content)))
                self.end_headers()
                self.wfile.write(upstream.content)

            def do_GET(self) -> None:
                self._forward("GET")

            def do_POST(self) -> None:
                self._forward("POST")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def bike_service(bike) -> Iterator[Any]:
    _, _, _, root = bike
    service = start_service(
        root, root / "configs", root / "service-log", "--use-case", "bike_sharing", "--log-flush-seconds", "0.2"
    )
    try:
        yield service
    finally:
        service.stop()


def test_http_replay_sends_in_time_order_at_the_given_speed(bike, bike_service, tmp_path: Path) -> None:
    use_case, version, _, _ = bike
    labels = str(tmp_path / "labels")
    proxy = RecordingProxy(bike_service.url)
    speed = 1.0  # simulated days per second: the 4 days take at least 4 s, far more than sending them does
    days = ["2011-06-10", "2011-06-11", "2011-06-12", "2011-06-13"]
    lines: list[str] = []
    try:
        began = time.monotonic()
        result = replay(
            use_case, days[0], "2011-06-14", speed=speed, label_delay=1, via="http", url=proxy.url,
            rows_per_request=10, labels_uri=labels, progress=lines.append,
        )  # fmt: skip
        elapsed = time.monotonic() - began
    finally:
        proxy.close()
    assert result.failed_rows == 0 and result.model_versions == {version: result.rows}, lines

    posts = [(at, path, times) for at, path, times in proxy.requests]
    assert {path for _, path, _ in posts} == {f"/predict/{use_case.name}"}
    assert len(posts) >= 3 * len(days)  # 24 hourly rows a day in requests of 10
    # In time order: every event time a request carries is no earlier than the previous request's.
    sent = [t for _, _, times in posts for t in times]
    assert len(sent) == result.rows and sent == sorted(sent)
    # At the given speed: day k goes out no earlier than k / speed seconds after the replay began
    # (a lower bound only; a loaded machine may be slower, never faster).
    first_post_of_day = {}
    for at, _, times in posts:
        first_post_of_day.setdefault(times[0][:10], at)
    assert list(first_post_of_day) == days
    for k, day in enumerate(days):
        assert first_post_of_day[day] - began >= k / speed, (day, first_post_of_day[day] - began)
    assert elapsed >= len(days) / speed

    def all_logged() -> bool:
        frame = read_predictions(use_case, days[0], "2011-06-14", uri=str(bike_service.log_dir))
        return len(frame) == result.rows

    wait_until(all_logged, what="every replayed row in the service's prediction log")
    frame = read_predictions(use_case, days[0], "2011-06-14", with_labels=True, uri=str(bike_service.log_dir),
                             labels_uri=labels)  # fmt: skip
    assert set(frame["source"]) == {"replay"} and set(frame["model_version"]) == {version}
    # One simulated day of label delay: the last day's labels were still in flight at the end.
    has_label = frame.groupby(frame["event_time"].dt.date)["label"].apply(lambda s: s.notna().all())
    assert has_label.tolist() == [True, True, True, False]
    assert result.labels_pending == int(frame["label"].isna().sum())
