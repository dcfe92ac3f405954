"""What the prediction service can be told, and how it reaches uvicorn's worker processes."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mlops.config import UseCase, load_all

CONFIG_ENV = "MLOPS_SERVING_CONFIG"


@dataclass(frozen=True)
class ServingConfig:
    """Everything the service can be told; carried to uvicorn workers as JSON in MLOPS_SERVING_CONFIG."""

    configs_dir: str | None = None
    use_cases: list[str] = field(default_factory=list)
    """Serve only these use cases; empty serves every configured one."""
    alias: str = "champion"
    poll_seconds: float = 5.0
    log_uri: str | None = None
    """Prediction log; None means settings.prediction_log_uri."""
    log_queue_size: int = 10_000
    log_flush_seconds: float = 1.0
    max_body_bytes: int = 1_048_576
    max_records: int = 10_000
    batch_window_ms: float = 1.0
    """How long the first request of a micro-batch waits for others; 0 batches only what
    arrived in the same event-loop turn."""
    array_predict: bool = True
    """Predict on arrays where the load-time check allows it (serving/fastpath.py); False: Pipeline.predict."""
    spool: bool = True
    """Append every answered prediction to a local spool file before answering (serving/spool.py), so a
    SIGKILL of the service loses none; False: the log buffers them in memory only."""
    spool_dir: str | None = None
    """The spool's folder; None: one per prediction log under MLOPS_HOME/spool (spool.spool_dir_for)."""

    def spool_folder(self) -> Path | None:
        """Where this service's log writers spool, or None when the spool is off."""
        if not self.spool:
            return None
        from mlops.serving.spool import spool_dir_for

        return Path(self.spool_dir) if self.spool_dir else spool_dir_for(self.log_uri)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServingConfig:
        raw = os.environ.get(CONFIG_ENV)
        return cls(**json.loads(raw)) if raw else cls()

    def load_use_cases(self) -> list[UseCase]:
        found = load_all(Path(self.configs_dir) if self.configs_dir else None)
        if not self.use_cases:
            return found
        known = {u.name: u for u in found}
        missing = [n for n in self.use_cases if n not in known]
        if missing:
            raise ValueError(f"use cases {missing} are not configured; known: {sorted(known)}")
        return [known[n] for n in self.use_cases]
