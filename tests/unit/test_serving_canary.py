"""Canary routing and its guard, without a service: who goes to the canary, and when the guard takes it off."""

from __future__ import annotations

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


def _guard() -> tuple[CanaryGuard, list[Breach]]:
    seen: list[Breach] = []
    return CanaryGuard("demo", RULES, seen.append), seen


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
    guard, seen = _guard()
    for _ in range(49):
        guard.observe_canary("2", 0.001, failed=True)
    # 49 failures, but the guard waits for 50 answers: a handful of early requests proves nothing.
    assert seen == []
    guard.observe_canary("2", 0.001, failed=True)
    assert [b.check for b in seen] == ["error_rate"] and "50 of its last 50 requests failed" in seen[0].reason


def test_an_error_rate_over_the_bound_breaches_once() -> None:
    guard, seen = _guard()
    for i in range(200):
        guard.observe_canary("2", 0.001, failed=i % 20 == 0)  # 5 % > 2 %
    assert len(seen) == 1 and seen[0].check == "error_rate" and seen[0].version == "2"
    assert guard.breach is seen[0]


def test_answers_slower_than_the_timeout_count_as_errors() -> None:
    guard, seen = _guard()
    for i in range(100):
        guard.observe_canary("2", 0.5 if i % 10 == 0 else 0.001)  # 10 % over canary_timeout_ms
    assert seen and seen[0].check == "error_rate" and "took over 100 ms" in seen[0].reason


def test_a_p99_over_the_champions_bound_breaches_and_one_within_it_does_not() -> None:
    guard, seen = _guard()
    for _ in range(100):
        guard.observe_champion(0.004)
        guard.observe_canary("2", 0.007)  # 7 ms <= 1.5 x 4 ms + 2 ms = 8 ms
    assert seen == []
    for _ in range(100):
        guard.observe_canary("2", 0.012)
    assert [b.check for b in seen] == ["latency"] and "> 1.5x the champion's 4.0 ms + 2 ms" in seen[0].reason


def test_one_slow_answer_among_too_few_never_decides_the_latency_check() -> None:
    guard, seen = _guard()
    for i in range(99):  # 99 answers a side: under canary_latency_min_requests (100)
        guard.observe_champion(0.004)
        guard.observe_canary("2", 0.090 if i == 50 else 0.004)
    assert seen == []


def test_a_new_canary_version_starts_with_a_clean_record() -> None:
    guard, seen = _guard()
    for _ in range(60):
        guard.observe_canary("2", 0.001, failed=True)
    assert guard.breach is not None
    for _ in range(60):
        guard.observe_canary("3", 0.001)
    assert guard.breach is None and len(seen) == 1 and guard.stats()["canary_errors"] == 0
