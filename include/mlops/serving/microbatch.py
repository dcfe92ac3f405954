"""Micro-batching: the requests of a short window share one predict call.

The model reference is taken once per micro-batch, so a hot swap never mixes versions
inside one response.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlops.serving.models import LoadedModel, ModelCache

Probabilities = list[list[float]] | None
Result = tuple["LoadedModel", list[Any], Probabilities]
"""The model that answered, one prediction per row and, for a classifier, one probability row per row."""


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

    def __init__(self, cache: ModelCache, use_case: str, window_seconds: float = 0.0) -> None:
        self.cache = cache
        self.use_case = use_case
        self.window_seconds = window_seconds
        self._pending: list[tuple[LoadedModel, list[list[Any]], asyncio.Future[Result]]] = []
        self._scheduled = False

    async def predict(self, model: LoadedModel, rows: list[list[Any]]) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((model, rows, future))
        if not self._scheduled:
            self._scheduled = True
            if self.window_seconds > 0:
                loop.call_later(self.window_seconds, self._flush)
            else:
                # call_soon runs after every request already runnable in this turn has joined.
                loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        model = self.cache.get(self.use_case)
        if model is None:
            for _, _, future in pending:
                if not future.done():
                    future.set_exception(RuntimeError("no model loaded"))
            return
        usable = []
        for validated_with, rows, future in pending:
            # Rows are ordered by the schema they were validated with; a new version
            # with other columns cannot take them (never seen in practice: same use case).
            if validated_with.schema.names != model.schema.names:
                future.set_exception(VersionChanged())
            else:
                usable.append((rows, future))
        if not usable:
            return
        try:
            all_rows = [row for rows, _ in usable for row in rows]
            # A classifier: one predict_proba per micro-batch, the class derived from it.
            predictions, probabilities = model.predict_rows(model.schema.to_frame(all_rows))
        except Exception:
            if len(usable) == 1:
                self._predict_one(model, *usable[0])
                return
            # One bad request must not fail its neighbours: predict them one by one.
            for rows, future in usable:
                self._predict_one(model, rows, future)
            return
        start = 0
        for rows, future in usable:
            if not future.done():
                end = start + len(rows)
                future.set_result(
                    (model, predictions[start:end], probabilities[start:end] if probabilities is not None else None)
                )
            start += len(rows)

    @staticmethod
    def _predict_one(model: LoadedModel, rows: list[list[Any]], future: asyncio.Future[Result]) -> None:
        try:
            predictions, probabilities = model.predict_rows(model.schema.to_frame(rows))
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result((model, predictions, probabilities))
