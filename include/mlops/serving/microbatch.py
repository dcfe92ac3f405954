"""Micro-batching: the requests of a short window share one predict call.

The model reference is taken once per micro-batch, so a hot swap never mixes versions
inside one response. With a shadow (serving/shadow.py), the batch's rows go to the shadow's
worker process after every champion answer of the batch is set. A use case with a canary has a
second batcher for the requests routed to it, which predicts with `@canary` (`model_of`) on
the event loop, as the champion's does: the guard then compares the two on equal terms. (A
thread of its own was tried: under load its hand-off and GIL waits gave a canary of the
champion's own kind a p99 3-4x the champion's, and the guard rolled every sound canary back;
docs/serving.md, "Shadow and canary cost".)

A store-backed use case's requests (serving/online_features.py) join the batch with their store
features still to come: the batch reads the online store once for all of them, then predicts.
A request the store cannot complete (an unknown entity under `refuse`, the store down) gets its
own error; the others of the batch are predicted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlops.naming import ROLE_CHAMPION

if TYPE_CHECKING:
    from mlops.serving.metrics import ServiceMetrics
    from mlops.serving.models import LoadedModel, ModelCache
    from mlops.serving.online_features import StoreLookup
    from mlops.serving.shadow import RequestContext, ShadowScorer

Probabilities = list[list[float]] | None
Result = tuple["LoadedModel", list[Any], Probabilities]
"""The model that answered, one prediction per row and, for a classifier, one probability row per row."""


_Pending = tuple[
    "LoadedModel", list[list[Any]], "asyncio.Future[Result]", "RequestContext | None", "StoreLookup | None"
]
_Usable = tuple[list[list[Any]], "asyncio.Future[Result]", "RequestContext | None"]


class VersionChanged(Exception):
    """The served version changed its input columns between validating a request and predicting it."""


class MicroBatcher:
    """Gathers the requests of a short window into a single predict call.

    Why a window and not just one event-loop turn: a scikit-learn `Pipeline.predict` on a
    DataFrame costs about a millisecond whether it gets 1 row or 100. At 8 connections the
    requests of one turn are mostly single, so each would pay that millisecond and the
    worker would run out of CPU (docs/serving.md); waiting up to `window_seconds` for
    companions makes one call serve several requests.
    """

    def __init__(
        self,
        cache: ModelCache,
        use_case: str,
        window_seconds: float = 0.0,
        shadow: ShadowScorer | None = None,
        metrics: ServiceMetrics | None = None,
        model_of: Callable[[], LoadedModel | None] | None = None,
        role: str = ROLE_CHAMPION,
    ) -> None:
        self.cache = cache
        self.use_case = use_case
        self.model_of = model_of or (lambda: cache.get(use_case))
        """The model a micro-batch is predicted with, read once per batch: the champion unless told."""
        self.role = role
        self.window_seconds = window_seconds
        self.shadow = shadow
        """This use case's shadow worker (deployment.strategy: shadow); None: no shadow scoring."""
        self.metrics = metrics
        self._pending: list[_Pending] = []
        self._scheduled = False
        self._filling: set[asyncio.Task[None]] = set()

    async def predict(
        self,
        model: LoadedModel,
        rows: list[list[Any]],
        context: RequestContext | None = None,
        lookup: StoreLookup | None = None,
    ) -> Result:
        """The request's predictions; `context` (ids, event times, source) lets the shadow log its rows.

        With `lookup`, the rows' store features are still None: the batch reads them (in place) before
        predicting; a RequestError (422, 503) when the store cannot complete this request."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((model, rows, future, context, lookup))
        if not self._scheduled and not self._filling:
            self._schedule(loop)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = True
        if self.window_seconds > 0:
            loop.call_later(self.window_seconds, self._flush)
        else:
            # call_soon runs after every request already runnable in this turn has joined.
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        # Requests that timed out or whose client left are answered already: predicting them is wasted.
        pending = [entry for entry in pending if not entry[2].done()]
        if not pending:
            return
        model = self.model_of()
        if model is None:
            for _, _, future, _, _ in pending:
                _settle(future, RuntimeError("no model loaded"))
            return
        usable: list[_Usable] = []
        lookups: list[tuple[list[list[Any]], asyncio.Future[Result], StoreLookup]] = []
        for validated_with, rows, future, context, lookup in pending:
            # Rows are ordered by the schema they were validated with; a new version
            # with other columns cannot take them (never seen in practice: same use case).
            if validated_with.schema.names != model.schema.names:
                _settle(future, VersionChanged())
                continue
            usable.append((rows, future, context))
            if lookup is not None:
                lookups.append((rows, future, lookup))
        if lookups:
            # While this batch reads the store, the next one gathers without a window of its own: it starts
            # when this one is answered, as a batch of the inline path gathers while its predict runs. (With
            # the window running during the read, the next batch flushed right after the predict, smaller:
            # more predict calls for the same requests; the bench's first run, docs/features.md.)
            task = asyncio.get_running_loop().create_task(self._fill_then_predict(model, usable, lookups))
            self._filling.add(task)  # the loop keeps only a weak reference to a task
            task.add_done_callback(self._filled)
        elif usable:
            self._predict_batch(model, usable)

    async def _fill_then_predict(
        self,
        model: LoadedModel,
        usable: list[_Usable],
        lookups: list[tuple[list[list[Any]], asyncio.Future[Result], StoreLookup]],
    ) -> None:
        """One store read for every store-backed request of the batch, then one predict for all that it completed."""
        online = lookups[0][2].online  # one batcher serves one use case: one reader
        failures: list[BaseException | None]
        try:
            failures = list(await online.fill(model.schema, [(rows, lookup) for rows, _, lookup in lookups]))
        except Exception as exc:  # a bug in the filling must fail its requests, never leave them waiting
            failures = [exc] * len(lookups)
        for (_, future, _), failure in zip(lookups, failures, strict=True):
            if failure is not None:
                _settle(future, failure)
        # Settled ones (a failure here, a client gone during the read) are not predicted.
        self._predict_batch(model, [entry for entry in usable if not entry[1].done()])

    def _filled(self, task: asyncio.Task[None]) -> None:
        self._filling.discard(task)
        if self._pending and not self._scheduled and not self._filling:
            self._schedule(asyncio.get_running_loop())

    def _predict_batch(self, model: LoadedModel, usable: list[_Usable]) -> None:
        if not usable:
            return
        all_rows = [row for rows, _, _ in usable for row in rows]
        started = time.perf_counter()
        try:
            frame = model.schema.to_frame(all_rows)
            # A classifier: one predict_proba per micro-batch, the class derived from it.
            predictions, probabilities = model.predict_rows(frame)
        except Exception:
            # One bad request must not fail its neighbours: predict them one by one.
            answered = [(rows, context) for rows, future, context in usable if self._predict_one(model, rows, future)]
            self._to_shadow(model, [row for rows, _ in answered for row in rows], [c for _, c in answered])
            return
        self._observe(model, len(all_rows), time.perf_counter() - started)
        start = 0
        for rows, future, _ in usable:
            end = start + len(rows)
            proba = probabilities[start:end] if probabilities is not None else None
            _settle(future, (model, predictions[start:end], proba))
            start = end
        self._to_shadow(model, all_rows, [context for _, _, context in usable])

    def _to_shadow(self, model: LoadedModel, rows: list[list[Any]], contexts: list[RequestContext | None]) -> None:
        """Hand the answered rows to the shadow's worker process, if this use case has a shadow now."""
        if self.shadow is None or not rows:
            return
        shadow = self.cache.get_shadow(self.use_case)
        if shadow is None or any(c is None for c in contexts):
            return
        from mlops.serving.shadow import ShadowJob

        known = [c for c in contexts if c is not None]
        self.shadow.submit(ShadowJob(model, shadow, rows, known, self.shadow.deadline()))

    def _observe(self, model: LoadedModel, rows: int, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.observe_predict(self.use_case, model.version, self.role, rows, seconds)

    def _predict_one(self, model: LoadedModel, rows: list[list[Any]], future: asyncio.Future[Result]) -> bool:
        """Predict one request on its own; True when it was answered."""
        started = time.perf_counter()
        try:
            predictions, probabilities = model.predict_rows(model.schema.to_frame(rows))
        except Exception as exc:
            _settle(future, exc)
            return False
        self._observe(model, len(rows), time.perf_counter() - started)
        if future.done():
            return False
        _settle(future, (model, predictions, probabilities))
        return True


def _settle(future: asyncio.Future[Result], result: Result | BaseException) -> None:
    """Set a request's result or exception, unless it is done already (a client gone, a time-out)."""
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
