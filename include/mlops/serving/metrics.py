"""Prometheus metrics of the prediction service (`GET /metrics`), with `prometheus-client`.

What a request pays: one dict lookup for the (use case, version, role, status) label set and a
Counter `inc` plus a Histogram `observe` on children cached here, so no `.labels()` string
handling per request. What the service already counts elsewhere (the log writer's rows, the
shadow queues, the models served) is read when Prometheus scrapes, by a collector, and costs
a request nothing.

Each app has its own registry rather than the process-global one, so several apps in one
process (the tests build many) never collide on metric names.

Several uvicorn workers (`--workers N`): every worker is its own process with its own
numbers, and a scrape reaches whichever worker accepts it. Run one worker per container and
scale by replicas (each scraped on its own target), or sum across scrapes with care; the
prometheus multiprocess mode is not used because it cannot carry the collector's live values
(queue depths, the version served).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client.metrics import Counter as CounterT
    from prometheus_client.metrics import Histogram as HistogramT

# Answers take about a millisecond; Prometheus' default buckets start at 5 ms and would
# put every request in the first one.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

MODEL_EVENTS = ("load", "swap", "drop", "error", "rollback")
"""`load`: a version downloaded and loaded; `swap`: the served version changed (a load or from the
cache); `drop`: the alias went away (a shadow or canary); `error`: a polling round failed for the
alias; `rollback`: the canary breached its guard and was taken off (serving/canary.py)."""


class ServiceMetrics:
    """The service's counters and histograms, and the registry `/metrics` renders."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "mlops_serving_requests",
            "Prediction requests by use case, model version, role and status: the HTTP status for the role that "
            "answers (champion); for the shadow, `ok` per request it scored in time (failures, time-outs and "
            "dropped batches: mlops_serving_shadow_*).",
            ["use_case", "model_version", "role", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "mlops_serving_request_duration_seconds",
            "Server-side time of an answered request, from routing to the response body (parsing, "
            "micro-batch wait, predict, log queueing).",
            ["use_case", "model_version", "role"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predict_seconds = Histogram(
            "mlops_serving_predict_duration_seconds",
            "One predict call on a micro-batch, by the model that made it (champion and shadow alike).",
            ["use_case", "model_version", "role"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predicted_rows = Counter(
            "mlops_serving_predicted_rows", "Rows predicted.", ["use_case", "model_version", "role"], registry=r
        )
        self.shadow_failures = Counter(
            "mlops_serving_shadow_failures",
            "Micro-batches the shadow raised on (no rows logged for them; the champion's answers are unchanged).",
            ["use_case", "model_version"],
            registry=r,
        )
        self.shadow_timeouts = Counter(
            "mlops_serving_shadow_timeouts",
            "Micro-batches the shadow did not finish within deployment.shadow_timeout_ms of the champion's "
            "answer: abandoned, not logged.",
            ["use_case", "model_version"],
            registry=r,
        )
        self.shadow_dropped = Counter(
            "mlops_serving_shadow_dropped_batches",
            "Micro-batches never given to the shadow: its queue or pipe was full (a slow or hung shadow), or its "
            "worker was not ready (starting, loading a version, restarting).",
            ["use_case"],
            registry=r,
        )
        self.shadow_restarts = Counter(
            "mlops_serving_shadow_restarts",
            "Shadow worker processes started again: `hung` (a micro-batch ran deployment.shadow_hang_ms past its "
            "deadline: killed) or `exited` (it died).",
            ["use_case", "reason"],
            registry=r,
        )
        self.canary_fallbacks = Counter(
            "mlops_serving_canary_fallbacks",
            "Requests routed to the canary that it failed (raised, or returned no finite prediction): answered by "
            "the champion instead, and counted against the canary's error rate.",
            ["use_case", "model_version"],
            registry=r,
        )
        self.model_events = Counter(
            "mlops_serving_model_events",
            "Model lifecycle events per use case and role: " + "; ".join(MODEL_EVENTS) + " (see serving/metrics.py).",
            ["use_case", "role", "event"],
            registry=r,
        )
        self._answered: dict[tuple[str, str, str, str], tuple[CounterT, HistogramT]] = {}
        self._predicted: dict[tuple[str, str, str], tuple[HistogramT, CounterT]] = {}

    def observe_request(self, use_case: str, version: str, role: str, status: int | str, seconds: float) -> None:
        key = (use_case, version, role, str(status))
        children = self._answered.get(key)
        if children is None:
            children = (self.requests.labels(*key), self.request_seconds.labels(use_case, version, role))
            self._answered[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_predict(self, use_case: str, version: str, role: str, rows: int, seconds: float) -> None:
        key = (use_case, version, role)
        children = self._predicted.get(key)
        if children is None:
            children = (self.predict_seconds.labels(*key), self.predicted_rows.labels(*key))
            self._predicted[key] = children
        children[0].observe(seconds)
        children[1].inc(rows)

    def count_shadow_requests(self, use_case: str, version: str, requests: int) -> None:
        self.requests.labels(use_case, version, "shadow", "ok").inc(requests)

    def model_event(self, use_case: str, role: str, event: str) -> None:
        self.model_events.labels(use_case, role, event).inc()

    def watch(self, collect: Callable[[], Iterator[Metric]]) -> None:
        """Add values read at scrape time (queue depths, rows written, the versions served)."""
        self.registry.register(_Collected(collect))

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class _Collected(Collector):
    def __init__(self, collect: Callable[[], Iterator[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[Metric]:
        return self._collect()


def log_writer_metrics(stats: dict[str, Any]) -> Iterator[Metric]:
    """The prediction log writer's counts (PredictionLogWriter.stats(), as /health shows them)."""
    for name, help_text, key in (
        ("mlops_serving_log_queue_depth", "Requests queued for the log writer.", "queue_depth"),
        ("mlops_serving_log_queue_capacity", "Capacity of the log writer's queue.", "queue_capacity"),
        ("mlops_serving_log_pending_rows", "Rows the writer holds while the store is failing.", "pending_rows"),
    ):
        gauge = GaugeMetricFamily(name, help_text)
        gauge.add_metric([], float(stats[key]))
        yield gauge
    failing = GaugeMetricFamily("mlops_serving_log_failing", "1 while appends to the prediction log store fail.")
    failing.add_metric([], 1.0 if stats["failing"] else 0.0)
    yield failing
    for name, help_text, key in (
        ("mlops_serving_log_written_rows", "Rows appended to the prediction log.", "written_rows"),
        ("mlops_serving_log_dropped_rows", "Rows dropped (queue full, or shed while the store was down).",
         "dropped_rows"),
        ("mlops_serving_log_rejected_rows", "Rows that could not become log rows (a data error).", "rejected_rows"),
    ):  # fmt: skip
        counter = CounterMetricFamily(name, help_text)
        counter.add_metric([], float(stats[key]))
        yield counter
