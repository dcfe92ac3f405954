"""Shadow scoring in the micro-batcher: the champion answers, the shadow's rows are logged with role
`shadow`, and a shadow that raises, is slow or backs up changes no answer and is counted."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
from polling import wait_until
from prometheus_client.parser import text_string_to_metric_families

from mlops.serving.logwriter import LogEntry
from mlops.serving.metrics import ServiceMetrics
from mlops.serving.microbatch import MicroBatcher
from mlops.serving.models import LoadedModel
from mlops.serving.schema import InputSchema
from mlops.serving.shadow import RequestContext, ShadowScorer


class Linear:
    """y = factor * (a + b); optionally raising or sleeping first."""

    def __init__(self, factor: float, fail: bool = False, sleep: float = 0.0) -> None:
        self.factor, self.fail, self.sleep = factor, fail, sleep

    def predict(self, frame: pd.DataFrame) -> Any:
        if self.fail:
            raise RuntimeError("broken shadow")
        time.sleep(self.sleep)
        return (frame["a"] + frame["b"]).to_numpy() * self.factor


def loaded(version: str, model: Linear) -> LoadedModel:
    return LoadedModel(use_case="demo", model_name="demo_model", version=version, alias="x", run_id=None,
                       aliases=(), signature=None, schema=InputSchema.from_signature(None, ["a", "b"], []),
                       model=model, loaded_at=datetime.now(UTC))  # fmt: skip


class Cache:
    def __init__(self, champion: LoadedModel, shadow: LoadedModel) -> None:
        self.champion, self.shadow = champion, shadow

    def get(self, use_case: str) -> LoadedModel:
        return self.champion

    def get_shadow(self, use_case: str) -> LoadedModel:
        return self.shadow


class RecordingWriter:
    def __init__(self) -> None:
        self.entries: list[LogEntry] = []

    def submit(self, entry: LogEntry) -> bool:
        self.entries.append(entry)
        return True


def sample(metrics: ServiceMetrics, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


def serve(shadow_model: Linear, timeout: float, queue_size: int = 8) -> tuple[MicroBatcher, ShadowScorer, Any]:
    metrics = ServiceMetrics()
    writer = RecordingWriter()
    scorer = ShadowScorer("demo", writer, timeout, metrics, queue_size=queue_size)  # type: ignore[arg-type]
    cache = Cache(loaded("1", Linear(1.0)), loaded("2", shadow_model))
    return MicroBatcher(cache, "demo", 0.002, scorer, metrics), scorer, (metrics, writer)  # type: ignore[arg-type]


async def ask(batcher: MicroBatcher, n: int, tag: str) -> list[list[Any]]:
    async def one(i: int) -> list[Any]:
        context = RequestContext([f"{tag}{i}"], [datetime(2011, 1, 1, i)], "online")
        model, predictions, _ = await batcher.predict(batcher.cache.get("demo"), [[float(i), 1.0]], context)
        assert model.version == "1"
        return predictions

    return list(await asyncio.gather(*(one(i) for i in range(n))))


@pytest.fixture
def started() -> Any:
    scorers: list[ShadowScorer] = []
    yield scorers.append
    for scorer in scorers:
        scorer.stop()


def test_a_shadow_scores_the_answered_rows_and_logs_them_with_its_version(started: Any) -> None:
    batcher, scorer, (metrics, writer) = serve(Linear(3.0), timeout=5.0)
    scorer.start()
    started(scorer)
    assert asyncio.run(ask(batcher, 3, "r")) == [[1.0], [2.0], [3.0]]  # the champion's answers
    wait_until(lambda: len(writer.entries) == 3, what="the shadow's rows")
    by_id = {e.ids[0]: e for e in writer.entries}
    assert [by_id[f"r{i}"].predictions for i in range(3)] == [[3.0], [6.0], [9.0]]
    assert {(e.role, e.model_version, e.source) for e in writer.entries} == {("shadow", "2", "online")}
    assert by_id["r2"].event_times == [datetime(2011, 1, 1, 2)] and by_id["r2"].rows == [[2.0, 1.0]]
    requests = sample(metrics, "mlops_serving_requests_total", use_case="demo", model_version="2", role="shadow",
                      status="ok")  # fmt: skip
    assert requests == 3


def test_a_raising_shadow_changes_no_answer_logs_nothing_and_is_counted(started: Any) -> None:
    batcher, scorer, (metrics, writer) = serve(Linear(3.0, fail=True), timeout=5.0)
    scorer.start()
    started(scorer)
    assert asyncio.run(ask(batcher, 4, "f")) == [[1.0], [2.0], [3.0], [4.0]]
    wait_until(lambda: scorer.failures >= 1, what="the failure counted")
    assert sample(metrics, "mlops_serving_shadow_failures_total", use_case="demo", model_version="2") >= 1
    assert writer.entries == []


def test_a_slow_shadow_is_abandoned_and_a_full_queue_drops_batches(started: Any) -> None:
    batcher, scorer, (metrics, writer) = serve(Linear(3.0, sleep=0.3), timeout=0.05, queue_size=1)
    scorer.start()
    started(scorer)
    began = time.monotonic()
    for round_ in range(5):
        assert asyncio.run(ask(batcher, 2, f"s{round_}-")) == [[1.0], [2.0]]
    assert time.monotonic() - began < 0.3  # five rounds took less than one shadow batch
    wait_until(lambda: scorer.scored_batches + scorer.timeouts + scorer.dropped_batches >= 5, timeout=5,
               what="every batch accounted for")  # fmt: skip
    assert scorer.dropped_batches >= 1 and scorer.timeouts >= 1 and scorer.scored_batches == 0
    assert sample(metrics, "mlops_serving_shadow_dropped_batches_total", use_case="demo") == scorer.dropped_batches
    assert sample(metrics, "mlops_serving_shadow_timeouts_total", use_case="demo", model_version="2") >= 1
    time.sleep(0.4)  # the batch in progress returns after its deadline: abandoned, not logged
    assert writer.entries == []
