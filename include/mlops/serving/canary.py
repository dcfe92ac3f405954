"""Canary routing and its guard: which requests `@canary` answers, and when the service takes it off.

Routing. A request goes to the canary when a hash of its routing key falls below the
canary's fraction (`deployment.canary_steps[step]`, the step from the version's
`mlops.rollout.canary_step` tag). The key is the `X-Routing-Key` header when the client sends
one (a user or session id: the same key always gets the same side), else the request's first
id. The hash is uniform on [0, 1), so a fraction f takes f of the keys; a key in the canary at
5 % stays in it at 25 %, since the thresholds only grow.

The guard. The service times every request it answers (the same numbers as /metrics). For a
use case with a canary it counts each side's answers per second they ended in (in latency bins
4.5 % wide, the last `KEEP_SECONDS` seconds), and keeps the canary's last `WINDOW` outcomes.
Once the canary has `canary_guard_min_requests` of them, every `CHECK_EVERY`-th canary answer
(and every failure) checks:
- its error rate (a 5xx, a failure the champion answered instead, or an answer slower than
  `canary_timeout_ms`) against `canary_max_error_rate`;
- its latency against the champion's over the same seconds: the latest whole seconds that
  hold the canary's last `WINDOW` answers, and the champion's answers of those same seconds.
  A machine stall slows both sides' answers of those seconds alike, so it cannot look like a
  slow canary (comparing each side's last N answers did: N canary answers span minutes, N
  champion answers seconds, and a stall in one span and not the other rolled a sound canary
  back). The bound is the champion's p99 × `canary_max_latency_ratio` +
  `canary_latency_slack_ms`; the canary is slower when over 1 % of its answers exceed it (its
  p99 is over it) and a one-sided Fisher exact test says its share over the bound exceeds the
  champion's share over the same bound with p < `canary_latency_significance` (so chance in a
  few hundred answers does not decide); a breach needs that in `canary_latency_checks`
  consecutive checks, and at least `canary_latency_min_requests` answers a side in the window.
  At a step of 100 % the champion answers nothing: there is nothing to compare in the same
  seconds and the latency check does not judge (the error rate still does).
A breach sets the canary's fraction to 0 in this process at once, and the cache records it on
the version (`mlops.rollout.canary_breach`), so every replica and every restart sees it, and
the rollout DAG turns it into the rollback on record. No request fails for a canary: one that
raises is answered by the champion (serving/routes/predict.py) and counted here as an error.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mlops.config import Deployment

WINDOW = 1000
"""The canary's recent answers the guard judges (the latency check: with the champion's of the same seconds)."""
CHECK_EVERY = 10
"""Canary answers between checks: a check sums the window's histograms (0.03 ms over 1 s, 0.3 ms over 400 s)."""
_SCALE = float(2**64)
BUCKET_SECONDS = 1
"""The guard's tick: answers are counted per second they ended in, and the sides compared over whole seconds."""
KEEP_SECONDS = 600
"""Seconds of answers kept: the window reaches back at most this far for the canary's last WINDOW answers."""
EDGES = [float(e) for e in np.geomspace(1e-4, 60.0, 300)]
"""Latency bins (seconds), 0.1 ms to 60 s, each 4.5 % wider than the last: the p99s are read to that precision."""


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
    """One use case's guard: both sides' answers per second, the canary's recent outcomes, and the breach."""

    def __init__(
        self,
        use_case: str,
        rules: Deployment,
        on_breach: Callable[[Breach], None],
        window: int = WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.use_case = use_case
        self.rules = rules
        self.on_breach = on_breach
        self.window = window
        self._clock = clock
        self._champion = _Seconds()
        self._canary = _Seconds()
        self._failed: deque[bool] = deque(maxlen=window)
        self._version: str | None = None
        self._since_check = 0
        self._slow_checks = 0
        """Latency checks in a row that found the canary slower: a breach needs `canary_latency_checks`."""
        self._lock = threading.Lock()
        self.breach: Breach | None = None

    def observe_champion(self, seconds: float) -> None:
        self._champion.add(self._clock(), seconds)

    def observe_canary(self, version: str, seconds: float, failed: bool = False) -> None:
        """One canary answer (or failure); may breach the guard."""
        if version != self._version:
            # A new canary version starts with a clean record: the old one's errors are not its own.
            self._version, self.breach, self._since_check, self._slow_checks = version, None, 0, 0
            self._canary = _Seconds()
            self._failed.clear()
        if self.breach is not None:
            return
        timed_out = seconds * 1000 > self.rules.canary_timeout_ms
        self._canary.add(self._clock(), seconds)
        self._failed.append(failed or timed_out)
        self._since_check += 1
        if self._since_check >= CHECK_EVERY or failed:
            self._since_check = 0
            self._check(version)

    def stats(self) -> dict[str, Any]:
        """The guard's numbers for /health: the error count and both sides' p99 over the same seconds."""
        failed = list(self._failed)
        latency = self._compare_latency()
        return {
            "canary_requests": len(failed),
            "canary_errors": sum(failed),
            "canary_p99_ms": _ms(latency.canary_p99) if latency else None,
            "champion_p99_ms": _ms(latency.champion_p99) if latency else None,
            "latency": latency.to_dict() if latency else None,
            "slow_checks_in_a_row": self._slow_checks,
        }

    def _check(self, version: str) -> None:
        rules = self.rules
        failed = list(self._failed)
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
        latency = self._compare_latency()
        # The p99 of n answers is the slowest of the last 100/n %: under canary_latency_min_requests a side, one
        # request a loaded machine delayed would decide (seen in the rollout demo at 50).
        enough = rules.canary_latency_min_requests
        if latency is None or min(latency.canary_requests, latency.champion_requests) < enough:
            self._slow_checks = 0
            return
        self._slow_checks = self._slow_checks + 1 if latency.slower(rules.canary_latency_significance) else 0
        if self._slow_checks >= rules.canary_latency_checks:
            self._breach(version, "latency", latency.describe(rules, self._slow_checks))

    def _compare_latency(self) -> LatencyComparison | None:
        """Both sides over the same seconds: the latest ones that hold the canary's last `window` answers."""
        now = _second(self._clock())
        seconds, held = 0, 0
        while seconds < KEEP_SECONDS and held < self.window:
            held += self._canary.total(now - seconds)
            seconds += 1
        if held == 0:
            return None
        while self._canary.total(now - seconds + 1) == 0:  # from the canary's oldest answer on, not before it
            seconds -= 1
        span = range(now - seconds + 1, now + 1)
        champion, canary = self._champion.histogram(span), self._canary.histogram(span)
        return compare_latency(champion, canary, seconds, self.rules)

    def _breach(self, version: str, check: str, reason: str) -> None:
        with self._lock:
            if self.breach is not None:
                return
            self.breach = Breach(check, reason, version, datetime.now(UTC).isoformat(timespec="seconds"))
        self.on_breach(self.breach)


@dataclass(frozen=True)
class LatencyComparison:
    """Both sides' answers over the same seconds, and how many of each took longer than the bound."""

    seconds: int
    """The window: the latest whole seconds (the current one included) that hold the canary's last answers."""
    canary_requests: int
    champion_requests: int
    canary_p99: float
    champion_p99: float
    bound: float
    """The champion's p99 x canary_max_latency_ratio + canary_latency_slack_ms, in seconds."""
    canary_over: int
    champion_over: int
    p_value: float | None
    """One-sided Fisher exact test that the canary's share over the bound exceeds the champion's; None when
    that share is within 1 % (its p99 is within the bound): no test is needed."""

    def slower(self, significance: float) -> bool:
        return self.p_value is not None and self.p_value < significance

    def to_dict(self) -> dict[str, Any]:
        return {
            "window_seconds": self.seconds,
            "canary_requests": self.canary_requests,
            "champion_requests": self.champion_requests,
            "bound_ms": _ms(self.bound),
            "canary_over_bound": self.canary_over,
            "champion_over_bound": self.champion_over,
            "p_value": self.p_value,
        }

    def describe(self, rules: Deployment, checks: int) -> str:
        n, m = self.canary_requests, self.champion_requests
        return (
            f"p99 {_ms(self.canary_p99):.1f} ms against the champion's {_ms(self.champion_p99):.1f} ms over the "
            f"same {self.seconds} s ({n} and {m} answers): {self.canary_over} of its answers "
            f"({self.canary_over / n:.1%}) over {rules.canary_max_latency_ratio:g}x the champion's p99 + "
            f"{rules.canary_latency_slack_ms:g} ms = {_ms(self.bound):.1f} ms, against {self.champion_over} of the "
            f"champion's ({self.champion_over / max(m, 1):.2%}); one-sided Fisher exact p = {self.p_value:.1e} < "
            f"{rules.canary_latency_significance:g}, in {checks} checks in a row"
        )


def compare_latency(
    champion: np.ndarray[Any, Any], canary: np.ndarray[Any, Any], seconds: int, rules: Deployment
) -> LatencyComparison | None:
    """The latency check on two histograms (counts per bin of `EDGES`) of the same seconds; None without answers.

    Both sides are counted with the same bins, so the bin width (4.5 %) favours neither.
    """
    n, m = int(canary.sum()), int(champion.sum())
    if n == 0 or m == 0:
        return None
    champion_p99 = _quantile(champion, 0.99)
    bound = champion_p99 * rules.canary_max_latency_ratio + rules.canary_latency_slack_ms / 1000
    # Answers surely over the bound: those in bins whose lower edge is at or above it, on both sides.
    first = bisect.bisect_left(EDGES, bound) + 1
    canary_over, champion_over = int(canary[first:].sum()), int(champion[first:].sum())
    p_value = None
    if canary_over > (1 - 0.99) * n:
        from scipy.stats import fisher_exact  # sklearn, which every served model needs, has imported it

        table = [[canary_over, n - canary_over], [champion_over, m - champion_over]]
        p_value = float(fisher_exact(table, alternative="greater").pvalue)
    return LatencyComparison(
        seconds, n, m, _quantile(canary, 0.99), champion_p99, bound, canary_over, champion_over, p_value
    )


class _Seconds:
    """One side's answers counted per second they ended in and per latency bin, over the last KEEP_SECONDS."""

    def __init__(self) -> None:
        self._stamp = [-1] * KEEP_SECONDS
        self._totals = [0] * KEEP_SECONDS
        self._counts = np.zeros((KEEP_SECONDS, len(EDGES) + 1), dtype=np.int64)

    def add(self, at: float, seconds: float) -> None:
        second = _second(at)
        slot = second % KEEP_SECONDS
        if self._stamp[slot] != second:  # a slot last used KEEP_SECONDS or more ago: start it afresh
            self._stamp[slot], self._totals[slot] = second, 0
            self._counts[slot] = 0
        self._counts[slot, bisect.bisect_right(EDGES, seconds)] += 1
        self._totals[slot] += 1

    def total(self, second: int) -> int:
        slot = second % KEEP_SECONDS
        return self._totals[slot] if self._stamp[slot] == second else 0

    def histogram(self, span: range) -> np.ndarray[Any, Any]:
        slots = [s % KEEP_SECONDS for s in span if self._stamp[s % KEEP_SECONDS] == s]
        return np.asarray(self._counts[slots].sum(axis=0))


def _second(at: float) -> int:
    return int(at // BUCKET_SECONDS)


def _quantile(histogram: np.ndarray[Any, Any], q: float) -> float:
    """The upper edge of the bin that holds the q-quantile (the last edge for the open top bin)."""
    rank = max(1, math.ceil(q * int(histogram.sum())))
    index = int(np.searchsorted(np.cumsum(histogram), rank))
    return EDGES[min(index, len(EDGES) - 1)]


def _ms(seconds: float) -> float:
    return seconds * 1000
