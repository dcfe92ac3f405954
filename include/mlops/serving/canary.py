"""Canary routing and its guard: which requests `@canary` answers, and when the service takes it off.

Routing. A request goes to the canary when a hash of its routing key falls below the
canary's fraction (`deployment.canary_steps[step]`, the step from the version's
`mlops.rollout.canary_step` tag). The key is the `X-Routing-Key` header when the client sends
one (a user or session id: the same key always gets the same side), else the request's first
id. The hash is uniform on [0, 1), so a fraction f takes f of the keys; a key in the canary at
5 % stays in it at 25 %, since the thresholds only grow.

The guard. The service times every request it answers (the same numbers as /metrics); for a
use case with a canary it keeps the last `WINDOW` latencies of each side and the canary's last
`WINDOW` outcomes. Once the canary has `canary_guard_min_requests` of them, every
`CHECK_EVERY`-th canary answer checks:
- its error rate (a 5xx, a failure the champion answered instead, or an answer slower than
  `canary_timeout_ms`) against `canary_max_error_rate`;
- its p99 against the champion's p99 × `canary_max_latency_ratio` + `canary_latency_slack_ms`,
  once both sides have `canary_latency_min_requests` (500) recent answers: the p99 of fewer is
  one or two slow requests, which a loaded machine gives any model.
A breach sets the canary's fraction to 0 in this process at once, and the cache records it on
the version (`mlops.rollout.canary_breach`), so every replica and every restart sees it, and
the rollout DAG turns it into the rollback on record. No request fails for a canary: one that
raises is answered by the champion (serving/routes/predict.py) and counted here as an error.
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlops.config import Deployment

WINDOW = 1000
"""Recent answers per side the guard judges: a few minutes of canary traffic at a 5 % step."""
CHECK_EVERY = 10
"""Canary answers between checks: a check sorts the window (tens of microseconds), not every request."""
_SCALE = float(2**64)


def routing_fraction(key: str) -> float:
    """Where `key` falls on [0, 1): the same key, the same place, in every process and version."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def goes_to_canary(key: str, fraction: float) -> bool:
    return fraction > 0 and routing_fraction(key) < fraction


@dataclass(frozen=True)
class Breach:
    check: str
    """`error_rate` or `latency`."""
    reason: str
    version: str
    at: str


class CanaryGuard:
    """One use case's guard: recent answers of champion and canary, and the breach once it happens."""

    def __init__(
        self, use_case: str, rules: Deployment, on_breach: Callable[[Breach], None], window: int = WINDOW
    ) -> None:
        self.use_case = use_case
        self.rules = rules
        self.on_breach = on_breach
        self._champion: deque[float] = deque(maxlen=window)
        self._canary: deque[float] = deque(maxlen=window)
        self._failed: deque[bool] = deque(maxlen=window)
        self._version: str | None = None
        self._since_check = 0
        self._lock = threading.Lock()
        self.breach: Breach | None = None

    def observe_champion(self, seconds: float) -> None:
        self._champion.append(seconds)

    def observe_canary(self, version: str, seconds: float, failed: bool = False) -> None:
        """One canary answer (or failure); may breach the guard."""
        if version != self._version:
            # A new canary version starts with a clean record: the old one's errors are not its own.
            self._version, self.breach, self._since_check = version, None, 0
            self._canary.clear()
            self._failed.clear()
        if self.breach is not None:
            return
        timed_out = seconds * 1000 > self.rules.canary_timeout_ms
        self._canary.append(seconds)
        self._failed.append(failed or timed_out)
        self._since_check += 1
        if self._since_check >= CHECK_EVERY or failed:
            self._since_check = 0
            self._check(version)

    def stats(self) -> dict[str, float | int | None]:
        canary, champion, failed = list(self._canary), list(self._champion), list(self._failed)
        return {
            "canary_requests": len(canary),
            "canary_errors": sum(failed),
            "canary_p99_ms": _p99(canary) * 1000 if canary else None,
            "champion_p99_ms": _p99(champion) * 1000 if champion else None,
        }

    def _check(self, version: str) -> None:
        rules = self.rules
        failed, canary = list(self._failed), list(self._canary)
        n = len(failed)
        if n < rules.canary_guard_min_requests:
            return
        errors = sum(failed)
        if errors / n > rules.canary_max_error_rate:
            self._breach(
                version,
                "error_rate",
                f"{errors} of its last {n} requests failed or took over {rules.canary_timeout_ms:g} ms "
                f"({errors / n:.1%} > {rules.canary_max_error_rate:.1%})",
            )
            return
        champion = list(self._champion)
        # The p99 of n answers is the slowest of the last 100/n%: under canary_latency_min_requests, one
        # request a loaded machine delayed would decide (seen in the rollout demo at 50).
        if min(n, len(champion)) < rules.canary_latency_min_requests:
            return
        mine, theirs = _p99(canary), _p99(champion)
        bound = theirs * rules.canary_max_latency_ratio + rules.canary_latency_slack_ms / 1000
        if mine > bound:
            self._breach(
                version,
                "latency",
                f"p99 {mine * 1000:.1f} ms over its last {n} requests > {rules.canary_max_latency_ratio:g}x the "
                f"champion's {theirs * 1000:.1f} ms + {rules.canary_latency_slack_ms:g} ms",
            )

    def _breach(self, version: str, check: str, reason: str) -> None:
        with self._lock:
            if self.breach is not None:
                return
            self.breach = Breach(check, reason, version, datetime.now(UTC).isoformat(timespec="seconds"))
        self.on_breach(self.breach)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
