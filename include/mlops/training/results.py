"""What a trained candidate hands on: its run, its logged model and its holdout metrics.

A module of its own, with no heavy imports, so that evaluation and promotion can read a
candidate without loading scikit-learn.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class CandidateResult:
    """A trained candidate: its run, its logged model and its holdout metrics."""

    key: str
    run_id: str
    model_uri: str
    metrics: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CandidateResult:
        metrics = {str(k): float(v) for k, v in dict(data["metrics"]).items()}
        return cls(key=str(data["key"]), run_id=str(data["run_id"]), model_uri=str(data["model_uri"]), metrics=metrics)

    @classmethod
    def of(cls, value: CandidateResult | Mapping[str, Any]) -> CandidateResult:
        """`value` itself, or read from its XCom form (`to_dict()`)."""
        return value if isinstance(value, CandidateResult) else cls.from_dict(value)
