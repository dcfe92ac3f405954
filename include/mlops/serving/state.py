"""What the prediction service's routes share: the model cache, the log writer and a batcher per use case.

One `ServiceState` is built per app and attached to it (`app.state.service`); routes read it
with `service_state(request)`. The lifespan starts and stops its two background threads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlops.serving.logwriter import PredictionLogWriter
from mlops.serving.microbatch import MicroBatcher
from mlops.serving.models import ModelCache

if TYPE_CHECKING:
    from starlette.requests import Request

    from mlops.serving.config import ServingConfig

log = logging.getLogger("mlops.serving")


@dataclass(frozen=True)
class ServiceState:
    config: ServingConfig
    cache: ModelCache
    """Follows the alias of every served use case (a poller thread)."""
    writer: PredictionLogWriter
    """Appends every prediction to the log, off the request path (a writer thread)."""
    batchers: dict[str, MicroBatcher]
    """One per served use case, in configuration order."""
    served: list[str]
    """The served use cases, sorted: named in every refusal of a use case."""

    def start(self) -> None:
        self.writer.start()
        self.cache.start()

    def stop(self) -> None:
        """Flush the prediction log, then let the poller go."""
        # The log first: a poller stuck in the MLflow client's retries against an
        # unreachable registry can take minutes to return, and waiting for it before
        # the flush would let the supervisor's SIGKILL take the buffered predictions with it.
        self.cache.signal_stop()
        self.writer.stop()
        log.warning("prediction service stopped; log writer flushed (%s)", self.writer.stats())
        # A daemon thread: if it is still inside a registry call, exiting abandons only that call.
        self.cache.stop(timeout=2.0)


def build_state(config: ServingConfig) -> ServiceState:
    """The cache, log writer and batchers for the use cases `config` serves (threads not started)."""
    use_cases = config.load_use_cases()
    cache = ModelCache(
        use_cases, alias=config.alias, poll_seconds=config.poll_seconds, array_predict=config.array_predict
    )
    writer = PredictionLogWriter(
        config.log_uri, queue_size=config.log_queue_size, flush_seconds=config.log_flush_seconds
    )
    batchers = {u.name: MicroBatcher(cache, u.name, config.batch_window_ms / 1000) for u in use_cases}
    return ServiceState(config=config, cache=cache, writer=writer, batchers=batchers, served=sorted(batchers))


def service_state(request: Request) -> ServiceState:
    """The state of the app serving `request`.

    A plain attribute read, not a FastAPI `Depends`: the prediction route resolves no
    extra dependency per request.
    """
    state: ServiceState = request.app.state.service
    return state
