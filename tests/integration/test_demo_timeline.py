"""The demo's timeline against a real MLflow server: both rollouts printed with their evidence.

The versions get where they are by the platform's own writers: the promote step
(`decisions.apply_decision`) makes them `@shadow` and `@canary`, and the rollout's
`apply_rollout` records a decision taken by the real rules (`decide`, `decide_canary`) on
evidence the real bootstrap (`compare`) measured on made-up labelled requests. What is
asserted is what `print_timeline` reads back from the registry.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.config import UseCase, find_use_case
from mlops.evaluation.gate import check_gate
from mlops.platform.demo import print_timeline, rollout_lines
from mlops.promotion import decisions
from mlops.rollout import apply
from mlops.rollout.decision import decide, decide_canary
from mlops.rollout.evidence import Paired, compare
from mlops.settings import get_settings
from mlops.training import runs as training_runs
from mlops.training.results import CandidateResult

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "training_it_timeline"
MODEL = "it_demo_timeline"


def use_case(strategy: str) -> UseCase:
    raw = find_use_case("bike_sharing", PROJECT_ROOT / "configs").model_dump()
    raw.update(name="it_timeline", model_name=MODEL)
    raw["candidates"] = [{"name": "ridge", "estimator": "sklearn.linear_model.Ridge", "params": {"alpha": [1.0]}}]
    raw["gate"] = {"primary_metric": "rmse", "thresholds": {"rmse": {"max": 1000}}, "max_regression": 0.05}
    raw["deployment"] = {"strategy": strategy, "canary_steps": [0.25, 1.0]}
    return UseCase.model_validate(raw)


@pytest.fixture(scope="module")
def candidate(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> CandidateResult:
    uc = use_case("direct")
    path = tmp_path_factory.mktemp("timeline") / "bike.parquet"
    pd.read_csv(PROJECT_ROOT / "data/raw/bike_sharing_hourly.csv", nrows=300).to_parquet(path, index=False)
    parent = training_runs.start_parent_run(uc, DAG_ID, "seed", {"snapshot_path": str(path)})
    spec = {"name": "ridge", "estimator": "sklearn.linear_model.Ridge", "params": {"alpha": 1.0}, "key": "ridge"}
    return training_runs.train_and_log_candidate(uc, spec, str(path), parent, {})


def side(labels: np.ndarray, noise: float, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame({"label": labels, "prediction": labels + rng.normal(0, noise, len(labels))})


def register(uc: UseCase, result: CandidateResult, key: str) -> str:
    version = decisions.register_candidate(uc, result, f"{DAG_ID}/{key}")
    decisions.apply_decision(uc, version, check_gate(uc, result.metrics, None), f"{DAG_ID}/{key}")
    return version


def test_the_timeline_shows_a_promoted_shadow_and_a_rolled_back_canary_with_their_evidence(
    candidate: CandidateResult,
) -> None:
    rng = np.random.default_rng(0)
    labels = rng.uniform(0, 400, 600)
    now = datetime.now(UTC).replace(tzinfo=None)

    first = register(use_case("shadow"), candidate, "first")  # no champion yet: promoted directly

    shadow_uc = use_case("shadow")
    shadow = register(shadow_uc, candidate, "shadow")
    rollout = apply.current_rollout(shadow_uc, now)
    assert rollout is not None and rollout.strategy == "shadow" and rollout.version == shadow
    # The shadow errs less than the champion on the same requests: paired, surely better.
    paired = Paired(side(labels[:300], 60, rng), side(labels[:300], 20, rng), 300, [first])
    evidence = compare("regression", "rmse", paired, shadow, seed=0)
    promote = decide(evidence, shadow_uc.deployment, now, now)
    assert promote.action == "promote"
    assert apply.apply_rollout(shadow_uc, rollout, promote, "rollout_it_timeline/shadow").action == "promoted"

    canary_uc = use_case("canary")
    canary = register(canary_uc, candidate, "canary")
    rollout = apply.current_rollout(canary_uc, now)
    assert rollout is not None and rollout.strategy == "canary" and rollout.step == 0
    # Each side its own requests; the canary's errors are three times the champion's.
    unpaired = Paired(side(labels[:350], 20, rng), side(labels[350:], 60, rng), 250, [shadow], paired=False)
    evidence = compare("regression", "rmse", unpaired, canary, seed=0)
    rollback = decide_canary(evidence, canary_uc.deployment, now, now, step=0, step_requests=250)
    assert rollback.action == "reject"
    assert apply.apply_rollout(canary_uc, rollout, rollback, "rollout_it_timeline/canary").action == "rejected"

    lines: list[str] = []
    print_timeline(canary_uc, get_settings(), say=lines.append)
    text = "\n".join(lines)
    assert lines[0] == f"timeline of {MODEL}:"
    by_version = {v: next(i for i, line in enumerate(lines) if line.startswith(f"  v{v} ")) for v in (first, shadow)}
    assert "promoted" in lines[by_version[first]] and "rollout" not in lines[by_version[first] + 1]
    shadow_block = lines[by_version[shadow] : by_version[shadow] + 4]
    assert "promoted" in shadow_block[0] and "@champion" in shadow_block[0]
    assert "shadow rollout" in shadow_block[1] and "by rollout_it_timeline: PROMOTE" in shadow_block[1]
    assert "300 labelled requests scored by both" in shadow_block[2]
    assert f"rmse shadow {promote.evidence.candidate_metric:.4g} vs champion v{first}" in shadow_block[2]
    assert f"{promote.evidence.champion_metric:.4g}; relative gain [+" in shadow_block[2]
    assert "better than the required gain" in shadow_block[3]
    canary_at = next(i for i, line in enumerate(lines) if line.startswith(f"  v{canary} "))
    canary_block = lines[canary_at : canary_at + 4]
    assert "rejected" in canary_block[0] and "@challenger" in canary_block[0]
    assert "canary rollout" in canary_block[1] and "REJECT" in canary_block[1]
    assert "250 canary and 350 champion labelled requests (unpaired)" in canary_block[2]
    assert f"rmse canary {rollback.evidence.candidate_metric:.4g} vs champion v{shadow}" in canary_block[2]
    assert "relative gain [-" in canary_block[2] and "at 95%" in canary_block[2]
    assert "rolled back at 25%" in canary_block[3]
    # The rollout lines say why; the generic "rejected because" line would repeat it.
    assert "rejected because" not in text


def test_a_rollout_in_progress_shows_its_last_run() -> None:
    progress = '{"action": "wait", "reasons": ["12 of 200 labelled requests scored by both champion and shadow"]}'
    lines = rollout_lines(
        {"mlops.rollout.shadow_at": "2026-12-03T12:00:00+00:00", "mlops.gate.champion_version": "1",
         "mlops.rollout.progress": progress}
    )  # fmt: skip
    assert lines[0].startswith("shadow rollout beside v1 since ") and lines[0].endswith("in progress, last run: wait")
    assert lines[1] == "  12 of 200 labelled requests scored by both champion and shadow"
    assert rollout_lines({"mlops.gate.passed": "true"}) == []
