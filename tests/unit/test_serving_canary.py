"""Canary routing and its guard, without a service: who goes to the canary, and when the guard takes it off.

The latency tests replay synthetic traffic on the guard's clock: requests at a steady rate, 5 % routed to the
canary, latencies drawn from one log-normal distribution, a machine stall added to every answer that ends
inside it, and a canary that is itself slower.
"""

from __future__ import annotations

import numpy as np
import pytest

from mlops.config import Deployment
from mlops.serving.canary import Breach, CanaryGuard, goes_to_canary, routing_fraction

RULES = Deployment(
    strategy="canary",
    canary_guard_min_requests=50,
    canary_max_error_rate=0.02,
    canary_max_latency_ratio=1.5,
    canary_latency_slack_ms=2,
    canary_timeout_ms=100,
    canary_latency_min_requests=100,
)


DEFAULTS = Deployment(strategy="canary")
"""The shipped rules: ratio 1.5, slack 5 ms, 500 answers a side, p < 0.001 in 3 checks in a row."""


class Clock:
    """The guard's clock, moved by the test: 1000 s, then whatever the traffic says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _guard(rules: Deployment = RULES) -> tuple[CanaryGuard, list[Breach], Clock]:
    seen: list[Breach] = []
    clock = Clock()
    return CanaryGuard("demo", rules, seen.append, clock=clock), seen, clock


def replay(
    guard: CanaryGuard,
    clock: Clock,
    seconds: float,
    *,
    seed: int = 0,
    rate: float = 200.0,
    fraction: float = 0.05,
    canary_factor: float = 1.0,
    stalls: tuple[tuple[float, float], ...] = (),
    stall_ms: float = 40.0,
) -> tuple[list[float], list[float]]:
    """`seconds` of traffic at `rate` requests a second from the clock's time on: each request's latency a
    log-normal draw (median 5 ms, p99 about 13 ms), times `canary_factor` on the canary, plus `stall_ms` when it
    ends inside one of `stalls` ((start, length) in seconds from the replay's start). Returns each side's
    latencies in order, for the tests to compare against other rules."""
    rng = np.random.default_rng(seed)
    count = int(seconds * rate)
    base = rng.lognormal(np.log(0.005), 0.4, count)
    to_canary = rng.random(count) < fraction
    start = clock.now
    champion: list[float] = []
    canary: list[float] = []
    for i in range(count):
        clock.now = start + i / rate
        elapsed = clock.now - start
        stalled = any(begin <= elapsed < begin + length for begin, length in stalls)
        extra = stall_ms / 1000 if stalled else 0.0
        if to_canary[i]:
            canary.append(float(base[i]) * canary_factor + extra)
            guard.observe_canary("2", canary[-1])
        else:
            champion.append(float(base[i]) + extra)
            guard.observe_champion(champion[-1])
    clock.now = start + seconds
    return champion, canary


def last_answers_rule_trips(champion: list[float], canary: list[float], rules: Deployment = DEFAULTS) -> bool:
    """The rule the guard had before: the canary's p99 over its last 1000 answers against the champion's p99 over
    the champion's own last 1000 (a different span of time)."""
    mine, theirs = np.quantile(canary[-1000:], 0.99), np.quantile(champion[-1000:], 0.99)
    return bool(mine > theirs * rules.canary_max_latency_ratio + rules.canary_latency_slack_ms / 1000)


@pytest.mark.parametrize("fraction", [0.05, 0.25, 0.5])
def test_a_fraction_of_keys_goes_to_the_canary(fraction: float) -> None:
    keys = [f"user-{i}" for i in range(20_000)]
    share = sum(goes_to_canary(k, fraction) for k in keys) / len(keys)
    # Binomial sd at 20k keys is at most 0.0035: 0.01 is about three of them.
    assert share == pytest.approx(fraction, abs=0.01)


def test_routing_is_sticky_and_a_key_in_the_canary_stays_in_it_as_the_steps_grow() -> None:
    keys = [f"session-{i}" for i in range(2000)]
    at_5 = {k for k in keys if goes_to_canary(k, 0.05)}
    at_25 = {k for k in keys if goes_to_canary(k, 0.25)}
    assert at_5 and at_5 <= at_25
    assert all(goes_to_canary(k, 0.05) for k in at_5)  # the same key, the same side, every time
    assert not any(goes_to_canary(k, 0.0) for k in keys)
    assert all(goes_to_canary(k, 1.0) for k in keys)
    assert 0 <= routing_fraction("") < 1


def test_no_judgement_before_the_minimum_of_requests() -> None:
    guard, seen, _ = _guard()
    for _ in range(49):
        guard.observe_canary("2", 0.001, failed=True)
    # 49 failures, but the guard waits for 50 answers: a handful of early requests proves nothing.
    assert seen == []
    guard.observe_canary("2", 0.001, failed=True)
    assert [b.check for b in seen] == ["error_rate"] and "50 of its last 50 requests failed" in seen[0].reason


def test_an_error_rate_over_the_bound_breaches_once() -> None:
    guard, seen, _ = _guard()
    for i in range(200):
        guard.observe_canary("2", 0.001, failed=i % 20 == 0)  # 5 % > 2 %
    assert len(seen) == 1 and seen[0].check == "error_rate" and seen[0].version == "2"
    assert guard.breach is seen[0]


def test_answers_slower_than_the_timeout_count_as_errors() -> None:
    guard, seen, _ = _guard()
    for i in range(100):
        guard.observe_canary("2", 0.5 if i % 10 == 0 else 0.001)  # 10 % over canary_timeout_ms
    assert seen and seen[0].check == "error_rate" and "took over 100 ms" in seen[0].reason


def test_a_p99_over_the_champions_bound_breaches_and_one_within_it_does_not() -> None:
    guard, seen, clock = _guard()
    for i in range(200):
        clock.now = 1000 + i / 100
        guard.observe_champion(0.004)
        guard.observe_canary("2", 0.007)  # 7 ms <= 1.5 x 4 ms + 2 ms = 8 ms
    assert seen == []
    for i in range(200):
        clock.now = 1002 + i / 100
        guard.observe_champion(0.004)
        guard.observe_canary("2", 0.012)
    assert [b.check for b in seen] == ["latency"]
    reason = seen[0].reason
    # The p99s are read to the bins' 4.5 %; the window is the 4 s the canary answered in.
    assert "p99 12." in reason and "against the champion's 4." in reason and "over the same 3 s" in reason
    assert "over 1.5x the champion's p99 + 2 ms" in reason
    assert "in 3 checks in a row" in reason


def test_one_slow_answer_among_too_few_never_decides_the_latency_check() -> None:
    guard, seen, _ = _guard()
    for i in range(99):  # 99 answers a side: under canary_latency_min_requests (100)
        guard.observe_champion(0.004)
        guard.observe_canary("2", 0.090 if i == 50 else 0.004)
    assert seen == []


@pytest.mark.parametrize(("begin", "length"), [(20, 1.0), (30, 2.0), (40, 3.0), (60, 10.0), (97, 2.5)])
def test_a_stall_that_slows_both_sides_does_not_trip_the_latency_check(begin: float, length: float) -> None:
    guard, seen, clock = _guard(DEFAULTS)
    champion, canary = replay(guard, clock, 100, stalls=((begin, length),), seed=int(begin))
    assert seen == [], seen[0].reason
    stats = guard.stats()
    # 5 % of 20 000 requests: about 1000 canary answers, all in the window, with the champion's 19 times as many.
    assert stats["latency"]["canary_requests"] >= stats["canary_requests"] > 900  # whole seconds: a few more
    assert stats["latency"]["champion_requests"] > 15 * stats["canary_requests"]
    # The same seconds on both sides: the stall's answers are in both windows.
    assert stats["latency"]["window_seconds"] >= 99
    if begin < 95 and length >= 2:
        # The case that rolled sound canaries back: the stall is among the canary's last 1000 answers (the last
        # 100 s) but not among the champion's last 1000 (the last 5 s); the old rule trips on this very traffic
        # (a stall of 1 s is about 1 % of the canary's answers: the old rule's p99 is then a coin toss).
        assert last_answers_rule_trips(champion, canary)


def test_stalls_and_chance_over_a_long_run_never_roll_a_sound_canary_back() -> None:
    # Ten minutes at 200 requests a second: 3 000 latency checks, a stall of 2 s every 50 s.
    guard, seen, clock = _guard(DEFAULTS)
    replay(guard, clock, 600, seed=7, stalls=tuple((s, 2.0) for s in range(10, 600, 50)))
    assert seen == [], seen[0].reason
    assert guard.stats()["canary_requests"] == 1000


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_chance_alone_does_not_trip_even_the_strictest_bound(seed: int) -> None:
    # Ratio 1 and no slack: a sound canary's p99 over a few hundred answers is above the champion's about half
    # the time. The p99 comparison alone (any p-value, one check) trips on these very draws; the test does not.
    strict = {"strategy": "canary", "canary_max_latency_ratio": 1.0, "canary_latency_slack_ms": 0}
    guard, seen, clock = _guard(Deployment(**strict))
    replay(guard, clock, 200, seed=seed)
    assert seen == [], seen[0].reason
    guard, seen, clock = _guard(Deployment(**strict, canary_latency_significance=0.9999999, canary_latency_checks=1))
    replay(guard, clock, 200, seed=seed)
    assert [b.check for b in seen] == ["latency"]


def test_a_canary_three_times_slower_trips_the_latency_check() -> None:
    guard, seen, clock = _guard(DEFAULTS)
    replay(guard, clock, 100, canary_factor=3.0, seed=3)
    assert [b.check for b in seen] == ["latency"]
    reason = seen[0].reason
    assert "one-sided Fisher exact p = " in reason and "in 3 checks in a row" in reason
    # It needed canary_latency_min_requests (500) answers, then three checks: it tripped at the 520th.
    assert "over the same" in reason and "(520 and " in reason


def test_a_canary_three_times_slower_trips_once_a_stall_has_left_the_window() -> None:
    # A stall over more than 1 % of the window's answers raises the champion's p99, and the bound with it, while
    # it is in the window (the canary's last 1000 answers: 100 s here): no breach then, one after.
    guard, seen, clock = _guard(DEFAULTS)
    replay(guard, clock, 40, canary_factor=3.0, stalls=((0.0, 3.0),), seed=4)
    assert seen == []
    replay(guard, clock, 100, canary_factor=3.0, seed=5)
    assert [b.check for b in seen] == ["latency"] and "Fisher" in seen[0].reason


def test_at_a_step_of_100_percent_the_latency_check_does_not_judge() -> None:
    # No champion answers in the same seconds: nothing fair to compare with; the error rate still judges.
    guard, seen, clock = _guard(DEFAULTS)
    replay(guard, clock, 20, fraction=1.0, canary_factor=3.0)
    assert seen == [] and guard.stats()["latency"] is None
    for _ in range(20):  # 20 time-outs (> canary_timeout_ms, 1 s) of its last 1000 answers: 2 % > 1 %
        guard.observe_canary("2", 2.0)
    assert [b.check for b in seen] == ["error_rate"]


def test_old_champion_answers_are_not_the_canarys_yardstick() -> None:
    # The champion answered fast a minute ago; since then only the canary (at 100 %) answers, slowly. The old
    # rule compared them; the same-seconds rule has no champion answers there and does not judge.
    guard, seen, clock = _guard(DEFAULTS)
    for i in range(2000):
        clock.now = 1000 + i / 200
        guard.observe_champion(0.002)
    clock.now = 1070
    replay(guard, clock, 10, fraction=1.0, canary_factor=1.5)
    assert seen == [] and guard.stats()["latency"] is None


def test_a_new_canary_version_starts_with_a_clean_record() -> None:
    guard, seen, _ = _guard()
    for _ in range(60):
        guard.observe_canary("2", 0.001, failed=True)
    assert guard.breach is not None
    for _ in range(60):
        guard.observe_canary("3", 0.001)
    assert guard.breach is None and len(seen) == 1 and guard.stats()["canary_errors"] == 0
