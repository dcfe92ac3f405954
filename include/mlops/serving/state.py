"""What the prediction service's routes share: the model cache, the log writer and a batcher per use case.

One `ServiceState` is built per app and attached to it (`app.state.service`); routes read it
with `service_state(request)`. The lifespan starts and stops its background threads: the
alias poller, the log writer and, per use case with `strategy: shadow`, the supervisor of its shadow
worker process (serving/shadow.py).
A use case with `strategy: canary` has a second batcher (for the requests routed to
`@canary`) and a guard (serving/canary.py); neither has a thread of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from mlops.naming import ROLE_CANARY, ROLE_CHAMPION, ROLE_SHADOW
from mlops.serving.canary import CanaryGuard
from mlops.serving.metrics import ServiceMetrics, log_writer_metrics
from mlops.serving.microbatch import MicroBatcher
from mlops.serving.models import ModelCache
from mlops.serving.online_features import OnlineFeatures
from mlops.serving.shadow import ShadowScorer
from mlops.serving.shadow_worker import RegistryLoader
from mlops.serving.spoolwriter import LogWriter, log_writer

if TYPE_CHECKING:
    from prometheus_client.core import Metric
    from starlette.requests import Request

    from mlops.serving.config import ServingConfig
    from mlops.serving.models import LoadedModel

log = logging.getLogger("mlops.serving")


@dataclass(frozen=True)
class ServiceState:
    config: ServingConfig
    cache: ModelCache
    """Follows the alias of every served use case (a poller thread)."""
    writer: LogWriter
    """Appends every prediction to the log, off the request path (the spool and its drain process, or a writer
    thread)."""
    batchers: dict[str, MicroBatcher]
    """One per served use case, in configuration order."""
    served: list[str]
    """The served use cases, sorted: named in every refusal of a use case."""
    metrics: ServiceMetrics
    shadows: dict[str, ShadowScorer]
    """One per served use case with deployment.strategy: shadow: hands its micro-batches to a worker process."""
    canary_batchers: dict[str, MicroBatcher]
    """One per served use case with deployment.strategy: canary: predicts with `@canary`."""
    guards: dict[str, CanaryGuard]
    """One per served use case with deployment.strategy: canary: takes the canary off on a breach."""
    online: dict[str, OnlineFeatures]
    """One per served use case with a `feature_store` section: completes its records from the online store."""

    def start(self) -> None:
        self.writer.start()
        for scorer in self.shadows.values():
            scorer.start()
        self.cache.start()

    def stop(self) -> None:
        """Flush the prediction log, then let the poller go."""
        # The log first: a poller stuck in the MLflow client's retries against an
        # unreachable registry can take minutes to return, and waiting for it before
        # the flush would let the supervisor's SIGKILL take the buffered predictions with it.
        self.cache.signal_stop()
        # The shadow workers drain their own log writers while this one drains (they are told at
        # once, waited for after); a worker still busy (or hung) past the wait is killed.
        for scorer in self.shadows.values():
            scorer.signal_stop()
        self.writer.stop()
        for scorer in self.shadows.values():
            scorer.stop()
        log.warning("prediction service stopped; log writer flushed (%s)", self.writer.stats())
        # A daemon thread: if it is still inside a registry call, exiting abandons only that call.
        self.cache.stop(timeout=2.0)


def build_state(config: ServingConfig) -> ServiceState:
    """The cache, log writer and batchers for the use cases `config` serves (threads not started)."""
    use_cases = config.load_use_cases()
    metrics = ServiceMetrics()
    cache = ModelCache(
        use_cases,
        alias=config.alias,
        poll_seconds=config.poll_seconds,
        array_predict=config.array_predict,
        metrics=metrics,
    )
    spool = config.spool_folder()
    writer = log_writer(config.log_uri, spool, flush_seconds=config.log_flush_seconds, queue_size=config.log_queue_size)
    shadows = {
        u.name: ShadowScorer(
            u.name,
            u.deployment.shadow_timeout_ms / 1000,
            metrics,
            model_of=partial(cache.get_shadow, u.name),
            loader=RegistryLoader(u, cache.tracking_uri, config.array_predict),
            log_uri=config.log_uri,
            log_flush_seconds=config.log_flush_seconds,
            spool_dir=spool,
            sample=u.deployment.shadow_sample,
            hang_seconds=u.deployment.shadow_hang_ms / 1000,
        )
        for u in use_cases
        if u.deployment.strategy == "shadow"
    }
    window = config.batch_window_ms / 1000
    batchers = {u.name: MicroBatcher(cache, u.name, window, shadows.get(u.name), metrics) for u in use_cases}
    canaried = [u for u in use_cases if u.deployment.strategy == "canary"]
    canary_batchers = {
        u.name: MicroBatcher(cache, u.name, window, None, metrics, model_of=_canary_of(cache, u.name), role=ROLE_CANARY)
        for u in canaried
    }
    guards = {u.name: CanaryGuard(u.name, u.deployment, cache.record_breach) for u in canaried}
    state = ServiceState(
        config=config,
        cache=cache,
        writer=writer,
        batchers=batchers,
        served=sorted(batchers),
        metrics=metrics,
        shadows=shadows,
        canary_batchers=canary_batchers,
        guards=guards,
        online={u.name: OnlineFeatures(u) for u in use_cases if u.feature_store is not None},
    )
    metrics.watch(lambda: _scraped(state))
    return state


def _canary_of(cache: ModelCache, use_case: str) -> Callable[[], LoadedModel | None]:
    def canary() -> LoadedModel | None:
        found = cache.get_canary(use_case)
        return found[0] if found is not None else None

    return canary


def _scraped(state: ServiceState) -> Iterator[Metric]:
    """What /metrics reads from the running service at scrape time: log writer, shadow queues, versions served."""
    from prometheus_client.core import GaugeMetricFamily

    yield from log_writer_metrics(_log_stats(state))
    depth = GaugeMetricFamily("mlops_serving_shadow_queue_depth", "Micro-batches waiting for the shadow.",
                              labels=["use_case"])  # fmt: skip
    late = GaugeMetricFamily(
        "mlops_serving_shadow_overdue_seconds",
        "How far past its deadline the shadow's batch in progress is (0: none late); grows while a shadow hangs.",
        labels=["use_case"],
    )
    for name, scorer in state.shadows.items():
        depth.add_metric([name], float(scorer.queue_depth()))
        late.add_metric([name], scorer.busy_seconds())
    yield depth
    yield late
    info = GaugeMetricFamily(
        "mlops_serving_model_info", "1 per version served, by use case and role.",
        labels=["use_case", "role", "model_name", "model_version"],
    )  # fmt: skip
    served_by_role = (
        (ROLE_CHAMPION, state.cache.current()),
        (ROLE_SHADOW, state.cache.shadows()),
        (ROLE_CANARY, state.cache.canaries()),
    )
    for role, served in served_by_role:
        for name, model in served.items():
            info.add_metric([name, role, model.model_name, model.version], 1.0)
    yield info
    fraction = GaugeMetricFamily(
        "mlops_serving_canary_fraction",
        "Share of requests routed to the canary now (its step's fraction; 0 after a guard breach).",
        labels=["use_case", "model_version"],
    )
    for name in state.guards:
        found = state.cache.get_canary(name)
        if found is not None:
            fraction.add_metric([name, found[0].version], found[1])
    yield fraction


def _log_stats(state: ServiceState) -> dict[str, Any]:
    """The service's log writer's counts, plus the rows its shadow workers' writers appended, held or dropped."""
    stats = state.writer.stats()
    for scorer in state.shadows.values():
        shadow = scorer.log_stats()
        for key in ("written_rows", "dropped_rows", "rejected_rows", "pending_rows"):
            stats[key] += shadow.get(key, 0)
        stats["failing"] = stats["failing"] or bool(shadow.get("failing"))
    return stats


def service_state(request: Request) -> ServiceState:
    """The state of the app serving `request`.

    A plain attribute read, not a FastAPI `Depends`: the prediction route resolves no
    extra dependency per request.
    """
    state: ServiceState = request.app.state.service
    return state
