"""The README's diagram names the DAGs scheduled on the champion Asset (or says there are none), as the DAG files do."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
NO_CONSUMER = "no DAG is scheduled on it"


def _diagram() -> str:
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"```mermaid\n(.*?)```", readme, re.DOTALL)
    assert match, "README.md has no mermaid diagram"
    return match.group(1)


def _scheduled_on(condition: Any) -> Iterator[str]:
    """URIs (or alias names) of the assets in a DAG's asset schedule, through nested all/any conditions."""
    if hasattr(condition, "objects"):
        for part in condition.objects:
            yield from _scheduled_on(part)
    elif hasattr(condition, "uri"):
        yield condition.uri
    elif hasattr(condition, "name"):
        yield f"alias:{condition.name}"


def _use_case_names() -> list[str]:
    from mlops.config import load_all

    return [use_case.name for use_case in load_all()]


@pytest.fixture(scope="module")
def champion_consumers(airflow_home: Path) -> list[str]:
    from airflow.dag_processing.dagbag import DagBag

    from mlops.config import load_all
    from mlops.orchestration.assets import champion_asset, champion_moves

    dagbag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    assert dagbag.import_errors == {}
    champion = {champion_asset(u).uri for u in load_all()} | {f"alias:{champion_moves().name}"}
    return sorted(
        dag_id
        for dag_id, dag in dagbag.dags.items()
        if champion & set(_scheduled_on(getattr(dag.timetable, "asset_condition", None)))
    )


def test_the_diagram_names_the_consumers_of_the_champion_asset_truthfully(champion_consumers: list[str]) -> None:
    diagram = _diagram()
    assert "champion" in diagram and "Asset" in diagram
    if champion_consumers:
        assert NO_CONSUMER not in diagram, f"{champion_consumers} consume the champion Asset: redraw the README"
        for dag_id in champion_consumers:
            # A DAG generated per use case is drawn once, its use case as `*` (`model_card_*`).
            drawn = {dag_id, *(dag_id.removesuffix(name) + "*" for name in _use_case_names() if dag_id.endswith(name))}
            assert any(name in diagram for name in drawn), f"{dag_id} consumes the champion Asset: draw it"
    else:
        assert NO_CONSUMER in diagram, "no DAG is scheduled on the champion Asset: the README diagram must say so"
