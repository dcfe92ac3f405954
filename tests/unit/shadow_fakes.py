"""Fake shadow models the shadow worker process loads in tests/unit/test_serving_shadow.py.

A module of its own (not a test module) so that the worker process can import it by name:
the tests put this folder on the worker's PYTHONPATH and hand it `FakeLoader`, which the
service would hand `RegistryLoader`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from mlops.serving.models import LoadedModel
from mlops.serving.schema import InputSchema
from mlops.serving.shadow_worker import ModelRef


class Linear:
    """y = factor * (a + b); optionally raising, sleeping first, or hanging on a row whose `a` is `hang_on`."""

    def __init__(self, factor: float = 1.0, fail: bool = False, sleep: float = 0.0, hang_on: float | None = None):
        self.factor, self.fail, self.sleep, self.hang_on = factor, fail, sleep, hang_on

    def predict(self, frame: pd.DataFrame) -> Any:
        if self.fail:
            raise RuntimeError("broken shadow")
        if self.hang_on is not None and (frame["a"] == self.hang_on).any():
            time.sleep(3600)
        time.sleep(self.sleep)
        return (frame["a"] + frame["b"]).to_numpy() * self.factor


BEHAVIOUR: dict[str, dict[str, Any]] = {
    "1": {"factor": 1.0},
    "2": {"factor": 3.0},
    "raise": {"fail": True},
    "slow": {"sleep": 0.3},
    "poison": {"factor": 3.0, "hang_on": -1.0},
}
"""Shadow versions by name, and what their model does."""


def loaded(version: str, columns: tuple[str, ...] = ("a", "b")) -> LoadedModel:
    return LoadedModel(use_case="demo", model_name="demo_model", version=version, alias="x", run_id=None,
                       aliases=(), signature=None, schema=InputSchema.from_signature(None, list(columns), []),
                       model=Linear(**BEHAVIOUR[version]), loaded_at=datetime.now(UTC))  # fmt: skip


@dataclass(frozen=True)
class FakeLoader:
    """Loads `BEHAVIOUR[ref.version]` in the worker process (with the columns in `columns` order)."""

    columns: tuple[str, ...] = ("a", "b")

    def __call__(self, ref: ModelRef) -> LoadedModel:
        return loaded(ref.version, self.columns)
