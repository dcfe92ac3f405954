"""Shadow scoring in the micro-batcher, with the shadow in a worker process of its own: the champion
answers, the worker logs the shadow's rows with role `shadow`, and a shadow that raises, is slow,
backs up or hangs changes no answer, is counted, and (when it hangs) is killed and started again.

Real worker processes (`python -m mlops.serving.shadow_worker`) and a real Parquet prediction log;
the models are fakes (tests/unit/shadow_fakes.py) the worker imports, as the service's worker
loads versions from the registry.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from polling import wait_until
from prometheus_client.parser import text_string_to_metric_families
from shadow_fakes import FakeLoader, loaded

from mlops.predictionlog.predictions import read_predictions
from mlops.serving.metrics import ServiceMetrics
from mlops.serving.microbatch import MicroBatcher
from mlops.serving.models import LoadedModel
from mlops.serving.shadow import RequestContext, ShadowScorer
from mlops.serving.shadow_worker import READY_SEQ, STATE_SLOTS, ShadowWorker

HERE = Path(__file__).resolve().parent


class Cache:
    def __init__(self, champion: LoadedModel, shadow: LoadedModel | None) -> None:
        self.champion, self.shadow = champion, shadow

    def get(self, use_case: str) -> LoadedModel:
        return self.champion

    def get_shadow(self, use_case: str) -> LoadedModel | None:
        return self.shadow


def sample(metrics: ServiceMetrics, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is gone for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Builds a champion (version 1) + shadow batcher whose shadow worker imports shadow_fakes; stops them after."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    scorers: list[ShadowScorer] = []

    def build(version: str, timeout: float = 5.0, ready: bool = True, **options: Any) -> tuple[Any, ...]:
        metrics = ServiceMetrics()
        cache = Cache(loaded("1"), loaded(version))
        scorer = ShadowScorer("demo", timeout, metrics, model_of=lambda: cache.shadow, loader=FakeLoader(),
                              log_uri=str(tmp_path / "log"), log_flush_seconds=0.1, **options)  # fmt: skip
        scorer.start()
        scorers.append(scorer)
        if ready:
            wait_until(lambda: scorer.stats()["worker"]["state"] == "ready", timeout=30, what="the worker loaded")
        return MicroBatcher(cache, "demo", 0.002, scorer, metrics), scorer, metrics  # type: ignore[arg-type]

    yield build
    for scorer in scorers:
        pid = scorer.stats()["worker"]["pid"]
        scorer.stop()
        assert pid is None or not alive(pid), "the worker outlived its scorer's stop()"


def ask(batcher: MicroBatcher, n: int, tag: str, first: float = 0.0) -> list[list[Any]]:
    """n single-row requests at once (one micro-batch), the champion's answers; row i is [first + i, 1]."""

    async def one(i: int) -> list[Any]:
        context = RequestContext([f"{tag}{i}"], [datetime(2011, 1, 1, i % 24)], "online")
        model, predictions, _ = await batcher.predict(batcher.cache.get("demo"), [[first + i, 1.0]], context)
        assert model.version == "1"
        return predictions

    async def every() -> list[list[Any]]:
        return list(await asyncio.gather(*(one(i) for i in range(n))))

    return asyncio.run(every())


def logged(tmp_path: Path) -> pd.DataFrame:
    if not (tmp_path / "log").exists():
        return pd.DataFrame(columns=["request_id", "role"])
    return read_predictions("demo", None, None, uri=str(tmp_path / "log"))


def test_a_shadow_scores_the_answered_rows_in_its_own_process_and_logs_them(serve: Any, tmp_path: Path) -> None:
    batcher, scorer, metrics = serve("2")
    worker = scorer.stats()["worker"]
    assert worker["version"] == "2" and worker["pid"] != os.getpid() and alive(worker["pid"])
    assert ask(batcher, 3, "r") == [[1.0], [2.0], [3.0]]  # the champion's answers
    wait_until(lambda: len(logged(tmp_path)) == 3, what="the shadow's rows in the log")
    frame = logged(tmp_path).set_index("request_id").loc[["r0", "r1", "r2"]]
    assert list(frame["prediction"]) == [3.0, 6.0, 9.0]
    assert set(zip(frame["role"], frame["model_version"], frame["source"], strict=True)) == {("shadow", "2", "online")}
    assert list(frame["event_time"]) == [pd.Timestamp(2011, 1, 1, h) for h in range(3)]
    assert list(frame["a"]) == [0.0, 1.0, 2.0] and set(frame["b"]) == {1.0}
    wait_until(lambda: scorer.scored_batches == 1, what="the report of the scored batch")
    requests = sample(metrics, "mlops_serving_requests_total", use_case="demo", model_version="2", role="shadow",
                      status="ok")  # fmt: skip
    assert requests == 3
    assert sample(metrics, "mlops_serving_predict_duration_seconds_count", use_case="demo", model_version="2",
                  role="shadow") == 1  # fmt: skip
    wait_until(lambda: scorer.log_stats().get("written_rows") == 3, what="the worker's log writer's count")


def test_a_raising_shadow_changes_no_answer_logs_nothing_and_is_counted(serve: Any, tmp_path: Path) -> None:
    batcher, scorer, metrics = serve("raise")
    assert ask(batcher, 4, "f") == [[1.0], [2.0], [3.0], [4.0]]
    wait_until(lambda: scorer.failures == 1, what="the failure counted")
    assert sample(metrics, "mlops_serving_shadow_failures_total", use_case="demo", model_version="raise") == 1
    assert "broken shadow" in str(scorer.stats()["last_error"])
    assert logged(tmp_path).empty and scorer.restarts == 0


def test_a_slow_shadow_is_abandoned_and_a_full_queue_drops_batches(serve: Any, tmp_path: Path) -> None:
    batcher, scorer, metrics = serve("slow", timeout=0.05, queue_size=1)  # the shadow sleeps 0.3 s a batch
    began = time.monotonic()
    for round_ in range(5):
        assert ask(batcher, 2, f"s{round_}-") == [[1.0], [2.0]]
    assert time.monotonic() - began < 0.3  # five rounds took less than one shadow batch
    wait_until(lambda: scorer.scored_batches + scorer.timeouts + scorer.dropped_batches >= 5, timeout=10,
               what="every batch accounted for")  # fmt: skip
    assert scorer.dropped_batches >= 1 and scorer.timeouts >= 1 and scorer.scored_batches == 0
    assert sample(metrics, "mlops_serving_shadow_dropped_batches_total", use_case="demo") == scorer.dropped_batches
    assert sample(metrics, "mlops_serving_shadow_timeouts_total", use_case="demo", model_version="slow") >= 1
    time.sleep(0.5)  # the batch in progress returns after its deadline: abandoned, not logged
    assert logged(tmp_path).empty and scorer.restarts == 0  # slow is not hung: the worker is kept


def test_a_hung_shadow_worker_is_killed_and_a_new_one_shadows_again(serve: Any, tmp_path: Path) -> None:
    # The shadow hangs for good on a row whose `a` is -1 (a poison input), and scores the rest.
    batcher, scorer, metrics = serve("poison", timeout=0.1, hang_seconds=0.5)
    hung_pid = scorer.stats()["worker"]["pid"]
    began = time.monotonic()
    assert ask(batcher, 2, "p", first=-1.0) == [[0.0], [1.0]]  # answered at once by the champion
    assert time.monotonic() - began < 0.5
    wait_until(lambda: scorer.timeouts >= 1, timeout=5, what="the hung batch counted while it hangs")
    wait_until(lambda: scorer.restarts == 1, timeout=10, what="the hung worker killed")
    assert sample(metrics, "mlops_serving_shadow_restarts_total", use_case="demo", reason="hung") == 1
    wait_until(lambda: not alive(hung_pid), timeout=5, what="the hung worker gone")
    wait_until(lambda: scorer.stats()["worker"]["state"] == "ready", timeout=30, what="a new worker loaded")
    assert scorer.stats()["worker"]["pid"] != hung_pid
    assert ask(batcher, 3, "q", first=1.0) == [[2.0], [3.0], [4.0]]
    wait_until(lambda: len(logged(tmp_path)) == 3, what="the new worker's rows in the log")
    frame = logged(tmp_path)
    assert set(frame["request_id"]) == {"q0", "q1", "q2"} and set(frame["role"]) == {"shadow"}
    wait_until(lambda: scorer.scored_batches == 1, what="the new worker's report")  # the log may be written first
    assert scorer.timeouts == 1  # the poison batch: one time-out, never logged


def test_a_worker_that_dies_is_started_again(serve: Any, tmp_path: Path) -> None:
    batcher, scorer, metrics = serve("2")
    first = scorer.stats()["worker"]["pid"]
    os.kill(first, signal.SIGKILL)  # as the OOM killer would
    wait_until(lambda: scorer.restarts == 1, timeout=10, what="the dead worker noticed")
    assert sample(metrics, "mlops_serving_shadow_restarts_total", use_case="demo", reason="exited") == 1
    wait_until(lambda: scorer.stats()["worker"]["state"] == "ready", timeout=30, what="a new worker loaded")
    assert scorer.stats()["worker"]["pid"] != first
    assert ask(batcher, 2, "d") == [[1.0], [2.0]]
    wait_until(lambda: len(logged(tmp_path)) == 2, what="the new worker's rows in the log")


def test_a_sampled_shadow_scores_that_fraction_of_the_micro_batches(serve: Any, tmp_path: Path) -> None:
    batcher, scorer, _ = serve("2", sample=0.5)
    for round_ in range(100):
        ask(batcher, 1, f"m{round_}-")
    wait_until(lambda: scorer.scored_batches + scorer.sampled_out_batches + scorer.dropped_batches == 100,
               what="every batch scored or sampled out")  # fmt: skip
    # Binomial(100, 0.5): outside 25..75 once in ~10^6 runs.
    assert 25 <= scorer.sampled_out_batches <= 75 and scorer.dropped_batches == 0
    wait_until(lambda: len(logged(tmp_path)) == scorer.scored_batches, what="the scored rows logged")
    assert scorer.stats()["sample"] == 0.5


def test_the_worker_dies_with_the_service_process_even_by_sigkill(tmp_path: Path) -> None:
    script = f"""
import sys, time
sys.path.insert(0, {str(HERE)!r})
from shadow_fakes import FakeLoader, loaded
from mlops.serving.shadow import ShadowScorer
shadow = loaded("2")
scorer = ShadowScorer("demo", 1.0, model_of=lambda: shadow, loader=FakeLoader(), log_uri={str(tmp_path / "log")!r})
scorer.start()
while scorer.stats()["worker"]["state"] != "ready":
    time.sleep(0.05)
print(scorer.stats()["worker"]["pid"], flush=True)
time.sleep(600)
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    service = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert service.stdout is not None
        worker = int(service.stdout.readline())
        assert alive(worker)
        os.kill(service.pid, signal.SIGKILL)  # no shutdown code runs
        service.wait(timeout=10)
        wait_until(lambda: not alive(worker), timeout=10, what="the orphaned worker gone")
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()


class RecordingWriter:
    def __init__(self) -> None:
        self.entries: list[Any] = []

    def submit(self, entry: Any) -> bool:
        self.entries.append(entry)
        return True

    def stats(self) -> dict[str, Any]:
        return {"written_rows": 0}


def test_the_worker_predicts_waiting_batches_together_in_its_own_column_order() -> None:
    # In-process, without pipes: the worker's loop as the service drives it. The shadow reads b, a.
    writer, state, reports = RecordingWriter(), [0.0] * STATE_SLOTS, []
    worker = ShadowWorker(writer, state, reports.append)  # type: ignore[arg-type]
    from mlops.serving.shadow_worker import ModelRef

    far = time.monotonic() + 60
    when = [datetime(2011, 1, 1)]
    worker.handle(
        [
            ("model", 7, FakeLoader(("b", "a")), ModelRef("demo_model", "2", None, ())),
            ("schema", 1, ["a", "b"], {"a": "double", "b": "double"}),
            ("job", 1, "2", 1, [[1.0, 10.0]], [(["x"], when, "online")], far),
            ("job", 2, "2", 1, [[2.0, 20.0], [3.0, 30.0]], [(["y", "z"], when * 2, "replay")], far),
            ("job", 3, "2", 1, [[4.0, 40.0]], [(["late"], when, "online")], time.monotonic() - 1),
        ]
    )
    assert state[READY_SEQ] == 7
    kinds = [e[0] for e in worker.events]
    assert kinds == ["loaded", "expired", "predict", "scored", "scored"]
    assert worker.events[2][2] == 3  # one predict call for the two live batches' three rows
    assert [(e.ids, e.predictions, e.rows, e.source) for e in writer.entries] == [
        (["x"], [33.0], [[1.0, 10.0]], "online"),
        (["y", "z"], [66.0, 99.0], [[2.0, 20.0], [3.0, 30.0]], "replay"),
    ]  # logged as the champion ordered them (names a, b), predicted in the shadow's order
    assert {e.names == ["a", "b"] and e.role == "shadow" and e.model_version == "2" for e in writer.entries} == {True}
