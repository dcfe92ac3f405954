"""The prediction service's micro-batcher: which requests share one predict call, and isolation of a bad one."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

from mlops.serving.microbatch import MicroBatcher
from mlops.serving.models import LoadedModel
from mlops.serving.schema import InputSchema


class CountingModel:
    """A fitted y = a + 2b that records the size of every predict call and refuses a poison value."""

    def __init__(self) -> None:
        frame = pd.DataFrame({"a": [0.0, 1.0, 0.0, 2.0], "b": [0.0, 0.0, 1.0, 3.0]})
        self.fitted = LinearRegression().fit(frame, frame["a"] + 2 * frame["b"])
        self.calls: list[int] = []

    def predict(self, frame: pd.DataFrame) -> Any:
        self.calls.append(len(frame))
        if (frame["a"] == -1).any():
            raise ValueError("poison row")
        return self.fitted.predict(frame)


class OneModelCache:
    def __init__(self, model: LoadedModel) -> None:
        self.model = model

    def get(self, use_case: str) -> LoadedModel | None:
        return self.model


@pytest.fixture
def loaded() -> LoadedModel:
    return LoadedModel(
        use_case="demo",
        model_name="demo_model",
        version="1",
        alias="champion",
        run_id=None,
        aliases=("champion",),
        signature=None,
        schema=InputSchema.from_signature(None, ["a", "b"], []),
        model=CountingModel(),
        loaded_at=datetime.now(UTC),
    )


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.mark.parametrize("window_seconds", [0.0, 0.005])
def test_concurrent_requests_share_one_predict_call_and_get_their_own_rows(
    loaded: LoadedModel, window_seconds: float
) -> None:
    batcher = MicroBatcher(OneModelCache(loaded), "demo", window_seconds)  # type: ignore[arg-type]

    async def three_at_once() -> list[tuple[LoadedModel, list[Any]]]:
        return await asyncio.gather(
            batcher.predict(loaded, [[1.0, 1.0]]),
            batcher.predict(loaded, [[2.0, 0.0], [0.0, 2.0]]),
            batcher.predict(loaded, [[3.0, 3.0]]),
        )

    results = _run(three_at_once())
    assert loaded.model.calls == [4]
    assert [np.round(r[1], 6).tolist() for r in results] == [[3.0], [2.0, 4.0], [9.0]]
    assert all(r[0] is loaded for r in results)


def test_window_gathers_requests_that_arrive_after_the_first_turn(loaded: LoadedModel) -> None:
    """The reason for the window: with 0, a request arriving a moment later pays its own predict."""

    async def staggered(window_seconds: float) -> None:
        batcher = MicroBatcher(OneModelCache(loaded), "demo", window_seconds)  # type: ignore[arg-type]

        async def later() -> Any:
            await asyncio.sleep(0.002)
            return await batcher.predict(loaded, [[0.0, 1.0]])

        await asyncio.gather(batcher.predict(loaded, [[1.0, 0.0]]), later())

    _run(staggered(0.0))
    assert loaded.model.calls == [1, 1]
    loaded.model.calls.clear()
    _run(staggered(0.05))
    assert loaded.model.calls == [2]


def test_a_failing_request_does_not_fail_its_batch_neighbours(loaded: LoadedModel) -> None:
    batcher = MicroBatcher(OneModelCache(loaded), "demo", 0.005)  # type: ignore[arg-type]

    async def with_poison() -> list[Any]:
        return await asyncio.gather(
            batcher.predict(loaded, [[1.0, 0.0]]),
            batcher.predict(loaded, [[-1.0, 0.0]]),
            batcher.predict(loaded, [[0.0, 1.0]]),
            return_exceptions=True,
        )

    good, bad, other = _run(with_poison())
    assert np.round(good[1], 6).tolist() == [1.0]
    assert np.round(other[1], 6).tolist() == [2.0]
    assert isinstance(bad, ValueError) and "poison" in str(bad)
    # one call for the batch, then one per request after it failed
    assert loaded.model.calls == [3, 1, 1, 1]


def test_no_model_loaded_fails_every_waiting_request(loaded: LoadedModel) -> None:
    class EmptyCache:
        def get(self, use_case: str) -> None:
            return None

    batcher = MicroBatcher(EmptyCache(), "demo", 0.001)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="no model loaded"):
        _run(batcher.predict(loaded, [[1.0, 0.0]]))
