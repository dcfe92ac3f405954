"""The rollout demo's own configs: both deployments valid, nothing else changed, its home its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.config import find_use_case
from mlops.platform import rollout_demo

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def isolate(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`demo_settings` writes both variables into os.environ; set here first, monkeypatch restores them."""
    monkeypatch.setenv("MLOPS_HOME", str(home))
    monkeypatch.setenv("MLOPS_CONFIGS_DIR", str(home / "not-used"))


def test_the_demo_runs_under_its_own_home_and_configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(tmp_path, monkeypatch)
    settings = rollout_demo.demo_settings()
    assert settings.home == tmp_path / rollout_demo.DEMO_FOLDER
    assert settings.configs_dir == settings.home / "configs"


@pytest.mark.parametrize(
    ("deployment", "strategy"),
    [(rollout_demo.SHADOW_DEPLOYMENT, "shadow"), (rollout_demo.CANARY_DEPLOYMENT, "canary")],
)
def test_each_rollout_gets_a_valid_config_and_the_others_are_copied_as_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deployment: dict[str, object], strategy: str
) -> None:
    isolate(tmp_path, monkeypatch)
    settings = rollout_demo.demo_settings()
    use_case = rollout_demo.write_configs(settings, deployment)
    assert use_case.deployment.strategy == strategy
    original = find_use_case(rollout_demo.USE_CASE, PROJECT_ROOT / "configs")
    # Only `deployment` differs: the demo trains and serves the bike model the main demo does.
    assert use_case.model_dump(exclude={"deployment"}) == original.model_dump(exclude={"deployment"})
    for source in (PROJECT_ROOT / "configs").glob("*.yaml"):
        if source.stem != rollout_demo.USE_CASE:
            assert (settings.configs_dir / source.name).read_text() == source.read_text()
    assert sorted(p.name for p in settings.configs_dir.iterdir()) == sorted(
        p.name for p in (PROJECT_ROOT / "configs").glob("*.yaml")
    )


def test_the_demo_waits_for_the_shadow_worker_and_its_log_before_judging() -> None:
    from mlops.platform.rollout_demo import USE_CASE, log_flushed, rollout_version

    idle = {"queue_depth": 0, "pending_rows": 0}
    shadow = {"version": "2", "queue_depth": 0, "worker": {"version": None}, "log": {}}
    health = {"log": idle, "shadows": {USE_CASE: shadow}}
    assert rollout_version(health, "shadows") is None  # the service has @shadow, its worker not yet
    assert not log_flushed(health)  # the worker has not reported its log writer yet
    shadow["worker"] = {"version": "2"}
    shadow["log"] = {"queue_depth": 3, "pending_rows": 0}
    assert rollout_version(health, "shadows") == "2" and not log_flushed(health)
    shadow["log"] = idle
    assert log_flushed(health)
    assert rollout_version({"canaries": {USE_CASE: {"version": "3"}}}, "canaries") == "3"


def test_the_rollout_demo_runs_bike_sharing_and_the_main_demo_its_store_backed_twin() -> None:
    """The main demo's clients send no weather (the store's); the rollouts stay on bike_sharing (no store needed)."""
    from mlops.platform import demo

    assert rollout_demo.USE_CASE == "bike_sharing" and find_use_case(rollout_demo.USE_CASE).feature_store is None
    main = find_use_case(demo.USE_CASE)
    assert main.feature_store is not None and not set(main.feature_store.feature_names) & set(main.client_fields)
